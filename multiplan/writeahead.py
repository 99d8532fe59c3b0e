"""conflicts.gpkg written ahead, in a thread, while a check summarises (SPEC §12).

A check knows its pieces before their summaries; :class:`WriteAhead` writes
them with :func:`~multiplan.piecestore.write_pieces_gpkg` meanwhile, and the
output step moves the finished file into place.
"""

from __future__ import annotations

import logging
import shutil
import threading
import weakref
from typing import TYPE_CHECKING, Any

from multiplan.piecestore import MemoryGeometries, write_pieces_gpkg
from multiplan.scratch import scratch_folder

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from pyproj import CRS

    from multiplan.piecestore import Geometries
    from multiplan.styles import LayerStyle

logger = logging.getLogger(__name__)


class _Cancelled(Exception):
    """Raised inside a write ahead whose result is no longer wanted."""


class _Cancellable:
    """Geometries that stop a write between two batches once ``stop`` is set."""

    def __init__(self, geometries: Geometries, stop: threading.Event) -> None:
        self.geometries = geometries
        self.stop = stop

    def __len__(self) -> int:
        return len(self.geometries)

    def wkb(self, start: int, stop: int) -> np.ndarray:
        if self.stop.is_set():
            raise _Cancelled
        return self.geometries.wkb(start, stop)

    def types(self) -> list[str]:
        return self.geometries.types()

    def shapes(self) -> np.ndarray:
        return self.geometries.shapes()


class WriteAhead:
    """conflicts.gpkg written ahead while the check summarises.

    A check knows its pieces before their summaries, and encoding the GeoPackage
    (about 2 s for 280 000 pieces, mostly in GDAL) and unioning clusters (in
    GEOS) each leave a core free. A thread makes the record batches; for pieces
    in memory it hands them to a child process that runs GDAL
    (:mod:`multiplan.gpkgproc`): GDAL's Arrow writer holds Python's lock a batch
    at a time, which in this process would stall the summaries' Python. The file
    is the same wherever it is written, so :meth:`place` moves the finished file
    to its place in the output folder (a copy across file systems). It writes
    the file there itself when the write ahead failed, was placed already, or
    the pieces changed since: a write ahead never decides what a planner gets,
    only how soon.

    The write ahead works on its own frame of the attributes (a pandas frame is
    not safe to share between threads): a shallow copy under pandas'
    copy-on-write (always on from pandas 3), which shares the data and copies
    it only before a change in place, so that :meth:`place` still sees any
    change; a deep copy otherwise. The shallow copy spares a big check a second
    copy of every piece's attributes (about 0.1 KB a piece). Its temporary
    folder goes, and an unfinished write stops at its next batch, when the
    object is collected or the process exits.

    Parameters
    ----------
    attributes, geometries
        The pieces, as :func:`write_pieces_gpkg` takes them.
    layer, crs, style
        As :func:`write_pieces_gpkg` takes them.
    """

    def __init__(
        self,
        attributes: pd.DataFrame,
        geometries: Geometries,
        *,
        layer: str,
        crs: CRS,
        style: LayerStyle | None = None,
    ) -> None:
        self.layer, self.crs, self.style = layer, crs, style
        self._attributes = attributes.copy(deep=not copy_on_write())
        self._geometries = (
            MemoryGeometries(geometries.geoms.copy())
            if isinstance(geometries, MemoryGeometries)
            else geometries
        )
        self._stop = threading.Event()
        self._failed: list[BaseException] = []
        try:
            self.folder: Path | None = scratch_folder("ahead")
        except OSError as exc:  # no room for it: conflicts.gpkg is written in place
            logger.debug("no write ahead of the pieces: %s", exc)
            self.folder = None
        self._path = None if self.folder is None else self.folder / "pieces.gpkg"
        # pieces in memory are written by a child process; staged ones in this
        # thread: read back from disk ahead of a child, they raised the peak
        # memory of 400 000 parcels by about 60 MB
        apart = None
        if self.folder is not None and isinstance(self._geometries, MemoryGeometries):
            apart = self.folder / "gpkgproc.log"
        # the thread holds the work, not this object: dropping it stops the write
        self._thread = threading.Thread(
            target=_write_ahead,
            args=(
                self._path,
                self._attributes,
                _Cancellable(self._geometries, self._stop),
                {"layer": layer, "crs": crs, "style": style, "apart": apart},
                self._failed,
            ),
            name="multiplan-write-ahead",
            daemon=True,
        )
        if self._path is not None:
            self._thread.start()
        self._cleanup = weakref.finalize(
            self, _end_ahead, self._thread, self._stop, self.folder
        )

    def place(
        self,
        path: Path,
        *,
        attributes: pd.DataFrame,
        geometries: Geometries,
        layer: str,
        crs: CRS,
        style: LayerStyle | None = None,
    ) -> None:
        """Put the GeoPackage of these pieces at ``path``: the file written ahead, or a new one.

        Takes what :func:`write_pieces_gpkg` takes, and writes with it unless the
        file written ahead holds just that.
        """
        if self._thread.is_alive():
            self._thread.join()
        ready = (
            self._path is not None
            and not self._failed
            and self._path.exists()
            and (layer, crs, style) == (self.layer, self.crs, self.style)
            and self._same(attributes, geometries)
        )
        if ready:
            assert self._path is not None
            try:
                shutil.move(self._path, path)
                return
            except OSError as exc:  # judged again by the write below
                logger.debug("the pieces written ahead could not be moved: %s", exc)
                path.unlink(missing_ok=True)
        elif self._failed:
            logger.debug("the write ahead of the pieces failed: %r", self._failed[0])
        write_pieces_gpkg(
            path, attributes, geometries, layer=layer, crs=crs, style=style
        )

    def _same(self, attributes: pd.DataFrame, geometries: Geometries) -> bool:
        """Return whether these are still the pieces written ahead."""
        if not same_frames(attributes, self._attributes):
            return False
        mine = self._geometries
        if isinstance(mine, MemoryGeometries) and isinstance(
            geometries, MemoryGeometries
        ):
            return len(mine.geoms) == len(geometries.geoms) and all(
                a is b for a, b in zip(mine.geoms, geometries.geoms, strict=True)
            )
        return mine is geometries

    def close(self) -> None:
        """Stop the write if it still runs and remove its folder."""
        self._cleanup()


def same_frames(left: pd.DataFrame, right: pd.DataFrame) -> bool:
    """Return ``left.equals(right)``, without comparing the columns that share their data.

    A column whose values are the same memory, read the same way, holds the same
    values: under copy-on-write a shallow copy shares every column until one is
    changed, and comparing a million pieces' texts cell by cell took 0.4 s.

    Examples
    --------
    >>> import pandas as pd
    >>> a = pd.DataFrame({"x": ["p", "q"], "y": [1.0, float("nan")]}, dtype=object)
    >>> same_frames(a, a.copy(deep=False)), same_frames(a, a.copy())
    (True, True)
    >>> b = a.copy()
    >>> b.loc[0, "x"] = "r"
    >>> same_frames(a, b)
    False
    """
    if (
        list(left.columns) != list(right.columns)
        or not left.index.equals(right.index)
        or not left.dtypes.equals(right.dtypes)
        or left.columns.has_duplicates
    ):
        return left.equals(right)
    for name in left.columns:
        if not _shared(left[name], right[name]) and not left[name].equals(right[name]):
            return False
    return True


def _shared(left: pd.Series, right: pd.Series) -> bool:
    """Return whether two columns are views of the same memory, read alike."""
    x, y = left.to_numpy(), right.to_numpy()  # views for numpy columns, no copies
    return bool(
        x.dtype == y.dtype
        and x.shape == y.shape
        and x.strides == y.strides
        and x.__array_interface__["data"][0] == y.__array_interface__["data"][0]
    )


def copy_on_write() -> bool:
    """Return whether pandas copies shared data before changing it in place.

    Always so from pandas 3; with pandas 2, when its ``mode.copy_on_write``
    option is set to ``True``.
    """
    import pandas as pd

    if int(pd.__version__.split(".", 1)[0]) >= 3:
        return True
    return bool(pd.get_option("mode.copy_on_write") is True)


def _write_ahead(
    path: Path,
    attributes: pd.DataFrame,
    geometries: Geometries,
    options: dict[str, Any],
    failed: list[BaseException],
) -> None:
    try:
        write_pieces_gpkg(path, attributes, geometries, **options)
    except BaseException as exc:  # judged in place(), never lost
        failed.append(exc)


def _end_ahead(
    thread: threading.Thread, stop: threading.Event, folder: Path | None
) -> None:
    stop.set()
    if thread.is_alive():
        thread.join()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
