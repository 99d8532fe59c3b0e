import json

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from helpers import DEMO

import multiplan
from multiplan.cli import main
from multiplan.errors import InputError
from multiplan.layers import read_layer
from multiplan.project import read_project
from multiplan.sitefiles import read_site

INSIDE_RED_LINE = "POLYGON ((495568 3531178, 495768 3531178, 495768 3531378, 495568 3531378, 495568 3531178))"


@pytest.fixture(scope="module")
def project():
    return read_project(DEMO)


def clean_site(project):
    """A 100 m square on urban-plan land that no forbidden layer touches."""
    eco = read_layer(project.layers["eco_redline"], project).frame.geometry.union_all()
    farm = read_layer(
        project.layers["basic_farmland"], project
    ).frame.geometry.union_all()
    cg = read_layer(project.layers["chenggui"], project).frame
    for g in cg.geometry:
        c = g.representative_point()
        sq = shapely.box(c.x - 50, c.y - 50, c.x + 50, c.y + 50)
        if not sq.intersects(eco) and not sq.intersects(farm):
            return sq
    raise AssertionError("no clean site in the demo")


def test_site_inside_the_red_line_exits_1_and_names_the_zone(tmp_path):
    r = CliRunner().invoke(
        main, ["site", str(DEMO), INSIDE_RED_LINE, "--out", str(tmp_path)]
    )
    assert r.exit_code == 1, r.output
    assert "the site touches what [site] forbids" in r.output
    assert "eco_redline: 320411-ST-03" in r.output
    table = pd.read_csv(tmp_path / "site.csv", encoding="utf-8-sig")
    assert list(table.columns) == [
        "layer",
        "class",
        "features",
        "area_m2",
        "area_mu",
        "share",
        "forbidden",
    ]
    eco = table[table["layer"] == "eco_redline"].iloc[0]
    assert eco["area_m2"] == pytest.approx(40_000.0)
    assert eco["share"] == pytest.approx(1.0)
    assert (tmp_path / "site.html").exists()


def test_clean_site_exits_0(project, tmp_path):
    site = clean_site(project)
    r = CliRunner().invoke(main, ["site", str(DEMO), site.wkt, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "site.csv", encoding="utf-8-sig")
    assert "chenggui" in set(table["layer"])
    assert not ({"eco_redline", "basic_farmland"} & set(table["layer"]))
    # the shares of one plan layer add up to the part of the site it covers
    assert table[table["layer"] == "chenggui"]["share"].sum() <= 1 + 1e-9


def test_site_from_a_file_in_another_crs(project, tmp_path):
    site = gpd.GeoDataFrame(
        {"n": [1]}, geometry=[shapely.from_wkt(INSIDE_RED_LINE)], crs="EPSG:4549"
    ).to_crs(4326)
    site.to_file(tmp_path / "site.geojson")
    geom = read_site(str(tmp_path / "site.geojson"), project).geometry
    assert geom.area == pytest.approx(40_000.0, rel=1e-6)
    result = multiplan.screen_site(project, tmp_path / "site.geojson")
    assert result.fails
    assert result.verdict == "fail"
    result.write(tmp_path / "out")
    assert (tmp_path / "out" / "site.csv").is_file()


def test_bad_sites(project, tmp_path):
    with pytest.raises(InputError, match="neither a file nor a WKT polygon"):
        read_site("somewhere.shp", project)
    with pytest.raises(InputError, match="no area"):
        read_site(
            "POLYGON ((495568 3531178, 495768 3531178, 495568 3531178, 495568 3531178))",
            project,
        )


def test_a_site_partly_outside_the_study_area_says_how_much_was_not_checked(
    project, tmp_path, caplog
):
    district = read_layer(project.layers["district"], project).frame
    boundary = shapely.union_all(district.geometry.array)
    site = shapely.box(475940, 3529000, 476940, 3530000)  # across the west boundary
    outside = shapely.difference(site, boundary).area
    assert 0.3 * site.area < outside < 0.7 * site.area
    with caplog.at_level("WARNING", logger="multiplan.sitefiles"):
        result = multiplan.screen_site(project, site)
    assert result.source.outside_m2 == pytest.approx(outside, rel=1e-9)
    assert "of the site lies outside the study area (district)" in " ".join(
        caplog.messages
    )
    result.write(tmp_path / "out")
    record = json.loads((tmp_path / "out" / "site.json").read_text(encoding="utf-8"))
    assert record["outside_study_area_m2"] == pytest.approx(outside, abs=0.01)
    assert "研究范围以外（未核查）" in (tmp_path / "out" / "site.html").read_text(
        encoding="utf-8"
    )
    inside = multiplan.screen_site(project, INSIDE_RED_LINE)
    assert inside.source.outside_m2 == 0.0
