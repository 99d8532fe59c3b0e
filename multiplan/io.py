"""Disk I/O: reading layer sources (vector and raster) and writers of output files.

Readers return data in the source CRS, untouched; :mod:`multiplan.layers`
prepares it. Writers are functions that write one file to the path they are
given: :mod:`multiplan.outputs` calls them inside a staging folder and swaps the
whole set into place.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from pyproj import CRS

from multiplan.crs import window
from multiplan.errors import LayerError
from multiplan.gpkgproc import GPKG_TIMESTAMP
from multiplan.shapefiles import judge_encoding, shape_index
from multiplan.styles import add_styles

if TYPE_CHECKING:
    from multiplan.specs import LayerSpec, RasterClass
    from multiplan.styles import LayerStyle

logger = logging.getLogger(__name__)

Writer = Callable[[Path], None]
"""Writes one output file to the path it is given."""


@dataclass(frozen=True)
class VectorSource:
    """A vector layer as read, in its source CRS, with what GDAL said while reading it."""

    frame: gpd.GeoDataFrame
    crs: CRS | None
    driver: str
    encoding: str | None
    encoding_note: str | None
    layer_name: str
    warnings: tuple[str, ...] = ()
    filtered_at_source: int = 0
    """Rows the source's own filter (SQL) left out."""
    feature_ids: np.ndarray | None = None
    """Ids of the rows read when the layer names no id field (a table's primary key)."""
    digest: str | None = None
    """SHA-256 of the geometries read, for a source that is no file."""


def _gdal_path(spec: LayerSpec) -> str:
    src = spec.source
    if src.startswith(("postgresql://", "postgres://")):
        return "PG:" + src
    return src


def _open_error(spec: LayerSpec, exc: BaseException) -> LayerError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return LayerError(
        f"GDAL cannot open the source ({text})",
        path=spec.source,
        layer=spec.name,
        key=f"layers.{spec.name}.path",
        hint="Check that the file is complete (a shapefile needs its .shp, .shx and .dbf) and in a format GDAL reads",
    )


def _local_shapefile(spec: LayerSpec) -> Path | None:
    """Return the ``.shp`` of a layer that is a plain shapefile on disk, else ``None``."""
    if not isinstance(spec.path, Path) or spec.path.suffix.lower() != ".shp":
        return None
    return spec.path if spec.path.is_file() else None


def check_shapefile(spec: LayerSpec) -> tuple[str | None, str | None]:
    """Check a shapefile's bytes before GDAL reads it; return the encoding to read it with and a note.

    Raises
    ------
    LayerError
        For a ``.shp`` that its index says is truncated (naming the rows that
        cannot be read), or text that its declared encoding does not decode
        cleanly (naming the field and the row).
    """
    shp = _local_shapefile(spec)
    if shp is None:
        return spec.encoding, None
    index = shape_index(shp)
    if index is not None and index.unreadable:
        rows = index.unreadable
        shown = ", ".join(str(r) for r in rows[:5]) + (" …" if len(rows) > 5 else "")
        raise LayerError(
            f"the .shp is truncated: it holds {index.shp_bytes:,} bytes where its index needs "
            f"{max(index.declared_bytes, index.shp_bytes + 1):,}, so {len(rows):,} of {index.records:,} rows "
            f"({len(rows) / max(index.records, 1):.0%}) have no readable geometry (rows {shown})",
            path=spec.source,
            layer=spec.name,
            feature=f"row {rows[0]}",
            hint="Copy the shapefile again from its source: the .shp, .shx and .dbf must be whole",
        )
    verdict = judge_encoding(shp, spec.encoding, layer=f"layers.{spec.name}")
    if verdict.problem is not None:
        where = ""
        if verdict.field:
            row = (
                f", row {verdict.row}"
                if verdict.row is not None and verdict.row >= 0
                else ""
            )
            where = f" (field {verdict.field}{row})"
        if "reads as UTF-8" in verdict.problem:
            hint = 'Set encoding = "UTF-8" for the layer, or fix the .cpg'
        elif "reads as GBK" in verdict.problem:
            hint = 'Set encoding = "GBK" for the layer, or fix the .cpg'
        else:
            hint = 'Set encoding = "..." for the layer (e.g. "GB18030", "BIG5", "CP1252"), or ship a .cpg file'
        raise LayerError(
            verdict.problem + where,
            path=spec.source,
            layer=spec.name,
            key=f"layers.{spec.name}.encoding",
            hint=hint,
        )
    if verdict.note is not None:
        logger.warning("layer %s: %s", spec.name, verdict.note)
    return verdict.encoding, verdict.note


def read_vector(
    spec: LayerSpec, *, bbox: tuple[float, float, float, float] | None = None
) -> VectorSource:
    """Read a vector layer's features and attributes as the source holds them.

    A shapefile is checked byte by byte first (:func:`check_shapefile`). Every
    warning GDAL gives while reading is kept (:attr:`VectorSource.warnings`) for
    ``multiplan layers`` and ``run.json``.

    Parameters
    ----------
    spec
        The layer as the manifest describes it.
    bbox
        Read only the features whose bounding boxes meet this box (in the source
        CRS); row numbers stay those of the whole source.

    Raises
    ------
    LayerError
        When the source cannot be opened or is damaged, the layer is ambiguous or
        missing, or the text encoding cannot be trusted.
    """
    path = _gdal_path(spec)
    try:
        layers = pyogrio.list_layers(path)
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise _open_error(spec, exc) from exc
    names = [str(n) for n in layers[:, 0]] if len(layers) else []
    if spec.layer is None:
        if len(names) > 1:
            raise LayerError(
                f"the source holds {len(names)} layers ({', '.join(names)}) and no layer is named",
                path=spec.source,
                layer=spec.name,
                key=f"layers.{spec.name}.layer",
                hint=f'Add layer = "{names[0]}" (or another of them)',
            )
        layer_name = names[0] if names else ""
    else:
        if spec.layer not in names:
            raise LayerError(
                f"no layer {spec.layer!r} in the source",
                path=spec.source,
                layer=spec.name,
                key=f"layers.{spec.name}.layer",
                hint=f"Valid layers are: {', '.join(names)}",
            )
        layer_name = spec.layer
    encoding, note = check_shapefile(spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            info = pyogrio.read_info(path, layer=layer_name, encoding=encoding)
            frame = pyogrio.read_dataframe(
                path,
                layer=layer_name,
                encoding=encoding,
                bbox=bbox,
                fid_as_index=bbox is not None,
            )
        except UnicodeDecodeError as exc:
            raise LayerError(
                f"the text cannot be decoded as {encoding or info_encoding(path, layer_name)} ({exc.reason} at byte {exc.start})",
                path=spec.source,
                layer=spec.name,
                key=f"layers.{spec.name}.encoding",
                hint='Set encoding = "GBK" (or the encoding the text is really in) for the layer',
            ) from exc
        except Exception as exc:
            raise _open_error(spec, exc) from exc
    said = tuple(
        dict.fromkeys(
            " ".join(str(w.message).split())
            for w in caught
            if "invalid value encountered"
            not in str(w.message)  # NaN: refused per feature
        )
    )
    for text in said:
        logger.warning("layer %s: GDAL: %s", spec.name, text)
    if not isinstance(frame, gpd.GeoDataFrame):
        raise LayerError(
            "the source has no geometry column",
            path=spec.source,
            layer=spec.name,
            hint="multiplan needs a spatial layer; for a plain table use [yield] table",
        )
    driver = str(info.get("driver") or "")
    if bbox is not None and driver not in _FILE_ORDER_FIDS:
        # a spatial index answers in its own order; the source's order is that of
        # its FIDs (a GeoJSON file's FIDs may be its features' "id" members, but
        # GDAL scans it in file order)
        frame = frame.sort_index(kind="stable")
    crs = CRS.from_user_input(frame.crs) if frame.crs is not None else None
    return VectorSource(
        frame, crs, driver, encoding or info.get("encoding"), note, layer_name, said
    )


_FILE_ORDER_FIDS = frozenset({"GeoJSON", "GeoJSONSeq", "ESRIJSON", "TopoJSON"})
"""Drivers whose features are read in file order, which their FIDs need not follow."""


def source_window(
    spec: LayerSpec, working: CRS, near: tuple[float, float, float, float]
) -> tuple[tuple[float, float, float, float] | None, np.ndarray | None]:
    """Return the box ``near`` in the source's CRS, and the source's (FID, row) pairs.

    ``(None, None)`` when the source's CRS is not declared, or the layer's
    transformation cannot be run backwards (read whole); the pairs are ``None``
    when the layer has an ``id_field``.
    """
    path = spec.source
    info = pyogrio.read_info(path, layer=spec.layer)
    if not info.get("crs"):
        return None, None
    src = CRS.from_user_input(info["crs"])
    box = window(
        near, working, src, pad=spec.buffer or 0.0, pipeline=spec.transformation
    )
    if box is None:
        return None, None
    rows = None
    if spec.id_field is None:  # ids are row numbers: map the FIDs of the window to rows
        fids = pyogrio.read_dataframe(
            path, layer=spec.layer, columns=[], read_geometry=False, fid_as_index=True
        ).index.to_numpy()
        rows = np.column_stack([fids, np.arange(len(fids))])
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
    return box, rows


def info_encoding(path: str, layer: str) -> str:
    """Return the encoding GDAL would read a layer's text with."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return str(pyogrio.read_info(path, layer=layer).get("encoding"))
        except Exception:
            return "its declared encoding"


# --------------------------------------------------------------------------
# Rasters
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RasterSource:
    """A raster band as read, in its source grid and CRS."""

    values: np.ma.MaskedArray
    transform: Any
    crs: CRS | None
    driver: str
    shape: tuple[int, int]
    res: tuple[float, float]
    bounds: tuple[float, float, float, float]
    nodata: float | None
    dtype: str


def read_raster(spec: LayerSpec) -> RasterSource:
    """Read one band of a raster layer as a masked array (nodata masked).

    Raises
    ------
    LayerError
        When rasterio cannot open it or the band does not exist.
    """
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(spec.source) as ds:
            if spec.band > ds.count:
                raise LayerError(
                    f"band {spec.band} does not exist; the raster has {ds.count}",
                    path=spec.source,
                    layer=spec.name,
                    key=f"layers.{spec.name}.band",
                )
            values = ds.read(spec.band, masked=True)
            crs = CRS.from_user_input(ds.crs.to_wkt()) if ds.crs else None
            return RasterSource(
                values=values,
                transform=ds.transform,
                crs=crs,
                driver=ds.driver,
                shape=(ds.height, ds.width),
                res=(abs(ds.res[0]), abs(ds.res[1])),
                bounds=tuple(ds.bounds),
                nodata=ds.nodata,
                dtype=str(ds.dtypes[spec.band - 1]),
            )
    except RasterioError as exc:
        raise LayerError(
            f"rasterio cannot open the raster ({exc})",
            path=spec.source,
            layer=spec.name,
            key=f"layers.{spec.name}.path",
        ) from exc


def classify_raster(
    src: RasterSource, classes: Sequence[RasterClass]
) -> tuple[np.ndarray, list[int]]:
    """Classify a raster band in its own grid and return the polygons of each class.

    Returns the polygons (in the raster's CRS) and, per polygon, the 1-based
    index of its class; the first class that holds a value wins, nodata is left out.
    """
    import rasterio.features
    import shapely.geometry

    values = np.ma.filled(src.values.astype("float64"), np.nan)
    index = np.zeros(values.shape, dtype=np.int32)
    for i, rc in enumerate(classes, start=1):
        if rc.value is not None:
            hit = values == rc.value
        else:
            hit = np.ones(values.shape, dtype=bool)
            if rc.from_value is not None:
                hit &= values >= rc.from_value
            if rc.below is not None:
                hit &= values < rc.below
        hit &= index == 0
        hit &= ~np.isnan(values)
        index[hit] = i
    polys, cls_idx = [], []
    for geom, val in rasterio.features.shapes(
        index, mask=index > 0, transform=src.transform, connectivity=4
    ):
        polys.append(shapely.geometry.shape(geom))
        cls_idx.append(int(val))
    return np.array(polys, dtype=object), cls_idx


# --------------------------------------------------------------------------
# Atomic writers
# --------------------------------------------------------------------------


_GPKG_TIME_LOCK = threading.RLock()


@contextlib.contextmanager
def pinned_gpkg_time() -> Iterator[None]:
    """Write GeoPackages with a pinned last-change time, one writer at a time.

    GeoPackages record a last_change time; pinning it makes the same inputs give
    byte-identical files (the run's own time is in run.json). GDAL's option is
    process-wide, so writers that pin it take turns: a check writes conflicts.gpkg
    ahead in a thread of its own (:class:`multiplan.writeahead.WriteAhead`).
    """
    with _GPKG_TIME_LOCK:
        old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
        try:
            yield
        finally:
            pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def gpkg_writer(
    frame: gpd.GeoDataFrame, *, layer: str, style: LayerStyle | None = None
) -> Writer:
    """Return a writer of ``frame`` as a GeoPackage layer (with a QGIS default style)."""

    def write(path: Path) -> None:
        with pinned_gpkg_time():
            # GDAL's Arrow path writes twice as fast (284 000 pieces: 1.4 s, not 2.7 s)
            pyogrio.write_dataframe(
                frame, path, layer=layer, driver="GPKG", use_arrow=True
            )
        if style is not None:
            add_styles(path, [(layer, frame.geometry.name, style)])

    return write


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet take a text cell for a formula (OWASP's list)."""


def spreadsheet_text(value: object) -> object:
    r"""Return text that a spreadsheet would take for a formula as text (a leading ``'``).

    Examples
    --------
    >>> spreadsheet_text("=1+2"), spreadsheet_text("西夏墅镇"), spreadsheet_text(-3)
    ("'=1+2", '西夏墅镇', -3)
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


FIGURE_DECIMALS = {"_m2": 2, "area_mu": 4, "_yuan": 2, "share": 6}
"""Decimals of figures in CSV files, by column-name ending: what a survey means (0.01 m², 0.0001 亩).

Indicators (``tax_per_mu``, 万元/亩) are not areas and are left as they are."""


def round_figures(frame: pd.DataFrame) -> pd.DataFrame:
    """Round area, value and share columns to :data:`FIGURE_DECIMALS` (integers stay integers).

    Examples
    --------
    >>> t = round_figures(pd.DataFrame({"area_m2": [261624.00000000003], "area_mu": [392.43600000001]}))
    >>> t.iloc[0].tolist()
    [261624.0, 392.436]
    """
    frame = frame.copy()
    for c in frame.columns:
        name = str(c)
        decimals = next(
            (d for end, d in FIGURE_DECIMALS.items() if name.endswith(end)), None
        )
        if decimals is None:
            continue
        col = frame[c]
        if pd.api.types.is_float_dtype(col):
            frame[c] = col.round(decimals)
        elif col.dtype == object:
            frame[c] = pd.Series(
                [round(v, decimals) if isinstance(v, float) else v for v in col],
                index=frame.index,
                dtype=object,
            )
    return frame


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """Return a table as UTF-8 CSV bytes with a BOM, CRLF line ends (as Excel writes).

    Figures are rounded to what a survey means (:func:`round_figures`). Text that
    a spreadsheet would take for a formula is written with a leading ``'``
    (:func:`spreadsheet_text`); numbers are written as numbers.
    """
    frame = round_figures(frame)
    for c in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            # element by element, as objects: integers in an object column stay integers
            frame[c] = pd.Series(
                [spreadsheet_text(v) for v in frame[c]], index=frame.index, dtype=object
            )
    buf = _io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def json_bytes(obj: Any) -> bytes:
    """Return ``obj`` as indented UTF-8 JSON bytes."""
    return (
        json.dumps(obj, ensure_ascii=False, indent=2, default=_json_default) + "\n"
    ).encode("utf-8")


def bytes_writer(data: bytes) -> Writer:
    """Return a writer of ``data``."""

    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def csv_writer(frame: pd.DataFrame) -> Writer:
    """Return a writer of a table as UTF-8 CSV with a BOM (see :func:`csv_bytes`)."""
    return bytes_writer(csv_bytes(frame))


def json_writer(obj: Any) -> Writer:
    """Return a writer of ``obj`` as indented UTF-8 JSON."""
    return bytes_writer(json_bytes(obj))


def _json_default(o: object) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Sequence):
        return list(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
