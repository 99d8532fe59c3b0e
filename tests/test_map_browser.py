"""map.html in a real browser: headless Chromium, every network request blocked.

Skipped where Chromium or the playwright package is missing (a user's laptop);
.ci/run installs both, so CI always runs these.
"""

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)
if CHROMIUM is None:
    pytest.skip(
        "Chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

from helpers import (  # noqa: E402
    DEMO,
    REPO,
    make_hostile_project,
    run_check,
)

from multiplan.project import read_project  # noqa: E402

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_map(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    seen = {"external": [], "errors": []}

    def route(r):
        url = r.request.url
        if url.startswith(("file:", "data:")):
            r.continue_()
        else:
            seen["external"].append(url)
            r.abort()

    page.route("**/*", route)
    page.on(
        "console",
        lambda m: seen["errors"].append(m.text) if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector(".leaflet-container[data-drawn=yes]", timeout=20_000)
    return page, seen


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_check(read_project(DEMO), out=out), out


def _box(page, selector):
    return page.locator(selector).first.bounding_box()


def _overlap(a, b):
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def test_demo_map_draws_offline_and_reads_at_a_glance(browser, demo):
    demo, out = demo
    page, seen = open_map(browser, out / "map.html")
    assert seen["external"] == []
    assert seen["errors"] == []
    c = page.locator(".leaflet-container")
    groups = int(c.get_attribute("data-groups"))
    rules_with_pieces = int((demo.summary["pieces"] > 0).sum())
    assert int(c.get_attribute("data-conflicts")) == len(demo.pieces)
    # every group has a box in the panel, by section
    assert page.locator(".mp-panel .mp-item").count() == groups
    sections = page.locator(".mp-section-head").all_inner_texts()
    assert [t.strip("▾▸ ") for t in sections] == [
        "冲突",
        "管控线",
        "规划",
        "亩均效益",
        "范围",
    ]
    # on when the map opens: the conflicts, the three control lines, the boundary and units
    on = page.evaluate(
        "Object.keys(window.multiplanLayers).filter(n => "
        "document.querySelector('.leaflet-container') && window.multiplanLayers[n]._map)"
    )
    assert set(on) == {
        *(
            f"conflicts:{r}"
            for r in demo.summary.loc[demo.summary["pieces"] > 0, "rule_id"]
        ),
        "eco_redline",
        "basic_farmland",
        "urban_boundary",
        "district",
        "towns",
    }
    assert len(on) == rules_with_pieces + 5
    # the legend never covers the layer panel at 1400 × 900
    assert not _overlap(_box(page, ".mp-panel"), _box(page, ".mp-legend"))
    assert page.locator(".mp-north svg").count() == 1
    assert page.locator(".leaflet-control-scale").count() == 1
    assert (
        "常州市新北区多规合一冲突检查" in page.locator(".mp-title").first.inner_text()
    )
    # a dissolved-no-more 城规 parcel is found by its id, whatever the case; its group comes on
    page.fill(".mp-search input", "xb03-0010")
    page.press(".mp-search input", "Enter")
    page.wait_for_selector(".leaflet-popup-content .mp-popup")
    popup = page.locator(".leaflet-popup-content").last.inner_text()
    assert "XB03-0010" in popup
    assert page.evaluate("!!window.multiplanLayers['chenggui']._map")
    # part of an id lists the ids that hold it
    page.fill(".mp-search input", "xb03-001")
    page.press(".mp-search input", "Enter")
    assert page.locator(".mp-search .hit").count() >= 2
    # the measuring tool: a 200 m × 100 m rectangle is 20 000 m² = 30 亩
    area = page.evaluate(
        """(() => { const m = document.querySelector('.mp-measure')._measure;
        const lat = 31.83, lng = 119.97, dlat = 100 / 111320, dlng = 200 / (111320 * Math.cos(lat * Math.PI / 180));
        return m.areaM2([L.latLng(lat, lng), L.latLng(lat, lng + dlng), L.latLng(lat + dlat, lng + dlng), L.latLng(lat + dlat, lng)]); })()"""
    )
    assert area == pytest.approx(20_000, rel=0.01)
    page.click(".mp-measure button")
    assert "点击地图" in page.locator(".mp-measure .out").inner_text()
    shot = REPO / "outputs" / "browser-test-map.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot))
    page.close()


def test_onemap_page_finds_patch_numbers(browser, tmp_path):
    import multiplan

    result = multiplan.fuse(read_project(DEMO))
    result.write(tmp_path)
    page, seen = open_map(browser, tmp_path / "onemap.html")
    assert seen["errors"] == []
    assert seen["external"] == []
    number = result.patches["patch_no"].iloc[0]
    page.fill(".mp-search input", number.lower())
    page.press(".mp-search input", "Enter")
    page.wait_for_selector(".leaflet-popup-content .mp-popup")
    popup = page.locator(".leaflet-popup-content").last.inner_text()
    assert number in popup
    assert "差异类型" in popup
    page.close()


def test_payloads_show_as_text_and_run_nothing(browser, tmp_path):
    project = make_hostile_project(tmp_path)
    run_check(project)
    page, seen = open_map(browser, project.out / "map.html")
    assert seen["errors"] == []
    assert seen["external"] == []
    # the layer panel shows the title as text
    panel = page.locator(".mp-panel").text_content()  # collapsed sections too
    assert "<script>window.__pwned3=1</script>" in panel
    # search the hostile id: its popup shows the payload as text
    page.fill(".mp-search input", '<img src=x onerror="window.__pwned=1">')
    page.press(".mp-search input", "Enter")
    page.wait_for_selector(".leaflet-popup-content .mp-popup")
    popup = page.locator(".leaflet-popup-content").last.inner_text()
    assert '<img src=x onerror="window.__pwned=1">' in popup
    assert "${window.__pwned2=1}`\\" in popup
    # a conflict's popup: the rule title shows as text
    page.fill(".mp-search input", "p&1")
    page.press(".mp-search input", "Enter")
    page.wait_for_function(
        "[...document.querySelectorAll('.leaflet-popup-content')].some(p => p.innerText.includes('X1'))"
    )
    popup = page.locator(".leaflet-popup-content").last.inner_text()
    assert "X1 <b>标题</b>${1}" in popup
    assert "p&1" in popup
    page.fill(".mp-search input", "${window.__pwned2=1}`\\")
    page.press(".mp-search input", "Enter")
    page.wait_for_timeout(300)
    assert page.locator(".leaflet-popup-content img").count() == 0
    assert page.evaluate("[window.__pwned, window.__pwned2, window.__pwned3]") == [
        None,
        None,
        None,
    ]
    page.close()
