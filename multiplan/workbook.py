"""Workbooks (.xlsx) written with XlsxWriter, in this process or in a process of their own.

A ledger of many pieces is slow to write (XlsxWriter takes about 8 µs a cell:
56 000 pieces, about 5 s) and holds Python's lock all the while. The check
therefore hands a large ledger's sheets, once they are made, to a child process
(``python -m multiplan.workbook``) that writes the workbook while the check
draws its map and writes its other files; the same sheets give the same bytes
either way (the creation time is fixed). If the child fails, the workbook is
written here, where any error is reported as usual.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

FIXED_TIME = dt.datetime(2000, 1, 1)
"""The creation time written into every workbook, so that the same figures give the same bytes."""
EXCEL_ROWS = 1_048_576
"""The rows an Excel worksheet holds (XlsxWriter leaves out, without a word, any beyond)."""
AHEAD_CELLS = 100_000
"""From this many cells (about 0.8 s of writing) a workbook is written by a child process."""
_CHILD_MODULE = "multiplan.workbook"
"""The module the child runs (``python -m``)."""
_CUT = -2
"""What XlsxWriter's ``write_string`` returns for a text it cut to 32 767 characters."""
_CHILD_CUT = 3
"""The child's exit code when a text was cut: the command then writes the workbook and says so."""


class Sheet:
    """One worksheet of a ledger: a header row, rows of values, and total rows."""

    def __init__(self, name: str, columns: Sequence[tuple[str, str]]) -> None:
        self.name = _sheet_name(name)
        self.columns = list(columns)  # (header text, kind)
        self.rows: list[list[Any]] = []
        self.totals: list[list[Any]] = []


def _sheet_name(name: str) -> str:
    r"""Return a valid Excel sheet name: no ``[]:*?/\\``, at most 31 characters."""
    return re.sub(r"[\[\]:*?/\\]", "_", name)[:31] or "sheet"


def _parts(sheet: Sheet) -> list[Sheet]:
    """Return a sheet cut into as many worksheets as its rows need, each with the header.

    The parts after the first are named ``NAME (2)``, ``NAME (3)``, …; the total
    rows go on the last.

    Examples
    --------
    >>> big = Sheet("图斑", [("编号", "text")])
    >>> big.rows = [[str(i)] for i in range(2 * EXCEL_ROWS)]
    >>> big.totals = [["合计"]]
    >>> [(p.name, len(p.rows), len(p.totals)) for p in _parts(big)]
    [('图斑', 1048574, 0), ('图斑 (2)', 1048574, 0), ('图斑 (3)', 4, 1)]
    """
    room = EXCEL_ROWS - 1 - len(sheet.totals)  # below the header, above the totals
    if len(sheet.rows) <= room:
        return [sheet]
    parts = []
    for k, start in enumerate(range(0, len(sheet.rows), room), start=1):
        part = Sheet(
            sheet.name if k == 1 else f"{sheet.name[:25]} ({k})", sheet.columns
        )
        part.rows = sheet.rows[start : start + room]
        parts.append(part)
    parts[-1].totals = sheet.totals
    return parts


def write_workbook(path: Path, sheets: Sequence[Sheet]) -> int:
    """Write sheets to an .xlsx file at ``path``; return how many texts were cut.

    A cell holds at most 32 767 characters (UTF-16 units): XlsxWriter cuts a
    longer text without a word, so the cut cells are counted here. A sheet of
    more rows than a worksheet holds goes on as many worksheets as it needs.
    """
    import xlsxwriter

    book = xlsxwriter.Workbook(
        str(path),
        {
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    book.set_properties({"created": FIXED_TIME, "author": "multiplan"})
    head = book.add_format(
        {
            "bold": True,
            "bg_color": "#EDEDED",
            "border": 1,
            "text_wrap": True,
            "valign": "top",
        }
    )
    fmt = {
        "m2": book.add_format({"num_format": "#,##0.00"}),
        "mu": book.add_format({"num_format": "#,##0.00"}),
        "yuan": book.add_format({"num_format": "#,##0.00"}),
        "share": book.add_format({"num_format": "0.00%"}),
        "int": book.add_format({"num_format": "#,##0"}),
        "text": None,
    }
    bold = {
        k: book.add_format(
            {"bold": True, **({"num_format": v.num_format} if v else {})}
        )
        for k, v in fmt.items()
    }
    used: set[str] = set()
    cut = 0
    for sheet in (part for whole in sheets for part in _parts(whole)):
        name = sheet.name
        n = 2
        while name in used:
            name = _sheet_name(f"{sheet.name[:28]}_{n}")
            n += 1
        used.add(name)
        ws = book.add_worksheet(name)
        for c, (title, kind) in enumerate(sheet.columns):
            ws.write_string(0, c, title, head)
            width = max(
                len(title.encode("gbk", "replace")) + 2, 12 if kind != "text" else 10
            )
            ws.set_column(c, c, min(width, 40), fmt[kind])
        r = 1
        for row in sheet.rows:
            cut += _write_row(ws, r, row, sheet.columns, fmt)
            r += 1
        last = r - 1
        for row in sheet.totals:
            cut += _write_row(ws, r, row, sheet.columns, bold)
            r += 1
        ws.freeze_panes(1, 0)
        ws.autofilter(0, 0, max(last, 0), max(len(sheet.columns) - 1, 0))
    book.close()
    return cut


def _write_row(
    ws: Any,
    r: int,
    row: Sequence[Any],
    columns: Sequence[tuple[str, str]],
    fmt: Mapping[str, Any],
) -> int:
    """Write one row; return how many of its texts were cut to a cell's limit."""
    cut = 0
    for c, ((_, kind), value) in enumerate(zip(columns, row, strict=True)):
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            ws.write_blank(r, c, None, fmt[kind])
        elif kind == "text":
            cut += ws.write_string(r, c, str(value), fmt[kind]) == _CUT
        else:
            ws.write_number(r, c, float(value), fmt[kind])
    return cut


def workbook_writer(
    sheets: Sequence[Sheet], *, ahead_cells: int = AHEAD_CELLS
) -> Callable[[Path], None]:
    """Return a writer of a workbook (for an output set).

    A workbook of at least ``ahead_cells`` cells starts being written at once,
    by a child process (:class:`WorkbookAhead`); the writer then waits for it
    and moves the file into place.
    """
    cells = sum((len(s.rows) + len(s.totals) + 1) * len(s.columns) for s in sheets)
    if cells >= ahead_cells:
        with contextlib.suppress(OSError):  # no child then: written here
            return WorkbookAhead(sheets).place

    def write(path: Path) -> None:
        _say_cut(path, write_workbook(path, sheets))

    return write


def _say_cut(path: Path, cut: int) -> None:
    if cut:
        logger.warning(
            "%s: cells whose text was cut to the 32 767 characters an Excel cell holds: %d",
            path.name,
            cut,
        )


class WorkbookAhead:
    """A workbook being written by a child process, until :meth:`place` puts it in place.

    The sheets go to the child as a pickle in a private temporary folder (0700,
    made here, read by the child alone), which is removed with this object.
    """

    def __init__(self, sheets: Sequence[Sheet]) -> None:
        self.sheets = list(sheets)
        self.folder = Path(tempfile.mkdtemp(prefix="multiplan-workbook-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._done = weakref.finalize(self, _discard, self.folder, None)
        try:
            with (self.folder / "sheets.pickle").open("wb") as f:
                pickle.dump(self.sheets, f, protocol=pickle.HIGHEST_PROTOCOL)
            with (self.folder / "log").open("wb") as log:
                self._proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        _CHILD_MODULE,
                        str(self.folder / "sheets.pickle"),
                        str(self.folder / "book.xlsx"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
        except OSError:
            self._done()
            raise
        self._done.detach()
        self._done = weakref.finalize(self, _discard, self.folder, self._proc)

    def place(self, path: Path) -> None:
        """Wait for the child and move its workbook to ``path``; write it here if the child failed."""
        try:
            assert self._proc is not None
            if self._proc.wait() == 0:
                shutil.move(self.folder / "book.xlsx", path)
                return
        finally:
            self._done()
        _say_cut(path, write_workbook(path, self.sheets))


def _discard(folder: Path, proc: subprocess.Popen[bytes] | None) -> None:
    """Stop the child if it still runs, and remove the temporary folder."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str]) -> int:
    """Write the sheets pickled at ``argv[0]`` (by :class:`WorkbookAhead`) as ``argv[1]``.

    Any warning fails the child, and a text cut to a cell's 32 767 characters
    ends it with exit 3 (its file is not used): the command then writes the
    workbook itself, where warnings are handled and cut texts reported as in
    any other write.
    """
    warnings.simplefilter("error")
    with Path(argv[0]).open("rb") as f:  # written by the parent, in its private folder
        sheets = pickle.load(f)
    return _CHILD_CUT if write_workbook(Path(argv[1]), sheets) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
