"""Crosswalks from source land classifications to the common taxonomy.

The taxonomy is the 用地用海 classification (2023): two-digit level-1 codes,
four-digit level-2 and six-digit level-3 codes. A crosswalk is a CSV file
``source_code,target_code,source_name,target_name``; a source code with no row
falls back to its longest listed prefix (GB 50137 ``A33`` → ``A3`` → ``A``).

Crosswalks are found in ``classes/`` next to the rule packs a manifest names, then
next to the manifest, then in the built-in ``rules/classes``.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from multiplan.errors import CrosswalkError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

logger = logging.getLogger(__name__)

CROSSWALK_COLUMNS = ("source_code", "target_code", "source_name", "target_name")
GROUP_COLUMNS = ("group", "code", "title", "title_en")
TAXONOMY_FILE = "ydyh2023.csv"
GROUPS_FILE = "groups.csv"
#: Zone tags of constraint layers that carry no land class (SPEC §4).
ZONE_TAGS = (
    "eco_redline",
    "basic_farmland",
    "urban_boundary",
    "industrial_park",
    "transport_corridor",
)
_CODE_RE = re.compile(r"^(\d{2}|\d{4}|\d{6})$")
TAG_RE = re.compile(r"^[a-z][a-z0-9_]*$")
"""A zone tag: lower-case letters, digits and ``_``, starting with a letter."""


def builtin_rule_dirs() -> tuple[Path, ...]:
    """Return the folders holding the built-in rule packs, checkout first.

    A checkout (or editable install) has ``rules/`` beside the package; a regular
    install has them under ``<prefix>/share/multiplan/rules``.
    """
    candidates = [
        Path(__file__).resolve().parent.parent / "rules",
        Path(sys.prefix) / "share" / "multiplan" / "rules",
    ]
    return tuple(d for d in candidates if d.is_dir())


def find_classification(
    name: str, search: Iterable[Path], *, base: Path | None = None
) -> Path:
    """Return the crosswalk CSV for a classification name or path.

    Raises
    ------
    CrosswalkError
        When no folder of ``search`` holds ``<name>.csv``.
    """
    if name.endswith(".csv"):
        p = Path(name)
        if not p.is_absolute() and base is not None:
            p = base / p
        if p.is_file():
            return p
        raise CrosswalkError(f"crosswalk file not found: {p}", path=p)
    dirs = list(search)
    for d in dirs:
        p = d / f"{name}.csv"
        if p.is_file() and name != Path(GROUPS_FILE).stem:
            return p
    raise CrosswalkError(
        f"no crosswalk named {name!r} in {', '.join(map(str, dirs)) or 'any folder'}"
    )


def known_classifications(search: Iterable[Path]) -> list[str]:
    """Return the names of every crosswalk found in ``search``."""
    names: dict[str, None] = {}
    for d in search:
        if d.is_dir():
            for p in sorted(d.glob("*.csv")):
                if p.name != GROUPS_FILE:
                    names[p.stem] = None
    return list(names)


@dataclass(frozen=True)
class Crosswalk:
    """A mapping from source codes to taxonomy codes."""

    name: str
    path: Path
    targets: Mapping[str, str]
    source_names: Mapping[str, str]
    target_names: Mapping[str, str]

    def lookup(self, code: object) -> str | None:
        """Return the taxonomy code for a source code, or ``None`` if unmapped.

        Codes are normalised first (text, trimmed, upper-case; an integer code
        such as ``101`` read from a numeric field regains its leading zero).
        Then the longest listed prefix is used.

        Examples
        --------
        >>> cw = Crosswalk("t", Path("t.csv"), {"A": "08", "A3": "0804", "0101": "0101"}, {}, {})
        >>> cw.lookup("A33"), cw.lookup("a3"), cw.lookup(101), cw.lookup("X")
        ('0804', '0804', '0101', None)
        """
        for candidate in _candidates(code):
            for n in range(len(candidate), 0, -1):
                hit = self.targets.get(candidate[:n])
                if hit is not None:
                    return hit
        return None


def _is_null(v: object) -> bool:
    """Whether a cell holds no value: None, NaN or pandas' NA (Arrow columns)."""
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def code_text(v: object) -> str | None:
    """Return a code or id cell as trimmed text, ``None`` where the cell is empty.

    A float that holds an integer (a numeric field read with nulls) loses its ``.0``.

    Examples
    --------
    >>> code_text(" A1 "), code_text(3.0), code_text(pd.NA), code_text(float("nan"))
    ('A1', '3', None, None)
    """
    if _is_null(v):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def code_texts(values: pd.Series) -> np.ndarray:
    """Return :func:`code_text` of every value, one call per distinct value.

    Examples
    --------
    >>> code_texts(pd.Series([" A1 ", None, 3.0, float("nan"), 7])).tolist()
    ['A1', None, '3', None, '7']
    >>> code_texts(pd.Series([" a", None], dtype="string")).tolist()
    ['a', None]
    >>> code_texts(pd.Series([101, 7])).tolist()
    ['101', '7']
    """
    # through Python objects, not Arrow's compute: Arrow's allocator keeps what it
    # freed, and reading a layer is where a check peaks
    codes, unique = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=True)
    if pd.api.types.infer_dtype(unique, skipna=False) == "string":
        texts = [u.strip() for u in unique.tolist()]  # ids: every value distinct
    else:
        texts = [code_text(u) for u in unique.tolist()]
    return np.array([*texts, None], dtype=object)[codes]  # a null's code is -1


def _candidates(code: object) -> list[str]:
    if _is_null(code):
        return []
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    text = str(code).strip().upper().replace(" ", "")
    if not text:
        return []
    out = [text]
    if text.isdigit() and len(text) % 2 == 1:
        out.insert(0, "0" + text)
    return out


def load_crosswalk(path: Path) -> Crosswalk:
    """Read and check a crosswalk CSV.

    Raises
    ------
    CrosswalkError
        On wrong columns, an empty or duplicated source code, or a target that is
        neither a taxonomy code nor a zone tag.

    Notes
    -----
    Crosswalks are cached by path, modification time and size, so an edited
    crosswalk is read again in a live session (a notebook).
    """
    path = Path(path)
    return _read_crosswalk(path, _stamp(path))


def _stamp(path: Path) -> tuple[int, int]:
    """Return (mtime in ns, size) of a file, the key that makes a cache see edits."""
    try:
        st = path.stat()
    except OSError:
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _read_crosswalk(path: Path, stamp: tuple[int, int]) -> Crosswalk:
    rows = _read_csv(path, CROSSWALK_COLUMNS)
    targets: dict[str, str] = {}
    source_names: dict[str, str] = {}
    target_names: dict[str, str] = {}
    for lineno, row in rows:
        src = row["source_code"].strip().upper()
        tgt = row["target_code"].strip()
        if not src or not tgt:
            raise CrosswalkError(
                "empty source_code or target_code", path=path, key=f"line {lineno}"
            )
        if not (_CODE_RE.match(tgt) or TAG_RE.match(tgt)):
            raise CrosswalkError(
                f"target_code {tgt!r} is not a 用地用海 code (2, 4 or 6 digits) or a zone tag",
                path=path,
                key=f"line {lineno}",
            )
        if src in targets and targets[src] != tgt:
            raise CrosswalkError(
                f"source_code {src!r} is listed twice with different targets",
                path=path,
                key=f"line {lineno}",
                hint="Keep one row per source code",
            )
        targets[src] = tgt
        source_names[src] = row["source_name"].strip()
        target_names.setdefault(tgt, row["target_name"].strip())
    return Crosswalk(
        path.stem,
        path,
        MappingProxyType(targets),
        MappingProxyType(source_names),
        MappingProxyType(target_names),
    )


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CrosswalkError(
            f"cannot read the file as UTF-8 CSV ({exc})", path=path
        ) from exc
    reader = csv.DictReader(text.splitlines())
    header = tuple(h.strip() for h in (reader.fieldnames or ()))
    if header != columns:
        raise CrosswalkError(
            f"wrong columns {','.join(header)!r}",
            path=path,
            hint=f"The header must be {','.join(columns)}",
        )
    return [
        (i + 2, {k.strip(): (v or "") for k, v in row.items() if k is not None})
        for i, row in enumerate(reader)
        if any((v or "").strip() for v in row.values() if isinstance(v, str))
    ]


@dataclass(frozen=True)
class Taxonomy:
    """The common taxonomy: codes with names, and the named groups."""

    codes: Mapping[str, str]
    groups: Mapping[str, tuple[str, ...]]
    group_titles: Mapping[str, tuple[str, str]]

    def name(self, code: str | None) -> str | None:
        """Return the Chinese name of a code, or ``None``."""
        return None if code is None else self.codes.get(code)

    def is_code_prefix(self, item: str) -> bool:
        """Return whether ``item`` is a code of the taxonomy (usable as a prefix)."""
        return item in self.codes


@functools.lru_cache(maxsize=16)
def _load_taxonomy_files(
    codes_path: Path,
    groups_path: Path,
    stamps: tuple[tuple[int, int], tuple[int, int]],
) -> Taxonomy:
    codes: dict[str, str] = {}
    for _, row in _read_csv(codes_path, CROSSWALK_COLUMNS):
        codes[row["target_code"].strip()] = row["target_name"].strip()
    groups: dict[str, list[str]] = {}
    titles: dict[str, tuple[str, str]] = {}
    for lineno, row in _read_csv(groups_path, GROUP_COLUMNS):
        g, c = row["group"].strip(), row["code"].strip()
        if c not in codes:
            raise CrosswalkError(
                f"code {c!r} of group {g!r} is not in the taxonomy",
                path=groups_path,
                key=f"line {lineno}",
            )
        groups.setdefault(g, []).append(c)
        titles.setdefault(g, (row["title"].strip(), row["title_en"].strip()))
    return Taxonomy(
        MappingProxyType(codes),
        MappingProxyType({g: tuple(v) for g, v in groups.items()}),
        MappingProxyType(titles),
    )


def load_taxonomy(search: Iterable[Path]) -> Taxonomy:
    """Load the taxonomy (``ydyh2023.csv``) and its groups (``groups.csv``).

    Raises
    ------
    CrosswalkError
        When either file is found in none of the folders.
    """
    dirs = list(search) or [d / "classes" for d in builtin_rule_dirs()]
    found = {}
    for fname in (TAXONOMY_FILE, GROUPS_FILE):
        for d in dirs:
            if (d / fname).is_file():
                found[fname] = (d / fname).resolve()
                break
        else:
            raise CrosswalkError(
                f"the taxonomy file {fname} was not found",
                hint=f"Put it in classes/ next to a rule pack; looked in {', '.join(map(str, dirs))}",
            )
    codes, groups = found[TAXONOMY_FILE], found[GROUPS_FILE]
    return _load_taxonomy_files(codes, groups, (_stamp(codes), _stamp(groups)))


def classify_codes(
    values: pd.Series, crosswalk: Crosswalk
) -> tuple[np.ndarray, Counter[str]]:
    """Map source codes to taxonomy codes.

    Returns
    -------
    classes
        An object array of taxonomy codes, ``None`` where a code is unmapped or null.
    unmapped
        How many features carry each unmapped source code (null codes as ``"<null>"``).
    """
    # each distinct code is looked up once (a layer has a few dozen, not 100 000)
    codes, unique = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
    table = np.array([crosswalk.lookup(u) for u in unique], dtype=object)
    out = table[codes]
    unmapped: Counter[str] = Counter()
    counts = np.bincount(codes, minlength=len(unique))
    for u, c, n in zip(unique, table, counts, strict=True):
        if c is None and n:
            unmapped["<null>" if _is_null(u) else str(u)] += int(n)
    return out, unmapped
