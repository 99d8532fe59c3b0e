"""Temporary folders of a run, and the sweep of those that killed runs left behind.

A check stages its pieces (:class:`~multiplan.piecestore.PieceStore`) and writes
conflicts.gpkg ahead (:class:`~multiplan.writeahead.WriteAhead`) in folders of the
system's temporary folder, removed when the run is over. A run that is killed
(``kill -9``, the kernel's out-of-memory killer on a province) cannot remove them,
and staged pieces can take gigabytes. Each folder is therefore named for its
host and process, ``multiplan-KIND-HOST-PID-XXXXXXXX``, and a new folder is made
only after the folders of this host whose process is gone are removed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def scratch_folder(kind: str) -> Path:
    """Make a temporary folder for this process, after sweeping what killed runs left.

    Parameters
    ----------
    kind
        What the folder holds (``"pieces"``, ``"ahead"``): a word of letters.

    Returns
    -------
    Path
        A new, empty folder ``multiplan-KIND-HOST-PID-XXXXXXXX``.

    Raises
    ------
    OSError
        When the temporary folder cannot take a new folder.
    """
    sweep(kind)
    return Path(tempfile.mkdtemp(prefix=f"multiplan-{kind}-{_host()}-{os.getpid()}-"))


def owned_folder(owner: object, kind: str) -> tuple[Path, weakref.finalize[..., Any]]:
    """Make a :func:`scratch_folder` that is removed when ``owner`` is collected.

    Returns the folder and its finalizer: calling that removes the folder at once
    (an owner's ``close``).

    Raises
    ------
    OSError
        When the temporary folder cannot take a new folder.
    """
    folder = scratch_folder(kind)
    return folder, weakref.finalize(
        owner, shutil.rmtree, str(folder), ignore_errors=True
    )


def sweep(kind: str, root: Path | None = None) -> int:
    """Remove the ``kind`` folders of this host whose process is gone; return how many.

    Folders of other hosts (a temporary folder shared over the network), of live
    processes, and anything not named as :func:`scratch_folder` names are left.
    Nothing is swept on Windows, where a process cannot be asked whether it is
    alive without a handle.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> gone = root / f"multiplan-pieces-{_host()}-999999999-abc"
    >>> gone.mkdir()
    >>> mine = root / f"multiplan-pieces-{_host()}-{os.getpid()}-def"
    >>> mine.mkdir()
    >>> sweep("pieces", root), gone.exists(), mine.exists()
    (1, False, True)
    >>> shutil.rmtree(root)
    """
    if sys.platform == "win32":
        return 0
    root = Path(tempfile.gettempdir()) if root is None else root
    pattern = re.compile(
        rf"multiplan-{re.escape(kind)}-{re.escape(_host())}-(\d+)-[A-Za-z0-9_]+"
    )
    removed = 0
    try:
        folders = list(root.iterdir())
    except OSError:
        return 0
    for folder in folders:
        found = pattern.fullmatch(folder.name)
        if found is None or _alive(int(found.group(1))):
            continue
        # another user's folder stays: /tmp's sticky bit keeps it theirs
        shutil.rmtree(folder, ignore_errors=True)
        removed += not os.path.lexists(folder)
    if removed:
        logger.info(
            "removed %d temporary %s folder(s) of runs that were killed", removed, kind
        )
    return removed


def _host() -> str:
    """Return this host's name, with anything but letters, digits and dots as ``_``."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    """Return whether a process of this id runs (or cannot be told apart from one)."""
    if pid == os.getpid():
        return True
    if pid <= 0 or pid > 2**22:  # beyond Linux's pid_max
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True
