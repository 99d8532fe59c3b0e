"""The difference patches (差异图斑) of the two-plan comparison, numbered by position.

Adjacent ``02``/``03`` faces of the one map with the same pair of source classes
are dissolved into patches; each gets a ``patch_no`` such as ``02-00017`` from
its position (the cell of a fixed grid anchored on the study boundary), so an
unchanged patch keeps its number when the plans change elsewhere.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan.areas import area_m2, to_mu
from multiplan.levels import build_levels, units_at
from multiplan.schema import LEDGER_COLUMNS

if TYPE_CHECKING:
    from multiplan.layers import Layers
    from multiplan.levels import Levels
    from multiplan.specs import Project

logger = logging.getLogger(__name__)

_MAX_PATCH_NO = 99_999


def patch_grid(
    project: Project,
    layers: Layers,
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
                np.asarray(layers[project.boundary].geometry.array, dtype=object)
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
    layers: Layers,
    levels: Levels | None = None,
) -> gpd.GeoDataFrame:
    """Dissolve adjacent 02/03 faces with the same pair of source classes into numbered patches.

    Each patch's ``unit`` (and column per level) is the unit holding its point;
    ``levels`` are the project's (built when not given).
    """
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
    if levels is None:
        levels = build_levels(project, layers)
    for key, names in units_at(levels, garr).items():
        out[key] = pd.Series(names, dtype=object)
    area = area_m2(garr, project.working_crs, project.area)
    out["area_m2"] = area
    out["area_mu"] = to_mu(area)
    for col in LEDGER_COLUMNS:
        out[col] = pd.Series([None] * len(out), dtype=object)
    return out.sort_values("patch_no", kind="stable").reset_index(drop=True)


SHARE_MIN_M2 = 0.01
"""A patch counts among a unit's patches when at least this much of its land lies in the unit."""


def difference_table(
    patches: gpd.GeoDataFrame, levels: Levels | None, project: Project
) -> pd.DataFrame:
    """Return differences.csv: patches and area per difference class and unit.

    The area of a unit is the land of the patches inside it: a patch across a
    unit border counts in each unit with the land on that side (its own
    ``unit`` column names the unit of its point), and among the ``patches`` of
    each unit that holds at least :data:`SHARE_MIN_M2` of it. Land in no unit
    has a row with ``unit`` empty. With several levels, a first column
    ``level`` and a block of rows per level (SPEC §14).
    """
    patch, cell, area = _cell_shares(patches, levels, project)
    if levels is None:
        return _difference_rows(patches, patch, np.full(len(cell), None), area)
    units = levels.units_of(cell)
    if not levels.multi:
        return _difference_rows(patches, patch, units["unit"], area)
    blocks = []
    for name in levels.names:
        table = _difference_rows(patches, patch, units[name], area)
        table.insert(0, "level", pd.Series([name] * len(table), dtype=object))
        blocks.append(table)
    return pd.concat(blocks, ignore_index=True)


def _cell_shares(
    patches: gpd.GeoDataFrame, levels: Levels | None, project: Project
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(patch, cell, area_m2)``: the land of each patch in each cell of the units.

    Cells do not overlap, so the areas of a patch add up to its own; what is
    left (at least :data:`SHARE_MIN_M2`) lies in no unit and gets cell ``-1``.
    """
    geoms = np.asarray(patches.geometry.array, dtype=object)
    own = patches["area_m2"].to_numpy(dtype=float) if len(patches) else np.zeros(0)
    n = len(geoms)
    if levels is None or not len(levels.cells) or not n:
        return np.arange(n), np.full(n, -1, dtype=np.intp), own
    cells = np.asarray(levels.cells, dtype=object)
    pi, ci = shapely.STRtree(cells).query(geoms, predicate="intersects")
    shapely.prepare(cells)
    whole = shapely.contains_properly(cells[ci], geoms[pi])
    area = np.where(whole, own[pi], 0.0)
    cut = np.flatnonzero(~whole)
    if len(cut):
        parts = shapely.intersection(geoms[pi[cut]], cells[ci[cut]])
        area[cut] = area_m2(parts, project.working_crs, project.area)
    keep = area > 0
    pi, ci, area = pi[keep], ci[keep], area[keep]
    rest = own - np.bincount(pi, weights=area, minlength=n)
    out = np.flatnonzero(rest >= SHARE_MIN_M2)
    patch = np.concatenate([pi, out])
    cell = np.concatenate([ci, np.full(len(out), -1, dtype=np.intp)])
    area = np.concatenate([area, rest[out]])
    order = np.lexsort((cell, patch))
    return patch[order], cell[order], area[order]


def _difference_rows(
    patches: gpd.GeoDataFrame, patch: np.ndarray, unit: np.ndarray, area: np.ndarray
) -> pd.DataFrame:
    cols = ["diff_class", "unit", "patches", "area_m2", "area_mu"]
    if not len(patches):
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(
        {
            "diff_class": patches["diff_class"].to_numpy(dtype=object)[patch],
            "unit": ["" if u is None else u for u in unit],
            "patch": patch,
            "area_m2": area,
        }
    )
    # a patch's land in each unit (a unit of a larger level holds several cells)
    shares = df.groupby(["diff_class", "unit", "patch"], sort=True)["area_m2"].sum()
    g = (
        (shares >= SHARE_MIN_M2)
        .groupby(level=[0, 1])
        .sum()
        .to_frame("patches")
        .join(shares.groupby(level=[0, 1]).sum())
        .reset_index()
    )
    g = g[(g["patches"] > 0) | (g["area_m2"] >= SHARE_MIN_M2)]
    g["area_mu"] = to_mu(g["area_m2"])
    g["unit"] = pd.Series([None if u == "" else u for u in g["unit"]], dtype=object)
    g["patches"] = g["patches"].astype(int)
    return g[cols].reset_index(drop=True)
