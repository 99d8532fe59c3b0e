"""Areas: square metres and 亩, one place for the factor, and areas of unions.

Every figure multiplan reports is an area in m² (planar in the working CRS, or
ellipsoidal on its ellipsoid, per the manifest's ``area``) and in 亩. A total over
several pieces is the area of their *union*, never a sum, so that land hit by
three rules counts once (SPEC §6).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import shapely

from multiplan.crs import ellipsoidal_area

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence

    import pandas as pd
    from pyproj import CRS

    Valuer = Callable[[list[np.ndarray], np.ndarray, np.ndarray], np.ndarray]
    """Values clusters of pieces: ``(members, their unions, the unions' areas in m²)`` → 元."""

logger = logging.getLogger(__name__)

M2_PER_MU = 10000.0 / 15.0
"""Square metres in one 亩 (市亩): 10000/15 = 666.666… m²."""
M2_PER_HA = 10000.0
"""Square metres in one hectare (公顷); 1 ha = 15 亩."""


_Area = TypeVar("_Area", float, "np.ndarray", "pd.Series")


def to_mu(area_m2: _Area) -> _Area:
    """Convert square metres to 亩, as ``area_m2 * 15 / 10000``.

    Examples
    --------
    >>> to_mu(10000.0)
    15.0
    >>> to_mu(np.array([666.6666666666666])).round(12).tolist()
    [1.0]
    """
    return area_m2 * 15.0 / 10000.0


def to_ha(area_m2: _Area) -> _Area:
    """Convert square metres to hectares (公顷).

    Examples
    --------
    >>> to_ha(15000.0)
    1.5
    """
    return area_m2 / M2_PER_HA


def area_m2(geoms: np.ndarray, crs: CRS, mode: str = "planar") -> np.ndarray:
    """Return the planar (default) or ellipsoidal area in m² of each geometry.

    Examples
    --------
    >>> from pyproj import CRS
    >>> area_m2(np.array([shapely.box(0, 0, 100, 20)]), CRS.from_epsg(4549)).tolist()
    [2000.0]
    """
    if mode == "ellipsoidal":
        return ellipsoidal_area(geoms, crs)
    return np.asarray(shapely.area(geoms), dtype=float)


def union_area(geoms: np.ndarray, crs: CRS, mode: str = "planar") -> float:
    """Return the area of the union of ``geoms`` (land counted once).

    Examples
    --------
    >>> from pyproj import CRS
    >>> boxes = np.array([shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3)])
    >>> union_area(boxes, CRS.from_epsg(4549))
    7.0
    """
    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return 0.0
    union = shapely.union_all(geoms)
    return float(area_m2(np.array([union], dtype=object), crs, mode)[0])


_BATCH_WIDTH = 16
"""Clusters of up to this many pieces are unioned together, a row each of one array."""
SNAP_GRID_M = 0.001
"""The precision (1 mm) of the retry when GEOS cannot union a cluster exactly."""


@dataclass(frozen=True)
class Anchored:
    """A test of pairs that cannot overlap, and the features that anchor pieces.

    ``test(i, j)`` says which candidate pairs cannot overlap. ``layer`` and
    ``feature`` (one entry a piece) say more: two pieces anchored (``feature >=
    0``) in the same ``layer`` code but different features cannot overlap, so
    :func:`overlap_pairs` pairs an anchored piece only with the pieces of its
    own feature and with what is not anchored in its layer, instead of with
    everything near it.
    """

    test: Callable[[np.ndarray, np.ndarray], np.ndarray]
    layer: np.ndarray
    feature: np.ndarray

    def __call__(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Return which pairs ``(i, j)`` cannot overlap."""
        return self.test(i, j)


def own_values(values: np.ndarray | None) -> np.ndarray:
    """Return what each piece adds to a total of land value on its own (NaN, none: 0)."""
    out: np.ndarray = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
    return out


def overlap_pairs(
    geoms: np.ndarray,
    *,
    workers: int = 1,
    known_apart: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the pairs ``(i, j)``, ``i < j``, of geometries whose interiors meet.

    Pairs that only touch are left out: they share no area, so they need not be
    unioned. Candidates are the pairs whose boxes meet (an STRtree query; for an
    :class:`Anchored` test, the pairs of one anchoring feature, and an STRtree
    query of the rest); ``known_apart(i, j)`` may say which candidates cannot
    overlap (from where the pieces came from), and the rest get the exact test:
    interiors meet (the DE-9IM pattern ``T********``), asked as "intersects and
    does not touch". The pairs are sorted by ``i``, then ``j``.

    Examples
    --------
    >>> g = np.array([shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3), shapely.box(2, 0, 4, 1)])
    >>> [a.tolist() for a in overlap_pairs(g)]
    [[0], [1]]
    """
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) < 2:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    if isinstance(known_apart, Anchored):
        i, j = _anchored_pairs(geoms, known_apart.layer, known_apart.feature, workers)
    else:
        every = np.arange(len(geoms))
        i, j = _box_pairs(geoms, every, every, workers, ordered=True)
    if known_apart is not None and len(i):
        maybe = ~known_apart(i, j)
        i, j = i[maybe], j[maybe]
    if not len(i):
        return i, j
    chunks = np.array_split(
        np.arange(len(i)), max(1, min(workers * 4, len(i) // 2048 + 1))
    )

    def meet(idx: np.ndarray) -> np.ndarray:
        # interiors meet (DE-9IM T********) = they intersect and do not touch;
        # GEOS answers the two predicates about twice as fast as the pattern
        a, b = geoms[i[idx]], geoms[j[idx]]
        hit = np.asarray(shapely.intersects(a, b), dtype=bool)
        hit[hit] = ~np.asarray(shapely.touches(a[hit], b[hit]), dtype=bool)
        return hit

    if workers > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            hit = np.concatenate(list(pool.map(meet, chunks)))
    else:
        hit = meet(np.arange(len(i)))
    i, j = i[hit], j[hit]
    order = np.lexsort((j, i))
    return i[order], j[order]


_GROUP_ALL_PAIRS = 64
"""Anchoring features with up to this many pieces pair them all; bigger ones ask an STRtree."""


def _anchored_pairs(
    geoms: np.ndarray, layer: np.ndarray, feature: np.ndarray, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the candidate pairs ``i < j`` of pieces that are not apart by their anchors.

    Every pair whose boxes meet, except two pieces anchored in the same layer
    code by different features: the pairs within each anchoring feature, and
    the pairs an STRtree finds between the pieces of different anchoring layers
    and with the pieces that are not anchored. These sets do not meet, and each
    is asked one way only, so each pair is found once (in no particular order).
    """
    n = len(geoms)
    anchored = feature >= 0
    # one code per anchoring (layer, feature); -1: not anchored
    group = np.full(n, -1, dtype=np.int64)
    if anchored.any():
        span = int(feature.max()) + 1
        group[anchored] = layer[anchored].astype(np.int64) * span + feature[anchored]
    bounds = shapely.bounds(geoms)
    parts_i: list[np.ndarray] = []
    parts_j: list[np.ndarray] = []
    # 1. within each anchoring feature
    members = np.flatnonzero(anchored)
    members = members[np.argsort(group[members], kind="stable")]
    g = group[members]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1] if len(g) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(g)] if len(g) else np.zeros(0, int)
    sizes = ends - starts
    small = np.repeat(sizes <= _GROUP_ALL_PAIRS, sizes)
    end_of = np.repeat(ends, sizes)
    count = np.where(small, end_of - np.arange(len(g)) - 1, 0)
    first = np.repeat(np.arange(len(g)), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    parts_i.append(members[first])
    parts_j.append(members[first + 1 + offset])
    big = sizes > _GROUP_ALL_PAIRS
    for s, e in zip(starts[big], ends[big], strict=True):
        a, b = _box_pairs(geoms, members[s:e], members[s:e], workers, ordered=True)
        parts_i.append(a)
        parts_j.append(b)
    # 2. between anchoring layers, and with what is not anchored
    codes = np.unique(layer[anchored])
    free = np.flatnonzero(~anchored)
    for k, code in enumerate(codes.tolist()):
        mine = np.flatnonzero(anchored & (layer == code))
        later = np.flatnonzero(anchored & np.isin(layer, codes[k + 1 :]))
        other = np.concatenate([later, free])
        if len(other):
            a, b = _box_pairs(geoms, mine, other, workers)
            parts_i.append(a)
            parts_j.append(b)
    if len(free) > 1:
        a, b = _box_pairs(geoms, free, free, workers, ordered=True)
        parts_i.append(a)
        parts_j.append(b)
    i = np.concatenate(parts_i).astype(np.intp)
    j = np.concatenate(parts_j).astype(np.intp)
    i, j = np.minimum(i, j), np.maximum(i, j)
    # the pairs within a feature were not asked of an STRtree: their boxes may not meet
    keep = (
        (bounds[i, 0] <= bounds[j, 2])
        & (bounds[j, 0] <= bounds[i, 2])
        & (bounds[i, 1] <= bounds[j, 3])
        & (bounds[j, 1] <= bounds[i, 3])
    )
    return i[keep], j[keep]


def _box_pairs(
    geoms: np.ndarray,
    query: np.ndarray,
    other: np.ndarray,
    workers: int,
    *,
    ordered: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the pairs (a piece of ``query``, a piece of ``other``) whose boxes meet.

    One STRtree of ``other``, asked in threads; with ``ordered`` only the pairs
    ``i < j`` are kept (``query`` and ``other`` the same pieces: each pair once).
    """
    tree = shapely.STRtree(geoms[other])

    def ask(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = tree.query(geoms[idx])
        i, j = idx[a], other[b]
        if ordered:
            keep = i < j
            return i[keep], j[keep]
        return i, j

    if workers > 1 and len(query) >= 4096:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(ask, np.array_split(query, workers * 2)))
    else:
        parts = [ask(query)]
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
    )


def unique_ints(values: np.ndarray) -> np.ndarray:
    """Return the distinct integers of ``values``, sorted (what ``np.unique`` returns).

    Through one sort: numpy 2.4's ``np.unique`` of integers takes 10 to 40 times
    as long (a million piece numbers: 0.12 s against 0.01 s).

    Examples
    --------
    >>> unique_ints(np.array([3, 1, 3, 2])).tolist()
    [1, 2, 3]
    """
    out = np.sort(np.asarray(values))
    if len(out) < 2:
        return out
    keep = np.ones(len(out), dtype=bool)
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Label the connected components of a graph of ``n`` nodes and edges ``(i, j)``.

    Each node gets the smallest node index of its component.

    Examples
    --------
    >>> components(5, np.array([0, 3]), np.array([2, 4])).tolist()
    [0, 1, 0, 3, 3]
    """
    labels = np.arange(n)
    if not len(i):
        return labels
    while True:
        low = np.minimum(labels[i], labels[j])
        new = labels.copy()
        np.minimum.at(new, i, low)
        np.minimum.at(new, j, low)
        new = new[new]  # pointer jumping: follow each label to its root
        if np.array_equal(new, labels):
            return labels
        labels = new


class UnionAreas:
    """Areas of unions of pieces, grouped any way, without one global union.

    A piece that overlaps no other piece of its group counts its own area; only
    clusters of pieces whose interiors meet (found once with an STRtree) are
    unioned, in parallel. A cluster that GEOS cannot union exactly (a
    ``TopologyException``) is unioned again on a 1 mm grid and counted in
    :attr:`snapped`, never a crash.

    Parameters
    ----------
    geoms
        The pieces.
    areas
        Each piece's own area in m², measured as ``mode`` says.
    crs, mode
        For measuring the unions: planar in ``crs``, or on its ellipsoid.
    workers
        Threads for the overlap test and the unions.
    known_apart
        Optional: given candidate pairs ``(i, j)``, which cannot overlap (so need
        no exact test).
    values, valuer
        Optional: each piece's land value at stake (NaN: none), and how to value
        the union of a cluster of pieces (:func:`multiplan.values.union_valuer`),
        for ``contributions(..., measure="value")``.

    Examples
    --------
    >>> from pyproj import CRS
    >>> g = np.array([shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3), shapely.box(5, 5, 6, 6)])
    >>> u = UnionAreas(g, shapely.area(g), CRS.from_epsg(4549))
    >>> u.by(np.array(["r1", "r1", "r1"]))
    {'r1': 8.0}
    >>> u.by(np.array(["r1", "r2", "r1"]))
    {'r1': 5.0, 'r2': 4.0}
    """

    def __init__(
        self,
        geoms: np.ndarray,
        areas: np.ndarray,
        crs: CRS,
        mode: str = "planar",
        *,
        workers: int = 1,
        known_apart: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        values: np.ndarray | None = None,
        valuer: Valuer | None = None,
    ) -> None:
        self.geoms = np.asarray(geoms, dtype=object)
        self.areas = np.asarray(areas, dtype=float)
        self.crs = crs
        self.mode = mode
        self.workers = workers
        self.known_apart = known_apart
        self.values = None if values is None else np.asarray(values, dtype=float)
        self.valuer = valuer
        self.snapped = 0
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None
        self._cluster_area: dict[tuple[int, ...], float] = {}
        self._cluster_value: dict[tuple[int, ...], float] = {}

    @property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the pairs of pieces whose interiors meet (computed once)."""
        if self._pairs is None:
            self._pairs = overlap_pairs(
                self.geoms, workers=self.workers, known_apart=self.known_apart
            )
        return self._pairs

    def by(
        self,
        keys: Sequence[Hashable] | np.ndarray,
        *,
        mask: np.ndarray | None = None,
        measure: str = "area",
    ) -> dict[Hashable, float]:
        """Return the area (or value) of the union of the pieces of each key, in order of first appearance.

        Pieces where ``mask`` is false are left out; ``measure`` as in
        :meth:`contributions`.
        """
        keys = np.asarray(keys, dtype=object)
        live = (
            np.ones(len(keys), dtype=bool)
            if mask is None
            else np.asarray(mask, dtype=bool)
        )
        return add_up(
            keys, self.contributions(keys, mask=live, measure=measure), mask=live
        )

    def contributions(
        self,
        keys: Sequence[Hashable] | np.ndarray,
        *,
        mask: np.ndarray | None = None,
        measure: str = "area",
    ) -> np.ndarray:
        """Return what each piece adds to the union area (or value) of its key.

        A piece that overlaps no other piece of its key adds its own area; the
        first piece of a cluster of overlapping pieces of one key adds the area
        of the cluster's union, and the others 0. :func:`add_up` sums them per
        key, in the pieces' order, so that the same pieces give the same sums
        bit for bit however the work was cut (SPEC §12).

        With ``measure="value"`` (when built with ``values`` and a ``valuer``),
        the same holds for the land value at stake: a lone piece adds its own
        value (none when it has none), a cluster the value of its union as the
        ``valuer`` measures it, so that land is valued once.
        """
        if measure not in ("area", "value"):
            raise ValueError(f"measure is 'area' or 'value', not {measure!r}")
        if measure == "value" and (self.values is None or self.valuer is None):
            raise ValueError("values were not given: no value to add up")
        own = self.own(measure)
        keys = np.asarray(keys, dtype=object)
        live = (
            np.ones(len(keys), dtype=bool)
            if mask is None
            else np.asarray(mask, dtype=bool)
        )
        out = np.zeros(len(keys))
        codes, uniques = _factorize(keys, live)
        if not len(uniques):
            return out
        i, j = self.pairs
        same = (codes[i] == codes[j]) & (codes[i] >= 0)
        labels = components(len(keys), i[same], j[same])  # a cluster's first piece
        sizes = np.bincount(labels, minlength=len(keys))
        single = live & (sizes[labels] == 1)
        out[single] = own[single]
        clustered = np.flatnonzero(live & ~single)
        if len(clustered):
            order = clustered[np.argsort(labels[clustered], kind="stable")]
            starts = np.r_[0, np.flatnonzero(np.diff(labels[order])) + 1]
            members = np.split(order, starts[1:])
            out[[m[0] for m in members]] = (
                self._union_areas(members)
                if measure == "area"
                else self._union_values(members)
            )
        return out

    def own(self, measure: str = "area") -> np.ndarray:
        """Return what each piece adds on its own: its area, or its value (none: 0)."""
        if measure == "area":
            return self.areas
        return own_values(self.values)

    def total(self, mask: np.ndarray | None = None) -> float:
        """Return the area of the union of the pieces where ``mask`` (default: all)."""
        return self.by(np.zeros(len(self.geoms), dtype=object), mask=mask).get(0, 0.0)

    def _union_areas(self, clusters: list[np.ndarray]) -> list[float]:
        todo = [c for c in clusters if tuple(c.tolist()) not in self._cluster_area]
        if todo:
            unions = self._unions(todo)
            measured = area_m2(np.array(unions, dtype=object), self.crs, self.mode)
            for c, a in zip(todo, measured, strict=True):
                self._cluster_area[tuple(c.tolist())] = float(a)
        return [self._cluster_area[tuple(c.tolist())] for c in clusters]

    def _union_values(self, clusters: list[np.ndarray]) -> list[float]:
        """Value clusters; their areas are kept too, so value a grouping before its areas."""
        assert self.valuer is not None
        todo = [c for c in clusters if tuple(c.tolist()) not in self._cluster_value]
        if todo:
            unions = np.array(self._unions(todo), dtype=object)
            areas = area_m2(unions, self.crs, self.mode)
            valued = self.valuer(todo, unions, areas)
            for c, a, v in zip(todo, areas, valued, strict=True):
                k = tuple(c.tolist())
                self._cluster_area.setdefault(k, float(a))
                self._cluster_value[k] = 0.0 if np.isnan(v) else float(v)
        return [self._cluster_value[tuple(c.tolist())] for c in clusters]

    def _unions(self, clusters: list[np.ndarray]) -> list[shapely.Geometry]:
        """Union clusters: small ones a bucket at a time (rows of a padded array), big ones alone."""
        out: list[shapely.Geometry | None] = [None] * len(clusters)
        sizes = np.array([len(c) for c in clusters])
        big = np.flatnonzero(sizes > _BATCH_WIDTH)
        for width in (2, 4, 8, _BATCH_WIDTH):
            rows = np.flatnonzero((sizes <= width) & (sizes > width // 2))
            if not len(rows):
                continue
            table = np.full((len(rows), width), None, dtype=object)
            for r, k in enumerate(rows.tolist()):
                table[r, : sizes[k]] = self.geoms[clusters[k]]
            try:
                merged = parallel_rows(table, workers=self.workers)
            except shapely.errors.GEOSException:
                merged = np.array(
                    [self._union(clusters[k]) for k in rows.tolist()], dtype=object
                )
            for r, k in enumerate(rows.tolist()):
                out[k] = merged[r]
        if len(big):
            if self.workers > 1 and len(big) > 1:
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    done = list(
                        pool.map(self._union, [clusters[k] for k in big.tolist()])
                    )
            else:
                done = [self._union(clusters[k]) for k in big.tolist()]
            for k, g in zip(big.tolist(), done, strict=True):
                out[k] = g
        return out  # type: ignore[return-value]

    def _union(self, members: np.ndarray) -> shapely.Geometry:
        try:
            return shapely.union_all(self.geoms[members])
        except shapely.errors.GEOSException as exc:
            self.snapped += 1
            logger.warning(
                "GEOS could not union a cluster of %d pieces exactly (%s); unioned on a %g m grid",
                len(members),
                exc,
                SNAP_GRID_M,
            )
            return shapely.union_all(self.geoms[members], grid_size=SNAP_GRID_M)


def parallel_rows(table: np.ndarray, *, workers: int = 1) -> np.ndarray:
    """Return the union of each row of a 2-D array of geometries (``None`` padding is skipped).

    Examples
    --------
    >>> t = np.array([[shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3)], [shapely.box(5, 5, 6, 6), None]])
    >>> shapely.area(parallel_rows(t)).tolist()
    [7.0, 1.0]
    """
    n = len(table)
    if workers <= 1 or n < 2048:
        return np.asarray(shapely.union_all(table, axis=1))
    parts = np.array_split(np.arange(n), workers * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(
            pool.map(
                lambda idx: np.asarray(shapely.union_all(table[idx], axis=1)), parts
            )
        )
    return np.concatenate(done)


def add_up(
    keys: np.ndarray, contributions: np.ndarray, *, mask: np.ndarray | None = None
) -> dict[Hashable, float]:
    """Sum per-piece contributions per key, in the pieces' order (keys in order of first appearance).

    Examples
    --------
    >>> add_up(np.array(["a", "b", "a"], dtype=object), np.array([1.0, 2.0, 0.5]))
    {'a': 1.5, 'b': 2.0}
    """
    keys = np.asarray(keys, dtype=object)
    live = (
        np.ones(len(keys), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    )
    codes, uniques = _factorize(keys, live)
    totals = np.zeros(len(uniques))
    np.add.at(totals, codes[live], np.asarray(contributions, dtype=float)[live])
    return {k: float(totals[n]) for n, k in enumerate(uniques)}


def _factorize(keys: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, list[Hashable]]:
    """Return integer codes for the live keys (-1 elsewhere; ``None`` is a key of its own).

    The uniques are the keys themselves, each as it first appears: pandas gives
    NaN for a ``None`` key, and ``None`` (land in no unit) must stay ``None`` for
    the tables to find it.

    Examples
    --------
    >>> _factorize(np.array([None, "a", None], dtype=object), np.ones(3, dtype=bool))[1]
    [None, 'a']
    """
    codes = np.full(len(keys), -1, dtype=np.intp)
    if not live.any():
        return codes, []
    values = keys[live]
    found, first = factorize_runs(values)
    codes[live] = found
    return codes, values[first].tolist()


def factorize_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the codes of ``pd.factorize(values, use_na_sentinel=False)``, and each code's first index.

    Equal neighbours are factorized once: pandas sizes its hash table by the
    values it is given, about 70 MB for a million pieces, and pieces in their
    sorted order come in long runs of one rule, one layer, one feature.

    Examples
    --------
    >>> codes, first = factorize_runs(np.array(["b", "b", None, "a", "b"], dtype=object))
    >>> codes.tolist(), first.tolist()
    ([0, 0, 1, 2, 0], [0, 2, 3])
    """
    import pandas as pd

    if not len(values):
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    heads = np.ones(len(values), dtype=bool)
    try:
        heads[1:] = values[1:] != values[:-1]
    except (TypeError, ValueError):  # a value that is neither equal nor not (pd.NA)
        heads[:] = True
    at = np.flatnonzero(heads)
    found, _ = pd.factorize(values[at], use_na_sentinel=False)
    codes = np.asarray(found, dtype=np.intp)[np.cumsum(heads) - 1]
    # codes count up in order of first appearance: a code first appears where
    # it is greater than every code before it
    seen = np.maximum.accumulate(found)
    first = np.flatnonzero(found > np.r_[-1, seen[:-1]])
    return codes, at[first]
