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


def test_demo_map_draws_offline(browser, demo):
    demo, out = demo
    page, seen = open_map(browser, out / "map.html")
    assert seen["external"] == []
    assert seen["errors"] == []
    c = page.locator(".leaflet-container")
    rules_with_pieces = int((demo.summary["pieces"] > 0).sum())
    groups = int(c.get_attribute("data-groups"))
    assert int(c.get_attribute("data-conflicts")) == len(demo.pieces)
    assert page.locator(".leaflet-control-layers-overlays label").count() == groups
    assert (
        groups >= 12 + rules_with_pieces
    )  # every plan and zone layer, and one group per rule
    assert page.locator(".leaflet-control-scale").count() == 1
    assert page.locator(".mp-legend").count() == 1
    assert (
        "常州市新北区多规合一冲突检查" in page.locator(".mp-title").first.inner_text()
    )
    # search by a feature id zooms to it and opens its popup
    page.fill(".mp-search input", "XB03-0010")
    page.press(".mp-search input", "Enter")
    page.wait_for_selector(".leaflet-popup-content .mp-popup")
    popup = page.locator(".leaflet-popup-content").inner_text()
    assert "XB03-0010" in popup
    assert "亩" in popup
    shot = REPO / "outputs" / "browser-test-map.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot))
    page.close()


def test_payloads_show_as_text_and_run_nothing(browser, tmp_path):
    project = make_hostile_project(tmp_path)
    run_check(project)
    page, seen = open_map(browser, project.out / "map.html")
    assert seen["errors"] == []
    assert seen["external"] == []
    # the layer panel shows the title as text
    panel = page.locator(".leaflet-control-layers-overlays").inner_text()
    assert "<script>window.__pwned3=1</script>" in panel
    # search the hostile id: its popup shows the payload as text
    page.fill(".mp-search input", '<img src=x onerror="window.__pwned=1">')
    page.press(".mp-search input", "Enter")
    page.wait_for_selector(".leaflet-popup-content .mp-popup")
    popup = page.locator(".leaflet-popup-content").inner_text()
    assert '<img src=x onerror="window.__pwned=1">' in popup
    assert "${window.__pwned2=1}`\\" in popup
    # a conflict's popup: the rule title shows as text
    page.fill(".mp-search input", "p&1")
    page.press(".mp-search input", "Enter")
    page.wait_for_function(
        "document.querySelector('.leaflet-popup-content').innerText.includes('X1')"
    )
    popup = page.locator(".leaflet-popup-content").inner_text()
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
