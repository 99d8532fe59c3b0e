"""The conflict check end to end on small projects whose answers are known by hand."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from helpers import X0, Y0, box, run_check

import multiplan
from multiplan.crs import ellipsoidal_area, parse_crs
from multiplan.errors import InputError, LayerError, RulePackError
from multiplan.project import read_project
from multiplan.schema import PIECE_COLUMNS as CONFLICT_COLUMNS


def rows(result):
    return result.pieces.drop(columns="geometry").to_dict("records")


RES_IN_ZONE = {
    "id": "R1",
    "title": "居住用地在红线内",
    "severity": "high",
    "a": {"layer": "plan", "class": ["07"]},
    "b": {"layer": "zone"},
}


def test_intersect_by_hand(make):
    result = multiplan.check(make([RES_IN_ZONE], units=False))
    got = {(r["a_id"], r["b_id"]): r["area_m2"] for r in rows(result)}
    # p1∩z1 = 50×100, p1∩z2 = 40×100, p2∩z1 = 100×100 (z1 covers p2: copied), p2∩z2 = 90×100
    assert got == pytest.approx(
        {
            ("p1", "z1"): 5000.0,
            ("p1", "z2"): 4000.0,
            ("p2", "z1"): 10000.0,
            ("p2", "z2"): 9000.0,
        }
    )
    r = rows(result)[0]
    assert (
        r["rule_id"],
        r["severity"],
        r["a_layer"],
        r["a_class"],
        r["b_layer"],
        r["b_class"],
    ) == ("R1", "high", "plan", "070102", "zone", "eco_redline")
    assert r["area_mu"] == pytest.approx(r["area_m2"] * 15 / 10000)
    # land is counted once in the summary: the union of p1∪p2 inside z1∪z2 = 100 × 100
    s = result.summary.set_index("rule_id").loc["R1"]
    assert s["pieces"] == 4
    assert s["area_m2"] == pytest.approx(10_000.0)
    assert s["area_mu"] == pytest.approx(15.0)


def test_difference_with_distance_from_points(make):
    rule = {
        "id": "S1",
        "title": "养老盲区",
        "a": {"layer": "plan", "class": ["07"]},
        "b": {"layer": "care"},
        "relation": "difference",
        "distance": 120.0,
        "min_area": 0.0,
    }
    result = multiplan.check(make([rule], boundary=False, units=False))
    got = {r["a_id"]: r["area_m2"] for r in rows(result)}
    circle = shapely.Point(X0, Y0).buffer(120, quad_segs=16)
    want = {
        pid: shapely.difference(g, circle).area
        for pid, g in zip(
            ["p1", "p2", "p5", "p6"],
            [
                box(0, 0, 100, 100),
                box(50, 0, 150, 100),
                box(480, 400, 520, 440),
                box(1100, 0, 1200, 100),
            ],
            strict=True,
        )
    }
    assert got == pytest.approx({k: v for k, v in want.items() if v > 0})
    assert all(
        r["b_layer"] is None and r["b_id"] is None and r["b_class"] is None
        for r in rows(result)
    )


def test_same_layer_pairs_reported_once_and_never_with_themselves(make):
    rule = {
        "id": "O1",
        "title": "居住用地相互重叠",
        "a": {"layer": "plan", "class": ["07"]},
        "b": {"layer": "plan", "class": ["07"]},
    }
    result = multiplan.check(make([rule], units=False))
    assert [(r["a_id"], r["b_id"]) for r in rows(result)] == [("p1", "p2")]
    assert rows(result)[0]["area_m2"] == pytest.approx(5000.0)
    # with different selectors both directions are real and both are reported
    rule2 = {
        "id": "O2",
        "title": "x",
        "a": {"layer": "plan", "class": ["07"]},
        "b": {"layer": "plan"},
    }
    result = multiplan.check(make([rule2], units=False))
    assert sorted((r["a_id"], r["b_id"]) for r in rows(result)) == [
        ("p1", "p2")
    ]  # p2∩p1 pairs: p2 sorts after p1


def test_hygiene_distance_same_layer(make):
    rule = {
        "id": "I1",
        "title": "卫生防护",
        "a": {"layer": "plan", "class": ["07"]},
        "b": {"layer": "plan", "class": ["100103"]},
        "distance": 200.0,
    }
    result = multiplan.check(make([rule], units=False))
    ring = shapely.buffer(box(300, 0, 400, 100), 200, quad_segs=16)
    # p1 (x 0–100) only touches the 200 m ring (x 100–600): no piece
    assert shapely.intersection(box(0, 0, 100, 100), ring).area == 0
    want = {"p2": shapely.intersection(box(50, 0, 150, 100), ring).area}
    assert {r["a_id"]: r["area_m2"] for r in rows(result)} == pytest.approx(want)


def test_boundary_clip_and_reach_in_through_a_buffer(make):
    outside = gpd.GeoDataFrame(
        {"zid": ["far"]}, geometry=[box(1050, 0, 1100, 100)], crs="EPSG:4549"
    )
    rule = {
        "id": "B1",
        "title": "x",
        "a": {"layer": "plan"},
        "b": {"layer": "zone"},
        "distance": 800.0,
    }
    result = multiplan.check(make([rule], layers={"zone": outside}, units=False))
    got = {r["a_id"]: r["area_m2"] for r in rows(result)}
    # p6 lies outside the district: nothing of it survives the clip
    assert "p6" not in got
    # p5 (x 480–520, y 400–440; at most 664 m away) is reached by the buffer of a zone outside the boundary
    assert got["p5"] == pytest.approx(40 * 40)


def test_units_split_and_null_unit(make):
    wide = gpd.GeoDataFrame(
        {"zid": ["w"]}, geometry=[box(0, 350, 1000, 450)], crs="EPSG:4549"
    )
    plan = gpd.GeoDataFrame(
        {"code": ["R21", "R21"], "pid": ["a", "b"]},
        geometry=[box(480, 400, 520, 440), box(900, 400, 1000, 440)],
        crs="EPSG:4549",
    )
    rule = {"id": "U1", "title": "x", "a": {"layer": "plan"}, "b": {"layer": "zone"}}
    result = multiplan.check(make([rule], layers={"zone": wide, "plan": plan}))
    got = [(r["a_id"], r["unit"], round(r["area_m2"], 6)) for r in rows(result)]
    # sorted by a_id then unit as text, nulls first
    assert got == [
        ("a", "东区", 800.0),
        ("a", "西区", 800.0),
        ("b", None, 2000.0),
        ("b", "东区", 2000.0),
    ]
    by_unit = result.by_unit
    assert by_unit["unit"].tolist() == [None, "东区", "西区"]
    assert by_unit.set_index("unit").loc["东区", "area_m2"] == pytest.approx(2800.0)


def test_min_area_applies_after_the_split(make):
    plan = gpd.GeoDataFrame(
        {"code": ["R21"], "pid": ["a"]},
        geometry=[box(499, 0, 560, 10)],
        crs="EPSG:4549",
    )
    rule = {
        "id": "M1",
        "title": "x",
        "a": {"layer": "plan"},
        "b": {"layer": "district"},
        "min_area": 20.0,
    }
    result = multiplan.check(make([rule], layers={"plan": plan}))
    # 10 m² west of x=500 is dropped; 600 m² east stays
    assert [(r["unit"], r["area_m2"]) for r in rows(result)] == [
        ("东区", pytest.approx(600.0))
    ]
    # what was dropped is counted in run.json, tiled or not
    for tiled in (None, 0.0, 30.0):
        run = multiplan.check(make([rule], layers={"plan": plan}), tile_size=tiled).run
        [entry] = run["rules"]
        assert entry["below_min_area"]["pieces"] == 1
        assert entry["below_min_area"]["area_m2"] == pytest.approx(10.0)


def test_ellipsoidal_areas(make):
    result = multiplan.check(make([RES_IN_ZONE], units=False, area="ellipsoidal"))
    planar = multiplan.check(make([RES_IN_ZONE], units=False))
    g = np.asarray(result.pieces.geometry.array, dtype=object)
    assert result.pieces["area_m2"].to_numpy() == pytest.approx(
        ellipsoidal_area(g, parse_crs("EPSG:4549"))
    )
    assert not np.allclose(
        result.pieces["area_m2"], planar.pieces["area_m2"], rtol=1e-9, atol=0
    )
    assert result.pieces["area_m2"].to_numpy() == pytest.approx(
        planar.pieces["area_m2"].to_numpy(), rel=1e-3
    )


def test_output_files_and_types(make):
    result = run_check(make([RES_IN_ZONE]))
    out = result.project.out
    assert sorted(p.name for p in out.iterdir()) == [
        ".multiplan",
        "by_unit.csv",
        "conflicts.gpkg",
        "ledger.xlsx",
        "map.html",
        "report.html",
        "run.json",
        "summary.csv",
        "units.csv",
    ]
    info = pyogrio.read_info(out / "conflicts.gpkg", layer="conflicts")
    assert list(info["fields"]) == list(CONFLICT_COLUMNS)
    assert info["crs"] == "EPSG:4549"
    assert info["geometry_type"] in ("MultiPolygon", "Polygon")
    gpkg = gpd.read_file(out / "conflicts.gpkg", layer="conflicts")
    assert len(gpkg) == len(result.pieces)
    assert not gpkg.geometry.is_empty.any()
    assert set(gpkg.geom_type) <= {"Polygon", "MultiPolygon"}
    raw = (out / "summary.csv").read_bytes()
    assert raw.startswith(
        "\ufeffrule_id,title,severity,pieces,area_m2,area_mu\r\n".encode()
    )
    assert "居住用地在红线内".encode() in raw
    assert (
        (out / "by_unit.csv")
        .read_bytes()
        .startswith("\ufeffunit,rule_id,pieces,area_m2,area_mu".encode())
    )
    import json

    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["pieces"] == len(result.pieces)
    assert {"read", "overlay", "summarise"} <= set(run["timings_s"])
    names = {Path(i["path"]).name for i in run["inputs"]}
    assert {"project.toml", "pack.toml", "plan.gpkg", "gb50137.csv"} <= names
    assert all(len(i["sha256"]) == 64 and i["bytes"] > 0 for i in run["inputs"])
    assert run["software"]["geos"] == shapely.geos_version_string


def test_rules_without_pieces_are_in_the_summary(make):
    none = {
        "id": "N1",
        "title": "无",
        "a": {"layer": "plan", "class": ["0101"]},
        "b": {"layer": "zone"},
    }
    result = multiplan.check(make([RES_IN_ZONE, none]))
    assert result.summary["rule_id"].tolist() == ["R1", "N1"]  # pack order
    assert result.summary.set_index("rule_id").loc["N1", "pieces"] == 0


def test_deterministic_and_workers_identical(make, tmp_path):
    project = make(
        [
            RES_IN_ZONE,
            {"id": "O1", "title": "x", "a": {"layer": "plan"}, "b": {"layer": "plan"}},
        ]
    )
    r1 = run_check(project, out=tmp_path / "o1", workers=1)
    r2 = run_check(project, out=tmp_path / "o2", workers=4)
    for name in ("conflicts.gpkg", "summary.csv", "by_unit.csv"):
        assert (tmp_path / "o1" / name).read_bytes() == (
            tmp_path / "o2" / name
        ).read_bytes(), name
    assert rows(r1) == rows(r2)


def test_fail_on_and_only(make):
    low = dict(RES_IN_ZONE, id="L1", severity="low")
    project = make([RES_IN_ZONE, low])
    result = multiplan.check(project, only=["L1"])
    assert [r.id for r in result.rules] == ["L1"]
    assert result.worst_severity() == "low"
    assert result.fails("low")
    assert not result.fails("medium")
    assert not result.fails("never")
    assert multiplan.check(project).fails("high")


def test_unmapped_codes_stop_the_check_unless_allowed(make):
    plan = gpd.GeoDataFrame(
        {"code": ["R21", "H11"], "pid": ["a", "b"]},
        geometry=[box(60, 0, 100, 100), box(60, 0, 100, 100)],
        crs="EPSG:4549",
    )
    project = make([dict(RES_IN_ZONE, a={"layer": "plan"})], layers={"plan": plan})
    with pytest.raises(LayerError, match=r"does not map: H11 \(1\).*--allow-unmapped"):
        multiplan.check(project)
    result = multiplan.check(project, allow_unmapped=True)
    classes = {r["a_id"]: r["a_class"] for r in rows(result)}
    assert classes["a"] == "070102"
    assert classes["b"] is None


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        (
            {"id": "P1", "title": "x", "a": {"layer": "care"}, "b": {"layer": "zone"}},
            "rule P1.a.layer",
        ),
        (
            {"id": "P2", "title": "x", "a": {"layer": "plan"}, "b": {"layer": "care"}},
            "rule P2.distance",
        ),
        (
            {
                "id": "P3",
                "title": "x",
                "a": {"layer": "plan", "where": {"field": "nope", "eq": 1}},
                "b": {"layer": "zone"},
            },
            "rule P3.a.where",
        ),
    ],
)
def test_rules_that_need_the_data_to_be_checked(make, rule, words):
    with pytest.raises(RulePackError, match=words.replace(".", r"\.")):
        multiplan.check(make([rule]))


def test_output_folder_holding_an_input_is_refused(make, tmp_path):
    project = make([RES_IN_ZONE])
    (tmp_path / "zone.gpkg").rename(tmp_path / "conflicts.gpkg")
    text = project.path.read_text(encoding="utf-8").replace(
        '"zone.gpkg"', '"conflicts.gpkg"'
    )
    project.path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="the output folder holds an input"):
        run_check(read_project(project.path), out=tmp_path)
    assert (tmp_path / "conflicts.gpkg").exists()


def _hashes(folder):
    import hashlib

    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
    }


def _siblings(folder):
    return sorted(
        p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")
    )


def test_an_interrupted_write_leaves_previous_outputs_intact(make, monkeypatch):
    project = make([RES_IN_ZONE])
    run_check(project)
    out = project.out
    before = _hashes(out)

    def interrupted(self, staging, owned):
        assert (staging / "conflicts.gpkg").is_file()  # the new set is half made …
        raise KeyboardInterrupt  # … when the user presses Ctrl-C

    monkeypatch.setattr("multiplan.outputs.OutputFolder._carry_over", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_check(project)
    assert _hashes(out) == before  # nothing replaced
    assert _siblings(out) == []  # and the staging folder is gone


@pytest.mark.parametrize("step", ["staging", "swap"])
def test_a_kill_at_any_step_leaves_one_whole_set(make, step):
    """SIGKILL after the new set is staged, or between the two renames of a swap."""
    project = make([RES_IN_ZONE])
    run_check(project)
    out = project.out
    before = _hashes(out)
    script = textwrap.dedent(
        f"""
        from helpers import run_check
        from multiplan.project import read_project
        run_check(read_project({str(project.path)!r}), only=["R1"])
        """
    )
    env = {
        **os.environ,
        "MULTIPLAN_TEST_KILL": step,
        "PYTHONPATH": str(Path(__file__).parent),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    # the kill left the temporary folder of its write ahead
    scratch = f"multiplan-*-*-{proc.pid}-*"
    assert list(Path(tempfile.gettempdir()).glob(scratch))
    if step == "staging":
        assert _hashes(out) == before  # the previous set, whole
        assert any(".staging-" in n for n in _siblings(out))
    else:
        assert not out.exists()  # killed between the renames: the old set is aside
        assert any(".aside-" in n for n in _siblings(out))
    # the next run puts back or removes what the killed run left, then writes its set
    run_check(project)
    assert _siblings(out) == []
    assert set(_hashes(out)) == set(before)
    # and the temporary folders the killed run could not remove are gone too
    assert list(Path(tempfile.gettempdir()).glob(scratch)) == []


def test_only_the_layers_the_rules_need_are_read(make, tmp_path):
    project = make([RES_IN_ZONE])
    (tmp_path / "care.gpkg").write_bytes(b"broken")  # not used by R1: never read
    result = multiplan.check(project)
    assert "care" not in result.layers
    assert len(result.pieces) > 0


def test_no_rules_writes_empty_outputs(make, tmp_path):
    project = make([])
    result = run_check(project)
    assert len(result.pieces) == 0
    assert result.summary.empty
    assert len(gpd.read_file(project.out / "conflicts.gpkg", layer="conflicts")) == 0
    assert list(
        pd.read_csv(project.out / "summary.csv", encoding="utf-8-sig").columns
    ) == ["rule_id", "title", "severity", "pieces", "area_m2", "area_mu"]


def test_progress_reports_each_stage_with_totals(make):
    calls = []
    run_check(make([RES_IN_ZONE]), progress=lambda *args: calls.append(args))
    stages = [c[0] for c in calls]
    assert stages == ["reading"] * 4 + ["checking", "summary"]
    assert [c[1:3] for c in calls if c[0] == "reading"] == [
        (0, 4),
        (1, 4),
        (2, 4),
        (3, 4),
    ]
    assert calls[4] == ("checking", 0, 1, "R1")


@pytest.mark.parametrize("seed", range(5))
def test_the_reports_largest_pieces_are_those_of_a_full_sort(seed):
    from multiplan.report import _largest

    rng = np.random.default_rng(seed)
    n = 500
    pieces = pd.DataFrame(
        {
            # few distinct areas: many ties at the 20th, broken by rule, then A id
            "area_m2": rng.integers(0, 30, n).astype(float),
            "rule_id": pd.Series(rng.choice(["R2", "R1", "R3"], n), dtype=object),
            "a_id": pd.Series(
                [f"A{k:03d}" for k in rng.integers(0, 80, n)], dtype=object
            ),
            "b_id": pd.Series([f"B{k}" for k in range(n)], dtype=object),
        }
    )
    full = pieces.sort_values(
        ["area_m2", "rule_id", "a_id"], ascending=[False, True, True], kind="stable"
    ).head(20)
    got = _largest(pieces, 20)
    assert got["b_id"].tolist() == full["b_id"].tolist()
    few = pieces.head(7)  # fewer pieces than rows shown: all of them, sorted
    assert _largest(few, 20)["b_id"].tolist() == (
        few.sort_values(
            ["area_m2", "rule_id", "a_id"], ascending=[False, True, True], kind="stable"
        )["b_id"].tolist()
    )


def test_a_side_that_selects_nothing_is_said_not_a_clean_result(make, tmp_path, caplog):
    """A class no feature has finds nothing: the run says so, in the log, run.json and the report."""
    rules = [
        {**RES_IN_ZONE, "id": "EMPTY-A", "a": {"layer": "plan", "class": ["0702"]}},
        {
            **RES_IN_ZONE,
            "id": "EMPTY-B",
            "b": {"layer": "zone", "where": {"field": "zid", "eq": "z9"}},
        },
        {
            **RES_IN_ZONE,
            "id": "DIFF-B",
            "relation": "difference",
            "b": {"layer": "zone", "where": {"field": "zid", "eq": "z9"}},
        },
        RES_IN_ZONE,
    ]
    with caplog.at_level("WARNING", logger="multiplan.rulestages"):
        result = multiplan.check(make(rules, units=False))
    said = " ".join(caplog.messages)
    assert "rule EMPTY-A: its A side, plan[0702], selects no feature" in said
    assert "rule EMPTY-B: its B side" in said
    assert "rule DIFF-B: its B side" in said
    assert "every piece of its A side is in conflict" in said
    assert "rule R1" not in said
    counts = {r["id"]: (r["a_features"], r["b_features"]) for r in result.run["rules"]}
    assert counts == {
        "EMPTY-A": (0, 2),
        "EMPTY-B": (4, 0),
        "DIFF-B": (4, 0),
        "R1": (4, 2),
    }
    result.write(tmp_path / "out", with_map=False)
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<li>EMPTY-A (plan[0702]): A 侧无要素，查不出冲突</li>" in report
    assert "B 侧无要素，A 侧全部计为冲突" in report
    assert "<li>R1 " not in report
