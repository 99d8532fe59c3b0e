from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from multiplan import overlay as O

# ---------------------------------------------------------------- strategies


@st.composite
def polygons(draw, n_min=1, n_max=12, span=100.0):
    """Polygons that overlap, touch, nest and share edges: boxes, rotated boxes, stars."""
    n = draw(st.integers(n_min, n_max))
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(["box", "rot", "star", "grid"]))
        # millimetre-resolution coordinates, as planning data has
        mm = st.integers(0, int(span * 1000)).map(lambda v: v / 1000)
        x, y = draw(mm), draw(mm)
        w = draw(st.integers(1000, int(span * 500)).map(lambda v: v / 1000))
        h = draw(st.integers(1000, int(span * 500)).map(lambda v: v / 1000))
        if kind == "grid":  # snapped to a 10 m grid: shared edges and touching corners
            x, y, w, h = (round(v / 10) * 10 for v in (x, y, w, h))
            w, h = max(w, 10), max(h, 10)
        g = shapely.box(x, y, x + w, y + h)
        if kind == "rot":
            g = shapely.affinity.rotate(g, draw(st.integers(0, 90)), origin="centroid")
        elif kind == "star":
            k = draw(st.integers(5, 12))
            t = np.linspace(0, 2 * np.pi, 2 * k, endpoint=False)
            r = np.where(np.arange(2 * k) % 2 == 0, w / 2, w / 4)
            g = shapely.Polygon(np.c_[x + r * np.cos(t), y + r * np.sin(t)])
        out.append(g)
    return np.array(out, dtype=object)


SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def union_area(geoms):
    return shapely.union_all(geoms).area if len(geoms) else 0.0


# ---------------------------------------------------------------- properties


def _stars():
    """The example where GEOS's floating intersection is not symmetric (tests/data)."""
    rows = [
        line.split()
        for line in (Path(__file__).parent / "data" / "stars_geos_overlay.txt")
        .read_text()
        .splitlines()
        if line and not line.startswith("#")
    ]
    return {
        side: shapely.from_wkb(
            np.array([h for s, h in rows if s == side], dtype=object)
        )
        for side in ("a", "b")
    }


@SETTINGS
@given(a=polygons(), b=polygons())
@example(**_stars())
def test_intersection_plus_difference_is_a(a, b):
    ia, _, pieces = O.intersect_pieces(a, b)
    da, dpieces = O.difference_pieces(a, b)
    for i, g in enumerate(a):
        inter = union_area(pieces[ia == i])
        diff = dpieces[da == i][0].area if (da == i).any() else 0.0
        assert inter + diff == pytest.approx(g.area, rel=1e-6, abs=1e-6)
        # and the two never overlap each other. Checked by snap-rounding on a
        # 1e-9 grid: GEOS 3.14.1's floating intersection of one such pair (a star
        # cut by a star) returns 0.069 m² one way round and 0 the other
        if (da == i).any() and (ia == i).any():
            assert (
                shapely.intersection(
                    shapely.union_all(pieces[ia == i]),
                    dpieces[da == i][0],
                    grid_size=1e-9,
                ).area
                < 1e-6 * g.area + 1e-9
            )


@SETTINGS
@given(a=polygons(), b=polygons())
def test_pieces_match_a_second_method(a, b):
    ia, ib, pieces = O.intersect_pieces(a, b)
    got = {(int(i), int(j)): g.area for i, j, g in zip(ia, ib, pieces, strict=True)}
    ga = gpd.GeoDataFrame({"ia": range(len(a))}, geometry=list(a))
    gb = gpd.GeoDataFrame({"ib": range(len(b))}, geometry=list(b))
    ref = gpd.overlay(ga, gb, how="intersection", keep_geom_type=True)
    want = {
        (int(r.ia), int(r.ib)): r.geometry.area
        for r in ref.itertuples()
        if r.geometry.area > 0
    }
    for key in set(got) | set(want):
        assert got.get(key, 0.0) == pytest.approx(
            want.get(key, 0.0), rel=1e-6, abs=1e-6
        ), key


@SETTINGS
@given(a=polygons(n_max=8), b=polygons(n_max=8), units=polygons(n_min=1, n_max=4))
def test_unit_split_pieces_partition_the_piece(a, b, units):
    ia, ib, pieces = O.intersect_pieces(a, b)
    # units must not overlap each other: make them disjoint first
    disjoint = []
    taken = shapely.Polygon()
    for u in units:
        d = O.polygonal(np.array([shapely.difference(u, taken)]))[0]
        taken = shapely.union(taken, u)
        disjoint.append(d)
    units = np.array(disjoint, dtype=object)
    pi, ui, parts = O.split_pieces(pieces, units)
    for k, g in enumerate(pieces):
        mine = parts[pi == k]
        assert sum(p.area for p in mine) == pytest.approx(g.area, rel=1e-6, abs=1e-6)
        # the parts of one piece never overlap
        assert union_area(mine) == pytest.approx(
            sum(p.area for p in mine), rel=1e-6, abs=1e-6
        )
        assert len(set(ui[pi == k].tolist())) == len(mine)


@SETTINGS
@given(
    a=polygons(),
    b=polygons(),
    # GEOS' own intersection changes by 0.2 % for a box moved by a subnormal 2e-309:
    # projected coordinates are never subnormal, so such shifts are left out
    dx=st.floats(-1e6, 1e6, allow_subnormal=False),
    dy=st.floats(-1e6, 1e6, allow_subnormal=False),
    seed=st.integers(0, 1000),
)
def test_shuffling_and_translating_change_no_figure(a, b, dx, dy, seed):
    def figures(ia, ib, pieces, ra=None, rb=None):
        ra = np.arange(len(a)) if ra is None else ra
        rb = np.arange(len(b)) if rb is None else rb
        return {
            (int(ra[i]), int(rb[j])): g.area
            for i, j, g in zip(ia, ib, pieces, strict=True)
            if g.area > 1e-6
        }

    base = figures(*O.intersect_pieces(a, b))
    rng = np.random.default_rng(seed)
    pa, pb = rng.permutation(len(a)), rng.permutation(len(b))
    shuffled = figures(*O.intersect_pieces(a[pa], b[pb]), pa, pb)
    assert shuffled.keys() == base.keys()
    assert all(shuffled[k] == pytest.approx(base[k], rel=1e-9) for k in base)
    move = lambda g: shapely.transform(g, lambda c: c + np.array([dx, dy]))  # noqa: E731
    moved = figures(*O.intersect_pieces(move(a), move(b)))
    # far from the origin coordinates lose digits: compare what has real area
    real = {k for k, v in base.items() if v > 1e-3}
    assert real <= moved.keys()
    assert all(moved[k] == pytest.approx(base[k], rel=1e-6, abs=1e-3) for k in real)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=polygons(n_min=5, n_max=30), b=polygons(n_min=5, n_max=30))
def test_workers_give_identical_results(a, b):
    big_a = np.concatenate([a] * 20)  # enough pairs to be split over threads
    r1 = O.intersect_pieces(big_a, b, workers=1)
    r2 = O.intersect_pieces(big_a, b, workers=2)
    assert np.array_equal(r1[0], r2[0])
    assert np.array_equal(r1[1], r2[1])
    assert all(shapely.equals_exact(r1[2], r2[2], tolerance=0))
    d1 = O.difference_pieces(big_a, b, workers=1)
    d2 = O.difference_pieces(big_a, b, workers=3)
    assert np.array_equal(d1[0], d2[0])
    assert all(shapely.equals_exact(d1[1], d2[1], tolerance=0))


# ---------------------------------------------------------------- known cases


def test_false_overlap_of_nearly_collinear_edges_shapely_1871():
    # two triangles that only share an edge; one vertex differs in the 15th digit
    a = shapely.Polygon([[446, -207], [315, -75.99999999999999], [557, -76]])
    b = shapely.Polygon([[184, -207], [315, -76], [446, -207], [315, -338]])
    # GEOS' overlay alone gets both answers wrong …
    assert shapely.intersection(a, b).area > 15_000
    assert shapely.difference(a, b).area == 0
    # … the predicates know they only touch, and so do we
    assert not shapely.relate_pattern(a, b, "T********")
    ia, ib, pieces = O.intersect_pieces(np.array([a]), np.array([b]))
    assert len(pieces) == 0
    da, dpieces = O.difference_pieces(np.array([a]), np.array([b]))
    assert da.tolist() == [0]
    assert dpieces[0].area == pytest.approx(a.area)
    assert O.classify_pairs(np.array([a]), np.array([b])).kind.tolist() == [O.TOUCH]


def test_false_overlap_guard_in_planning_coordinates():
    # the same shape at Xinbei coordinates, where a reprojected shared edge differs by ~1e-9 m
    x0, y0 = 490_000.0, 3_530_000.0
    a = shapely.Polygon(
        [(x0 + 446, y0 - 207), (x0 + 315, y0 - 76 + 1e-9), (x0 + 557, y0 - 76)]
    )
    b = shapely.Polygon(
        [
            (x0 + 184, y0 - 207),
            (x0 + 315, y0 - 76),
            (x0 + 446, y0 - 207),
            (x0 + 315, y0 - 338),
        ]
    )
    ia, _, pieces = O.intersect_pieces(np.array([a]), np.array([b]))
    da, dpieces = O.difference_pieces(np.array([a]), np.array([b]))
    assert sum(shapely.area(pieces)) + sum(shapely.area(dpieces)) == pytest.approx(
        a.area, rel=1e-9
    )
    assert sum(shapely.area(pieces)) < 1.0


def test_covers_fast_path_copies_the_feature():
    zone = shapely.Point(0, 0).buffer(1000, quad_segs=256)
    parcels = np.array(
        [
            shapely.box(0, 0, 10, 10),
            shapely.box(995, -5, 1010, 5),
            shapely.box(5000, 0, 5001, 1),
        ]
    )
    p = O.classify_pairs(parcels, np.array([zone]))
    assert p.kind.tolist() == [O.B_COVERS_A, O.PARTIAL]
    ia, ib, pieces = O.intersect_pieces(parcels, np.array([zone]))
    assert pieces[0] is parcels[0]  # copied, not intersected
    assert pieces[1].area < parcels[1].area


def test_a_covering_b_gives_b():
    a = np.array([shapely.box(0, 0, 100, 100)])
    b = np.array([shapely.box(10, 10, 20, 20), shapely.box(30, 30, 40, 40)])
    p = O.classify_pairs(a, b)
    assert p.kind.tolist() == [O.A_COVERS_B, O.A_COVERS_B]
    _, ib, pieces = O.intersect_pieces(a, b)
    assert [pieces[k] is b[j] for k, j in enumerate(ib)] == [True, True]


def test_difference_with_many_neighbours_unions_them():
    a = np.array([shapely.box(0, 0, 100, 100)])
    b = np.array(
        [shapely.box(i * 5, 0, i * 5 + 5, 50) for i in range(20)]
    )  # 20 strips > _UNION_GROUP
    ia, pieces = O.difference_pieces(a, b)
    assert pieces[0].area == pytest.approx(5000.0)


def test_polygonal_keeps_multipolygon_parts_of_collections():
    gc = shapely.GeometryCollection(
        [
            shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)]),
            shapely.LineString([(0, 0), (5, 5)]),
        ]
    )
    out = O.polygonal(np.array([gc, shapely.box(0, 0, 1, 1)]))
    assert out[0].geom_type == "MultiPolygon"
    assert out[0].area == pytest.approx(2.0)
    assert out[1].geom_type == "Polygon"


def test_clip_keeps_inside_pieces_untouched():
    boundary = shapely.box(0, 0, 100, 100)
    pieces = np.array(
        [
            shapely.box(10, 10, 20, 20),
            shapely.box(90, 90, 110, 110),
            shapely.box(200, 200, 210, 210),
        ]
    )
    out = O.clip_pieces(pieces, boundary, inside=np.array([True, False, False]))
    assert out[0] is pieces[0]
    assert out[1].area == pytest.approx(100.0)
    assert out[2].is_empty


def test_covering_index():
    units = np.array([shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)])
    g = np.array(
        [
            shapely.box(1, 1, 2, 2),
            shapely.box(9, 1, 11, 2),
            shapely.box(15, 1, 16, 2),
            shapely.box(50, 50, 51, 51),
        ]
    )
    assert O.covering_index(g, units).tolist() == [0, -1, 1, -1]


def test_classify_pairs_drops_only_the_preparation_it_made():
    # a prepared polygon can hold more memory than the polygon: a check of many
    # tiles must not keep every B feature it ever tested prepared
    a = np.array([shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)])
    b = np.array([shapely.box(5, 5, 6, 6), shapely.box(25, 5, 40, 6)])
    kept = shapely.box(8, 8, 9, 9)
    shapely.prepare(kept)  # the caller's own, e.g. a boundary used again
    b = np.append(b, kept)
    pairs = O.classify_pairs(a, b, prepare="b")
    assert pairs.ia.tolist() == [0, 0, 1]
    assert pairs.kind.tolist() == [O.A_COVERS_B, O.A_COVERS_B, O.PARTIAL]
    assert shapely.is_prepared(b).tolist() == [False, False, True]
    assert not shapely.is_prepared(a).any()
