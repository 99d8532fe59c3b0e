import numpy as np
import pytest
import shapely
from helpers import zoo

from multiplan import geometry as G


@pytest.fixture
def geoms():
    return np.array(list(zoo().values()), dtype=object)


def test_force_2d_counts_z(geoms):
    out, n = G.force_2d(geoms)
    assert n == 1
    assert not shapely.has_z(out).any()


def test_repair_counts_and_keeps_area():
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    touching = shapely.Polygon(
        [(0, 0), (4, 0), (4, 4), (2, 0), (0, 4)]
    )  # ring touches itself
    good = shapely.box(10, 10, 11, 11)
    out, n = G.repair_polygons(np.array([bowtie, touching, good, None], dtype=object))
    assert n == 2
    assert shapely.is_valid(out[:3]).all()
    assert out[0].area == pytest.approx(2.0)
    assert out[2] is good  # valid input is untouched
    assert out[3] is None


def test_repair_is_make_valid_structure():
    # a hole that crosses its shell: "structure" subtracts it (95 m²), "linework" does not (100 m²)
    crossing_hole = shapely.Polygon(
        [(0, 0), (10, 0), (10, 10), (0, 10)], [[(5, 5), (15, 5), (15, 6), (5, 6)]]
    )
    out, n = G.repair_polygons(np.array([crossing_hole]))
    assert n == 1
    assert out[0].equals(
        shapely.make_valid(crossing_hole, method="structure", keep_collapsed=False)
    )
    assert out[0].area == pytest.approx(95.0)


def test_polygonal_parts_drop_lines_and_points(geoms):
    out, dropped = G.polygonal_parts(geoms)
    kinds = {shapely.get_type_id(g) for g in out if g is not None}
    assert kinds <= {3, 6}
    assert dropped == 1  # the collection's line


@pytest.mark.parametrize(
    ("items", "family"),
    [
        (
            [shapely.box(0, 0, 1, 1), shapely.MultiPolygon([shapely.box(2, 2, 3, 3)])],
            "polygon",
        ),
        (
            [
                shapely.LineString([(0, 0), (1, 1)]),
                shapely.MultiLineString([[(0, 0), (1, 0)]]),
            ],
            "line",
        ),
        ([shapely.Point(0, 0), shapely.MultiPoint([(1, 1)])], "point"),
        ([shapely.Point(0, 0), shapely.box(0, 0, 1, 1)], "mixed"),
        ([], "polygon"),
    ],
)
def test_geometry_family(items, family):
    assert G.geometry_family(np.array(items, dtype=object)) == family


def _polygon_from_rings(*rings):
    """A polygon built from raw WKB, so that GEOS keeps rings it would refuse to build."""
    import struct

    out = struct.pack("<BII", 1, 3, len(rings))
    for ring in rings:
        out += struct.pack("<I", len(ring)) + b"".join(
            struct.pack("<dd", *c) for c in ring
        )
    return shapely.from_wkb(out)


def _clean_ring_by_ring(g):
    """The reference: every ring of every polygon looked at, one geometry at a time."""
    if g is None or shapely.get_type_id(g) not in (3, 6):
        return g, False
    parts = list(g.geoms) if g.geom_type == "MultiPolygon" else [g]
    kept, changed = [], False
    for p in parts:
        if p.is_empty:
            changed = changed or g.geom_type == "MultiPolygon"
            continue
        rings = [p.exterior, *p.interiors]
        good = [len(r.coords) >= 4 and not r.is_empty for r in rings]
        if not all(good):
            changed = True
        if good[0]:
            kept.append(
                shapely.Polygon(
                    rings[0], [r for r, k in zip(rings[1:], good[1:], strict=True) if k]
                )
            )
    if not changed:
        return g, False
    if not kept:
        return shapely.Polygon(), True
    if len(kept) == 1 and g.geom_type == "Polygon":
        return kept[0], True
    return shapely.MultiPolygon(kept), True


def test_clean_rings_equals_a_ring_by_ring_look_in_any_block_size(monkeypatch):
    shell = [(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)]
    hole = [(1, 1), (2, 1), (2, 2), (1, 1)]
    short = [(0, 0), (1, 0), (0, 0)]
    zoo_ = [
        shapely.box(0, 0, 1, 1),
        shapely.Polygon(),
        _polygon_from_rings(shell, []),  # an empty hole
        _polygon_from_rings(short),  # a shell of three points
        _polygon_from_rings(shell, short),  # a hole of three points
        _polygon_from_rings(shell, hole),  # a sound hole
        shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)]),
        shapely.from_wkt("MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)), EMPTY)"),
        shapely.MultiPolygon([_polygon_from_rings(short), shapely.box(5, 5, 6, 6)]),
        shapely.from_wkt("POLYGON Z ((0 0 1, 1 0 1, 1 1 1, 0 0 1))"),
        None,
        shapely.Point(1, 1),
        shapely.LineString([(0, 0), (1, 1)]),
    ]
    rng = np.random.default_rng(7)
    geoms = np.array(zoo_ * 5, dtype=object)[rng.permutation(len(zoo_) * 5)]
    want = [_clean_ring_by_ring(g) for g in geoms]
    for block in (50_000, 3, 1):
        monkeypatch.setattr(G, "COPY_BLOCK", block)
        out, n = G.clean_rings(geoms)
        assert n == sum(changed for _, changed in want) == 25
        for got, (ref, _) in zip(out, want, strict=True):
            assert (got is None and ref is None) or got.wkt == ref.wkt
    # sound geometries are the very objects given; nothing is copied
    sound = np.array([shapely.box(0, 0, 1, 1), _polygon_from_rings(shell, hole)])
    out, n = G.clean_rings(sound)
    assert n == 0
    assert out is sound


def test_non_finite_finds_a_nan_in_any_block(monkeypatch):
    with np.errstate(invalid="ignore"):
        bad = shapely.from_wkt("POLYGON ((0 0, 1 0, 1 NaN, 0 0))")
    geoms = np.array([shapely.box(0, 0, 1, 1)] * 7 + [bad] + [None] * 2, dtype=object)
    for block in (50_000, 3, 1):
        monkeypatch.setattr(G, "COPY_BLOCK", block)
        assert np.flatnonzero(G.non_finite(geoms)).tolist() == [7]
