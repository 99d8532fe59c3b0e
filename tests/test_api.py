"""The public API (SPEC §11): frames in, frames out, the same figures as the command line."""

from __future__ import annotations

import geopandas as gpd
import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from helpers import X0, Y0, box, toml_dumps
from hypothesis import HealthCheck, given, settings

import multiplan
from multiplan.cli import main
from multiplan.errors import InputError, ManifestError

RES_IN_ZONE = {
    "id": "R1",
    "title": "居住用地在红线内",
    "severity": "high",
    "a": {"layer": "plan", "class": ["07"]},
    "b": {"layer": "zone"},
}
FAR_FROM_CARE = {
    "id": "S1",
    "title": "养老盲区",
    "severity": "low",
    "a": {"layer": "plan", "class": ["07"]},
    "b": {"layer": "care"},
    "relation": "difference",
    "distance": 120,
}


def test_every_public_name_resolves_and_is_documented():
    for name in multiplan.__all__:
        obj = getattr(multiplan, name)
        if name != "__version__":
            assert obj.__doc__, name
    assert callable(multiplan.check)
    assert multiplan.check.__module__ == "multiplan.rulecheck"


def test_notebook_figures_equal_the_command_line(make, tmp_path):
    project = make([RES_IN_ZONE, FAR_FROM_CARE])
    r = CliRunner().invoke(main, ["check", str(project.path), "--no-map"])
    assert r.exit_code == 0, r.output
    layers = multiplan.read_layers(project)
    result = multiplan.check(project, layers=layers)
    cli = pd.read_csv(project.out / "summary.csv", encoding="utf-8-sig")
    assert cli["rule_id"].tolist() == result.summary["rule_id"].tolist()
    assert cli["pieces"].tolist() == result.summary["pieces"].tolist()
    # the CSV holds what a survey means: 0.01 m²
    assert np.allclose(cli["area_m2"], result.summary["area_m2"], rtol=0, atol=0.005)
    written = gpd.read_file(project.out / "conflicts.gpkg", layer="conflicts")
    assert written["a_id"].tolist() == result.pieces["a_id"].tolist()
    assert np.allclose(written.area, result.pieces.area, rtol=1e-12)
    # the layers read once serve every stage: nothing is read twice
    assert result.layers.layer("plan") is layers.layer("plan")


def test_check_takes_frames_a_planner_edited(make):
    project = make([RES_IN_ZONE])
    base = multiplan.check(project)
    # the plan as a notebook would hold it: straight from the file, in lon/lat
    raw = gpd.read_file(project.path.parent / "plan.gpkg").to_crs(4326)
    again = multiplan.check(project, layers={"plan": raw})
    assert again.summary["area_m2"].tolist() == pytest.approx(
        base.summary["area_m2"].tolist(), rel=1e-9
    )
    assert sorted(again.pieces["a_id"]) == sorted(base.pieces["a_id"])
    # an edit in the notebook changes the figures
    edited = raw[raw["pid"] != "p1"]
    fewer = multiplan.check(project, layers={"plan": edited})
    assert "p1" not in set(fewer.pieces["a_id"])
    with pytest.raises(InputError, match="names no layer"):
        multiplan.check(project, layers={"nope": raw})


def test_result_writes_the_output_set(make, tmp_path):
    result = multiplan.check(make([RES_IN_ZONE]))
    files = result.write(tmp_path / "out", with_map=False)
    names = {f.name for f in files}
    assert {"conflicts.gpkg", "summary.csv", "by_unit.csv", "run.json"} <= names
    assert "map.html" not in names
    assert all(f.is_file() for f in files)


def test_explore_renders_in_a_notebook(make):
    result = multiplan.check(make([RES_IN_ZONE]))
    m = result.explore()
    html = m._repr_html_()  # what Jupyter shows: the page in an iframe's srcdoc
    assert html.startswith("<div")
    assert "srcdoc=" in html
    page = m.get_root().render()
    assert "<script src=" not in page  # Leaflet is inlined, so no CDN is needed
    assert "L.map(" in page or "L.map (" in page
    assert "multiplanDraw(one_map_multiplan" in page


# ------------------------------------------------------------------ multiplan.conflicts


def frames(draw, n_max=6):
    def polys(prefix):
        out = []
        for _ in range(draw(st.integers(1, n_max))):
            x = draw(st.integers(0, 40))
            y = draw(st.integers(0, 40))
            w = draw(st.integers(1, 20))
            h = draw(st.integers(1, 20))
            shape = draw(st.sampled_from(["box", "tri", "ring"]))
            g = shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)
            if shape == "tri":
                g = shapely.Polygon(
                    [(X0 + x, Y0 + y), (X0 + x + w, Y0 + y), (X0 + x, Y0 + y + h)]
                )
            elif shape == "ring" and w > 4 and h > 4:
                g = g.difference(
                    shapely.box(X0 + x + 2, Y0 + y + 2, X0 + x + w - 2, Y0 + y + h - 2)
                )
            out.append(g)
        return gpd.GeoDataFrame(
            {f"{prefix}_v": range(len(out))},
            geometry=out,
            crs="EPSG:4549",
            index=[f"{prefix}{i}" for i in range(len(out))],
        )

    return polys("a"), polys("b")


@st.composite
def two_frames(draw):
    return frames(draw)


def _by_pair(frame, left, right=None):
    keys = [left] if right is None else [left, right]
    return frame.assign(area=frame.geometry.area).groupby(keys)["area"].sum()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_frames())
def test_conflicts_equals_geopandas_overlay(pair):
    a, b = pair
    ours = multiplan.conflicts(a, b, workers=1)
    ref = gpd.overlay(
        a.assign(a_index=a.index),
        b.assign(b_index=b.index),
        how="intersection",
        keep_geom_type=True,
    )
    ref = ref[ref.area > 1e-9]
    got = _by_pair(ours, "a_index", "b_index")
    want = _by_pair(ref, "a_index", "b_index")
    assert set(got.index) == set(want.index)
    assert got.sort_index().to_numpy() == pytest.approx(
        want.sort_index().to_numpy(), rel=1e-9
    )
    assert ours["area_m2"].to_numpy() == pytest.approx(ours.area.to_numpy())
    assert {"a_v", "b_v", "a_index", "b_index", "area_m2"} <= set(ours.columns)
    diff = multiplan.conflicts(a, b, relation="difference", workers=1)
    ref_d = gpd.overlay(
        a.assign(a_index=a.index), b, how="difference", keep_geom_type=True
    )
    ref_d = ref_d[ref_d.area > 1e-9]
    got_d = _by_pair(diff, "a_index")
    want_d = _by_pair(ref_d, "a_index")
    assert set(got_d.index) == set(want_d.index)
    assert got_d.sort_index().to_numpy() == pytest.approx(
        want_d.sort_index().to_numpy(), rel=1e-9
    )
    assert diff["a_index"].is_unique  # one row per A row


def test_conflicts_with_a_distance_and_lines():
    a = gpd.GeoDataFrame(geometry=[box(0, 0, 100, 100)], crs=4549)
    b = gpd.GeoDataFrame(
        geometry=[shapely.LineString([(X0 + 150, Y0), (X0 + 150, Y0 + 100)])], crs=4549
    )
    with pytest.raises(InputError, match="LineString, not a polygon"):
        multiplan.conflicts(a, b)  # no distance: a line cannot be B
    assert multiplan.conflicts(a, b, distance=40.0).empty  # 50 m apart
    near = multiplan.conflicts(a, b, distance=60.0)
    assert near["area_m2"].iloc[0] == pytest.approx(10 * 100, rel=1e-9)


def test_conflicts_refuses_frames_it_cannot_measure():
    a = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs=4549)
    with pytest.raises(InputError, match="different CRSs"):
        multiplan.conflicts(a, a.to_crs(4528))
    with pytest.raises(InputError, match="not a projected CRS"):
        multiplan.conflicts(a.to_crs(4326), a.to_crs(4326))
    with pytest.raises(InputError, match="unknown relation"):
        multiplan.conflicts(a, a, relation="union")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the manifest as a whole


def test_an_edited_crosswalk_is_read_again_in_a_live_session(make, tmp_path):
    project = make([RES_IN_ZONE])
    cw = tmp_path / "mine.csv"
    cw.write_text(
        "source_code,target_code,source_name,target_name\nR21,070101,二类居住,城镇住宅用地\nM3,100103,三类工业,三类工业用地\nE2,0101,农林,耕地\n",
        encoding="utf-8",
    )
    text = project.path.read_text(encoding="utf-8").replace('"gb50137"', f'"{cw}"')
    project.path.write_text(text, encoding="utf-8")
    first = multiplan.read_layers(multiplan.read_project(project.path), ["plan"])
    assert first["plan"].loc["p1", "_class"] == "070101"
    cw.write_text(
        cw.read_text(encoding="utf-8").replace("R21,070101", "R21,0101"),
        encoding="utf-8",
    )
    again = multiplan.read_layers(multiplan.read_project(project.path), ["plan"])
    assert again["plan"].loc["p1", "_class"] == "0101"


@pytest.mark.parametrize(
    ("table", "words"),
    [
        (
            '[site]\nforbid = ["no_such_tag"]',
            "site.forbid: 'no_such_tag' is neither a layer",
        ),
        (
            '[fusion]\ncompare = "plan"',
            "fusion.compare: must be a list of layer names, not the string 'plan'",
        ),
        ('[fusion]\nlayers = ["nope"]', "fusion.layers: names no layer: 'nope'"),
        ("[yield]\nparcels = 3", "yield.parcels: names no layer: 3"),
        ("[site]\nforbid = []\nextra = 1", "site.extra: unknown key"),
    ],
)
def test_every_command_validates_every_section(make, table, words):
    project = make([RES_IN_ZONE])
    project.path.write_text(
        project.path.read_text(encoding="utf-8") + "\n" + table + "\n", encoding="utf-8"
    )
    for command in ("rules", "layers", "check"):
        r = CliRunner().invoke(main, [command, str(project.path)])
        assert r.exit_code == 2, (command, r.output)
        assert words in r.output
        assert "Traceback" not in r.output
    with pytest.raises(ManifestError, match=words.split(":")[0].replace(".", r"\.")):
        multiplan.read_project(project.path)


def test_sections_are_frozen_values():
    project = multiplan.read_project(
        __import__("helpers").DEMO  # the demo manifest
    )
    assert project.fusion.compare == ("chenggui", "tugui")
    assert project.site.forbid == ("eco_redline", "basic_farmland")
    assert project.yield_ is not None
    assert project.yield_.scenarios[0].area_mu == 2400
    with pytest.raises(AttributeError):
        project.site.forbid = ()  # type: ignore[misc]


def test_toml_helper_round_trips():
    assert "[[rule]]" in toml_dumps({"rule": [RES_IN_ZONE]})
