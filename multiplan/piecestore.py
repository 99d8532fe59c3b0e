"""The geometries of a check's pieces, in memory or staged on disk tile by tile (SPEC §12).

A check over many tiles does not keep its pieces' geometries: each tile's are
written as WKB to an Arrow IPC file in a temporary folder (:class:`PieceStore`)
and read back in SPEC §6's order, a batch at a time, when conflicts.gpkg is
written (:func:`write_pieces_gpkg`). Their attributes stay in memory (about a
hundred bytes a piece). A check of one tile keeps them in memory
(:class:`MemoryGeometries`); both are written by the same function, so that the
GeoPackage is the same file whatever the tiling.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import shapely

from multiplan.errors import OutputError
from multiplan.memory import release
from multiplan.scratch import owned_folder

if TYPE_CHECKING:
    from collections.abc import Iterator

    import geopandas as gpd
    import pandas as pd
    import pyarrow as pa
    from pyproj import CRS

    from multiplan.styles import LayerStyle

logger = logging.getLogger(__name__)

BATCH_ROWS = 8_192
"""Rows per Arrow batch written to the GeoPackage: the same for every tiling."""
STAGE_ROWS = 8_192
"""Rows per staged Arrow batch."""
_RELEASE_BATCHES = 16
"""Batches written between two hand-backs of freed pages (each about 5 ms in a big heap)."""
BUCKET_ROWS = 16_384
"""Rows of output order per bucket file once a store is sealed (more for huge stores)."""
MAX_BUCKETS = 256
"""At most this many bucket files (open at once while the store is reordered)."""


class Geometries(Protocol):
    """The geometries of a check's pieces, in SPEC §6's order."""

    def __len__(self) -> int:
        """Return the number of pieces."""
        ...

    def wkb(self, start: int, stop: int) -> np.ndarray:
        """Return the WKB of pieces ``start`` to ``stop`` (an object array of bytes)."""
        ...

    def types(self) -> list[str]:
        """Return the geometry types present (``Polygon``, ``MultiPolygon``, …), sorted."""
        ...

    def shapes(self) -> np.ndarray:
        """Return every geometry as a shapely object (all in memory)."""
        ...


class MemoryGeometries:
    """Geometries held in memory (a check of one tile)."""

    def __init__(self, geoms: np.ndarray) -> None:
        self.geoms = np.asarray(geoms, dtype=object)

    def __len__(self) -> int:
        """Return the number of pieces."""
        return len(self.geoms)

    def wkb(self, start: int, stop: int) -> np.ndarray:
        """Return the WKB of pieces ``start`` to ``stop``."""
        return np.asarray(shapely.to_wkb(self.geoms[start:stop]), dtype=object)

    def types(self) -> list[str]:
        """Return the geometry types present, sorted."""
        return _type_names(shapely.get_type_id(self.geoms))

    def shapes(self) -> np.ndarray:
        """Return the geometries."""
        return self.geoms


class PieceStore:
    """Geometries staged on disk: one Arrow IPC file of WKB per tile, read back in order.

    :meth:`add` takes a tile's geometries in the tile's own order; :meth:`seal`
    takes the order of the pieces of every tile together (positions into the
    tiles' pieces one after the other), after which the store reads as
    :class:`Geometries`. The folder is removed when the store is collected, or
    by :meth:`close`.

    Examples
    --------
    >>> store = PieceStore()
    >>> store.add(np.array([shapely.box(0, 0, 1, 1), shapely.box(0, 0, 2, 2)]))
    >>> store.add(np.array([shapely.box(0, 0, 3, 3)]))
    >>> store.seal(np.array([2, 0, 1]))
    >>> shapely.area(store.shapes()).tolist()
    [9.0, 1.0, 4.0]
    >>> store.close()
    """

    def __init__(self, *, bucket_rows: int = BUCKET_ROWS) -> None:
        try:
            self.folder, self._cleanup = owned_folder(self, "pieces")
        except OSError as exc:
            raise _staging_error(exc, Path(tempfile.gettempdir())) from exc
        self._files: list[Path] = []
        self._sizes: list[int] = []
        self._type_ids: set[int] = set()
        self._order: np.ndarray | None = None
        self._bucket_rows = bucket_rows
        self._buckets: list[Path] | None = None  # once reordered
        self._cached: tuple[int, np.ndarray] | None = None
        self._lock = threading.Lock()

    def add(self, geoms: np.ndarray) -> None:
        """Stage one tile's geometries (WKB, in batches of :data:`STAGE_ROWS`)."""
        import pyarrow as pa

        geoms = np.asarray(geoms, dtype=object)
        self._type_ids.update(np.unique(shapely.get_type_id(geoms)).tolist())
        path = self.folder / f"tile-{len(self._files):06d}.arrow"
        schema = pa.schema([("wkb", pa.binary())])
        try:
            with (
                pa.OSFile(str(path), "wb") as sink,
                pa.ipc.new_file(sink, schema) as out,
            ):
                for start in range(0, len(geoms), STAGE_ROWS):
                    part = shapely.to_wkb(geoms[start : start + STAGE_ROWS])
                    out.write_batch(
                        pa.record_batch(
                            [pa.array(part, type=pa.binary())], schema=schema
                        )
                    )
        except OSError as exc:
            raise _staging_error(exc, self.folder) from exc
        self._files.append(path)
        self._sizes.append(len(geoms))

    def seal(self, order: np.ndarray) -> None:
        """Fix the order the pieces are read in (positions into the staged pieces)."""
        order = np.asarray(order, dtype=np.int64)
        if len(order) != sum(self._sizes):
            raise ValueError(f"{len(order)} positions for {sum(self._sizes)} pieces")
        if self._buckets is not None:
            raise RuntimeError("the store has been read in its sealed order already")
        self._order = order

    def __len__(self) -> int:
        """Return the number of pieces staged."""
        return sum(self._sizes)

    def types(self) -> list[str]:
        """Return the geometry types present, sorted."""
        return _type_names(np.array(sorted(self._type_ids), dtype=int))

    def wkb(self, start: int, stop: int) -> np.ndarray:
        """Return the WKB of pieces ``start`` to ``stop`` in the sealed order.

        The first call reorders the staged pieces into bucket files of
        consecutive output positions (:meth:`_reorder`); a call then reads the
        one or two buckets that hold its pieces, whatever order the tiles and the
        sort left them in.
        """
        if self._order is None:
            raise RuntimeError("the store is not sealed")
        out = np.empty(max(stop - start, 0), dtype=object)
        with self._lock:
            if self._buckets is None:
                self._reorder()
            rows = self._rows()
            for k in range(start // rows, -(-stop // rows)):
                lo, hi = max(start, k * rows), min(stop, (k + 1) * rows)
                out[lo - start : hi - start] = self._bucket(k)[
                    lo - k * rows : hi - k * rows
                ]
        return out

    def _rows(self) -> int:
        """Return the output positions per bucket: :data:`BUCKET_ROWS`, more for huge stores."""
        return max(self._bucket_rows, -(-len(self) // MAX_BUCKETS), 1)

    def _reorder(self) -> None:
        """Read each staged batch once; write its pieces to the buckets of their output positions.

        Each tile's pieces are sorted, so the output order is the merge of the
        tiles: read straight from the tiles' files, each output batch would read
        a staged batch of every tile, a cost that grows with pieces × tiles. Here
        each piece is read twice and written once, whatever the order.
        """
        import pyarrow as pa

        assert self._order is not None
        rows = self._rows()
        position = np.empty(len(self), dtype=np.int64)
        position[self._order] = np.arange(len(self), dtype=np.int64)
        schema = pa.schema([("position", pa.int64()), ("wkb", pa.binary())])
        paths = [
            self.folder / f"bucket-{k:06d}.arrow" for k in range(-(-len(self) // rows))
        ]
        sinks: dict[int, Any] = {}
        writers: dict[int, Any] = {}
        try:
            first = 0
            for path, size in zip(self._files, self._sizes, strict=True):
                with pa.OSFile(str(path), "rb") as source:
                    reader = pa.ipc.open_file(source)
                    for b in range(reader.num_record_batches):
                        column = reader.get_batch(b).column(0)
                        here = position[first + b * STAGE_ROWS :][: len(column)]
                        bucket = here // rows
                        by = np.argsort(bucket, kind="stable")
                        keys, starts = np.unique(bucket[by], return_index=True)
                        for k, mine in zip(
                            keys.tolist(), np.split(by, starts[1:]), strict=True
                        ):
                            if k not in writers:
                                sinks[k] = pa.OSFile(str(paths[k]), "wb")
                                writers[k] = pa.ipc.new_file(sinks[k], schema)
                            writers[k].write_batch(
                                pa.record_batch(
                                    [pa.array(here[mine]), column.take(pa.array(mine))],
                                    schema=schema,
                                )
                            )
                        del column
                first += size
            for k in sorted(writers):
                writers.pop(k).close()
        except OSError as exc:
            raise _staging_error(exc, self.folder) from exc
        finally:
            for sink in sinks.values():
                sink.close()
        for path in self._files:
            path.unlink(missing_ok=True)
        self._files = []
        self._buckets = paths
        release()

    def _bucket(self, k: int) -> np.ndarray:
        """Return the WKB of bucket ``k`` in output order (the last one read is kept)."""
        import pyarrow as pa

        if self._cached is not None and self._cached[0] == k:
            return self._cached[1]
        assert self._buckets is not None
        self._cached = None  # the previous bucket's pieces go before these are read
        rows = self._rows()
        with pa.OSFile(str(self._buckets[k]), "rb") as source:
            table = pa.ipc.open_file(source).read_all()
        size = min(rows, len(self) - k * rows)
        data = np.empty(size, dtype=object)
        where = table.column("position").to_numpy() - k * rows
        data[where] = table.column("wkb").to_numpy(zero_copy_only=False)
        del table
        self._cached = (k, data)
        return data

    def shapes(self) -> np.ndarray:
        """Return every geometry as a shapely object, in the sealed order."""
        return np.asarray(shapely.from_wkb(self.wkb(0, len(self))), dtype=object)

    def close(self) -> None:
        """Remove the staged files."""
        self._cleanup()


_MULTI_ONE = b"\x01\x06\x00\x00\x00\x01\x00\x00\x00"
"""A little-endian WKB MultiPolygon header with one part: a polygon's WKB follows."""


def multi_wkb(wkb: np.ndarray) -> np.ndarray:
    """Return WKB with each polygon made a multipolygon of one part (others as they are).

    Examples
    --------
    >>> w = multi_wkb(np.array([shapely.box(0, 0, 1, 1).wkb], dtype=object))
    >>> shapely.from_wkb(w[0]).geom_type
    'MultiPolygon'
    """
    out = np.empty(len(wkb), dtype=object)
    for k, w in enumerate(wkb.tolist()):
        if w[:5] == b"\x01\x03\x00\x00\x00":
            out[k] = _MULTI_ONE + w
        elif w[:5] == b"\x00\x00\x00\x00\x03":  # big-endian: let GEOS do it
            out[k] = shapely.to_wkb(shapely.multipolygons([shapely.from_wkb(w)]))
        else:
            out[k] = w
    return out


def conflicts_layer(crs: CRS) -> dict[str, Any]:
    """Return how conflicts.gpkg is written: its layer, CRS and QGIS style."""
    from multiplan.styles import CONFLICT_STYLE

    return {"layer": "conflicts", "crs": crs, "style": CONFLICT_STYLE}


def _staging_error(exc: OSError, folder: Path) -> OutputError:
    """Return the error of a staging folder that cannot take the pieces (full, read-only, …)."""
    cause = os.strerror(exc.errno) if exc.errno else " ".join(str(exc).split())
    return OutputError(
        f"cannot stage the pieces of a tile in {folder}: {cause.lower()}",
        path=folder,
        hint="A check of many tiles keeps its pieces' geometries there until they are "
        "written (about the size of conflicts.gpkg): free some space, or set TMPDIR "
        "to a folder with room",
    )


def pieces_frame(
    attributes: pd.DataFrame, geometries: Geometries, crs: object
) -> gpd.GeoDataFrame:
    """Return the pieces as one GeoDataFrame: the attributes with every geometry read."""
    import geopandas as gpd

    return gpd.GeoDataFrame(
        attributes,
        geometry=gpd.array.from_shapely(geometries.shapes(), crs=crs),
        crs=crs,
    )


def cell_texts(values: pd.Series) -> list[str | None]:
    """Return a mixed-type column as text, ``None`` where a cell is empty.

    Empty is None, NaN, or pandas' NA and NaT (never the texts "<NA>" or "NaT").
    The GeoPackage and PostGIS writers write such columns this way, and the
    map's popups show them so.

    Examples
    --------
    >>> import pandas as pd
    >>> cell_texts(pd.Series([1, "P2", None, pd.NA, float("nan")], dtype=object))
    ['1', 'P2', None, None, None]
    """
    import pandas as pd

    return [
        None
        if v is None
        or v is pd.NA
        or v is pd.NaT
        or (isinstance(v, (float, np.floating)) and v != v)
        else str(v)
        for v in values
    ]


def _type_names(type_ids: np.ndarray) -> list[str]:
    names = {
        0: "Point",
        1: "LineString",
        3: "Polygon",
        4: "MultiPoint",
        5: "MultiLineString",
        6: "MultiPolygon",
        7: "GeometryCollection",
    }
    return sorted({names.get(int(t), "Unknown") for t in np.unique(type_ids)})


def _arrow_schema(attributes: pd.DataFrame) -> tuple[pa.Schema, list[str]]:
    """Return the Arrow schema of the attributes, and the columns written as text.

    Columns of mixed Python types (ids that are numbers in one layer and text in
    another) are written as text, as pyogrio does; empty ones as text too.
    """
    import pandas as pd
    import pyarrow as pa

    fields, as_text = [], []
    for name in attributes.columns:
        column = attributes[name]
        # texts and nulls alone: Arrow would infer a string, but its inference
        # takes about 0.06 s a million pieces a column, this scan 0.01 s
        if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) in (
            "string",
            "empty",
        ):
            fields.append(pa.field(name, pa.string()))
            continue
        try:
            typ = (
                pa.Schema.from_pandas(attributes[[name]], preserve_index=False)
                .field(name)
                .type
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            typ = pa.string()
            as_text.append(name)
        if pa.types.is_null(typ):
            typ = pa.string()
        fields.append(pa.field(name, typ))
    return pa.schema(fields), as_text


def write_pieces_gpkg(
    path: Path,
    attributes: pd.DataFrame,
    geometries: Geometries,
    *,
    layer: str,
    crs: CRS,
    style: LayerStyle | None = None,
    apart: Path | None = None,
) -> None:
    """Write the pieces as one GeoPackage layer, a batch at a time (in memory or staged).

    A layer with both polygons and multipolygons is written as MultiPolygon (a
    GeoPackage layer has one geometry type). The GeoPackage's last-change time
    is pinned, so that the same pieces give the same file. With ``apart`` (a
    log file), GDAL writes in a child process (:mod:`multiplan.gpkgproc`): the
    same file, without holding this process's global lock.
    """
    import pyarrow as pa
    import pyogrio

    from multiplan.gpkgproc import write_apart
    from multiplan.io import pinned_gpkg_time
    from multiplan.styles import add_styles

    schema, batches, geometry_type = _piece_batches(attributes, geometries)
    epsg = crs.to_epsg()
    options = {
        "layer": layer,
        "driver": "GPKG",
        "geometry_name": "geometry",
        "geometry_type": geometry_type,
        "crs": f"EPSG:{epsg}" if epsg else crs.to_wkt("WKT1_GDAL"),
    }
    if apart is not None:
        write_apart(path, schema, batches, options, log=apart)
    else:
        with pinned_gpkg_time():
            pyogrio.write_arrow(
                pa.RecordBatchReader.from_batches(schema, batches), path, **options
            )
    if style is not None:
        add_styles(path, [(layer, "geometry", style)])


def _piece_batches(
    attributes: pd.DataFrame, geometries: Geometries
) -> tuple[pa.Schema, Iterator[pa.RecordBatch], str]:
    """Return the pieces' Arrow schema, their record batches and their geometry type.

    Batches of :data:`BATCH_ROWS` rows, made as they are read: staged pieces
    are written in bounded memory.
    """
    import pyarrow as pa

    if len(attributes) != len(geometries):
        raise ValueError(f"{len(attributes)} rows for {len(geometries)} geometries")
    types = geometries.types() if len(geometries) else []
    promote = set(types) == {"Polygon", "MultiPolygon"}
    geometry_type = (
        "MultiPolygon" if promote else (types[0] if len(types) == 1 else "Unknown")
    )
    schema, as_text = _arrow_schema(attributes)
    full = schema.append(pa.field("geometry", pa.binary()))

    def batches() -> Iterator[pa.RecordBatch]:
        for k, start in enumerate(range(0, max(len(attributes), 1), BATCH_ROWS)):
            stop = min(start + BATCH_ROWS, len(attributes))
            part = attributes.iloc[start:stop]
            if as_text:
                part = part.copy()
            for name in as_text:
                part[name] = cell_texts(part[name])
            wkb = geometries.wkb(start, stop)
            if promote:
                wkb = multi_wkb(wkb)
            columns = [
                pa.array(part[f.name].to_numpy(), type=f.type, from_pandas=True)
                for f in schema
            ] + [pa.array(wkb, type=pa.binary())]
            yield pa.record_batch(columns, schema=full)
            del part, wkb, columns
            if k % _RELEASE_BATCHES == _RELEASE_BATCHES - 1:
                release()  # freed pages: staged pieces are written in bounded memory

    return full, batches(), geometry_type
