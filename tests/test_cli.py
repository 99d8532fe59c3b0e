import pytest
from click.testing import CliRunner
from helpers import DEMO

import multiplan
from multiplan.cli import main


@pytest.fixture
def run():
    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    return invoke


def test_version(run):
    r = run("--version")
    assert r.exit_code == 0
    assert multiplan.__version__ in r.output


@pytest.mark.parametrize("command", [[], ["check"], ["layers"], ["rules"]])
def test_help_has_an_example(run, command):
    for flag in ("--help", "-h"):
        r = run(*command, flag)
        assert r.exit_code == 0
        assert "\n  Example:\n" in r.output
        # the example block is not re-wrapped: each command stands on its own line
        assert "\n      multiplan " in r.output
        assert "layers/xinbei/project.toml\n" in r.output


def test_usage_errors_are_exit_2(run):
    r = run("layers")
    assert r.exit_code == 2
    assert "Missing argument" in r.output
    assert run("frobnicate").exit_code == 2


def test_internal_error_is_one_line_exit_3(run, monkeypatch):
    import multiplan.describe

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(multiplan.describe, "describe_project", boom)
    r = run("layers", DEMO)
    assert r.exit_code == 3
    assert "internal error: RuntimeError: disk on fire; rerun with --debug" in r.output
    assert "Traceback" not in r.output
    r = run("layers", DEMO, "--debug")
    assert isinstance(r.exception, RuntimeError)


def test_input_error_with_debug_raises(run, tmp_path):
    r = run("rules", tmp_path / "nope.toml", "--debug")
    assert isinstance(r.exception, multiplan.ManifestError)


def test_rules_lists_the_default_pack(run):
    r = run("rules", DEMO)
    assert r.exit_code == 0, r.output
    assert "ECO-01  [high]  城规建设用地侵占生态保护红线" in r.output
    assert "difference, within 1000 m: A = chenggui[0701]; B = eldercare" in r.output
    assert r.output.rstrip().endswith("rules")
    en = run("rules", DEMO, "--lang", "en")
    assert "Urban-plan construction land inside the ecological red line" in en.output


def test_rules_bad_pack_is_exit_2(run, write_manifest, parcels, tmp_path):
    pack = tmp_path / "p.toml"
    pack.write_text(
        '[[rule]]\nid = "X"\na = { layer = "nope" }\nb = { layer = "p" }\n',
        encoding="utf-8",
    )
    r = run("rules", write_manifest({"p": {"path": str(parcels)}}, rules=[str(pack)]))
    assert r.exit_code == 2
    assert (
        f"file {pack}, key rule X.a.layer: names no layer of the project: 'nope'"
        in r.output
    )
    assert "Traceback" not in r.output
