"""Noding: the faces of an overlay of many polygon layers, and what covers each face.

Every polygon boundary is noded (``union_all`` of the boundaries, then
``polygonize``, in tiles on several processes: :mod:`multiplan.facetiles`); the
faces never overlap and cover the union of the polygons.
Each face keeps an interior point, and a face whose point lies too close to its
own boundary is attributed by area instead. Used by the one map
(:mod:`multiplan.onemap`), plan editions (:mod:`multiplan.editions`) and levels
of units (:mod:`multiplan.levels`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import shapely

from multiplan.areas import to_mu
from multiplan.facetiles import FaceNoding, start_noding
from multiplan.layers import CLASS_COL
from multiplan.overlay import parallel_map

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from multiplan.layers import Layers
    from multiplan.specs import Project

CLEARANCE_M = 0.05
"""A face whose interior point lies closer than this to its own boundary is attributed by area."""

logger = logging.getLogger(__name__)


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


def covering_pairs(
    faces: Faces, geoms: np.ndarray, *, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(face, geometry)`` index pairs: which geometries cover each face.

    A face is covered by a geometry that holds its interior point or, for a
    doubtful face, that shares more than half of its area. Pairs are sorted by
    face, then geometry, whatever the number of ``workers`` (threads).

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

    def within(part: np.ndarray) -> np.ndarray:
        hit = tree.query(faces.points[part], predicate="within")
        return np.stack([part[hit[0]], hit[1]])

    chunks = np.array_split(sure, max(1, min(4 * workers, len(sure) // 8192)))
    if workers > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            fi, gi = np.concatenate(list(pool.map(within, chunks)), axis=1)
    else:
        fi, gi = within(sure)
    doubt = np.flatnonzero(faces.doubtful)
    if len(doubt):
        di, dj = tree.query(faces.geoms[doubt], predicate="intersects")
        di = doubt[di]
        shared = shapely.area(
            parallel_map(
                shapely.intersection, faces.geoms[di], geoms[dj], workers=workers
            )
        )
        keep = shared > 0.5 * shapely.area(faces.geoms[di])
        fi, gi = np.concatenate([fi, di[keep]]), np.concatenate([gi, dj[keep]])
    order = np.lexsort((gi, fi))
    return fi[order].astype(np.intp), gi[order].astype(np.intp)


def study_boundary(project: Project, layers: Layers) -> shapely.Geometry | None:
    """Return the union of the study boundary's polygons, or ``None`` without one."""
    if not project.boundary or project.boundary not in layers:
        return None
    return shapely.union_all(
        np.asarray(layers[project.boundary].geometry.array, dtype=object)
    )


def _polygons(polygon_sets: Sequence[np.ndarray]) -> np.ndarray:
    """Return the polygons of every set as one array, empties dropped."""
    geoms = (
        np.concatenate([np.asarray(g, dtype=object) for g in polygon_sets])
        if polygon_sets
        else np.zeros(0, dtype=object)
    )
    return geoms[~shapely.is_empty(geoms)]


def face_lines(
    polygon_sets: Sequence[np.ndarray], boundary: shapely.Geometry | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the polygons (empties dropped) and the lines to node: their boundaries and the boundary's."""
    geoms = _polygons(polygon_sets)
    if not len(geoms):
        return geoms, np.zeros(0, dtype=object)
    lines = [np.asarray(shapely.boundary(geoms), dtype=object)]
    if boundary is not None:
        lines.append(np.array([shapely.boundary(boundary)], dtype=object))
    return geoms, np.concatenate(lines)


def node_faces(
    polygon_sets: Sequence[np.ndarray],
    boundary: shapely.Geometry | None,
    *,
    workers: int = 1,
    client: Any = None,
    tiles: int | None = None,
    started: FaceNoding | None = None,
) -> Faces:
    """Return the faces of the overlay of all polygons (inside ``boundary``), with their points.

    Every polygon boundary is noded (:mod:`multiplan.facetiles`: in tiles chosen
    from the data, or ``tiles`` of them, on ``workers`` processes or a dask
    ``client``; or already ``started``); the faces are the polygons of the noded
    linework that lie inside the boundary and inside at least one polygon.
    ``workers`` threads find their points and what covers them; the faces are
    the same for any number of workers or tiles.
    """
    if started is None:
        geoms, lines = face_lines(polygon_sets, boundary)
        started = start_noding(lines, workers=workers, client=client, tiles=tiles)
    else:  # its lines were made when it started
        geoms = _polygons(polygon_sets)
    with started:
        polys = started.faces()
    if not len(geoms):
        none = np.zeros(0, dtype=object)
        return Faces(none, none, np.zeros(0, dtype=bool))
    pts = parallel_map(shapely.point_on_surface, polys, workers=workers)
    clearance = parallel_map(_clearance, pts, polys, workers=workers)
    faces = Faces(polys, pts, clearance < CLEARANCE_M)
    keep = np.zeros(len(polys), dtype=bool)
    keep[covering_pairs(faces, geoms, workers=workers)[0]] = True
    if boundary is not None:
        inside = np.zeros(len(polys), dtype=bool)
        inside[covering_pairs(faces, np.array([boundary], dtype=object))[0]] = True
        keep &= inside
    return faces.take(keep)


def reading_order(points: np.ndarray) -> np.ndarray:
    """Return the order that reads faces north to south, then west to east (to the millimetre).

    Ties at the millimetre are broken by the exact coordinates, so the order does
    not depend on how the faces were made.

    Examples
    --------
    >>> reading_order(shapely.points([(5, 0), (1, 0), (3, 9)])).tolist()
    [2, 1, 0]
    """
    c = shapely.get_coordinates(points).reshape(-1, 2)
    return np.lexsort((c[:, 0], -c[:, 1], np.round(c[:, 0], 3), -np.round(c[:, 1], 3)))


def _clearance(pts: np.ndarray, polys: np.ndarray) -> np.ndarray:
    return np.asarray(shapely.distance(pts, shapely.boundary(polys)))


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


class Cover(NamedTuple):
    """What covers each face of one layer (:func:`cover`)."""

    ids: np.ndarray
    """The covering features' ids, sorted as text and comma-joined; ``None`` where none."""
    classes: np.ndarray
    """The class of the first covering feature (by id as text) that has one."""
    mixed: np.ndarray
    """Whether the covering features hold more than one class: the layer contradicts itself there."""


def cover(faces: Faces, frame: pd.DataFrame, *, workers: int = 1) -> Cover:
    """For each face: the covering features' ids (sorted as text, comma-joined) and the first one's class.

    A face inside several features of the layer that hold different classes is
    marked ``mixed``: its class is the first feature's, and the caller reports
    it (:func:`report_mixed`).
    """
    n = len(faces.geoms)
    ids = np.full(n, None, dtype=object)
    cls = np.full(n, None, dtype=object)
    mixed = np.zeros(n, dtype=bool)
    if not len(frame) or not n:
        return Cover(ids, cls, mixed)
    pi, fi = covering_pairs(
        faces, np.asarray(frame.geometry.array, dtype=object), workers=workers
    )
    if not len(pi):
        return Cover(ids, cls, mixed)
    fid = np.array([str(v) for v in frame.index], dtype=object)[fi]
    fcls = frame[CLASS_COL].to_numpy(dtype=object)[fi]
    # most faces lie in one feature of a layer: no sorting or joining for those
    single = np.bincount(pi, minlength=n)[pi] == 1
    ids[pi[single]] = fid[single]
    cls[pi[single]] = fcls[single]
    if single.all():
        return Cover(ids, cls, mixed)
    pi, fid, fcls = pi[~single], fid[~single], fcls[~single]
    _, code = np.unique(fid.astype(str), return_inverse=True)
    order = np.lexsort((code, pi))  # by face, then id as text
    faces_at, id_runs = runs(pi[order], fid[order])
    _, cls_runs = runs(pi[order], fcls[order])
    ids[faces_at] = [",".join(g) for g in id_runs]
    # the class of the first covering feature that has one
    cls[faces_at] = [next((c for c in g if c is not None), None) for g in cls_runs]
    mixed[faces_at] = [len({c for c in g if c is not None}) > 1 for g in cls_runs]
    return Cover(ids, cls, mixed)


def report_mixed(name: str, found: Cover, area_m2: np.ndarray) -> int:
    """Log the faces that lie in features of layer ``name`` with different classes; return their number.

    Such a face shows the class of the first feature by id (:func:`cover`); the
    warning gives how many, their land in 亩 and the first features' ids, so
    the plan's owner can mend the overlap.
    """
    count = int(found.mixed.sum())
    if count:
        ids = list(dict.fromkeys(found.ids[found.mixed]))
        logger.warning(
            "%d faces (%.2f 亩) lie in features of %s with different classes (%s%s): "
            "each takes the class of its first feature by id",
            count,
            to_mu(float(area_m2[found.mixed].sum())),
            name,
            "; ".join(ids[:5]),
            "; …" if len(ids) > 5 else "",
        )
    return count


def runs(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split ``values`` where the sorted ``keys`` change: return each run's key and values.

    Examples
    --------
    >>> k, v = runs(np.array([3, 3, 5]), np.array(["a", "b", "c"], dtype=object))
    >>> k.tolist(), [g.tolist() for g in v]
    ([3, 5], [['a', 'b'], ['c']])
    """
    if not len(keys):
        return keys, []
    cut = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return keys[np.r_[0, cut]], np.split(values, cut)
