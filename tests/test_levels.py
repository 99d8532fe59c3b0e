"""Levels of units and the management grid (SPEC §14)."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from helpers import X0, Y0, map_data

import multiplan
from multiplan.cli import main
from multiplan.levels import grid_cells
from multiplan.project import read_project


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


RULES = """[[rule]]
id = "R1"
title = "耕地上的居住用地"
severity = "high"
relation = "intersect"
a = { layer = "tg", class = "01" }
b = { layer = "cg", class = "07" }
[[rule]]
id = "R2"
title = "耕地上的工业用地"
severity = "medium"
relation = "intersect"
a = { layer = "tg", class = "01" }
b = { layer = "cg", class = "10" }
"""


def write(tmp_path, *, units='["towns", "communities"]', grid=None):
    """Two towns split at x = 150; a community (c2) straddles their border."""
    gpd.GeoDataFrame(
        {"n": [1]}, geometry=[box(0, 0, 300, 100)], crs="EPSG:4549"
    ).to_file(tmp_path / "d.gpkg")
    gpd.GeoDataFrame(
        {"name": ["甲镇", "乙镇"]},
        geometry=[box(0, 0, 150, 100), box(150, 0, 300, 100)],
        crs="EPSG:4549",
    ).to_file(tmp_path / "towns.gpkg")
    gpd.GeoDataFrame(
        {"name": ["一村", "二村", "三村"]},
        geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100), box(200, 0, 300, 100)],
        crs="EPSG:4549",
    ).to_file(tmp_path / "comm.gpkg")
    gpd.GeoDataFrame(
        {"BSM": ["t1", "t2"], "DLBM": ["0101", "0101"]},
        geometry=[box(0, 0, 170, 100), box(170, 0, 300, 100)],
        crs="EPSG:4549",
    ).to_file(tmp_path / "tg.gpkg")
    gpd.GeoDataFrame(
        {"DKBH": ["c1", "c2", "c3"], "YDDM": ["R2", "M2", "R2"]},
        geometry=[
            box(20, 10, 180, 90),
            box(60, 20, 260, 80),  # overlaps c1: the union counts the land once
            box(240, 0, 290, 50),
        ],
        crs="EPSG:4549",
    ).to_file(tmp_path / "cg.gpkg")
    (tmp_path / "rules.toml").write_text(RULES, encoding="utf-8")
    (tmp_path / "p.toml").write_text(
        f"""[project]
name = "lv"
boundary = "district"
units = {units}
{f"grid = {grid}" if grid else ""}
rules = ["rules.toml"]
out = "out"
[layers.district]
path = "d.gpkg"
[layers.towns]
path = "towns.gpkg"
[layers.communities]
path = "comm.gpkg"
[layers.tg]
path = "tg.gpkg"
class_field = "DLBM"
classification = "gbt21010"
id_field = "BSM"
[layers.cg]
path = "cg.gpkg"
class_field = "YDDM"
classification = "gb50137"
id_field = "DKBH"
""",
        encoding="utf-8",
    )
    return read_project(tmp_path / "p.toml")


def test_a_straddling_unit_is_split_not_guessed(tmp_path):
    result = multiplan.check(write(tmp_path))
    p = result.pieces
    assert list(p.columns[8:11]) == ["unit", "towns", "communities"]
    assert (p["unit"] == p["communities"]).all()
    # 二村 lies in both towns: its pieces are split at the town border
    second = p[p["unit"] == "二村"]
    assert set(second["towns"]) == {"甲镇", "乙镇"}
    for town, x0, x1 in (("甲镇", 100, 150), ("乙镇", 150, 200)):
        mine = second[second["towns"] == town]
        bounds = shapely.total_bounds(mine.geometry.to_numpy())
        assert bounds[0] >= X0 + x0 - 1e-6
        assert bounds[2] <= X0 + x1 + 1e-6


def test_tables_have_a_block_per_level_and_levels_nest(tmp_path):
    result = multiplan.check(write(tmp_path))
    by_unit, units, summary = result.by_unit, result.units, result.summary
    assert list(by_unit.columns[:3]) == ["level", "unit", "rule_id"]
    assert list(units.columns[:2]) == ["level", "unit"]
    assert list(pd.unique(units["level"])) == ["towns", "communities"]
    # every unit of every level has a row, with its own area
    own = units.set_index(["level", "unit"])["unit_area_m2"].to_dict()
    assert own[("towns", "甲镇")] == pytest.approx(15_000)
    assert own[("communities", "二村")] == pytest.approx(10_000)
    # each level adds up to each rule's district figure (units never overlap)
    for level in ("towns", "communities"):
        block = by_unit[by_unit["level"] == level]
        sums = block.groupby("rule_id")["area_m2"].sum()
        for rule, area in summary.set_index("rule_id")["area_m2"].items():
            assert sums.get(rule, 0.0) == pytest.approx(area, rel=1e-9), (level, rule)
        total = units[units["level"] == level]["area_m2"].sum()
        assert total == pytest.approx(result.totals["all"], rel=1e-9)
    # against an independent union: R1's land in 甲镇 is c1 ∩ t1 within the town
    town = box(0, 0, 150, 100)
    truth = box(20, 10, 180, 90).intersection(box(0, 0, 170, 100)).intersection(town)
    got = by_unit[
        (by_unit["level"] == "towns")
        & (by_unit["unit"] == "甲镇")
        & (by_unit["rule_id"] == "R1")
    ]["area_m2"]
    assert float(got.iloc[0]) == pytest.approx(truth.area)


def test_one_level_keeps_the_section_6_form(tmp_path):
    result = multiplan.check(write(tmp_path, units='"towns"'))
    assert "level" not in result.by_unit.columns
    assert "level" not in result.units.columns
    assert "towns" not in result.pieces.columns
    assert set(result.pieces["unit"]) <= {"甲镇", "乙镇"}


def test_grid_cells_are_named_from_the_lower_left(tmp_path):
    project = write(tmp_path, units='"towns"', grid=40)
    layers = multiplan.read_layers(project, ["district", "towns"])
    cells = grid_cells(project, layers)
    # anchored at the boundary's lower-left corner snapped to the metre
    x0, y0 = math.floor(X0), math.floor(Y0)
    first = cells.set_index("name").geometry["G000000"]
    assert shapely.bounds(first).tolist() == [x0, y0, x0 + 40, y0 + 40]
    # 300 m × 100 m: 8 columns × 3 rows, the last ones clipped to the boundary
    assert len(cells) == 8 * 3
    assert "G007002" in set(cells["name"])
    assert cells.geometry.area.sum() == pytest.approx(30_000)
    last = cells.set_index("name").geometry["G007002"]
    assert last.area == pytest.approx(20 * 20)


def test_grid_cells_add_up_to_every_rule(tmp_path):
    result = multiplan.check(write(tmp_path, units='"towns"', grid=40))
    assert list(pd.unique(result.units["level"])) == ["towns", "grid"]
    grid = result.by_unit[result.by_unit["level"] == "grid"]
    assert set(grid["unit"]) <= {f"G{c:03d}{r:03d}" for c in range(8) for r in range(3)}
    sums = grid.groupby("rule_id")["area_m2"].sum()
    for rule, area in result.summary.set_index("rule_id")["area_m2"].items():
        assert sums[rule] == pytest.approx(area, rel=1e-9)
    # the pieces carry their cell
    assert (result.pieces["unit"] == result.pieces["grid"]).all()
    units = result.units[result.units["level"] == "grid"]
    assert units["unit_area_m2"].sum() == pytest.approx(30_000)


def test_the_map_draws_the_grid_as_a_choropleth(tmp_path):
    project = write(tmp_path, units='"towns"', grid=40)
    r = CliRunner().invoke(main, ["check", str(project.path)])
    assert r.exit_code == 0, r.output
    data = map_data((tmp_path / "out" / "map.html").read_text(encoding="utf-8"))
    grid = next(g for g in data["groups"] if g["kind"] == "grid")
    assert len(grid["features"]) == 24
    units = pd.read_csv(tmp_path / "out" / "units.csv", encoding="utf-8-sig")
    cells = units[units["level"] == "grid"].set_index("unit")
    for _, props in grid["features"]:
        name, area, share, shade = props
        assert area == pytest.approx(cells.loc[name, "area_m2"], abs=0.01)
        assert (shade is None) == (area == 0)
    # the smaller level's conflicts name the unit at each level
    pieces = pyogrio.read_dataframe(
        tmp_path / "out" / "conflicts.gpkg", layer="conflicts"
    )
    assert list(pieces.columns[8:11]) == ["unit", "towns", "grid"]
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "管理网格" in report


def test_yield_and_differences_per_level(tmp_path):
    """The parcels of [yield] and the difference patches carry the unit at each level."""
    project = write(tmp_path)
    layers = multiplan.read_layers(project)
    cells = np.asarray(layers["communities"].geometry.array, dtype=object)
    from multiplan.levels import build_levels, units_at

    levels = build_levels(project, layers)
    assert levels is not None
    assert len(levels.cells) == 4  # 二村 split in two
    got = units_at(levels, np.array([box(110, 10, 120, 20), box(160, 10, 170, 20)]))
    assert got["unit"].tolist() == ["二村", "二村"]
    assert got["towns"].tolist() == ["甲镇", "乙镇"]
    assert len(cells) == 3


def test_the_ledger_names_the_level_of_every_row(tmp_path):
    """With several levels the 镇街 sheet has a block per level, each row naming its
    level, and each rule's sheet the piece's unit at every level."""
    import openpyxl

    project = write(tmp_path, units='["towns", "communities"]', grid=100)
    r = CliRunner().invoke(main, ["check", str(project.path), "--no-map"])
    assert r.exit_code == 0, r.output
    units = pd.read_csv(tmp_path / "out" / "units.csv", encoding="utf-8-sig")
    pieces = pyogrio.read_dataframe(
        tmp_path / "out" / "conflicts.gpkg", layer="conflicts"
    )
    book = openpyxl.load_workbook(tmp_path / "out" / "ledger.xlsx", read_only=True)
    sheet = list(book["镇街"].iter_rows(values_only=True))
    assert sheet[0][:3] == ("层级", "单元", "单元面积（平方米）")
    titles = {"towns": "towns", "communities": "communities", "grid": "管理网格"}
    rows = sheet[1 : 1 + len(units)]
    assert [(t, u) for t, u, *_ in rows] == [
        (titles[lv], "（无单元）" if pd.isna(u) else u)
        for lv, u in zip(units["level"], units["unit"], strict=True)
    ]
    assert [row[4] for row in rows] == pytest.approx(
        units["area_m2"].tolist(), abs=0.01
    )
    rule = list(book["R1"].iter_rows(values_only=True))
    assert rule[0][8:11] == ("towns", "communities", "管理网格")
    mine = pieces[pieces["rule_id"] == "R1"]
    assert len(mine) == len(rule) - 2  # the header and the union
    assert [row[8:11] for row in rule[1:-1]] == list(
        mine[["towns", "communities", "grid"]].itertuples(index=False, name=None)
    )


def test_units_drawn_over_each_other_are_refused(tmp_path, caplog):
    """Land in two towns would be counted in one: exit 2 naming both; a sliver is logged."""
    write(tmp_path, units='["towns", "communities"]')
    towns = [box(0, 0, 200, 100), box(100, 0, 300, 100)]
    gpd.GeoDataFrame(
        {"name": ["甲镇", "乙镇"]}, geometry=towns, crs="EPSG:4549"
    ).to_file(tmp_path / "towns.gpkg")
    r = CliRunner().invoke(main, ["check", str(tmp_path / "p.toml"), "--no-map"])
    assert r.exit_code == 2
    assert "layer towns" in r.output
    assert "甲镇 and 乙镇 share 10,000.00 m² (15.00 亩" in r.output
    assert not (tmp_path / "out").exists()
    # a border digitised twice, 1 cm wide: the run goes on and says so
    towns = [box(0, 0, 150.01, 100), box(150, 0, 300, 100)]
    gpd.GeoDataFrame(
        {"name": ["甲镇", "乙镇"]}, geometry=towns, crs="EPSG:4549"
    ).to_file(tmp_path / "towns.gpkg")
    with caplog.at_level("WARNING", logger="multiplan.levels"):
        result = multiplan.check(read_project(tmp_path / "p.toml"))
    assert "1 pair of units share slivers" in caplog.text
    assert "(1.00 m² in all" in caplog.text
    assert set(result.units["unit"].dropna()) >= {"甲镇", "乙镇"}
