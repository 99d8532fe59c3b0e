import json
import shutil

import geopandas as gpd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from helpers import DEMO, squares

from multiplan.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo_output():
    return run("layers", DEMO)


def test_demo_layers_show_every_layer_with_chinese_intact(demo_output):
    r = demo_output
    assert r.exit_code == 0, r.output
    for name in (
        "district",
        "towns",
        "tugui",
        "chenggui",
        "eco_redline",
        "basic_farmland",
        "urban_boundary",
        "parks",
        "enterprises",
        "roads",
        "rail",
        "eldercare",
        "landvalue",
        "airport_noise",
    ):
        assert f"\n{name}  " in "\n" + r.output, name
    assert "土地利用总体规划（土规）" in r.output
    assert "0101 水田" in r.output
    assert "(ESRI Shapefile, GBK)" in r.output
    assert (
        "EPSG:4528 (CGCS2000 / 3-degree Gauss-Kruger zone 40) → EPSG:4549" in r.output
    )
    assert "亩" in r.output
    assert "UNMAPPED" not in r.output
    assert "ERROR" not in r.output


def test_demo_layers_json(tmp_path):
    r = run("layers", DEMO, "--format", "json")
    assert r.exit_code == 0
    data = {d["name"]: d for d in json.loads(r.output)}
    assert sum(d["features"] for d in data.values()) >= 20_000
    assert all(not d["unmapped"] for d in data.values())
    assert data["tugui"]["encoding"].upper() == "GBK"
    assert data["chenggui"]["filtered_out"] > 0
    assert data["chenggui"]["repaired"] >= 3
    assert data["district"]["repaired"] == 1
    assert data["enterprises"]["null"] == 2
    assert data["roads"]["buffered"] is True
    # every area figure is in m² and 亩 consistently
    for c in data["tugui"]["classes"]:
        assert c["area_mu"] == pytest.approx(c["area_m2"] * 15 / 10000, abs=0.01)
    # the plans' own overlaps are named, and the areas count them once
    assert data["tugui"]["overlaps"]["features"] == 0
    assert sum(c["area_m2"] for c in data["tugui"]["classes"]) == pytest.approx(
        data["tugui"]["area_m2"], rel=1e-9
    )
    over = data["chenggui"]["overlaps"]
    assert over["features"] > 1000
    assert over["area_mu"] > 1000
    assert len(over["ids"]) == 10


def project_copy(tmp_path):
    dst = tmp_path / "xinbei"
    shutil.copytree(DEMO.parent, dst)
    text = (dst / "project.toml").read_text(encoding="utf-8")
    text = text.replace(
        "../../rules/multiplan-default.toml",
        str(DEMO.parent.parent.parent / "rules" / "multiplan-default.toml"),
    )
    (dst / "project.toml").write_text(text, encoding="utf-8")
    return dst


def test_inputs_are_unchanged(tmp_path, hashes):
    before = hashes(DEMO.parent)
    assert run("layers", DEMO).exit_code == 0
    assert run("rules", DEMO).exit_code == 0
    assert hashes(DEMO.parent) == before


def test_missing_file_is_exit_2_one_line(tmp_path, hashes):
    dst = project_copy(tmp_path)
    (dst / "eldercare.geojson").unlink()
    before = hashes(dst)
    r = run("layers", dst / "project.toml")
    assert r.exit_code == 2
    assert r.output.count("\n") == 1
    assert (
        f"file {dst / 'project.toml'}, key layers.eldercare.path: file not found: {dst / 'eldercare.geojson'}"
        in r.output
    )
    assert "Traceback" not in r.output
    assert hashes(dst) == before


def test_unknown_key_is_exit_2(tmp_path):
    dst = project_copy(tmp_path)
    p = dst / "project.toml"
    p.write_text(
        p.read_text(encoding="utf-8").replace('id_field = "BSM"', 'idfield = "BSM"'),
        encoding="utf-8",
    )
    r = run("layers", p)
    assert r.exit_code == 2
    assert "key layers.tugui.idfield: unknown key. Did you mean 'id_field'?" in r.output


def test_zone_prefixed_layer_declared_4549_is_exit_2(tmp_path, write_manifest):
    g = gpd.GeoDataFrame(
        {"n": [1, 2]}, geometry=squares(2, x0=40_490_000), crs="EPSG:4549"
    )
    pyogrio.write_dataframe(g, tmp_path / "tg.shp")
    (tmp_path / "tg.prj").unlink()
    r = run("layers", write_manifest({"tugui": {"path": "tg.shp", "crs": "EPSG:4549"}}))
    assert r.exit_code == 2
    assert "layer tugui" in r.output
    assert "key layers.tugui.crs" in r.output
    assert "the likely CRS is EPSG:4528" in r.output
    assert "Traceback" not in r.output


def test_gbk_shapefile_without_encoding_reads_with_a_note(tmp_path, write_manifest):
    g = gpd.GeoDataFrame(
        {"DLBM": ["0101"], "DLMC": ["水田"]}, geometry=squares(1), crs="EPSG:4549"
    )
    pyogrio.write_dataframe(g, tmp_path / "tg.shp", encoding="GBK")
    (tmp_path / "tg.cpg").unlink()
    r = run(
        "layers",
        write_manifest(
            {
                "tugui": {
                    "path": "tg.shp",
                    "class_field": "DLBM",
                    "classification": "gbt21010",
                }
            }
        ),
    )
    assert r.exit_code == 0, r.output
    assert "detected GBK/GB18030" in r.output
    assert 'Add encoding = "GBK" to layers.tugui' in r.output
    assert "0101 水田" in r.output


def test_a_broken_layer_is_reported_and_others_still_are(
    tmp_path, write_manifest, parcels
):
    bad = gpd.GeoDataFrame(
        {"id": ["a", "a"]}, geometry=[shapely.box(0, 0, 1, 1)] * 2, crs="EPSG:4549"
    )
    bad.to_file(tmp_path / "bad.gpkg")
    r = run(
        "layers",
        write_manifest(
            {
                "ok": {"path": str(parcels)},
                "bad": {"path": "bad.gpkg", "id_field": "id"},
            }
        ),
    )
    assert r.exit_code == 2
    assert "ERROR     file" in r.output
    assert "\nok\n  source" in r.output  # the good layer is still described
    assert "Error: file" in r.output
    assert "ids in 'id' are not unique (a)" in r.output
