from click.testing import CliRunner
from helpers import DEMO

from multiplan.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_check_writes_map_and_report_unless_told_not_to(tmp_path):
    r = run("check", DEMO, "--out", tmp_path / "a", "--only", "ECO-01", "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "map.html").stat().st_size > 100_000
    assert (tmp_path / "a" / "report.html").exists()
    r = run(
        "check", DEMO, "--out", tmp_path / "b", "--only", "ECO-01", "--no-map", "-q"
    )
    assert r.exit_code == 0
    assert not (tmp_path / "b" / "map.html").exists()
    assert (tmp_path / "b" / "report.html").exists()


def test_map_redraws_from_an_earlier_check(tmp_path):
    assert (
        run(
            "check", DEMO, "--out", tmp_path, "--only", "LINE-02", "--no-map", "-q"
        ).exit_code
        == 0
    )
    r = run("map", DEMO, "--out", tmp_path, "--lang", "en")
    assert r.exit_code == 0, r.output
    html = (tmp_path / "map.html").read_text(encoding="utf-8")
    assert '"lang":"en"' in html
    assert "Urban development boundary overlapping the ecological red line" in html


def test_map_without_a_check_is_exit_2(tmp_path):
    r = run("map", DEMO, "--out", tmp_path)
    assert r.exit_code == 2
    assert "no conflicts.gpkg to draw" in r.output
    assert "Run `multiplan check` first" in r.output


def test_unknown_tiles_is_a_usage_error(tmp_path):
    assert run("check", DEMO, "--out", tmp_path, "--tiles", "baidu").exit_code == 2
