"""Disk I/O: reading layer sources (vector and raster) and writers of output files.

Readers return data in the source CRS, untouched; :mod:`multiplan.layers`
prepares it. Writers are functions that write one file to the path they are
given: :mod:`multiplan.outputs` calls them inside a staging folder and swaps the
whole set into place.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from pyproj import CRS

from multiplan.errors import LayerError

if TYPE_CHECKING:
    from multiplan.specs import LayerSpec

logger = logging.getLogger(__name__)

Writer = Callable[[Path], None]
"""Writes one output file to the path it is given."""
GPKG_TIMESTAMP = "2000-01-01T00:00:00.000Z"


@dataclass(frozen=True)
class VectorSource:
    """A vector layer as read, in its source CRS."""

    frame: gpd.GeoDataFrame
    crs: CRS | None
    driver: str
    encoding: str | None
    encoding_note: str | None
    layer_name: str


def _gdal_path(spec: LayerSpec) -> str:
    src = spec.source
    if src.startswith(("postgresql://", "postgres://")):
        return "PG:" + src
    return src


def _open_error(spec: LayerSpec, exc: Exception) -> LayerError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return LayerError(
        f"GDAL cannot open the source ({text})",
        path=spec.source,
        layer=spec.name,
        key=f"layers.{spec.name}.path",
        hint="Check that the file is complete (a shapefile needs its .shp, .shx and .dbf) and in a format GDAL reads",
    )


def read_vector(spec: LayerSpec) -> VectorSource:
    """Read a vector layer's features and attributes as the source holds them.

    Text of a shapefile with no declared encoding (no ``.cpg``, no LDID) is
    checked: UTF-8 or GBK/GB18030 text is detected and decoded (with a note),
    anything else stops with a message asking for ``encoding``.

    Raises
    ------
    LayerError
        When the source cannot be opened, the layer is ambiguous or missing, a
        named field does not exist, or the text encoding cannot be told.
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
    try:
        info = pyogrio.read_info(path, layer=layer_name, encoding=spec.encoding)
        frame = pyogrio.read_dataframe(path, layer=layer_name, encoding=spec.encoding)
    except Exception as exc:
        raise _open_error(spec, exc) from exc
    if not isinstance(frame, gpd.GeoDataFrame):
        raise LayerError(
            "the source has no geometry column",
            path=spec.source,
            layer=spec.name,
            hint="multiplan needs a spatial layer; for a plain table use [yield] table",
        )
    driver = str(info.get("driver") or "")
    encoding = spec.encoding or info.get("encoding")
    note = None
    if (
        spec.encoding is None
        and driver == "ESRI Shapefile"
        and str(encoding).upper() in ("ISO-8859-1", "LATIN1")
    ):
        frame, encoding, note = _detect_text_encoding(frame, spec)
    crs = CRS.from_user_input(frame.crs) if frame.crs is not None else None
    return VectorSource(frame, crs, driver, encoding, note, layer_name)


def _detect_text_encoding(
    frame: gpd.GeoDataFrame, spec: LayerSpec
) -> tuple[gpd.GeoDataFrame, str, str | None]:
    """Re-decode undeclared shapefile text that GDAL read as ISO-8859-1."""
    text_cols = [
        c for c in frame.columns if c != frame.geometry.name and _is_text(frame[c])
    ]
    raw: list[bytes] = []
    for c in text_cols:
        raw.extend(
            s.encode("latin-1")
            for s in frame[c].dropna()
            if any(ord(ch) > 127 for ch in s)
        )
    raw.extend(
        c.encode("latin-1")
        for c in frame.columns
        if any(ord(ch) > 127 for ch in str(c))
    )
    if not raw:
        return frame, "ASCII", None
    for candidate, label in (("utf-8", "UTF-8"), ("gb18030", "GBK/GB18030")):
        try:
            for b in raw:
                b.decode(candidate)
        except UnicodeDecodeError:
            continue
        out = frame.copy()
        for c in text_cols:
            out[c] = out[c].map(
                lambda s, enc=candidate: (
                    s.encode("latin-1").decode(enc) if isinstance(s, str) else s
                )
            )
        out.columns = [
            c.encode("latin-1").decode(candidate)
            if any(ord(ch) > 127 for ch in str(c))
            else c
            for c in out.columns
        ]
        out = out.set_geometry(frame.geometry.name)
        note = (
            f"text has no declared encoding (no .cpg); detected {label} and decoded it. "
            f'Add encoding = "{"UTF-8" if candidate == "utf-8" else "GBK"}" to layers.{spec.name} to make it explicit'
        )
        logger.warning("layer %s: %s", spec.name, note)
        return out, candidate, note
    raise LayerError(
        "the shapefile's text is neither UTF-8 nor GBK and declares no encoding (no .cpg)",
        path=spec.source,
        layer=spec.name,
        key=f"layers.{spec.name}.encoding",
        hint='Set encoding = "..." for the layer (e.g. "GB18030", "BIG5", "CP1252"), or ship a .cpg file',
    )


def _is_text(col: pd.Series) -> bool:
    return bool(pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col))


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


# --------------------------------------------------------------------------
# Atomic writers
# --------------------------------------------------------------------------


def gpkg_writer(frame: gpd.GeoDataFrame, *, layer: str) -> Writer:
    """Return a function that writes ``frame`` as a GeoPackage layer to a path."""

    def write(path: Path) -> None:
        # GeoPackages record a last_change time; pin it so that the same inputs give
        # byte-identical files (the run's own time is in run.json)
        old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
        try:
            pyogrio.write_dataframe(frame, path, layer=layer, driver="GPKG")
        finally:
            pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})

    return write


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """Return a table as UTF-8 CSV bytes with a BOM, CRLF line ends (as Excel writes)."""
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
