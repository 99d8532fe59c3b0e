"""The one map (一张图): the faces of the overlay of every fused layer, and 两规差异.

:func:`fuse_layers` nodes the boundaries of every fused polygon (and the study
boundary) once, polygonizes the noded linework into faces, and attributes each
face by an interior point: per layer the features that cover it, the resolved
class and source by ``[fusion] priority``, and the rules whose conflict pieces
cover it. Faces never overlap and together cover the union of the layers (inside
the boundary): one noding pass and vectorised spatial-index queries, not a chain
of pairwise overlays.

With ``[fusion] compare = [first, second]`` each face covered by both plans gets
``diff_class``: ``01`` construction in both, ``02`` only in the first, ``03``
only in the second, ``04`` in neither. Adjacent ``02``/``03`` faces with the same
pair of source classes are dissolved into difference patches (差异图斑), each with
a ``patch_no`` such as ``02-00017`` that comes from its position (the cell of a
fixed grid anchored on the study boundary), so an unchanged patch keeps its
number when the plans change elsewhere.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan import crs as crs_mod
from multiplan.classify import load_taxonomy
from multiplan.errors import ManifestError
from multiplan.layers import CLASS_COL
from multiplan.rules import class_mask

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from multiplan.layers import Layer
    from multiplan.project import Project

logger = logging.getLogger(__name__)

DIFF_CLASSES = {
    "01": ("两规均为建设用地", "construction in both plans"),
    "02": ("仅第一规划为建设用地", "construction only in the first plan"),
    "03": ("仅第二规划为建设用地", "construction only in the second plan"),
    "04": ("两规均为非建设用地", "construction in neither plan"),
}
LEDGER_COLUMNS = ("adjust_plan", "opinion", "status")
_MAX_PATCH_NO = 99_999


@dataclass(frozen=True)
class FusionSpec:
    """The validated ``[fusion]`` table."""

    layers: tuple[str, ...]
    priority: tuple[str, ...]
    compare: tuple[str, str] | None = None


@dataclass(frozen=True)
class FuseResult:
    """The faces of the one map and, with ``compare``, the difference patches."""

    faces: gpd.GeoDataFrame
    patches: gpd.GeoDataFrame | None
    differences: pd.DataFrame | None
    spec: FusionSpec


def load_fusion_spec(project: Project) -> FusionSpec:
    """Return the fusion settings, with defaults: every polygon layer but boundary and units.

    Raises
    ------
    ManifestError
        For a raster value layer among the fused layers or a bad ``compare``.
    """
    raw = project.fusion or {}
    default = [
        n
        for n, s in project.layers.items()
        if n not in (project.boundary, project.units)
        and (s.kind == "vector" or s.classes)
    ]
    layers = tuple(raw.get("layers") or default)
    for n in layers:
        spec = project.layers[n]
        if spec.kind == "raster" and not spec.classes:
            raise ManifestError(
                f"layer {n!r} is a value raster, which has no faces",
                path=project.path,
                key="fusion.layers",
                hint="Fuse polygon layers (or rasters with classes)",
            )
    priority = [n for n in (raw.get("priority") or []) if n in layers]
    priority += [n for n in layers if n not in priority]
    compare = raw.get("compare")
    if compare is not None:
        if (
            not isinstance(compare, list)
            or len(compare) != 2
            or compare[0] == compare[1]
        ):
            raise ManifestError(
                "compare names two different plan layers",
                path=project.path,
                key="fusion.compare",
                hint='e.g. compare = ["chenggui", "tugui"]',
            )
        for n in compare:
            if project.layers[n].class_field is None:
                raise ManifestError(
                    f"layer {n!r} has no class per feature to compare",
                    path=project.path,
                    key="fusion.compare",
                    hint="Compare two plans with class_field and a classification",
                )
        compare = (str(compare[0]), str(compare[1]))
        layers = tuple(dict.fromkeys([*layers, *compare]))
    return FusionSpec(layers=layers, priority=tuple(priority), compare=compare)


def build_faces(
    polygon_sets: Sequence[np.ndarray], boundary: shapely.Geometry | None
) -> np.ndarray:
    """Return the faces of the overlay of all polygons (inside ``boundary``), not yet attributed.

    Every polygon boundary is noded once; the faces are the polygons of the noded
    linework that lie inside the boundary and inside at least one polygon.

    Examples
    --------
    >>> faces = build_faces([np.array([shapely.box(0, 0, 2, 2)]), np.array([shapely.box(1, 1, 3, 3)])], None)
    >>> sorted(shapely.area(faces).tolist())
    [1.0, 3.0, 3.0]
    """
    geoms = (
        np.concatenate([np.asarray(g, dtype=object) for g in polygon_sets])
        if polygon_sets
        else np.zeros(0, dtype=object)
    )
    geoms = geoms[~shapely.is_empty(geoms)]
    if not len(geoms):
        return np.zeros(0, dtype=object)
    lines = [shapely.boundary(geoms)]
    if boundary is not None:
        lines.append(np.array([shapely.boundary(boundary)], dtype=object))
    noded = shapely.union_all(np.concatenate(lines))
    faces = np.asarray(
        shapely.get_parts(shapely.polygonize(shapely.get_parts(noded))), dtype=object
    )
    faces = faces[shapely.area(faces) > 0]
    pts = shapely.point_on_surface(faces)
    keep = np.zeros(len(faces), dtype=bool)
    fi, _ = shapely.STRtree(geoms).query(pts, predicate="within")
    keep[np.unique(fi)] = True
    if boundary is not None:
        keep &= shapely.contains_xy(boundary, *shapely.get_coordinates(pts).T)
    return faces[keep]


def _cover(points: np.ndarray, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each point: the covering features' ids (sorted as text, comma-joined) and the first one's class."""
    n = len(points)
    ids = np.full(n, None, dtype=object)
    cls = np.full(n, None, dtype=object)
    if not len(frame) or not n:
        return ids, cls
    geoms = np.asarray(frame.geometry.array, dtype=object)
    pi, fi = shapely.STRtree(geoms).query(points, predicate="within")
    if not len(pi):
        return ids, cls
    fid = np.asarray(frame.index, dtype=object)[fi].astype(str)
    fcls = frame[CLASS_COL].to_numpy(dtype=object)[fi]
    df = pd.DataFrame({"p": pi, "id": fid, "cls": fcls}).sort_values(
        ["p", "id"], kind="stable"
    )
    grouped = df.groupby("p", sort=True)
    first = grouped.first()
    joined = grouped["id"].agg(",".join)
    ids[first.index.to_numpy()] = joined.to_numpy(dtype=object)
    cls[first.index.to_numpy()] = first["cls"].to_numpy(dtype=object)
    return ids, cls


def fuse_layers(
    project: Project,
    layers: Mapping[str, Layer],
    *,
    spec: FusionSpec | None = None,
    conflicts: pd.DataFrame | None = None,
) -> FuseResult:
    """Build the one-map faces (and the difference patches with ``compare``)."""
    spec = spec or load_fusion_spec(project)
    working = crs_mod.parse_crs(project.crs)
    boundary = None
    if project.boundary and project.boundary in layers:
        boundary = shapely.union_all(
            np.asarray(layers[project.boundary].frame.geometry.array, dtype=object)
        )
    fused = [n for n in spec.layers if layers[n].family == "polygon"]
    faces = build_faces(
        [np.asarray(layers[n].frame.geometry.array, dtype=object) for n in fused],
        boundary,
    )
    pts = shapely.point_on_surface(faces)
    data: dict[str, Any] = {}
    per_class: dict[str, np.ndarray] = {}
    for n in fused:
        ids, cls = _cover(pts, layers[n].frame)
        data[f"{n}_id"] = ids
        data[f"{n}_class"] = cls
        per_class[n] = cls
    resolved = np.full(len(faces), None, dtype=object)
    source = np.full(len(faces), None, dtype=object)
    for n in reversed([p for p in spec.priority if p in fused]):
        has = np.array([v is not None for v in data[f"{n}_id"]], dtype=bool)
        resolved[has] = per_class[n][has]
        source[has] = n
    data["class"] = resolved
    data["source"] = source
    data["conflicts"] = _conflict_ids(pts, conflicts)
    if spec.compare is not None:
        data["diff_class"] = _diff_classes(
            per_class[spec.compare[0]],
            per_class[spec.compare[1]],
            data,
            spec.compare,
            project,
        )
    area = crs_mod.area_m2(faces, working, project.area)
    data["area_m2"] = area
    data["area_mu"] = area * 15.0 / 10000.0
    frame = gpd.GeoDataFrame(
        {
            k: pd.Series(v, dtype=object) if not k.startswith("area") else v
            for k, v in data.items()
        },
        geometry=gpd.array.from_shapely(faces, crs=project.crs),
        crs=project.crs,
    )
    # faces in reading order: north to south, west to east
    c = shapely.get_coordinates(pts)
    order = np.lexsort((np.round(c[:, 0], 3), -np.round(c[:, 1], 3)))
    frame = frame.iloc[order].reset_index(drop=True)
    patches = differences = None
    if spec.compare is not None:
        patches = difference_patches(frame, spec.compare, project, layers)
        differences = difference_table(patches)
    return FuseResult(faces=frame, patches=patches, differences=differences, spec=spec)


def _conflict_ids(points: np.ndarray, conflicts: pd.DataFrame | None) -> np.ndarray:
    out = np.full(len(points), None, dtype=object)
    if conflicts is None or not len(conflicts) or not len(points):
        return out
    geoms = np.asarray(conflicts.geometry.array, dtype=object)
    pi, ci = shapely.STRtree(geoms).query(points, predicate="within")
    if not len(pi):
        return out
    df = pd.DataFrame(
        {"p": pi, "r": conflicts["rule_id"].to_numpy(dtype=object)[ci]}
    ).drop_duplicates()
    joined = df.sort_values(["p", "r"]).groupby("p")["r"].agg(",".join)
    out[joined.index.to_numpy()] = joined.to_numpy(dtype=object)
    return out


def _diff_classes(
    first: np.ndarray,
    second: np.ndarray,
    data: Mapping[str, np.ndarray],
    compare: tuple[str, str],
    project: Project,
) -> np.ndarray:
    taxonomy = load_taxonomy(project.search_dirs)
    both = np.array([a is not None for a in data[f"{compare[0]}_id"]]) & np.array(
        [b is not None for b in data[f"{compare[1]}_id"]]
    )
    c1 = class_mask(first, ["construction"], taxonomy)
    c2 = class_mask(second, ["construction"], taxonomy)
    out = np.full(len(first), None, dtype=object)
    out[both & c1 & c2] = "01"
    out[both & c1 & ~c2] = "02"
    out[both & ~c1 & c2] = "03"
    out[both & ~c1 & ~c2] = "04"
    return out


def patch_grid(
    project: Project,
    layers: Mapping[str, Layer],
    extent: tuple[float, float, float, float],
) -> tuple[float, float, float, int]:
    """Return the fixed grid that numbers the patches: (x0, y1, cell size, columns).

    The grid is anchored on the study boundary (else the given extent), snapped
    out to whole kilometres, with the finest cell size in 10 m – 1 km for which
    the cells number at most 99 999.
    """
    if project.boundary and project.boundary in layers:
        extent = tuple(
            shapely.total_bounds(
                np.asarray(layers[project.boundary].frame.geometry.array, dtype=object)
            )
        )
    x0 = math.floor(extent[0] / 1000) * 1000
    y0 = math.floor(extent[1] / 1000) * 1000
    x1 = math.ceil(extent[2] / 1000) * 1000
    y1 = math.ceil(extent[3] / 1000) * 1000
    for size in (
        10.0,
        20.0,
        25.0,
        50.0,
        100.0,
        200.0,
        250.0,
        500.0,
        1000.0,
        2000.0,
        5000.0,
    ):
        cols = math.ceil((x1 - x0) / size)
        rows = math.ceil((y1 - y0) / size)
        if cols * rows <= _MAX_PATCH_NO:
            return float(x0), float(y1), size, cols
    return float(x0), float(y1), 10000.0, math.ceil((x1 - x0) / 10000.0)


def number_patches(
    points: np.ndarray, classes: np.ndarray, grid: tuple[float, float, float, int]
) -> np.ndarray:
    """Return a ``patch_no`` per patch from its position: the class, then its grid cell.

    Cells are numbered from 1 in reading order (north to south, west to east). Two
    patches of one class in one cell: the one further west (then north) keeps the
    number, the other takes the next number that no patch's own cell claims.

    Examples
    --------
    >>> grid = (0.0, 1000.0, 100.0, 10)  # 10 × 10 cells of 100 m
    >>> pts = shapely.points([(50, 950), (150, 950), (160, 960), (950, 50)])
    >>> number_patches(pts, np.array(["02", "02", "02", "03"]), grid).tolist()
    ['02-00001', '02-00002', '02-00003', '03-00100']
    """
    x0, y1, size, cols = grid
    c = shapely.get_coordinates(points)
    col = np.floor((c[:, 0] - x0) / size).astype(np.int64)
    row = np.floor((y1 - c[:, 1]) / size).astype(np.int64)
    cell = row * cols + col + 1
    out = np.full(len(points), None, dtype=object)
    for cls in sorted(set(classes.tolist())):
        idx = np.flatnonzero(classes == cls)
        claimed = set(cell[idx].tolist())
        used: set[int] = set()
        order = idx[np.lexsort((-c[idx, 1], c[idx, 0], cell[idx]))]
        for i in order:
            n = int(cell[i])
            if n in used:
                n = int(cell[i]) + 1
                while n in used or n in claimed:
                    n += 1
            used.add(n)
            out[i] = f"{cls}-{n:05d}"
    return out


def difference_patches(
    faces: gpd.GeoDataFrame,
    compare: tuple[str, str],
    project: Project,
    layers: Mapping[str, Layer],
) -> gpd.GeoDataFrame:
    """Dissolve adjacent 02/03 faces with the same pair of source classes into numbered patches."""
    a, b = compare
    sel = faces[faces["diff_class"].isin(["02", "03"])]
    rows = []
    geoms = []
    if len(sel):
        key = (
            sel[["diff_class", f"{a}_class", f"{b}_class"]]
            .astype(object)
            .where(sel[["diff_class", f"{a}_class", f"{b}_class"]].notna(), None)
        )
        for k, idx in key.groupby(
            list(key.columns), dropna=False, sort=True
        ).groups.items():
            merged = shapely.union_all(
                np.asarray(sel.loc[idx].geometry.array, dtype=object)
            )
            for part in shapely.get_parts(merged):
                if part.geom_type == "Polygon" and part.area > 0:
                    rows.append(
                        {"diff_class": k[0], f"{a}_class": k[1], f"{b}_class": k[2]}
                    )
                    geoms.append(part)
    garr = np.array(geoms, dtype=object)
    out = gpd.GeoDataFrame(
        pd.DataFrame(rows, columns=["diff_class", f"{a}_class", f"{b}_class"]),
        geometry=gpd.array.from_shapely(garr, crs=project.crs),
        crs=project.crs,
    )
    if not len(out):
        for col in ("patch_no", "unit", "area_m2", "area_mu", *LEDGER_COLUMNS):
            out[col] = pd.Series([], dtype=object)
        return out
    pts = shapely.point_on_surface(garr)
    grid = patch_grid(project, layers, tuple(shapely.total_bounds(garr)))
    out.insert(
        0,
        "patch_no",
        pd.Series(
            number_patches(pts, out["diff_class"].to_numpy(dtype=object), grid),
            dtype=object,
        ),
    )
    out["unit"] = pd.Series(_units_of(pts, project, layers), dtype=object)
    area = crs_mod.area_m2(garr, crs_mod.parse_crs(project.crs), project.area)
    out["area_m2"] = area
    out["area_mu"] = area * 15.0 / 10000.0
    for col in LEDGER_COLUMNS:
        out[col] = pd.Series([None] * len(out), dtype=object)
    return out.sort_values("patch_no", kind="stable").reset_index(drop=True)


def _units_of(
    points: np.ndarray, project: Project, layers: Mapping[str, Layer]
) -> np.ndarray:
    out = np.full(len(points), None, dtype=object)
    if not project.units or project.units not in layers:
        return out
    uf = layers[project.units].frame
    pi, ui = shapely.STRtree(np.asarray(uf.geometry.array, dtype=object)).query(
        points, predicate="within"
    )
    first = np.unique(pi, return_index=True)
    out[first[0]] = uf[project.unit_name_field].to_numpy(dtype=object)[ui[first[1]]]
    return out


def difference_table(patches: gpd.GeoDataFrame) -> pd.DataFrame:
    """Return differences.csv: patches and area per difference class and unit."""
    cols = ["diff_class", "unit", "patches", "area_m2", "area_mu"]
    if not len(patches):
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(
        {
            "diff_class": patches["diff_class"].to_numpy(dtype=object),
            "unit": [
                "" if u is None else u for u in patches["unit"].to_numpy(dtype=object)
            ],
            "area_m2": patches["area_m2"].to_numpy(dtype=float),
        }
    )
    g = (
        df.groupby(["diff_class", "unit"], sort=True)
        .agg(patches=("area_m2", "size"), area_m2=("area_m2", "sum"))
        .reset_index()
    )
    g["area_mu"] = g["area_m2"] * 15.0 / 10000.0
    g["unit"] = pd.Series([None if u == "" else u for u in g["unit"]], dtype=object)
    return g[cols]


def run_fuse(
    project: Project, *, out: Path | None = None, workers: int | None = None
) -> tuple[FuseResult, list[Path]]:
    """Fuse the project's layers and write onemap.gpkg (and differences.gpkg/.csv with compare)."""
    from multiplan.check import run_check
    from multiplan.io import (
        csv_bytes,
        gpkg_writer,
        remove_stale_temporaries,
        write_files,
    )
    from multiplan.layers import load_layer
    from multiplan.report import bytes_writer, check_outputs_are_not_inputs

    spec = load_fusion_spec(project)
    out_dir = Path(out) if out is not None else project.out
    check_outputs_are_not_inputs(project, out_dir)
    conflicts = None
    layers: dict[str, Layer] = {}
    if project.rules:
        checked = run_check(
            project, write=False, make_map=False, with_yield=False, workers=workers
        )
        conflicts = checked.conflicts
        layers.update(checked.layers)
    for n in dict.fromkeys([*spec.layers, project.boundary, project.units]):
        if n and n not in layers:
            layers[n] = load_layer(project.layers[n], project)
    result = fuse_layers(project, layers, spec=spec, conflicts=conflicts)
    writers = {"onemap.gpkg": gpkg_writer(result.faces, layer="onemap")}
    if result.patches is not None and result.differences is not None:
        writers["differences.gpkg"] = gpkg_writer(result.patches, layer="differences")
        writers["differences.csv"] = bytes_writer(csv_bytes(result.differences))
    remove_stale_temporaries(out_dir)
    return result, write_files(out_dir, writers)
