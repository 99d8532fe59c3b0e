"""Byte-level checks of shapefiles, before GDAL reads them.

GDAL reads a damaged shapefile without a word: a truncated ``.shp`` gives rows with
null geometry, and a ``.cpg`` that names the wrong encoding gives garbled text, so a
``where`` on a Chinese value keeps nothing. These checks read the files' own
structure — the ``.shx`` index, the ``.dbf`` records — and say what is wrong, so that
damage stops the run instead of turning into plausible wrong figures.
"""

from __future__ import annotations

import codecs
import logging
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

_HEADER = 100
_SINGLE_BYTE = {
    "latin_1",
    "iso8859-1",
    "cp1252",
    "ascii",
    "iso8859-15",
    "cp437",
    "cp850",
}
_CJK = ("gbk", "gb18030", "gb2312", "cp936")
_LDID = {
    0x4D: "cp936",
    0x7A: "cp936",
    0x57: "cp1252",
    0x03: "cp1252",
    0x01: "cp437",
    0x02: "cp850",
}
"""DBF language driver ids GDAL honours for Chinese and Western data."""
_CPG_ALIASES = {
    "88591": "latin_1",
    "ansi 936": "cp936",
    "936": "cp936",
    "65001": "utf-8",
}


@dataclass(frozen=True)
class ShapeIndex:
    """What a shapefile's index says, against the ``.shp`` as it is on disk."""

    records: int
    shp_bytes: int
    declared_bytes: int
    unreadable: tuple[int, ...]
    """Rows whose record lies (partly) past the end of the ``.shp``."""


def shape_index(shp: Path) -> ShapeIndex | None:
    """Read the ``.shx`` of a shapefile and find the rows the ``.shp`` cannot hold.

    Returns ``None`` when there is no ``.shx`` (GDAL then refuses the file).
    """
    shx = _sidecar(shp, ".shx")
    if shx is None or not shp.is_file():
        return None
    index = shx.read_bytes()
    size = shp.stat().st_size
    with shp.open("rb") as f:
        head = f.read(_HEADER)
    declared = struct.unpack(">i", head[24:28])[0] * 2 if len(head) >= 28 else 0
    n = max(0, (len(index) - _HEADER) // 8)
    unreadable = []
    for k in range(n):
        offset, length = struct.unpack(
            ">ii", index[_HEADER + 8 * k : _HEADER + 8 * k + 8]
        )
        if (offset + 4 + length) * 2 > size:
            unreadable.append(k)
    return ShapeIndex(n, size, declared, tuple(unreadable))


def _sidecar(shp: Path, ext: str) -> Path | None:
    for candidate in (shp.with_suffix(ext), shp.with_suffix(ext.upper())):
        if candidate.is_file():
            return candidate
    return None


def declared_encoding(shp: Path) -> tuple[str | None, str]:
    """Return the encoding a shapefile declares (``.cpg``, else the DBF's LDID) and where from."""
    cpg = _sidecar(shp, ".cpg")
    if cpg is not None:
        text = cpg.read_bytes().decode("ascii", "replace").strip().lower()
        name = _CPG_ALIASES.get(text, text)
        try:
            return codecs.lookup(name).name, f".cpg ({text})"
        except LookupError:
            return None, f".cpg ({text}, unknown)"
    dbf = _sidecar(shp, ".dbf")
    if dbf is not None:
        with dbf.open("rb") as f:
            head = f.read(32)
        if len(head) >= 30 and head[29] in _LDID:
            return codecs.lookup(
                _LDID[head[29]]
            ).name, f"DBF language id 0x{head[29]:02X}"
    return None, "nothing"


def dbf_text(shp: Path, *, limit: int = 200_000) -> dict[str, list[tuple[int, bytes]]]:
    """Return the raw bytes of every distinct non-ASCII text value of the ``.dbf``, by field.

    Each value comes once, with the row where it first appears, in the order of
    those rows: a value that does not decode is reported at its first row, as a
    check of every row would. At most ``limit`` records are read; field names
    with non-ASCII bytes are included under the key ``""`` (row -1).
    """
    dbf = _sidecar(shp, ".dbf")
    out: dict[str, list[tuple[int, bytes]]] = {}
    if dbf is None:
        return out
    data = dbf.read_bytes()
    if len(data) < 32:
        return out
    n_records, header_len, record_len = struct.unpack("<IHH", data[4:12])
    fields = []
    pos, start = 32, 1
    while pos + 32 <= header_len and data[pos] != 0x0D:
        raw_name = data[pos : pos + 11].split(b"\x00", 1)[0]
        kind, width = chr(data[pos + 11]), data[pos + 16]
        if any(b > 127 for b in raw_name):
            out.setdefault("", []).append((-1, raw_name))
        if kind in "CM":
            fields.append((raw_name.decode("latin-1"), start, width))
        start += width
        pos += 32
    n = min(n_records, limit, max(0, (len(data) - header_len) // max(record_len, 1)))
    if not n or not fields:
        return out
    records = np.frombuffer(
        data, dtype=np.uint8, count=n * record_len, offset=header_len
    )
    records = records.reshape(n, record_len)
    live = records[:, 0] != ord("*")
    for name, begin, width in fields:
        block = records[:, begin : begin + width]
        rows = np.flatnonzero(
            live & (block >= 128).any(axis=1)
        )  # only text that is not ASCII
        if not len(rows):
            continue
        # a class name repeats over thousands of rows: judge each value once
        values = np.ascontiguousarray(block[rows])
        _, first = np.unique(
            values.view(np.dtype((np.void, width))).ravel(), return_index=True
        )
        out[name] = [
            (int(rows[k]), values[k].tobytes().rstrip(b" \x00"))
            for k in np.sort(first).tolist()
        ]
    return out


def _decodes(
    values: list[tuple[int, bytes]], encoding: str
) -> tuple[int, bytes] | None:
    """Return the first (row, bytes) that does not decode strictly, or ``None``."""
    for row, value in values:
        try:
            value.decode(encoding)
        except UnicodeDecodeError:
            return row, value
    return None


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)


def reads_as(values: list[bytes]) -> tuple[str, str] | None:
    """Return the encoding (UTF-8, then GB18030) that decodes every value to Chinese text, and a sample."""
    for encoding, label in (("utf-8", "UTF-8"), ("gb18030", "GBK/GB18030")):
        try:
            decoded = [v.decode(encoding) for v in values]
        except UnicodeDecodeError:
            continue
        sample = next((d for d in decoded if _has_cjk(d)), None)
        if sample is not None:
            return label, sample
    return None


@dataclass(frozen=True)
class EncodingVerdict:
    """How to decode a shapefile's text, or why it cannot be trusted."""

    encoding: str | None
    note: str | None = None
    problem: str | None = None
    field: str | None = None
    row: int | None = None


def judge_encoding(
    shp: Path, given: str | None, *, layer: str = "the layer"
) -> EncodingVerdict:
    """Decide how to decode a shapefile's text from its raw bytes.

    * ``given`` (the manifest's ``encoding``) must decode every value strictly.
    * A declared encoding (``.cpg`` or LDID) must decode every value strictly,
      and a single-byte one (ISO-8859-1, CP1252) must not be hiding Chinese text
      that reads cleanly as UTF-8 or GBK; a GBK one must not be hiding UTF-8.
    * With nothing declared, UTF-8, then GBK/GB18030 is detected (with a note);
      anything else is a problem.
    """
    text = dbf_text(shp)
    values = [v for vs in text.values() for _, v in vs]
    if not values:
        return EncodingVerdict(given or None)
    if given is not None:
        name = codecs.lookup(given).name
        bad = _first_bad(text, name)
        if bad is not None:
            return EncodingVerdict(
                None, problem=f"the text is not {given}", field=bad[0], row=bad[1]
            )
        return EncodingVerdict(given)
    declared, origin = declared_encoding(shp)
    if declared is not None:
        bad = _first_bad(text, declared)
        found = reads_as(values)
        if bad is not None:
            why = f"; it reads as {found[0]} ({found[1]!r})" if found else ""
            return EncodingVerdict(
                None,
                problem=f"the {origin} declares {declared} but the text is not {declared}{why}",
                field=bad[0],
                row=bad[1],
            )
        single = declared in _SINGLE_BYTE or declared.startswith(("iso8859", "cp125"))
        if found is not None and (
            (single and found[0] != declared)
            or (declared in _CJK and found[0] == "UTF-8")
        ):
            return EncodingVerdict(
                None,
                problem=f"the {origin} declares {declared} but the text reads as {found[0]} ({found[1]!r})",
                field=next(iter(text)),
            )
        return EncodingVerdict(declared)
    found = reads_as(values)
    if found is None:
        return EncodingVerdict(
            None,
            problem="the text is neither UTF-8 nor GBK and declares no encoding (no .cpg)",
            field=next(iter(text)),
        )
    encoding = "utf-8" if found[0] == "UTF-8" else "gb18030"
    hint = "UTF-8" if encoding == "utf-8" else "GBK"
    return EncodingVerdict(
        encoding,
        note=f"text has no declared encoding (no .cpg); detected {found[0]} and decoded it. "
        f'Add encoding = "{hint}" to {layer} to make it explicit',
    )


def _first_bad(
    text: dict[str, list[tuple[int, bytes]]], encoding: str
) -> tuple[str, int] | None:
    for field, values in text.items():
        bad = _decodes(values, encoding)
        if bad is not None:
            return field, bad[0]
    return None
