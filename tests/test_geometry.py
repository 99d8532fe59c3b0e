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
