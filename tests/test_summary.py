"""The summarise stage's facts about layers: which features overlap no other."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from helpers import DEMO, X0, Y0

import multiplan
from multiplan import summary


def _layer(seed: int) -> gpd.GeoDataFrame:
    """A coverage of plots, some of them grown over their neighbours, one inside another,
    one twice, and a few slivers that only touch."""
    rng = np.random.default_rng(seed)
    extent = shapely.box(X0, Y0, X0 + 3000, Y0 + 2000)
    pts = rng.uniform([X0, Y0], [X0 + 3000, Y0 + 2000], size=(400, 2))
    cells = shapely.intersection(
        shapely.get_parts(
            shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent)
        ),
        extent,
    )
    grown = rng.random(len(cells)) < 0.05
    cells[grown] = shapely.buffer(cells[grown], 3.0)  # overlaps its neighbours
    inner = shapely.buffer(cells[7], -5.0)  # inside another feature
    extra = [inner, cells[11], shapely.box(X0 + 3000, Y0, X0 + 3010, Y0 + 10)]
    return gpd.GeoDataFrame(
        geometry=np.concatenate([cells, np.array(extra, dtype=object)]),
        crs="EPSG:4549",
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    ("workers", "strip"), [(2, 10**6), (3, 10**6), (5, 10**6), (1, 25), (2, 60)]
)
def test_a_layer_checked_in_strips_gets_the_flags_of_one_check(
    monkeypatch, seed, workers, strip
):
    frame = _layer(seed)
    whole = summary.clean_features(frame)
    assert 0 < int((~whole).sum()) < len(whole) // 2  # some overlap, most do not
    assert not whole[-3]  # inside another
    assert not whole[11]  # twice
    # strips of a small layer, of so many features at most
    monkeypatch.setattr(summary, "_CLEAN_CHUNK", 40)
    monkeypatch.setattr(summary, "_CLEAN_STRIP", strip)
    layers = {"p": frame, "q": frame.iloc[::3]}  # what it reads of Layers
    got = summary.layer_cleans(layers, ["p", "q"], workers=workers)  # type: ignore[arg-type]
    assert np.array_equal(got["p"], whole)
    assert np.array_equal(got["q"], summary.clean_features(frame.iloc[::3]))


def test_a_clean_layer_in_strips_is_clean_throughout(monkeypatch):
    frame = _layer(4)
    frame = frame[summary.clean_features(frame)]
    monkeypatch.setattr(summary, "_CLEAN_CHUNK", 40)
    got = summary.layer_cleans({"p": frame}, ["p"], workers=4)  # type: ignore[arg-type]
    assert got["p"].all()


def test_a_plot_inside_another_is_not_counted_twice(tmp_path):
    """Pieces of a plot and of a plot inside it overlap: their union is counted once.

    The bigger plot's edges are clean (nothing crosses them), so the pair must not
    be taken as apart on its flag alone; every area is checked against a union of
    the pieces made here.
    """
    big = shapely.box(X0, Y0, X0 + 100, Y0 + 100)
    plots = {
        "big": big,
        "inner": shapely.box(X0 + 20, Y0 + 20, X0 + 40, Y0 + 40),  # inside, apart
        "other": shapely.box(X0 + 200, Y0, X0 + 300, Y0 + 100),
        "twin": shapely.box(X0 + 200, Y0, X0 + 300, Y0 + 100),  # "other" again
        "outer": shapely.box(X0 + 400, Y0, X0 + 500, Y0 + 100),
        "edge": shapely.box(X0 + 400, Y0 + 60, X0 + 430, Y0 + 90),  # on outer's edge
    }
    gpd.GeoDataFrame(
        {"pid": list(plots), "code": "0101"},
        geometry=list(plots.values()),
        crs="EPSG:4549",
    ).to_file(tmp_path / "a.gpkg")
    zone = shapely.box(X0 - 10, Y0 + 10, X0 + 510, Y0 + 80)
    gpd.GeoDataFrame({"zid": ["Z"]}, geometry=[zone], crs="EPSG:4549").to_file(
        tmp_path / "z.gpkg"
    )
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\nid = "I"\ntitle = "红线内的耕地"\nseverity = "high"\n'
        'relation = "intersect"\na = { layer = "a" }\nb = { layer = "z" }\n'
        '[[rule]]\nid = "D"\ntitle = "红线外的耕地"\nseverity = "low"\n'
        'relation = "difference"\na = { layer = "a" }\nb = { layer = "z" }\n',
        encoding="utf-8",
    )
    (tmp_path / "p.toml").write_text(
        '[project]\nname = "t"\ncrs = "EPSG:4549"\nrules = ["rules.toml"]\n'
        '[layers.a]\npath = "a.gpkg"\nclass_field = "code"\n'
        'classification = "gbt21010"\nid_field = "pid"\n'
        '[layers.z]\npath = "z.gpkg"\nclass = "eco_redline"\nid_field = "zid"\n',
        encoding="utf-8",
    )
    result = multiplan.check(multiplan.read_project(tmp_path / "p.toml"), workers=2)
    pieces = result.pieces
    area = result.summary.set_index("rule_id")["area_m2"]
    for rule in ("I", "D"):
        mine = pieces.geometry[pieces["rule_id"] == rule].to_numpy()
        assert area[rule] == pytest.approx(shapely.union_all(mine).area, abs=1e-6)
    land = shapely.union_all([*plots.values()])
    assert area["I"] == pytest.approx(shapely.intersection(land, zone).area)
    assert area["I"] < pieces.loc[pieces["rule_id"] == "I", "area_m2"].sum() - 1000
    assert result.totals["all"] == pytest.approx(land.area)


def test_pieces_near_two_clean_features_are_not_counted_twice(tmp_path):
    """With a distance, a piece lies in its B feature's buffer, and the buffers of two
    clean neighbouring features overlap: the land near both is counted once."""
    gpd.GeoDataFrame(
        {"pid": ["home"], "code": ["0701"]},
        geometry=[shapely.box(X0, Y0, X0 + 200, Y0 + 100)],
        crs="EPSG:4549",
    ).to_file(tmp_path / "a.gpkg")
    factories = [
        shapely.box(X0 + 220, Y0, X0 + 260, Y0 + 50),
        shapely.box(X0 + 220, Y0 + 50, X0 + 260, Y0 + 100),  # touches the first
    ]
    gpd.GeoDataFrame(
        {"fid_": ["F1", "F2"], "code": ["1001", "1001"]},
        geometry=factories,
        crs="EPSG:4549",
    ).to_file(tmp_path / "f.gpkg")
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\nid = "N"\ntitle = "工业用地防护距离内的居住"\n'
        'relation = "intersect"\na = { layer = "a" }\nb = { layer = "f" }\n'
        "distance = 50\n",
        encoding="utf-8",
    )
    (tmp_path / "p.toml").write_text(
        '[project]\nname = "t"\ncrs = "EPSG:4549"\nrules = ["rules.toml"]\n'
        '[layers.a]\npath = "a.gpkg"\nclass_field = "code"\n'
        'classification = "gbt21010"\nid_field = "pid"\n'
        '[layers.f]\npath = "f.gpkg"\nclass_field = "code"\n'
        'classification = "gbt21010"\nid_field = "fid_"\n',
        encoding="utf-8",
    )
    result = multiplan.check(multiplan.read_project(tmp_path / "p.toml"))
    assert len(result.pieces) == 2  # one piece per factory, overlapping
    area = result.summary.set_index("rule_id")["area_m2"]
    assert area["N"] == pytest.approx(30.0 * 100.0)  # the strip within 50 m of both
    assert area["N"] == pytest.approx(
        shapely.union_all(result.pieces.geometry.to_numpy()).area, abs=1e-6
    )


def test_the_demos_figures_are_unions_of_its_pieces():
    """Every rule's area, and every unit's area per rule, against a union made here.

    The demo has distance rules whose B features touch (IND-01 counted 181 亩 twice
    when pieces near two factories were taken as apart), plans with features inside
    others, and units.
    """
    result = multiplan.check(multiplan.read_project(DEMO))
    pieces = result.pieces
    geoms = np.asarray(pieces.geometry.array, dtype=object)
    rule = pieces["rule_id"].to_numpy(dtype=object)
    for _, row in result.summary.iterrows():
        mine = rule == row["rule_id"]
        assert row["area_m2"] == pytest.approx(
            shapely.union_all(geoms[mine]).area if mine.any() else 0.0,
            rel=1e-9,
            abs=1e-6,
        ), row["rule_id"]
    by_unit = result.by_unit
    assert by_unit is not None
    towns = by_unit[by_unit["level"] == by_unit["level"].iloc[0]]
    unit = pieces[towns["level"].iloc[0]].to_numpy(dtype=object)
    for _, row in towns.iterrows():
        mine = (rule == row["rule_id"]) & np.array(
            [u == row["unit"] or (u is None and row["unit"] is None) for u in unit]
        )
        assert row["area_m2"] == pytest.approx(
            shapely.union_all(geoms[mine]).area, rel=1e-9, abs=1e-6
        ), (row["unit"], row["rule_id"])
    assert result.totals["all"] == pytest.approx(shapely.union_all(geoms).area)


def test_land_in_no_unit_has_its_area_in_units_csv(tmp_path):
    """Pieces outside every unit get the first row of units.csv, with the area of their union.

    The row was written with 0 m² (its severity columns right): the unions were
    keyed by pandas, which turns a ``None`` unit into NaN.
    """
    plots = [
        shapely.box(X0, Y0, X0 + 100, Y0 + 100),
        shapely.box(X0 + 50, Y0, X0 + 150, Y0 + 100),  # overlaps the first
        shapely.box(X0 + 300, Y0, X0 + 400, Y0 + 100),  # in the town
    ]
    gpd.GeoDataFrame(
        {"pid": ["p1", "p2", "p3"], "code": "0101"}, geometry=plots, crs="EPSG:4549"
    ).to_file(tmp_path / "a.gpkg")
    zone = shapely.box(X0 - 10, Y0 + 10, X0 + 410, Y0 + 80)
    gpd.GeoDataFrame({"zid": ["Z"]}, geometry=[zone], crs="EPSG:4549").to_file(
        tmp_path / "z.gpkg"
    )
    town = shapely.box(X0 + 250, Y0 - 50, X0 + 450, Y0 + 150)
    gpd.GeoDataFrame({"name": ["一镇"]}, geometry=[town], crs="EPSG:4549").to_file(
        tmp_path / "towns.gpkg"
    )
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\nid = "I"\ntitle = "红线内的耕地"\nseverity = "high"\n'
        'relation = "intersect"\na = { layer = "a" }\nb = { layer = "z" }\n',
        encoding="utf-8",
    )
    (tmp_path / "p.toml").write_text(
        '[project]\nname = "t"\ncrs = "EPSG:4549"\nrules = ["rules.toml"]\n'
        'units = ["towns"]\nunit_name_field = "name"\n'
        '[layers.a]\npath = "a.gpkg"\nclass_field = "code"\n'
        'classification = "gbt21010"\nid_field = "pid"\n'
        '[layers.z]\npath = "z.gpkg"\nclass = "eco_redline"\nid_field = "zid"\n'
        '[layers.towns]\npath = "towns.gpkg"\n',
        encoding="utf-8",
    )
    result = multiplan.check(multiplan.read_project(tmp_path / "p.toml"))
    pieces, units = result.pieces, result.units
    assert units is not None
    assert units["unit"].tolist() == [None, "一镇"]
    outside = pieces[pieces["unit"].isna()]
    expected = shapely.union_all(outside.geometry.to_numpy()).area
    assert expected == pytest.approx(150 * 70)  # two plots over the same 50 m
    nowhere = units.iloc[0]
    assert nowhere["area_m2"] == pytest.approx(expected, rel=1e-9)
    assert nowhere["high_m2"] == pytest.approx(expected, rel=1e-9)
    assert nowhere["pieces"] == len(outside) == 2
    assert units.iloc[1]["area_m2"] == pytest.approx(100 * 70, rel=1e-9)


def test_overlap_pairs_are_the_pairs_whose_interiors_meet():
    # squares on a grid of whole metres: many share only an edge or a corner,
    # some overlap, some hold another; with lines and points among them
    from multiplan.areas import overlap_pairs

    rng = np.random.default_rng(7)
    xy = rng.integers(0, 12, size=(150, 2)).astype(float)
    side = rng.integers(1, 4, size=150).astype(float)
    geoms = list(shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + side, xy[:, 1] + side))
    geoms += [shapely.LineString([(0, 3), (12, 3)]), shapely.Point(4, 4)]
    geoms = np.array(geoms, dtype=object)
    i, j = overlap_pairs(geoms, workers=2)
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    want = {
        (a, b)
        for a in range(len(geoms))
        for b in range(a + 1, len(geoms))
        if shapely.relate_pattern(geoms[a], geoms[b], "T********")
    }
    assert got == want
    touching = shapely.touches(geoms[:, None], geoms[None, :])
    assert touching.sum() > 50  # the case the test is about is there


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("workers", [1, 2])
def test_anchored_candidates_give_the_pairs_of_the_plain_test(seed, workers):
    # pieces anchored by features of two layers (one feature holding more pieces
    # than are paired all with all), and pieces anchored by nothing: pairing only
    # within an anchoring feature must find the pairs the whole STRtree query finds
    from multiplan.areas import _GROUP_ALL_PAIRS, Anchored, overlap_pairs

    rng = np.random.default_rng(seed)
    n = 5000
    xy = rng.uniform(0, 400, size=(n, 2))
    side = rng.uniform(1, 12, size=n)
    geoms = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + side, xy[:, 1] + side)
    layer = rng.integers(0, 2, size=n)
    feature = rng.integers(0, 300, size=n)
    feature[rng.random(n) < 0.1] = -1  # not anchored
    feature[:200] = 7  # a feature bigger than _GROUP_ALL_PAIRS
    layer[:200] = 0
    assert (feature == 7).sum() > _GROUP_ALL_PAIRS
    units = rng.integers(0, 3, size=n)

    def claims(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        anchored = (feature[i] >= 0) & (feature[j] >= 0)
        other = (layer[i] == layer[j]) & (feature[i] != feature[j])
        return (anchored & other) | (units[i] != units[j])

    plain = overlap_pairs(geoms, workers=workers, known_apart=claims)
    anchored = overlap_pairs(
        geoms, workers=workers, known_apart=Anchored(claims, layer, feature)
    )
    assert len(plain[0]) > 1000
    want = sorted(zip(plain[0].tolist(), plain[1].tolist(), strict=True))
    assert list(zip(anchored[0].tolist(), anchored[1].tolist(), strict=True)) == want
