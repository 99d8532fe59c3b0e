"""What a 多规合一 office hands over: totals that are unions, Excel ledgers, a site verdict, styles."""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from helpers import DEMO, X0, Y0, box, map_data, run_check

import multiplan
from multiplan.cli import main

R1 = {
    "id": "R1",
    "title": "居住用地在红线内",
    "title_en": "Housing in the red line",
    "severity": "high",
    "a": {"layer": "plan", "class": ["07"]},
    "b": {"layer": "zone"},
}
R2 = {
    "id": "R2",
    "title": "居住用地在红线外",
    "title_en": "Housing outside the red line",
    "severity": "low",
    "a": {"layer": "plan", "class": ["07"]},
    "b": {"layer": "zone"},
    "relation": "difference",
}
R3 = {
    "id": "R3",
    "title": "工业用地近红线",
    "severity": "medium",
    "a": {"layer": "plan"},
    "b": {"layer": "zone"},
    "distance": 30,
}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def checked(make):
    """Three rules that hit the same land several times over."""
    project = make([R1, R2, R3])
    return run_check(project), project


# ------------------------------------------------------------------ totals are unions


def test_units_and_district_totals_are_unions_not_sums(checked):
    result, project = checked
    pieces = result.pieces
    geoms = np.asarray(pieces.geometry.array, dtype=object)
    # an independent union per unit, per severity and for the district
    units = pd.read_csv(project.out / "units.csv", encoding="utf-8-sig")
    for _, row in units.iterrows():
        unit = None if pd.isna(row["unit"]) else row["unit"]
        mine = np.array([u == unit for u in pieces["unit"]])
        assert row["area_m2"] == pytest.approx(
            shapely.union_all(geoms[mine]).area, abs=0.005
        )
        assert row["pieces"] == mine.sum()
        for sev in ("high", "medium", "low"):
            sel = mine & (pieces["severity"] == sev).to_numpy()
            assert row[f"{sev}_m2"] == pytest.approx(
                shapely.union_all(geoms[sel]).area if sel.any() else 0, abs=0.005
            )
    district = shapely.union_all(geoms).area
    assert result.totals["all"] == pytest.approx(district, rel=1e-9)
    # the rules overlap: their sum counts land twice, the total does not
    assert result.summary["area_m2"].sum() > district * 1.2
    towns = gpd.read_file(project.path.parent / "towns.gpkg")
    own = dict(zip(towns["name"], towns.area, strict=True))
    named = units.dropna(subset=["unit"])
    assert dict(
        zip(named["unit"], named["unit_area_m2"], strict=True)
    ) == pytest.approx(own, abs=0.005)
    assert (named["share"] == (named["area_m2"] / named["unit_area_m2"]).round(6)).all()


def test_csv_figures_are_rounded_to_what_a_survey_means_and_equal_the_gpkg(checked):
    result, project = checked
    text = (project.out / "summary.csv").read_text(encoding="utf-8-sig")
    for line in text.splitlines()[1:]:
        m2, mu = line.split(",")[4:6]
        assert len(m2.split(".")[-1]) <= 2
        assert len(mu.split(".")[-1]) <= 4
    pieces = gpd.read_file(project.out / "conflicts.gpkg", layer="conflicts")
    summary = pd.read_csv(project.out / "summary.csv", encoding="utf-8-sig")
    for _, r in summary.iterrows():
        mine = pieces[pieces["rule_id"] == r["rule_id"]]
        assert r["area_m2"] == pytest.approx(
            shapely.union_all(mine.geometry.values).area, abs=0.005
        )


# ------------------------------------------------------------------ ledgers


def _rows(ws):
    return list(ws.iter_rows(values_only=True))


def test_ledger_xlsx_is_what_an_office_records(checked):
    result, project = checked
    book = openpyxl.load_workbook(project.out / "ledger.xlsx")
    assert book.sheetnames == ["汇总", "镇街", "R1", "R2", "R3"]
    head = book["汇总"]
    rows = _rows(head)
    assert rows[0] == (
        "规则编号",
        "规则名称",
        "严重程度",
        "图斑数",
        "面积（平方米）",
        "面积（亩）",
    )
    assert [r[0] for r in rows[1:4]] == ["R1", "R2", "R3"]
    assert rows[1][1] == "居住用地在红线内"
    total = next(r for r in rows if r[0] == "全区合计（去重）")
    assert total[4] == pytest.approx(
        result.totals["all"], rel=1e-12
    )  # the union, not the sum
    assert total[4] < sum(r[4] for r in rows[1:4])
    assert head.freeze_panes == "A2"
    assert head.auto_filter.ref.startswith("A1:")
    assert head["E2"].number_format == "#,##0.00"
    assert isinstance(head["E2"].value, int | float)
    units = _rows(book["镇街"])
    assert units[0][:4] == (
        "镇（街道）",
        "镇街面积（平方米）",
        "图斑数",
        "冲突面积（平方米）",
    )
    assert units[-1][0] == "全区合计（去重）"
    r1 = _rows(book["R1"])
    assert r1[0][:4] == ("A 图层", "A 编号", "A 用地分类", "A 用地名称")
    assert (
        r1[1][3] == "二类城镇住宅用地"
    )  # the class name beside the code (R21 → 070102)
    assert len(r1) == 1 + int((result.pieces["rule_id"] == "R1").sum()) + 1


def test_ledger_in_english_and_formula_safe(make, tmp_path):
    plan = gpd.GeoDataFrame(
        {"code": ["R21", "R21"], "pid": ["=cmd|'/C calc'!A0", "p2"]},
        geometry=[box(0, 0, 100, 100), box(120, 0, 220, 100)],
        crs=4549,
    )
    project = make([R1], layers={"plan": plan})
    multiplan.check(project).write(tmp_path / "en", lang="en", with_map=False)
    book = openpyxl.load_workbook(tmp_path / "en" / "ledger.xlsx")
    assert book.sheetnames[:2] == ["Summary", "Units"]
    rows = _rows(book["Summary"])
    assert rows[0][:2] == ("Rule", "Title")
    assert rows[1][1] == "Housing in the red line"
    cell = next(
        c for c in book["R1"]["B"] if c.value and str(c.value).startswith("=cmd")
    )
    assert cell.data_type == "s"  # a string, never a formula


def _sheets():
    from multiplan.workbook import Sheet

    sheet = Sheet("R1", [("编号", "text"), ("面积", "m2"), ("占比", "share")])
    sheet.rows = [[f"=p{i}", i * 1.5, np.float64(0.25)] for i in range(300)]
    sheet.rows.append([None, float("nan"), None])
    sheet.totals = [["合计", 123.0, 1.0]]
    return [sheet]


def test_a_large_workbook_is_written_by_a_child_to_the_same_bytes(tmp_path):
    from multiplan import workbook

    here = tmp_path / "here.xlsx"
    workbook.write_workbook(here, _sheets())
    write = workbook.workbook_writer(_sheets(), ahead_cells=10)
    ahead = write.__self__  # type: ignore[attr-defined]
    assert isinstance(ahead, workbook.WorkbookAhead)
    assert ahead.folder.is_dir()
    write(tmp_path / "apart.xlsx")
    assert (tmp_path / "apart.xlsx").read_bytes() == here.read_bytes()
    assert not ahead.folder.exists()  # the child's folder goes once the file is placed
    # a small workbook is written here, when its writer is called
    small = workbook.workbook_writer(_sheets())
    assert not hasattr(small, "__self__")
    small(tmp_path / "small.xlsx")
    assert (tmp_path / "small.xlsx").read_bytes() == here.read_bytes()


def test_a_workbook_whose_child_fails_is_written_here(tmp_path, monkeypatch):
    import sys

    from multiplan import workbook

    here = tmp_path / "here.xlsx"
    workbook.write_workbook(here, _sheets())
    # no child can be started: the writer writes here
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    failing = workbook.workbook_writer(_sheets(), ahead_cells=10)
    assert not hasattr(failing, "__self__")
    monkeypatch.undo()
    # a child that fails (it cannot find its module) leaves the writing to this process
    monkeypatch.setattr(workbook, "_CHILD_MODULE", "multiplan.no_such_module")
    ahead = workbook.WorkbookAhead(_sheets())
    for write in (failing, ahead.place):
        out = tmp_path / "out.xlsx"
        write(out)
        assert out.read_bytes() == here.read_bytes()
        out.unlink()
    assert ahead._proc is not None
    assert ahead._proc.returncode == 1
    assert not ahead.folder.exists()


def test_a_text_cut_to_a_cells_limit_is_reported_and_written_by_this_process(
    tmp_path, caplog
):
    from multiplan import workbook

    sheets = _sheets()
    sheets[0].rows[0][0] = "长" * 40_000  # longer than an Excel cell holds
    here = workbook.workbook_writer(sheets)
    ahead = workbook.WorkbookAhead(sheets)
    with caplog.at_level("WARNING", logger="multiplan.workbook"):
        here(tmp_path / "here.xlsx")
        ahead.place(tmp_path / "apart.xlsx")
    assert ahead._proc is not None
    assert ahead._proc.returncode == 3  # the child stopped at the cut text
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"{n}: cells whose text was cut to the 32 767 characters an Excel cell holds: 1"
        for n in ("here.xlsx", "apart.xlsx")
    ]
    assert (tmp_path / "apart.xlsx").read_bytes() == (
        tmp_path / "here.xlsx"
    ).read_bytes()
    cell = openpyxl.load_workbook(tmp_path / "here.xlsx")["R1"]["A2"].value
    assert cell == "长" * 32_767


def test_a_sheet_longer_than_a_worksheet_goes_on_over_several(tmp_path, monkeypatch):
    from multiplan import workbook

    monkeypatch.setattr(workbook, "EXCEL_ROWS", 10)  # a header, 8 rows and a total
    sheet = workbook.Sheet("差异图斑台账", [("编号", "text"), ("面积", "m2")])
    sheet.rows = [[f"P{i}", float(i)] for i in range(25)]
    sheet.totals = [["合计", 300.0]]
    workbook.write_workbook(tmp_path / "book.xlsx", [sheet])
    book = openpyxl.load_workbook(tmp_path / "book.xlsx")
    assert book.sheetnames == [
        "差异图斑台账",
        "差异图斑台账 (2)",
        "差异图斑台账 (3)",
        "差异图斑台账 (4)",
    ]
    rows = [_rows(book[n]) for n in book.sheetnames]
    assert all(r[0] == ("编号", "面积") for r in rows)  # each part has the header
    assert [len(r) for r in rows] == [9, 9, 9, 3]
    every = [row for r in rows for row in r[1:]]
    assert every[:-1] == [(f"P{i}", float(i)) for i in range(25)]  # none left out
    assert every[-1] == ("合计", 300.0)  # the total once, on the last part


def test_a_workbook_never_placed_leaves_no_child_and_no_folder(tmp_path):
    import gc

    from multiplan import workbook

    ahead = workbook.WorkbookAhead(_sheets())
    folder, proc = ahead.folder, ahead._proc
    del ahead
    gc.collect()
    assert proc is not None
    assert proc.poll() is not None  # ended, or stopped
    assert not folder.exists()


def test_differences_xlsx_is_the_patch_ledger(tmp_path):
    result = multiplan.fuse(multiplan.read_project(DEMO))
    result.write(tmp_path)
    book = openpyxl.load_workbook(tmp_path / "differences.xlsx")
    ws = book["差异图斑台账"]
    rows = _rows(ws)
    assert rows[0][0] == "图斑编号"
    assert rows[0][-3:] == ("调整方向", "处理意见", "状态")
    assert "城规" in rows[0][3]
    assert "土规" in rows[0][5]
    assert len(rows) == 1 + len(result.patches) + 1
    assert {r[-1] for r in rows[1:-1]} == {
        None
    }  # the sign-off columns wait for the bureaus
    assert rows[-1][7] == pytest.approx(result.patches["area_m2"].sum())
    assert ws.freeze_panes == "A2"


# ------------------------------------------------------------------ QGIS styles


@pytest.mark.parametrize(
    ("fname", "layer", "field"), [("conflicts.gpkg", "conflicts", "severity")]
)
def test_geopackages_open_styled_in_qgis(checked, fname, layer, field):
    _, project = checked
    con = sqlite3.connect(project.out / fname)
    rows = con.execute(
        "SELECT f_table_name, f_geometry_column, styleQML, useAsDefault FROM layer_styles"
    ).fetchall()
    con.close()
    assert len(rows) == 1
    table, geom, qml, default = rows[0]
    assert (table, geom, default) == (layer, "geometry", 1)
    root = ET.fromstring(qml.split("\n", 1)[1])  # well-formed after the DOCTYPE
    assert root.tag == "qgis"
    rules = root.findall("./renderer-v2/rules/rule")
    assert len(rules) == 3
    assert all(field in r.get("filter") for r in rules)
    assert len(root.findall("./renderer-v2/symbols/symbol")) == 3
    assert pyogrio.read_info(project.out / fname, layer=layer)["features"] > 0


# ------------------------------------------------------------------ the site verdict


def mnr_txt(path, coords, *, zone="40", prefixed=True, encoding="gbk"):
    """A 自然资源部 界址点坐标 file: X = northing, Y = easting."""
    lines = [
        "[属性描述]",
        "格式版本号=1.01版本",
        "坐标系=2000国家大地坐标系",
        "几度分带=3",
        "投影类型=高斯克吕格",
        "计量单位=米",
        f"带号={zone}",
        "精度=0.001",
        "[地块坐标]",
        f"{len(coords) + 1},4.0000,1,拟建项目,面,H50G001001,建设用地,,@",
    ]
    for k, (e, n) in enumerate([*coords, coords[0]], start=1):
        east = e + (40_000_000 if prefixed else 0)
        lines.append(f"J{k if k <= len(coords) else 1},1,{n:.3f},{east:.3f}")
    path.write_bytes("\r\n".join(lines).encode(encoding))
    return path


RED_LINE_SQUARE = [
    (495568, 3531178),
    (495768, 3531178),
    (495768, 3531378),
    (495568, 3531378),
]


def test_a_zone_prefixed_mnr_file_inside_the_red_line_fails(tmp_path):
    site = mnr_txt(tmp_path / "site.txt", RED_LINE_SQUARE)
    r = invoke("site", DEMO, site, "--out", tmp_path / "o")
    assert r.exit_code == 1, r.output
    verdict = json.loads((tmp_path / "o" / "site.json").read_text(encoding="utf-8"))
    assert verdict["verdict"] == "fail"
    assert verdict["crs"] == "EPSG:4528"
    assert verdict["site_area_m2"] == pytest.approx(40_000.0)
    eco = next(h for h in verdict["hits"] if h["layer"] == "eco_redline")
    assert eco["ids"] == ["320411-ST-03"]
    assert eco["forbidden"] is True
    assert eco["area_mu"] == pytest.approx(60.0)
    table = pd.read_csv(tmp_path / "o" / "site.csv", encoding="utf-8-sig")
    assert table.loc[table["layer"] == "eco_redline", "forbidden"].tolist() == [True]
    html = (tmp_path / "o" / "site.html").read_text(encoding="utf-8")
    data = map_data(html)
    assert data["banner"]["text"] == "不通过"
    assert any("320411-ST-03" in line for line in data["banner"]["lines"])
    lat = [data["bounds"][0][0], data["bounds"][1][0]]
    assert lat[1] - lat[0] < 0.02  # centred on the site, not the whole red line


def test_a_clean_site_passes_and_says_so(tmp_path):
    project = multiplan.read_project(DEMO)
    cg = multiplan.read_layers(project, ["chenggui", "eco_redline", "basic_farmland"])
    avoid = shapely.union_all(
        [*cg["eco_redline"].geometry, *cg["basic_farmland"].geometry]
    )
    for g in cg["chenggui"].geometry:
        c = g.representative_point()
        square = shapely.box(c.x - 40, c.y - 40, c.x + 40, c.y + 40)
        if not square.intersects(avoid):
            break
    coords = [(x, y) for x, y in list(square.exterior.coords)[:4]]
    site = mnr_txt(tmp_path / "clean.txt", coords, prefixed=False, encoding="utf-8")
    r = invoke("site", DEMO, site, "--out", tmp_path / "o", "--lang", "en")
    assert r.exit_code == 0, r.output
    verdict = json.loads((tmp_path / "o" / "site.json").read_text(encoding="utf-8"))
    assert verdict["verdict"] == "pass"
    assert verdict["crs"] == "EPSG:4549"
    assert not any(h["forbidden"] for h in verdict["hits"])
    assert (
        map_data((tmp_path / "o" / "site.html").read_text(encoding="utf-8"))["banner"][
            "text"
        ]
        == "PASS"
    )


def test_mnr_file_with_holes_parts_and_a_declared_area(tmp_path):
    lines = [
        "[属性描述]",
        "坐标系=2000国家大地坐标系",
        "几度分带=3",
        "带号=40",
        "[地块坐标]",
    ]
    lines.append(
        "10,0.9000,A-1,甲,面,,,,@"
    )  # declares 0.90 ha; the rings give 1.00 − 0.04 = 0.96
    outer = [(X0, Y0), (X0 + 100, Y0), (X0 + 100, Y0 + 100), (X0, Y0 + 100)]
    hole = [
        (X0 + 10, Y0 + 10),
        (X0 + 30, Y0 + 10),
        (X0 + 30, Y0 + 30),
        (X0 + 10, Y0 + 30),
    ]
    for ring, pts in ((1, outer), (2, hole)):
        for k, (e, n) in enumerate([*pts, pts[0]], start=1):
            lines.append(f"{k},{ring},{n},{40_000_000 + e}")
    lines.append("5,0.0400,A-2,乙,面,,,,@")
    far = [(X0 + 300, Y0), (X0 + 320, Y0), (X0 + 320, Y0 + 20), (X0 + 300, Y0 + 20)]
    for k, (e, n) in enumerate([*far, far[0]], start=1):
        lines.append(f"J{k},1,{n},{40_000_000 + e}")
    path = tmp_path / "two.txt"
    path.write_text("\ufeff" + "\r\n".join(lines), encoding="utf-8")
    from multiplan.sitefiles import read_site

    found = read_site(path, multiplan.read_project(DEMO))
    assert found.geometry.area == pytest.approx(10_000 - 400 + 400)
    assert found.parcels == ("A-1", "A-2")
    assert any("地块 A-1: declared 0.9 ha" in n for n in found.notes)


def test_a_dxf_drawing_is_a_site(tmp_path):
    import warnings

    outline = shapely.LineString(RED_LINE_SQUARE + RED_LINE_SQUARE[:1])
    with warnings.catch_warnings():  # a drawing carries no CRS, and GDAL says so
        warnings.simplefilter("ignore")
        pyogrio.write_dataframe(
            gpd.GeoDataFrame(geometry=[outline]), tmp_path / "site.dxf", driver="DXF"
        )
    result = multiplan.screen_site(multiplan.read_project(DEMO), tmp_path / "site.dxf")
    assert result.verdict == "fail"
    assert result.site_area_m2 == pytest.approx(40_000.0)
    assert result.source.crs == "EPSG:4549"  # taken in the working CRS


# ------------------------------------------------------------------ loose ends


def test_redraw_keeps_the_yield_layer(tmp_path):
    run_check(multiplan.read_project(DEMO), out=tmp_path, with_map=False)
    r = invoke("map", DEMO, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert f"map: {tmp_path / 'map.html'}" in r.output
    kinds = {
        g["kind"]
        for g in map_data((tmp_path / "map.html").read_text(encoding="utf-8"))["groups"]
    }
    assert "yield" in kinds


def test_the_report_follows_the_language(checked, tmp_path):
    result, _ = checked
    result.write(tmp_path / "en", lang="en", with_map=False)
    text = (tmp_path / "en" / "report.html").read_text(encoding="utf-8")
    assert "Housing in the red line" in text
    assert "居住用地在红线内" not in text
    assert "District total (land counted once)" in text


def test_verbosity_before_or_after_the_command(make):
    project = make([R1])
    for args in (
        ["-v", "rules", project.path],
        ["rules", project.path, "-v"],
        ["-q", "rules", project.path],
    ):
        r = invoke(*args)
        assert r.exit_code == 0, (args, r.output)
        assert "R1" in r.output


def test_the_closing_line_names_every_file(make):
    project = make([R1])
    r = invoke("check", project.path)
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("wrote "))
    for name in (
        "conflicts.gpkg",
        "summary.csv",
        "units.csv",
        "ledger.xlsx",
        "map.html",
        "report.html",
        "run.json",
    ):
        assert name in line


def test_fuse_reports_each_stage(tmp_path):
    stages = []
    multiplan.fuse(
        multiplan.read_project(DEMO), progress=lambda s, d, t, i: stages.append(s)
    )
    assert list(dict.fromkeys(stages)) == [
        "reading",
        "checking",
        "noding",
        "attributing",
        "patches",
    ]


def test_map_defaults_and_size(checked):
    _, project = checked
    data = map_data((project.out / "map.html").read_text(encoding="utf-8"))
    on = {g["name"] for g in data["groups"] if g["on"]}
    assert on == {
        "zone",
        "district",
        "towns",
        "conflicts:R1",
        "conflicts:R2",
        "conflicts:R3",
    }
    assert {g["section"] for g in data["groups"]} == {
        "conflicts",
        "controls",
        "plans",
        "base",
    }
    plan = next(g for g in data["groups"] if g["name"] == "plan")
    assert {f[1][0] for f in plan["features"]} >= {
        "p1",
        "p2",
    }  # every parcel, with its id
    assert data["mu_per_m2"] == pytest.approx(15 / 10000)
    assert len(set(data["severity"].values()) & set(data["grades"].values())) == 0
