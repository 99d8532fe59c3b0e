"""Noding: the faces of an overlay of many polygon layers, and what covers each face.

Every polygon boundary is noded once (``union_all`` of the boundaries, then
``polygonize``); the faces never overlap and cover the union of the polygons.
Each face keeps an interior point, and a face whose point lies too close to its
own boundary is attributed by area instead. Used by the one map
(:mod:`multiplan.onemap`), plan editions (:mod:`multiplan.editions`) and levels
of units (:mod:`multiplan.levels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely

from multiplan.layers import CLASS_COL

if TYPE_CHECKING:
    from collections.abc import Sequence

CLEARANCE_M = 0.05
"""A face whose interior point lies closer than this to its own boundary is attributed by area."""


@dataclass(frozen=True)
class Faces:
    """Faces of a noding, each with an interior point and whether that point can be trusted.

    A point closer than :data:`CLEARANCE_M` to its face's boundary may fall on the
    wrong side of an edge that noding moved; such a face is ``doubtful`` and is
    attributed by area instead (:func:`covering_pairs`).
    """

    geoms: np.ndarray
    points: np.ndarray
    doubtful: np.ndarray

    def take(self, mask: np.ndarray) -> Faces:
        """Return the faces where ``mask``."""
        return Faces(self.geoms[mask], self.points[mask], self.doubtful[mask])


def covering_pairs(faces: Faces, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(face, geometry)`` index pairs: which geometries cover each face.

    A face is covered by a geometry that holds its interior point or, for a
    doubtful face, that shares more than half of its area. Pairs are sorted by
    face, then geometry.

    Examples
    --------
    >>> sliver = shapely.box(0, 0, 1, 1e-4)  # 0.1 mm wide: its point is near the edge
    >>> f = Faces(np.array([sliver]), shapely.point_on_surface([sliver]), np.array([True]))
    >>> [a.tolist() for a in covering_pairs(f, np.array([shapely.box(0, -1, 1, 1e-4), shapely.box(0, 1e-4, 1, 2)]))]
    [[0], [0]]
    """
    geoms = np.asarray(geoms, dtype=object)
    empty = np.zeros(0, dtype=np.intp)
    if not len(geoms) or not len(faces.geoms):
        return empty, empty
    tree = shapely.STRtree(geoms)
    sure = np.flatnonzero(~faces.doubtful)
    fi, gi = tree.query(faces.points[sure], predicate="within")
    fi = sure[fi]
    doubt = np.flatnonzero(faces.doubtful)
    if len(doubt):
        di, dj = tree.query(faces.geoms[doubt], predicate="intersects")
        di = doubt[di]
        shared = shapely.area(shapely.intersection(faces.geoms[di], geoms[dj]))
        keep = shared > 0.5 * shapely.area(faces.geoms[di])
        fi, gi = np.concatenate([fi, di[keep]]), np.concatenate([gi, dj[keep]])
    order = np.lexsort((gi, fi))
    return fi[order].astype(np.intp), gi[order].astype(np.intp)


def node_faces(
    polygon_sets: Sequence[np.ndarray], boundary: shapely.Geometry | None
) -> Faces:
    """Return the faces of the overlay of all polygons (inside ``boundary``), with their points.

    Every polygon boundary is noded once; the faces are the polygons of the noded
    linework that lie inside the boundary and inside at least one polygon.
    """
    geoms = (
        np.concatenate([np.asarray(g, dtype=object) for g in polygon_sets])
        if polygon_sets
        else np.zeros(0, dtype=object)
    )
    geoms = geoms[~shapely.is_empty(geoms)]
    if not len(geoms):
        none = np.zeros(0, dtype=object)
        return Faces(none, none, np.zeros(0, dtype=bool))
    lines = [shapely.boundary(geoms)]
    if boundary is not None:
        lines.append(np.array([shapely.boundary(boundary)], dtype=object))
    noded = shapely.union_all(np.concatenate(lines))
    polys = np.asarray(
        shapely.get_parts(shapely.polygonize(shapely.get_parts(noded))), dtype=object
    )
    polys = polys[shapely.area(polys) > 0]
    pts = shapely.point_on_surface(polys)
    clearance = shapely.distance(pts, shapely.boundary(polys))
    faces = Faces(polys, pts, clearance < CLEARANCE_M)
    keep = np.zeros(len(polys), dtype=bool)
    keep[covering_pairs(faces, geoms)[0]] = True
    if boundary is not None:
        inside = np.zeros(len(polys), dtype=bool)
        inside[covering_pairs(faces, np.array([boundary], dtype=object))[0]] = True
        keep &= inside
    return faces.take(keep)


def build_faces(
    polygon_sets: Sequence[np.ndarray], boundary: shapely.Geometry | None
) -> np.ndarray:
    """Return the faces of the overlay of all polygons (inside ``boundary``), not yet attributed.

    Examples
    --------
    >>> faces = build_faces([np.array([shapely.box(0, 0, 2, 2)]), np.array([shapely.box(1, 1, 3, 3)])], None)
    >>> sorted(shapely.area(faces).tolist())
    [1.0, 3.0, 3.0]
    """
    return node_faces(polygon_sets, boundary).geoms


def cover(faces: Faces, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each face: the covering features' ids (sorted as text, comma-joined) and the first one's class."""
    n = len(faces.geoms)
    ids = np.full(n, None, dtype=object)
    cls = np.full(n, None, dtype=object)
    if not len(frame) or not n:
        return ids, cls
    pi, fi = covering_pairs(faces, np.asarray(frame.geometry.array, dtype=object))
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
