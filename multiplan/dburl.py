"""Database URLs as text: which paths name a database, and how to show one safely.

Kept apart from :mod:`multiplan.postgis` so that the manifest's types can mask
passwords without importing a database driver.
"""

from __future__ import annotations

import dataclasses
import re

_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^/@\s:]*:)([^@\s]*)(@)")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)

PREFIXES = ("postgresql://", "postgres://", "PG:")
"""How a layer path or ``--db`` value that names a PostgreSQL database begins."""


def is_database(path: object) -> bool:
    """Return whether a layer path or ``--db`` value names a PostgreSQL database.

    Examples
    --------
    >>> is_database("postgresql://planner@db/onemap"), is_database("tugui.shp")
    (True, False)
    """
    return isinstance(path, str) and path.startswith(PREFIXES)


def mask(text: str) -> str:
    """Return ``text`` with every password in a PostgreSQL URL or conninfo masked.

    Examples
    --------
    >>> mask("postgresql://planner:s3cret@db.local:5432/onemap?schema=x")
    'postgresql://planner:***@db.local:5432/onemap?schema=x'
    >>> mask("PG:host=db dbname=onemap password=s3cret")
    'PG:host=db dbname=onemap password=***'
    """
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


def masked_repr(obj: object) -> str:
    """Return a dataclass's repr with every password in its text fields masked."""
    parts = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        if not f.repr:
            continue
        value = getattr(obj, f.name)
        shown = mask(value) if isinstance(value, str) else value
        parts.append(f"{f.name}={shown!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"
