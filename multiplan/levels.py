"""Levels of units (SPEC §14): admin units from the largest level down, and the grid.

``units = ["towns", "communities"]`` rolls conflicts up the 市/区/街/居 levels;
``[project] grid = 1000`` adds square management cells (网格化管理) as the last
level. Pieces are split at the borders of the *cells*: the faces of the overlay of
every level, so that a community that straddles two towns is split between them,
never assigned to one by a guess. Each cell knows its unit at every level.

With one ``units`` layer and no grid the cells are that layer's features, as
before levels existed (SPEC §6's form).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan.areas import area_m2, overlap_pairs, to_mu
from multiplan.errors import LayerError
from multiplan.labels import label
from multiplan.layers import Layers, unit_names
from multiplan.noding import covering_pairs, node_faces
from multiplan.overlay import first_of_each
from multiplan.schema import PIECE_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from multiplan.labels import Lang
    from multiplan.specs import Project

logger = logging.getLogger(__name__)

GRID_LEVEL = "grid"
"""The name of the grid's level: its column in conflicts.gpkg and its ``level`` in the tables."""


@dataclass(frozen=True)
class Levels:
    """The levels of a project's units, and the cells pieces are split at.

    Attributes
    ----------
    names
        The levels from the largest down: the ``units`` layers, then ``grid``.
    cells
        The smallest cells: the faces of the overlay of every level (one
        geometry per combination of units), or the units themselves with one level.
    labels
        Per level, the name of the unit each cell lies in (``None`` where no unit
        of that level covers it).
    own
        Per level, each unit's own area in m² (a grid cell's inside the boundary).
    grid
        The grid's cells (``name``, geometry, clipped to the boundary), or ``None``.
    """

    names: tuple[str, ...]
    cells: np.ndarray
    labels: Mapping[str, np.ndarray]
    own: Mapping[str, Mapping[str, float]]
    grid: gpd.GeoDataFrame | None = None

    @property
    def multi(self) -> bool:
        """Return whether the tables take the per-level form (a ``level`` column)."""
        return len(self.names) > 1

    @property
    def smallest(self) -> np.ndarray:
        """Return the name of each cell's unit at the smallest level (the ``unit`` column)."""
        return self.labels[self.names[-1]]

    def units_of(self, cell: np.ndarray) -> dict[str, np.ndarray]:
        """Return the units of cells by index: ``unit`` (the smallest level's), then one key per level with several.

        Cell ``-1`` (outside every cell) gets ``None``.
        """
        tail = np.array([None], dtype=object)
        out = {"unit": np.concatenate([self.smallest, tail])[cell]}
        if self.multi:
            for name in self.names:
                out[name] = np.concatenate([self.labels[name], tail])[cell]
        return out


def units_at(levels: Levels | None, geoms: np.ndarray) -> dict[str, np.ndarray]:
    """Return, per level, the unit holding each geometry's representative point.

    ``unit`` is the smallest level's; with several levels a key per level
    follows. A point outside every cell gets ``None``. Parcels and patches are
    assigned whole, by their point (pieces are split instead).
    """
    n = len(geoms)
    if levels is None:
        return {"unit": np.full(n, None, dtype=object)}
    cell = np.full(n, -1, dtype=np.intp)
    if n and len(levels.cells):
        pts = shapely.point_on_surface(geoms)
        ip, ic = shapely.STRtree(levels.cells).query(pts, predicate="within")
        first = first_of_each(ip)
        cell[first[0]] = ic[first[1]]
    return levels.units_of(cell)


def per_level(
    levels: Levels | None,
    build: Callable[[str], pd.DataFrame],
) -> pd.DataFrame:
    """Return a per-unit table: ``build("unit")`` with one level, else a block per level.

    With several levels each block is ``build(level)`` with its key column
    renamed ``unit`` and a first column ``level`` (SPEC §14).
    """
    if levels is None or not levels.multi:
        return build("unit")
    blocks = []
    for name in levels.names:
        table = build(name).rename(columns={name: "unit"})
        table.insert(0, "level", pd.Series([name] * len(table), dtype=object))
        blocks.append(table)
    return pd.concat(blocks, ignore_index=True)


def level_names(project: Project) -> tuple[str, ...]:
    """Return the levels of a project: its ``units`` layers, then ``grid`` with a grid."""
    return (*project.units, *((GRID_LEVEL,) if project.grid else ()))


def level_title(project: Project, level: str | None, lang: Lang = "zh") -> str:
    """Return what a planner calls a level: its layer's label, or 管理网格 for the grid.

    ``None`` or ``""`` (one level, no ``level`` column) is ``""``.
    """
    if not level:
        return ""
    if level in project.layers:
        return project.layers[level].label
    return label("grid_level", lang)


def piece_columns(levels: Levels | None) -> tuple[str, ...]:
    """Return the columns of the pieces: SPEC §6's, with a column per level after ``unit``.

    Examples
    --------
    >>> lv = Levels(("towns", "grid"), np.array([]), {}, {})
    >>> piece_columns(lv)[8:11]
    ('unit', 'towns', 'grid')
    >>> piece_columns(None) == PIECE_COLUMNS
    True
    """
    if levels is None or not levels.multi:
        return PIECE_COLUMNS
    at = PIECE_COLUMNS.index("unit") + 1
    return (*PIECE_COLUMNS[:at], *levels.names, *PIECE_COLUMNS[at:])


def build_levels(project: Project, layers: Layers) -> Levels | None:
    """Return the project's levels of units, or ``None`` when it has none.

    Raises
    ------
    LayerError
        For a unit with no name, two units of one level with one name, or two
        units of one level that overlap (:func:`check_units_apart`).
    """
    names = level_names(project)
    if not names:
        return None
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    own: dict[str, dict[str, float]] = {}
    for name in project.units:
        geoms = np.asarray(layers[name].geometry.array, dtype=object)
        labels = unit_names(project, layers, name)
        sets[name] = (geoms, labels)
        own[name] = _areas(project, geoms, labels)
        check_units_apart(project, layers, name, labels)
    grid = None
    if project.grid:
        grid = grid_cells(project, layers)
        geoms = np.asarray(grid.geometry.array, dtype=object)
        labels = grid["name"].to_numpy(dtype=object)
        sets[GRID_LEVEL] = (geoms, labels)
        own[GRID_LEVEL] = _areas(project, geoms, labels)
    if len(names) == 1:
        geoms, labels = sets[names[0]]
        return Levels(names, geoms, {names[0]: labels}, own, grid)
    cells, cell_labels = _cells(names, sets)
    return Levels(names, cells, cell_labels, own, grid)


UNIT_OVERLAP_SHARE = 0.01
"""Two units of one level that share this share of the smaller one overlap: exit 2."""


def check_units_apart(
    project: Project, layers: Layers, name: str, labels: np.ndarray
) -> None:
    """Refuse units of one level drawn over each other; count the slivers they share.

    Land in two units of one level would be given to one of them, and the
    other's figures would silently miss it. Two units that share at least
    :data:`UNIT_OVERLAP_SHARE` of the smaller one's area are an error; less is a
    sliver of a boundary digitised twice, given to one of the two and logged.

    Raises
    ------
    LayerError
        Naming the two units, the land they share and the fix.
    """
    geoms = np.asarray(layers[name].geometry.array, dtype=object)
    i, j = overlap_pairs(geoms)
    if not len(i):
        return
    crs, mode = project.working_crs, project.area
    shared = area_m2(shapely.intersection(geoms[i], geoms[j]), crs, mode)
    own = area_m2(geoms, crs, mode)
    share = shared / np.maximum(np.minimum(own[i], own[j]), 1e-9)
    worst = int(np.argmax(share))
    if share[worst] >= UNIT_OVERLAP_SHARE:
        big = int((share >= UNIT_OVERLAP_SHARE).sum())
        a, b = labels[i[worst]], labels[j[worst]]
        raise LayerError(
            f"{big} pair{'s' if big > 1 else ''} of units overlap; {a} and {b} share "
            f"{shared[worst]:,.2f} m² ({to_mu(shared[worst]):,.2f} 亩, "
            f"{share[worst]:.1%} of the smaller)",
            path=layers.layer(name).spec.source,
            layer=name,
            feature=f"{a}, {b}",
            hint="Units of one level must not overlap: land in two units would be "
            "counted in only one of them. Fix the border between them",
        )
    slivers = shared >= 0.01
    if slivers.any():
        n = int(slivers.sum())
        logger.warning(
            "units %s: %d %s of units share slivers along their borders (%.2f m² in all, "
            "at most %.3f%% of a unit); each sliver is counted in one of the two",
            name,
            n,
            "pairs" if n > 1 else "pair",
            float(shared[slivers].sum()),
            float(share[slivers].max()) * 100,
        )


def _areas(project: Project, geoms: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    areas = area_m2(geoms, project.working_crs, project.area)
    return dict(zip(labels.tolist(), areas.tolist(), strict=True))


def _cells(
    names: tuple[str, ...], sets: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return the faces of the overlay of every level, merged by their units."""
    faces = node_faces([sets[n][0] for n in names], None)
    n = len(faces.geoms)
    labels: dict[str, np.ndarray] = {}
    for name in names:
        geoms, units = sets[name]
        fi, gi = covering_pairs(faces, geoms)
        col = np.full(n, None, dtype=object)
        first = first_of_each(fi)[1]  # pairs are sorted by face
        col[fi[first]] = units[gi[first]]
        labels[name] = col
    key = pd.MultiIndex.from_arrays(
        [pd.Series(labels[nm], dtype=object).fillna("\0") for nm in names]
    )
    codes, _uniques = pd.factorize(key, sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    groups = np.split(order, bounds)
    cells = np.array(
        [
            shapely.coverage_union_all(faces.geoms[g])
            if len(g) > 1
            else faces.geoms[g[0]]
            for g in groups
        ],
        dtype=object,
    )
    firsts = np.array([g[0] for g in groups], dtype=np.intp)
    return cells, {nm: labels[nm][firsts] for nm in names}


def grid_cells(
    project: Project, layers: Mapping[str, gpd.GeoDataFrame]
) -> gpd.GeoDataFrame:
    """Return the management grid: square cells of ``[project] grid`` metres.

    The grid is anchored at the lower-left corner of the boundary (of the
    largest level of units without one; of every layer read without either),
    snapped down to the metre. Cells are named ``G{col:03d}{row:03d}`` counting
    from 0 at the lower left, and clipped to the boundary; cells outside it are
    left out.
    """
    size = float(project.grid or 0)
    area = _extent(project, layers)
    x0, y0, x1, y1 = shapely.bounds(area) if area is not None else (0, 0, 0, 0)
    x0, y0 = math.floor(x0), math.floor(y0)
    cols = max(1, math.ceil((x1 - x0) / size))
    rows = max(1, math.ceil((y1 - y0) / size))
    cc, rr = np.meshgrid(np.arange(cols), np.arange(rows), indexing="ij")
    c, r = cc.ravel(), rr.ravel()
    squares = shapely.box(
        x0 + c * size, y0 + r * size, x0 + (c + 1) * size, y0 + (r + 1) * size
    )
    names = np.array(
        [f"G{i:03d}{j:03d}" for i, j in zip(c, r, strict=True)], dtype=object
    )
    if area is not None:
        shapely.prepare(area)
        inside = shapely.intersects(area, squares)
        squares, names = squares[inside], names[inside]
        covered = shapely.covers(area, squares)
        squares = np.where(covered, squares, shapely.intersection(squares, area))
        squares = _polygonal(squares)
        keep = shapely.area(squares) > 0
        squares, names = squares[keep], names[keep]
    return gpd.GeoDataFrame(
        {"name": pd.Series(names, dtype=object)},
        geometry=gpd.array.from_shapely(squares, crs=project.crs),
        crs=project.crs,
    )


def _extent(
    project: Project, layers: Mapping[str, gpd.GeoDataFrame]
) -> shapely.Geometry | None:
    """Return the area the grid covers: the boundary, else the largest units, else every layer."""
    for name in (project.boundary, *project.units):
        if name and name in layers and len(layers[name]):
            return shapely.union_all(
                np.asarray(layers[name].geometry.array, dtype=object)
            )
    boxes = [shapely.box(*layers[n].total_bounds) for n in layers if len(layers[n])]
    return shapely.envelope(shapely.union_all(boxes)) if boxes else None


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep the polygonal parts of intersections (a cell touching the boundary at a line)."""
    out = geoms.copy()
    mixed = shapely.get_type_id(geoms) == 7
    for i in np.flatnonzero(mixed):
        parts = shapely.get_parts(geoms[i])
        polys = parts[np.isin(shapely.get_type_id(parts), (3, 6))]
        out[i] = shapely.union_all(polys) if len(polys) else shapely.Polygon()
    return out
