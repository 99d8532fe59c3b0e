import json
import shutil

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import DEMO, REPO, TOWNS

from multiplan.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return run("check", DEMO, "--out", out), out


def test_demo_check_writes_every_output(demo_run):
    r, out = demo_run
    assert r.exit_code == 0, r.output
    assert {"conflicts.gpkg", "summary.csv", "by_unit.csv", "run.json"} <= {
        p.name for p in out.iterdir()
    }
    summary = pd.read_csv(out / "summary.csv", encoding="utf-8-sig")
    assert summary["rule_id"].tolist()[:2] == ["ECO-01", "ECO-02"]  # pack order
    assert (summary["pieces"] > 0).all()  # the demo's plans disagree under every rule
    conflicts = gpd.read_file(out / "conflicts.gpkg", layer="conflicts")
    assert len(conflicts) == summary["pieces"].sum()
    assert conflicts.crs.to_epsg() == 4549
    by_unit = pd.read_csv(out / "by_unit.csv", encoding="utf-8-sig")
    # two levels (towns, then communities): a block of rows each (SPEC §14)
    assert list(by_unit.columns[:3]) == ["level", "unit", "rule_id"]
    assert set(by_unit["level"]) == {"towns", "communities"}
    assert set(by_unit.loc[by_unit["level"] == "towns", "unit"].dropna()) <= TOWNS
    assert list(conflicts.columns[8:11]) == ["unit", "towns", "communities"]
    assert (conflicts["unit"] == conflicts["communities"]).all()
    run_info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run_info["counts"]["pieces"] == len(conflicts)
    # the closing table names each rule with its 亩
    assert "ECO-01     high" in r.output
    assert "城规建设用地侵占生态保护红线" in r.output
    assert f"16 rules, {len(conflicts):,} pieces" in r.output


def test_fail_on(tmp_path):
    r = run(
        "check", DEMO, "--out", tmp_path, "--only", "LINE-02", "--fail-on", "high", "-q"
    )
    assert r.exit_code == 1
    assert r.output == ""  # --quiet: no table
    r = run(
        "check",
        DEMO,
        "--out",
        tmp_path,
        "--only",
        "SRV-01",
        "--fail-on",
        "medium",
        "-q",
    )
    assert r.exit_code == 0


def test_unknown_rule_is_exit_2(tmp_path):
    r = run("check", DEMO, "--out", tmp_path, "--only", "ECO-99")
    assert r.exit_code == 2
    assert "--only names no rule 'ECO-99'" in r.output
    assert "Traceback" not in r.output
    assert not tmp_path.joinpath("conflicts.gpkg").exists()


def test_bad_workers_is_exit_2(tmp_path):
    assert run("check", DEMO, "--out", tmp_path, "--workers", "0").exit_code == 2


def test_inputs_unchanged_and_no_partial_outputs_on_bad_input(tmp_path, hashes):
    dst = tmp_path / "xinbei"
    shutil.copytree(DEMO.parent, dst)
    p = dst / "project.toml"
    p.write_text(
        p.read_text(encoding="utf-8")
        .replace(
            "../../rules/multiplan-default.toml",
            str(REPO / "rules" / "multiplan-default.toml"),
        )
        .replace('out = "../../outputs/xinbei"', 'out = "out"'),
        encoding="utf-8",
    )
    (dst / "tugui.shx").unlink()  # a shapefile delivered without its index
    before = hashes(dst)
    r = run("check", p)
    assert r.exit_code == 2, r.output
    assert "layer tugui" in r.output
    assert "Traceback" not in r.output
    assert not (dst / "out").exists()
    assert hashes(dst) == before
