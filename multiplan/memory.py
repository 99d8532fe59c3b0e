"""Giving memory back to the system between the stages of a large run.

A check of many tiles frees each tile's geometries once the tile is staged, but
the C allocator (glibc's malloc, used by GEOS) keeps freed pages in its arenas,
and a thread's arena is not always reused by the next tile's threads: the
process's resident memory then grows tile by tile although nothing is kept.
:func:`release` hands the free pages back (``malloc_trim``), as dask's workers
do; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any


@functools.cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only (not musl)
    except (OSError, AttributeError):
        return None


def release() -> bool:
    """Return the C heap's free pages (and Arrow's, when loaded) to the system; return whether it could.

    Examples
    --------
    >>> release() in (True, False)
    True
    """
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:  # its own allocator (mimalloc or jemalloc) keeps pages too
        arrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
