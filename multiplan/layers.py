"""Load a manifest's layers onto the working CRS and the common taxonomy.

The order is SPEC §3's: source CRS (declared, else the manifest's, else an
error), a check that the coordinates can belong to it, reprojection, Z/M dropped,
repair of invalid polygons in the working CRS, polygonal parts only, null and
empty geometries skipped (counted; row numbers are not reused), buffering, then
classification through the layer's crosswalk.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan import crs as crs_mod
from multiplan import geometry
from multiplan.classify import classify_codes, code_texts, load_crosswalk
from multiplan.errors import InputError, LayerError
from multiplan.filters import where_mask
from multiplan.io import (
    RasterSource,
    classify_raster,
    read_raster,
    read_vector,
    source_window,
)
from multiplan.overlay import BUFFER_QUAD_SEGS
from multiplan.progress import Progress, no_progress

if TYPE_CHECKING:
    from pyproj import CRS

    from multiplan.specs import LayerSpec, Project

logger = logging.getLogger(__name__)

CLASS_COL = "_class"
"""Column of a loaded layer holding the taxonomy code or zone tag (or None)."""
SOURCE_CODE_COL = "_source_code"
"""Column holding the source class code as text, before the crosswalk."""
GEOMETRY_TYPE_NAMES = {
    0: "Point",
    1: "LineString",
    2: "LinearRing",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}

Family = Literal["polygon", "line", "point", "raster"]


@dataclass(frozen=True)
class LayerStats:
    """What reading a layer found and did, for ``multiplan layers`` and run.json."""

    source: str
    driver: str
    encoding: str | None = None
    encoding_note: str | None = None
    source_crs: str | None = None
    crs_from: Literal["source", "manifest"] = "source"
    rows: int = 0
    features: int = 0
    filtered_out: int = 0
    null: int = 0
    empty: int = 0
    repaired: int = 0
    had_z: int = 0
    dropped_parts: int = 0
    cleaned_rings: int = 0
    geometry_types: Mapping[str, int] = field(default_factory=dict)
    unmapped: Mapping[str, int] = field(default_factory=dict)
    buffered: bool = False
    warnings: tuple[str, ...] = ()
    sha256: str | None = None
    """For a database table, the SHA-256 of the geometries read (files have theirs in ``inputs``)."""


@dataclass(frozen=True)
class Layer:
    """A loaded layer: features in the working CRS, indexed by feature id.

    For a raster used as values (no ``classes``), ``frame`` is empty and
    ``raster`` holds the band in its own grid.
    """

    spec: LayerSpec
    frame: gpd.GeoDataFrame
    family: Family
    stats: LayerStats
    raster: RasterSource | None = None

    @property
    def name(self) -> str:
        """Return the layer's manifest name."""
        return self.spec.name

    def __len__(self) -> int:
        return len(self.frame)


def public_fields(frame: pd.DataFrame) -> list[str]:
    """Return the attribute names of a layer that a user wrote (not ours, not the geometry).

    Examples
    --------
    >>> public_fields(pd.DataFrame({"DLBM": [], "_class": [], "geometry": []}))
    ['DLBM']
    """
    geom = getattr(frame, "_geometry_column_name", "geometry")
    return [str(c) for c in frame.columns if not str(c).startswith("_") and c != geom]


def _fail(
    spec: LayerSpec,
    message: str,
    *,
    key: str | None = None,
    feature: str | None = None,
    hint: str | None = None,
) -> LayerError:
    return LayerError(
        message, path=spec.source, layer=spec.name, key=key, feature=feature, hint=hint
    )


class Layers(Mapping[str, gpd.GeoDataFrame]):
    """Layers of a project: a read-only mapping of name → GeoDataFrame.

    Each frame is in the working CRS, indexed by feature id, with the taxonomy
    class in ``_class`` (and the source code in ``_source_code``). What reading
    found (repairs, skipped rows, the raster of a value layer) is kept beside
    the frame: :meth:`layer` returns it.
    """

    def __init__(self, layers: Mapping[str, Layer]) -> None:
        self._layers = dict(layers)

    def __getitem__(self, name: str) -> gpd.GeoDataFrame:
        return self._layers[name].frame

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {len(ly.frame)}" for n, ly in self._layers.items())
        return f"Layers({inner})"

    def layer(self, name: str) -> Layer:
        """Return the loaded layer: its spec, frame, geometry family, stats and raster."""
        return self._layers[name]

    def layers(self) -> dict[str, Layer]:
        """Return every loaded layer by name."""
        return dict(self._layers)

    def index(self, name: str) -> pd.Index:
        """Return a layer's feature ids (its frame's index), without its geometries."""
        index: pd.Index = self._layers[name].frame.index
        return index

    def stats(self, name: str) -> LayerStats:
        """Return what reading a layer found and did, without its geometries."""
        return self._layers[name].stats

    def with_layers(
        self, more: Mapping[str, Layer], first: Iterable[str] = ()
    ) -> Layers:
        """Return a new :class:`Layers` with ``more`` added (or replacing), ``first`` first."""
        merged = {**self._layers, **more}
        return Layers({n: merged[n] for n in dict.fromkeys([*first, *merged])})


LayerInput = Mapping[str, "gpd.GeoDataFrame | Layer"]
"""What a caller may pass as ``layers=``: frames (prepared or not) or loaded layers."""


def read_layers(
    project: Project,
    names: Iterable[str] | None = None,
    *,
    progress: Progress = no_progress,
) -> Layers:
    """Read layers of a project (all of them by default) onto the working CRS and taxonomy.

    Parameters
    ----------
    project
        A manifest from :func:`multiplan.read_project`.
    names
        The layers to read, in this order; default every layer of the manifest.
    progress
        Called as ``progress("reading", done, total, name)`` as each layer starts.

    Returns
    -------
    Layers
        A mapping of name → GeoDataFrame (working CRS, indexed by feature id,
        ``_class`` holding the taxonomy code or zone tag).

    Raises
    ------
    LayerError
        On anything the user must fix in a layer (see :func:`read_layer`).

    Examples
    --------
    >>> from multiplan import read_project
    >>> layers = read_layers(read_project("layers/xinbei/project.toml"), ["eco_redline"])
    >>> frame = layers["eco_redline"]
    >>> frame.crs.to_epsg(), frame.index[0], frame["_class"].iloc[0]
    (4549, '320411-ST-01', 'eco_redline')
    """
    wanted = list(project.layers) if names is None else list(dict.fromkeys(names))
    out = {}
    for i, name in enumerate(wanted):
        progress("reading", i, len(wanted), name)
        out[name] = read_layer(project.layers[name], project)
    return Layers(out)


def ensure_layers(
    project: Project,
    names: Iterable[str],
    given: LayerInput | None = None,
    *,
    progress: Progress = no_progress,
    near: tuple[float, float, float, float] | None = None,
) -> Layers:
    """Return the named layers: taken from ``given`` where there, read from their sources otherwise.

    With ``near`` (a box in the working CRS) only the features near it are read
    (see :func:`read_layer`).

    A GeoDataFrame in ``given`` that :func:`read_layers` did not make (say, one a
    planner edited in a notebook) goes through the same preparation as a file:
    CRS, repair, filter, buffer and classification by the layer's manifest entry.

    Raises
    ------
    InputError
        For a name the manifest does not declare, or bad data in a layer.
    """
    names = list(dict.fromkeys(names))
    given = given or {}
    for name in given:
        if name not in project.layers:
            raise InputError(
                f"names no layer of the project: {name!r}",
                path=project.path,
                key="layers",
                hint=f"Valid layers are: {', '.join(project.layers)}",
            )
    out: dict[str, Layer] = {}
    todo = [n for n in names if n not in given]
    for name in names:
        if isinstance(given, Layers) and name in given:
            out[name] = given.layer(name)
        elif name in given:
            out[name] = as_layer(given[name], project.layers[name], project)
    for i, name in enumerate(todo):
        progress("reading", i, len(todo), name)
        out[name] = read_layer(project.layers[name], project, near=near)
    if isinstance(given, Layers):  # layers let go of (a tiled check's) stay so
        return given.with_layers(out, first=names)
    return Layers({n: out[n] for n in dict.fromkeys([*names, *out])})


def as_layer(
    value: gpd.GeoDataFrame | Layer, spec: LayerSpec, project: Project
) -> Layer:
    """Return a loaded layer for a value a caller passed: a Layer, or any GeoDataFrame.

    Raises
    ------
    LayerError
        When a frame has no CRS, or its data fails the layer's preparation.
    """
    if isinstance(value, Layer):
        return value
    if not isinstance(value, gpd.GeoDataFrame):
        raise LayerError(
            f"must be a GeoDataFrame, not {type(value).__name__}",
            layer=spec.name,
            key=f"layers.{spec.name}",
        )
    if _is_prepared(value, project):
        geoms = np.asarray(value.geometry.array, dtype=object)
        return Layer(
            spec=spec,
            frame=value,
            family=geometry.layer_family(geoms),  # type: ignore[arg-type]
            stats=LayerStats(
                source="<frame>",
                driver="GeoDataFrame",
                rows=len(value),
                features=len(value),
            ),
        )
    declared = crs_mod.parse_crs(value.crs.to_wkt()) if value.crs is not None else None
    return _prepare_vector(value, declared, spec, project, driver="GeoDataFrame")


def _is_prepared(frame: gpd.GeoDataFrame, project: Project) -> bool:
    return (
        CLASS_COL in frame.columns
        and frame.crs is not None
        and crs_mod.parse_crs(frame.crs.to_wkt()) == project.working_crs
        and frame.index.dtype == object
    )


def unit_names(project: Project, layers: Layers, name: str | None = None) -> np.ndarray:
    """Return the names of a units layer's features (the smallest level by default), checked.

    Raises
    ------
    LayerError
        For a unit with no name, or two features with one name (a piece split
        at both would give two rows for one unit): naming them.
    """
    name = name or project.unit_layer
    assert name is not None
    frame = layers[name]
    if project.unit_name_field not in frame.columns:
        raise LayerError(
            f"the units layer has no field {project.unit_name_field!r}",
            path=project.path,
            key="project.unit_name_field",
            layer=name,
            hint=f"Fields are: {', '.join(public_fields(frame))}",
        )
    raw = frame[project.unit_name_field].to_numpy(dtype=object)
    names = np.array(
        [None if pd.isna(v) or not str(v).strip() else str(v).strip() for v in raw],
        dtype=object,
    )
    ids = np.asarray(frame.index, dtype=object)
    missing = np.flatnonzero([n is None for n in names])
    if len(missing):
        raise LayerError(
            f"{len(missing)} units have no name in {project.unit_name_field!r}",
            path=layers.layer(name).spec.source,
            layer=name,
            feature=", ".join(str(i) for i in ids[missing[:5]]),
            hint="Give every unit a name: pieces and tables are keyed by it",
        )
    counts = Counter(names.tolist())
    dups = sorted(k for k, v in counts.items() if v > 1)
    if dups:
        first = dups[0]
        raise LayerError(
            f"{len(dups)} unit names are used by more than one feature ({', '.join(dups[:5])}); "
            f"{first!r} by {', '.join(str(i) for i in ids[names == first])}",
            path=layers.layer(name).spec.source,
            layer=name,
            key="project.unit_name_field",
            hint="Dissolve the features of one unit (an exclave, 飞地) into one, or give each unit its own name",
        )
    return names


def read_layer(
    spec: LayerSpec,
    project: Project,
    *,
    near: tuple[float, float, float, float] | None = None,
) -> Layer:
    """Read one layer and bring it onto the working CRS and the taxonomy.

    Parameters
    ----------
    spec, project
        The layer as the manifest describes it, and the project.
    near
        Read only the features whose bounding boxes meet this box (in the working
        CRS), through the source's spatial index where it has one; feature ids
        stay those of the whole layer (row numbers are the rows of the whole
        source). A layer buffered by ``width_field`` is read whole, since a
        feature far away may reach in.

    Raises
    ------
    LayerError
        On anything the user must fix: an unreadable source, a missing field, a
        missing or impossible CRS, an old datum without a transformation,
        duplicate ids, a missing buffer width.
    """
    if spec.kind == "raster":
        return _load_raster(spec, project.working_crs)
    if near is not None and spec.width_field is not None:
        near = None  # a feature far away may reach in
    bbox = rows = None
    if spec.is_database:
        from multiplan.postgis import read_table

        src = read_table(
            spec, near=near, working=project.working_crs, pad=spec.buffer or 0.0
        )
        rows = src.feature_ids
    else:
        if near is not None:
            bbox, rows = source_window(spec, project.working_crs, near)
        src = read_vector(spec, bbox=bbox)
        if rows is not None:
            rows = rows[np.searchsorted(rows[:, 0], src.frame.index.to_numpy()), 1]
    return _prepare_vector(
        src.frame.reset_index(drop=True),
        src.crs,
        spec,
        project,
        driver=src.driver,
        encoding=src.encoding,
        encoding_note=src.encoding_note,
        said=src.warnings,
        row_numbers=rows,
        filtered_at_source=src.filtered_at_source,
        digest=src.digest,
    )


def _prepare_vector(
    frame: gpd.GeoDataFrame,
    declared: CRS | None,
    spec: LayerSpec,
    project: Project,
    *,
    driver: str,
    encoding: str | None = None,
    encoding_note: str | None = None,
    said: tuple[str, ...] = (),
    row_numbers: np.ndarray | None = None,
    filtered_at_source: int = 0,
    digest: str | None = None,
) -> Layer:
    """Prepare a frame as SPEC §3 orders: ids, filter, CRS, Z/M, repair, buffer, classes."""
    working = project.working_crs
    geom_name = frame.geometry.name
    columns = [c for c in frame.columns if c != geom_name]
    for key, fld in (
        ("class_field", spec.class_field),
        ("id_field", spec.id_field),
        ("width_field", spec.width_field),
    ):
        if fld is not None and fld not in columns:
            raise _fail(
                spec,
                f"no field {fld!r} in the source",
                key=f"layers.{spec.name}.{key}",
                hint=f"Fields are: {', '.join(map(str, columns)) or 'none'}",
            )
    for fld in spec.where.fields:
        if fld not in columns:
            raise _fail(
                spec,
                f"the filter reads a field {fld!r} that the source does not have",
                key=f"layers.{spec.name}.where",
                hint=f"Fields are: {', '.join(map(str, columns))}",
            )
    rows = len(frame)
    ids = _feature_ids(spec, frame, row_numbers)
    geoms = np.asarray(frame.geometry.array, dtype=object)
    null = shapely.is_missing(geoms)
    empty = ~null & shapely.is_empty(geoms)
    type_ids, counts = np.unique(
        shapely.get_type_id(geoms[~null & ~empty]), return_counts=True
    )
    geometry_types = {
        GEOMETRY_TYPE_NAMES.get(int(k), str(k)): int(v)
        for k, v in sorted(zip(type_ids.astype(str), counts, strict=True))
    }
    keep = ~null & ~empty
    bad = np.flatnonzero(keep & geometry.non_finite(geoms))
    if len(bad):
        raise _fail(
            spec,
            f"{len(bad)} features have a coordinate that is not a number (NaN or infinite)"
            + (
                f"; also {', '.join(str(i) for i in ids[bad[1:4]])}"
                if len(bad) > 1
                else ""
            ),
            feature=str(ids[bad[0]]),
            hint="Fix or remove those features in the source: a point that is not a number cannot be placed",
        )
    filtered_out = 0
    if spec.where.conditions:
        match = where_mask(
            frame, spec.where, path=spec.source, key=f"layers.{spec.name}.where"
        )
        filtered_out = int(np.count_nonzero(keep & ~match))
        keep &= match
    filtered_out += filtered_at_source
    src_crs, origin = crs_mod.source_crs(spec, declared)
    live = geoms[keep]
    bounds = tuple(shapely.total_bounds(live)) if len(live) else None
    crs_mod.check_source_crs(spec, src_crs, bounds, origin, crs_mod.sample_points(live))

    attrs = pd.DataFrame(frame.drop(columns=geom_name)).loc[keep].copy()
    ids = ids[keep]
    live, had_z = geometry.force_2d(live)
    if src_crs != working:
        transformer = crs_mod.make_transformer(src_crs, working, spec.transformation)
        live = crs_mod.transform_geometries(live, transformer)
        lost = np.flatnonzero(geometry.non_finite(live))
        if len(lost):
            raise _fail(
                spec,
                f"{len(lost)} features cannot be taken into the working CRS {project.crs} (PROJ gives no finite coordinates)",
                feature=str(ids[lost[0]]),
                hint="Check the layer's CRS; the features may lie far outside the working CRS's zone",
            )
    family = geometry.layer_family(live)
    repaired = dropped = cleaned = 0
    if family == "polygon":
        live, cleaned = geometry.clean_rings(live)
        live, dropped = geometry.polygonal_parts(live)
        live, repaired = geometry.repair_polygons(live)
    now_empty = shapely.is_empty(live)
    empty_total = int(np.count_nonzero(empty)) + int(np.count_nonzero(now_empty))
    if now_empty.any():
        live, attrs, ids = live[~now_empty], attrs.loc[~now_empty], ids[~now_empty]
    buffered = spec.buffer is not None or spec.width_field is not None
    if buffered:
        radius = _radii(spec, attrs, ids)
        live = shapely.buffer(live, radius, quad_segs=BUFFER_QUAD_SEGS)
        live, _ = geometry.repair_polygons(live)
        family = "polygon"
    unmapped: Counter[str] = Counter()
    if spec.class_field is not None and spec.crosswalk_path is not None:
        cw = load_crosswalk(spec.crosswalk_path)
        classes, unmapped = classify_codes(attrs[spec.class_field], cw)
        source_codes = code_texts(attrs[spec.class_field])
    else:
        classes = np.full(len(attrs), spec.cls, dtype=object)
        source_codes = np.full(len(attrs), None, dtype=object)
    attrs = attrs.reset_index(drop=True)
    attrs[CLASS_COL] = pd.Series(classes, dtype=object)
    attrs[SOURCE_CODE_COL] = pd.Series(source_codes, dtype=object)
    out = gpd.GeoDataFrame(
        attrs, geometry=gpd.array.from_shapely(live, crs=working), crs=working
    )
    out.index = pd.Index(ids, name="id", dtype=object)
    stats = LayerStats(
        source=spec.source,
        driver=driver,
        encoding=encoding,
        encoding_note=encoding_note,
        source_crs=_crs_label(src_crs),
        crs_from=origin,
        rows=rows + filtered_at_source,
        features=len(out),
        filtered_out=filtered_out,
        null=int(np.count_nonzero(null)),
        empty=empty_total,
        repaired=repaired,
        had_z=had_z,
        dropped_parts=dropped,
        cleaned_rings=cleaned,
        geometry_types=geometry_types,
        unmapped=dict(sorted(unmapped.items())),
        buffered=buffered,
        warnings=said,
        sha256=digest,
    )
    logger.info(
        "layer %s: %d features (%d repaired, %d null, %d empty)",
        spec.name,
        len(out),
        repaired,
        stats.null,
        empty_total,
    )
    return Layer(spec=spec, frame=out, family=family, stats=stats)  # type: ignore[arg-type]


def _crs_label(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"EPSG:{code} ({crs.name})" if code else crs.name


def _feature_ids(
    spec: LayerSpec, frame: pd.DataFrame, rows: np.ndarray | None = None
) -> np.ndarray:
    if spec.id_field is None:
        numbers = np.arange(len(frame)) if rows is None else rows
        return np.array([str(i) for i in numbers], dtype=object)
    raw = frame[spec.id_field]
    ids = code_texts(raw)
    missing = np.flatnonzero(pd.isna(ids) | (ids == ""))
    if len(missing):
        raise _fail(
            spec,
            f"{len(missing)} features have no id in {spec.id_field!r}",
            key=f"layers.{spec.name}.id_field",
            feature=f"row {missing[0]}",
            hint="Fill the ids, or remove id_field to use row numbers",
        )
    counts = Counter(ids.tolist())
    dups = [k for k, v in counts.items() if v > 1]
    if dups:
        shown = ", ".join(sorted(dups)[:5])
        raise _fail(
            spec,
            f"{len(dups)} ids in {spec.id_field!r} are not unique ({shown})",
            key=f"layers.{spec.name}.id_field",
            feature=sorted(dups)[0],
            hint="Give each feature its own id, or remove id_field to use row numbers",
        )
    return ids


def _radii(spec: LayerSpec, attrs: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    if spec.buffer is not None:
        return np.full(len(attrs), spec.buffer)
    assert spec.width_field is not None
    width = pd.to_numeric(attrs[spec.width_field], errors="coerce").to_numpy(
        dtype=float
    )
    bad = np.flatnonzero(~np.isfinite(width) | (width <= 0))
    if len(bad):
        raise _fail(
            spec,
            f"{len(bad)} features have no positive width in {spec.width_field!r}",
            key=f"layers.{spec.name}.width_field",
            feature=str(ids[bad[0]]),
            hint="Fill the widths (full corridor width in metres), or set buffer = <radius> for the layer",
        )
    return width / 2.0


def _load_raster(spec: LayerSpec, working: CRS) -> Layer:
    src = read_raster(spec)
    declared = src.crs
    src_crs, origin = crs_mod.source_crs(spec, declared)
    crs_mod.check_source_crs(spec, src_crs, src.bounds, origin)
    base = LayerStats(
        source=spec.source,
        driver=src.driver,
        source_crs=_crs_label(src_crs),
        crs_from=origin,
    )
    if not spec.classes:
        empty = gpd.GeoDataFrame(
            {CLASS_COL: pd.Series([], dtype=object)},
            geometry=gpd.GeoSeries([], crs=working),
            crs=working,
        )
        n = int(src.values.count())
        stats = dataclasses.replace(base, rows=n, features=0)
        return Layer(spec=spec, frame=empty, family="raster", stats=stats, raster=src)
    geoms, cls_idx = classify_raster(src, spec.classes)
    if src_crs != working and len(geoms):
        geoms = crs_mod.transform_geometries(
            geoms, crs_mod.make_transformer(src_crs, working, spec.transformation)
        )
    geoms, repaired = geometry.repair_polygons(geoms)
    classes = np.array([spec.classes[i - 1].cls for i in cls_idx], dtype=object)
    frame = gpd.GeoDataFrame(
        {
            CLASS_COL: pd.Series(classes, dtype=object),
            SOURCE_CODE_COL: pd.Series(
                [spec.classes[i - 1].describe() for i in cls_idx], dtype=object
            ),
        },
        geometry=gpd.array.from_shapely(geoms, crs=working),
        crs=working,
    )
    frame.index = pd.Index([str(i) for i in range(len(frame))], name="id", dtype=object)
    stats = dataclasses.replace(
        base,
        rows=int(src.values.count()),
        features=len(frame),
        repaired=repaired,
        geometry_types={"Polygon": len(frame)},
    )
    return Layer(spec=spec, frame=frame, family="polygon", stats=stats, raster=src)
