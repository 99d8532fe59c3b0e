"""The shared map's data and HTML (no browser: see test_map_browser.py)."""

import json
import re

import numpy as np
import pytest
import shapely
from helpers import JINJA, make_hostile_project, map_data, run_check

import multiplan
from multiplan import mapdata
from multiplan.crs import wgs84_to_gcj02
from multiplan.errors import InputError
from multiplan.project import read_project

# published WGS-84 → GCJ-02 pairs: the test vectors of googollee/eviltransform (lat, lng)
EVILTRANSFORM_PAIRS = [
    ((31.1774276, 121.5272106), (31.17530398364597, 121.531541859215)),  # Shanghai
    ((22.543847, 113.912316), (22.540796131694766, 113.9171764808363)),  # Shenzhen
    ((39.911954, 116.377817), (39.91334545536069, 116.38404722455657)),  # Beijing
]


@pytest.mark.parametrize(("wgs", "gcj"), EVILTRANSFORM_PAIRS)
def test_gcj02_against_published_pairs(wgs, gcj):
    out = wgs84_to_gcj02(np.array([[wgs[1], wgs[0]]]))[0]
    assert out[0] == pytest.approx(gcj[1], abs=1e-9)
    assert out[1] == pytest.approx(gcj[0], abs=1e-9)


def decode(geom, quantum=1e6):
    """What the page does with an encoded geometry."""
    polys = []
    for poly in geom:
        rings = []
        for r in poly:
            x = y = 0
            pts = []
            for i in range(0, len(r), 2):
                x += r[i]
                y += r[i + 1]
                pts.append((x / quantum, y / quantum))
            rings.append(pts)
        polys.append(shapely.Polygon(rings[0], rings[1:]))
    return shapely.MultiPolygon(polys) if len(polys) > 1 else polys[0]


def test_encode_polygons_round_trips_to_a_tenth_of_a_metre():
    holed = shapely.Polygon(
        [(119.9, 31.8), (119.91, 31.8), (119.91, 31.81), (119.9, 31.81)],
        [[(119.902, 31.802), (119.904, 31.802), (119.904, 31.804)]],
    )
    multi = shapely.MultiPolygon(
        [
            shapely.box(120, 31, 120.001, 31.001),
            shapely.box(120.01, 31, 120.011, 31.001),
        ]
    )
    enc = mapdata.encode_polygons(np.array([holed, multi, shapely.Polygon()]))
    assert enc[2] == []
    for g, e in zip([holed, multi], enc[:2], strict=True):
        back = decode(e)
        assert shapely.hausdorff_distance(back, g) < 1e-6  # degrees: ~0.1 m
        assert back.area == pytest.approx(g.area, rel=1e-4)


def test_safe_json_cannot_close_the_script():
    text = mapdata.safe_json(
        {"x": "</script><script>alert(1)</script>", "y": "\u2028", "z": "a&b"}
    )
    assert "<" not in text
    assert ">" not in text
    assert "&" not in text
    assert "\u2028" not in text
    assert json.loads(text) == {
        "x": "</script><script>alert(1)</script>",
        "y": "\u2028",
        "z": "a&b",
    }


@pytest.fixture
def hostile(tmp_path):
    return make_hostile_project(tmp_path)


def test_map_html_is_self_contained_and_escapes_every_attribute(hostile):
    result = run_check(hostile)
    html = (result.project.out / "map.html").read_text(encoding="utf-8")
    assert "<script src=" not in html
    assert not re.search(r'<link[^>]+href="(https?:)?//', html)
    assert "cdn.jsdelivr" not in html
    assert "unpkg" not in html
    assert "L.map(" in html  # Leaflet itself is inlined
    # payloads only ever appear escaped in the data
    call = html[html.rindex("multiplanDraw(") :]
    data = call[: call.index("</script>")]
    assert "<img" not in data
    assert "\\u003cimg src=x onerror=" in data
    assert "<title>&lt;img src=x onerror=" in html
    assert len(result.pieces) == 2
    # a Jinja2 template in an attribute or a title is text, never run
    assert JINJA in data
    assert "jinja-ran" not in html


def test_the_map_element_runs_no_template_it_is_given(tmp_path):
    import html

    from multiplan.maps import MultiplanLayers, OneMap, map_html

    m = OneMap()
    m.add_child(MultiplanLayers({"layers": [{"name": JINJA}]}, title=JINJA))
    page = map_html(m)
    assert '{"layers":[{"name":"' + JINJA + '"}]}' in page  # the data, as it was
    assert f"<title>{html.escape(JINJA)}</title>" in page
    assert "jinja-ran" not in page


def test_report_html_escapes_every_attribute(hostile):
    result = run_check(hostile)
    text = (result.project.out / "report.html").read_text(encoding="utf-8")
    assert "<img" not in text
    assert "&lt;b&gt;标题&lt;/b&gt;&#36;{1}" in text
    assert "&#36;{window.__pwned2=1}&#96;&#92;" in text
    assert "<svg" in text  # the charts


def test_gaode_shifts_the_display_data_only(hostile):
    result = multiplan.check(hostile)
    plain = mapdata.build_map_data(
        hostile, result.layers.layers(), result.pieces, result.rules
    )
    gaode = mapdata.build_map_data(
        hostile, result.layers.layers(), result.pieces, result.rules, tiles="gaode"
    )
    (x0, y0) = plain["groups"][-1]["features"][0][0][0][0][:2]
    (x1, y1) = gaode["groups"][-1]["features"][0][0][0][0][:2]
    dx, dy = (x1 - x0) / 1e6, (y1 - y0) / 1e6
    assert 0.004 < dx < 0.0055  # ≈ +450 m east at Xinbei
    assert -0.0025 < dy < -0.0015  # ≈ −220 m north
    assert result.pieces.geometry.iloc[0].equals(
        multiplan.check(hostile).pieces.geometry.iloc[0]
    )


def test_tianditu_needs_a_key(hostile, monkeypatch):
    monkeypatch.delenv("TIANDITU_KEY", raising=False)
    with pytest.raises(InputError, match="TIANDITU_KEY"):
        run_check(hostile, tiles="tianditu")
    assert not (hostile.out / "conflicts.gpkg").exists()  # refused before any work
    monkeypatch.setenv("TIANDITU_KEY", "abc123")
    result = run_check(hostile, tiles="tianditu")
    html = (result.project.out / "map.html").read_text(encoding="utf-8")
    assert "tianditu.gov.cn/vec_w/wmts" in html
    assert "tk=abc123" in html


def test_same_inputs_same_map(hostile, tmp_path):
    run_check(hostile, out=tmp_path / "a")
    run_check(hostile, out=tmp_path / "b", workers=1)
    assert (tmp_path / "a" / "map.html").read_bytes() == (
        tmp_path / "b" / "map.html"
    ).read_bytes()


def test_demo_map_size_and_groups(tmp_path):
    from helpers import DEMO

    result = run_check(read_project(DEMO), out=tmp_path)
    size = (tmp_path / "map.html").stat().st_size
    assert size < 10_000_000
    html = (tmp_path / "map.html").read_text(encoding="utf-8")
    data = map_data(html)
    kinds = [g["kind"] for g in data["groups"]]
    assert kinds.count("conflicts") == int((result.summary["pieces"] > 0).sum())
    assert sum(
        len(g["features"]) for g in data["groups"] if g["kind"] == "conflicts"
    ) == len(result.pieces)
    assert {"boundary", "units", "plan", "zone", "points"} <= set(kinds)
    assert [k[0] for k in data["level1"]] == sorted(k[0] for k in data["level1"])


def test_popups_leave_out_empty_cells_and_keep_the_fields_order():
    import pandas as pd

    frame = pd.DataFrame(
        {
            "_class": ["0101", "0102", "0103"],
            "NAME": pd.Series(["甲", pd.NA, "丙"], dtype="string"),
            "AREA": [1.5, np.nan, 3.0],
            "DATE": pd.to_datetime(["2024-01-02", None, "2024-03-04"]),
            "NOTE": [None, "x", "<b>y</b>"],
            **{f"F{k}": [k, k, k] for k in range(5)},
        }
    )
    rows = mapdata._attribute_rows(frame)
    assert rows[1] == [["NOTE", "x"], ["F0", "0"], ["F1", "1"]]  # no <NA>, nan, NaT
    assert rows[0] == [
        ["NAME", "甲"],
        ["AREA", "1.5"],
        ["DATE", "2024-01-02 00:00:00"],
        ["F0", "0"],
        ["F1", "1"],
    ]  # the first six public fields; NOTE empty
    assert rows[2][3] == ["NOTE", "<b>y</b>"]  # as it is: the page writes it as text
