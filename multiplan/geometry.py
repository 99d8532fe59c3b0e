"""Geometry preparation: drop Z/M, repair, keep polygonal parts, count everything.

Input repair is the one permitted change to input geometry (SPEC §6): an invalid
polygon is repaired as ``shapely.make_valid(g, method="structure")`` does, in the
working CRS, and every repair is counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import GeometryType

logger = logging.getLogger(__name__)

_POLYGONAL = (GeometryType.POLYGON, GeometryType.MULTIPOLYGON)
_LINEAR = (
    GeometryType.LINESTRING,
    GeometryType.LINEARRING,
    GeometryType.MULTILINESTRING,
)
_PUNTAL = (GeometryType.POINT, GeometryType.MULTIPOINT)


@dataclass(frozen=True)
class GeometryCounts:
    """What preparation did to a layer's geometries."""

    null: int = 0
    empty: int = 0
    repaired: int = 0
    dropped_parts: int = 0
    had_z: int = 0
    not_polygonal: int = 0


def force_2d(geoms: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop Z (and M) values; return the geometries and how many had Z."""
    has_z = shapely.has_z(geoms)
    n = int(np.count_nonzero(has_z))
    if n:
        geoms = geoms.copy()
        geoms[has_z] = shapely.force_2d(geoms[has_z])
    return geoms, n


def geometry_family(geoms: np.ndarray) -> str:
    """Return ``"polygon"``, ``"line"``, ``"point"`` or ``"mixed"`` for non-empty geometries.

    A GeometryCollection counts by its parts. An all-empty array is ``"polygon"``.

    Examples
    --------
    >>> geometry_family(np.array([shapely.box(0, 0, 1, 1), shapely.Point(0, 0)]))
    'mixed'
    """
    kinds: set[str] = set()
    for t in np.unique(shapely.get_type_id(geoms)):
        if t in _POLYGONAL:
            kinds.add("polygon")
        elif t in _LINEAR:
            kinds.add("line")
        elif t in _PUNTAL:
            kinds.add("point")
        elif t == GeometryType.GEOMETRYCOLLECTION:
            parts = shapely.get_parts(geoms[shapely.get_type_id(geoms) == t])
            kinds.add(geometry_family(parts) if len(parts) else "polygon")
    kinds.discard("")
    if len(kinds) > 1:
        # a polygon layer whose collections carry stray lines or points is polygonal
        return "mixed"
    return kinds.pop() if kinds else "polygon"


def layer_family(geoms: np.ndarray) -> str:
    """Return how a layer is used: ``"polygon"``, ``"line"`` or ``"point"``.

    A mixed layer counts as polygons when it holds any polygon (stray lines and
    points in collections are dropped later), else as lines.

    Examples
    --------
    >>> layer_family(np.array([shapely.box(0, 0, 1, 1), shapely.Point(0, 0)]))
    'polygon'
    >>> layer_family(np.array([shapely.LineString([(0, 0), (1, 1)]), shapely.Point(0, 0)]))
    'line'
    """
    family = geometry_family(geoms)
    if family == "mixed":
        polygonal = np.isin(shapely.get_type_id(geoms), [int(t) for t in _POLYGONAL])
        return "polygon" if polygonal.any() else "line"
    return family


def polygonal_parts(geoms: np.ndarray) -> tuple[np.ndarray, int]:
    """Keep only the polygonal parts of each geometry.

    Returns the geometries (Polygon or MultiPolygon, possibly empty) and how many
    geometries lost a non-polygonal part (a line or point in a collection).

    Examples
    --------
    >>> gc = shapely.GeometryCollection([shapely.box(0, 0, 1, 1), shapely.Point(5, 5)])
    >>> out, n = polygonal_parts(np.array([gc]))
    >>> out[0].geom_type, n
    ('Polygon', 1)
    """
    types = shapely.get_type_id(geoms)
    out = geoms.copy()
    dropped = 0
    todo = np.flatnonzero(~np.isin(types, [int(t) for t in _POLYGONAL]))
    for i in todo:
        g = geoms[i]
        if g is None or g.is_empty:
            continue
        parts = shapely.get_parts(g)
        polys = [p for p in parts if shapely.get_type_id(p) in (3, 6)]
        polys = [q for p in polys for q in shapely.get_parts(p)]
        if len(polys) < len(parts):
            dropped += 1
        if not polys:
            out[i] = shapely.Polygon()
        elif len(polys) == 1:
            out[i] = polys[0]
        else:
            out[i] = shapely.MultiPolygon(polys)
    return out, dropped


def non_finite(geoms: np.ndarray) -> np.ndarray:
    """Return which geometries hold a NaN or infinite coordinate.

    Examples
    --------
    >>> with np.errstate(invalid="ignore"):  # shapely warns of NaN as it builds one
    ...     bad = shapely.from_wkt("POLYGON ((0 0, 1 0, 1 NaN, 0 0))")
    >>> non_finite(np.array([shapely.box(0, 0, 1, 1), bad, None])).tolist()
    [False, True, False]
    """
    geoms = np.asarray(geoms, dtype=object)
    out = np.zeros(len(geoms), dtype=bool)
    # the coordinates' copy, a block at a time
    for start in range(0, len(geoms), COPY_BLOCK):
        coords, index = shapely.get_coordinates(
            geoms[start : start + COPY_BLOCK], return_index=True
        )
        if len(coords):
            bad = ~np.isfinite(coords).all(axis=1)
            out[start + np.unique(index[bad])] = True
    return out


def clean_rings(geoms: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop empty and degenerate rings (fewer than 4 coordinates) from polygons.

    GEOS takes a polygon with an empty hole as valid, then crashes on it in a
    prepared predicate; such rings hold no area, so dropping them changes no
    figure. A polygon whose shell is degenerate becomes empty (and is skipped).
    Returns the geometries and how many were cleaned.

    Examples
    --------
    >>> shell = shapely.linearrings([(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)])
    >>> holed = shapely.polygons(shell, holes=[shapely.LinearRing()])
    >>> out, n = clean_rings(np.array([holed, shapely.box(0, 0, 1, 1)]))
    >>> n, out[0].wkt
    (1, 'POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))')
    """
    geoms = np.asarray(geoms, dtype=object)
    types = shapely.get_type_id(geoms)
    # a polygon without holes has one ring, its shell, whose coordinates are the
    # polygon's: only holed polygons, multipolygons and short shells are taken
    # apart (taking every ring out would copy the whole layer's coordinates)
    polygon = types == 3
    n = shapely.get_num_coordinates(geoms)
    short = polygon & (n > 0) & (n < 4)
    holed = polygon & (shapely.get_num_interior_rings(geoms) > 0)
    suspects = np.flatnonzero(short | holed | (types == 6))
    out = geoms
    cleaned = 0
    for start in range(0, len(suspects), COPY_BLOCK):
        block = suspects[start : start + COPY_BLOCK]
        fixed = _clean_ring_block(geoms[block])
        if fixed:
            if out is geoms:
                out = geoms.copy()
            for k, g in fixed.items():
                out[block[k]] = g
            cleaned += len(fixed)
    return out, cleaned


COPY_BLOCK = 50_000
"""Geometries whose rings (:func:`clean_rings`), coordinates (:func:`non_finite`),
representative points (:func:`multiplan.tiles.representative_points`) or tile
boxes (:func:`multiplan.tileinputs.tile_boxes`) are made at a time: the copies are
freed block by block, not made for a whole layer at once."""


def boxes_meet(bounds: np.ndarray, box: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Return which boxes meet ``box`` (xmin, ymin, xmax, ymax), edges included.

    As an STRtree query without a predicate compares envelopes. ``bounds`` are
    rows of ``shapely.bounds``; a NaN row (an empty geometry) meets nothing.

    Examples
    --------
    >>> b = shapely.bounds(np.array([shapely.box(0, 0, 1, 1), shapely.Polygon()]))
    >>> boxes_meet(b, (1, 1, 2, 2)).tolist(), boxes_meet(b, (1.5, 0, 2, 1)).tolist()
    ([True, False], [False, False])
    """
    x0, y0, x1, y1 = box
    return (
        (bounds[:, 0] <= x1)
        & (bounds[:, 2] >= x0)
        & (bounds[:, 1] <= y1)
        & (bounds[:, 3] >= y0)
    )


def _clean_ring_block(geoms: np.ndarray) -> dict[int, shapely.Geometry]:
    """Return the cleaned polygons of a block of polygonal geometries, by position."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    bad_ring = shapely.is_empty(rings) | (shapely.get_num_coordinates(rings) < 4)
    # an empty part of a MultiPolygon crashes GEOS as an empty ring does
    multi = shapely.get_type_id(geoms) == 6
    empty_part = shapely.is_empty(parts) & multi[part_of]
    bad_parts = np.union1d(ring_of[bad_ring], np.flatnonzero(empty_part))
    if not len(bad_parts):
        return {}
    # empty polygons have no rings at all: they are skipped later, not cleaned here
    fixed_parts = parts.copy()
    for k in bad_parts.tolist():
        mine = rings[ring_of == k]
        keep = ~bad_ring[ring_of == k]
        if not len(mine) or not keep[0]:
            fixed_parts[k] = shapely.Polygon()
        else:
            fixed_parts[k] = shapely.polygons(mine[0], holes=mine[1:][keep[1:]])
    out: dict[int, shapely.Geometry] = {}
    for t in np.unique(part_of[bad_parts]).tolist():
        own = [p for p in fixed_parts[part_of == t] if not p.is_empty]
        if not own:
            out[t] = shapely.Polygon()
        elif len(own) == 1 and shapely.get_type_id(geoms[t]) == 3:
            out[t] = own[0]
        else:
            out[t] = shapely.MultiPolygon(own)
    return out


def repair_polygons(geoms: np.ndarray) -> tuple[np.ndarray, int]:
    """Repair invalid polygons with ``make_valid(method="structure")``.

    Returns the polygonal result and the number of geometries repaired.

    Examples
    --------
    >>> bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    >>> out, n = repair_polygons(np.array([bowtie]))
    >>> n, round(out[0].area, 6), out[0].geom_type
    (1, 2.0, 'MultiPolygon')
    """
    valid = shapely.is_valid(geoms) | shapely.is_missing(geoms)
    bad = np.flatnonzero(~valid)
    if not len(bad):
        return geoms, 0
    out = geoms.copy()
    out[bad] = shapely.make_valid(geoms[bad], method="structure", keep_collapsed=False)
    fixed, _ = polygonal_parts(out[bad])
    out[bad] = fixed
    return out, len(bad)


def normalise_polygons(geoms: np.ndarray) -> np.ndarray:
    """Return Polygon/MultiPolygon only: a one-part MultiPolygon stays as it is.

    Collections and non-polygonal parts are removed; ``None`` stays ``None``.
    """
    out, _ = polygonal_parts(geoms)
    return out
