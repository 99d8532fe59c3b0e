"""The shape of the package: no import cycle, small modules, a light import, docs that stand alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "multiplan"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every import of a multiplan module by another, anywhere in the file.

    Imports inside functions and under ``if TYPE_CHECKING:`` count too: a cycle
    hidden by them is still a cycle.
    """
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                # `from multiplan import crs` imports the module multiplan.crs
                targets = [t for t in subs if t in modules]
                if len(targets) < len(subs):
                    targets.append(node.module)
            for t in targets:
                if t in modules and t != name and t.startswith("multiplan"):
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    # a submodule importing its own package (multiplan/__init__) would hide a cycle
    # behind the lazy API: none does
    assert not [
        m for m, deps in graph.items() if "multiplan" in deps and m != "multiplan"
    ]
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_modules_stay_small():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    big = {k: v for k, v in sizes.items() if v > 700}
    assert not big, big


def test_the_map_script_and_style_are_package_files():
    for name in ("multiplan.js", "multiplan.css"):
        assert (PACKAGE / "static" / name).stat().st_size > 100
    source = (PACKAGE / "maps.py").read_text(encoding="utf-8")
    assert "function " not in source  # no JavaScript in Python strings
    assert ".replace(" not in source.split("def map_html", 1)[1].split("def ", 1)[0]


def test_import_multiplan_and_help_stay_light():
    code = (
        "import sys, multiplan, multiplan.cli;"
        "heavy = [m for m in ('geopandas', 'pyogrio', 'folium', 'rasterio', 'shapely') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_docs_link_only_to_files_in_the_repository():
    pages = [
        REPO / "README.md",
        REPO / "rules" / "README.md",
        REPO / "layers" / "xinbei" / "README.md",
        REPO / "benchmarks" / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
    ]
    # the READMEs, and docs: manifest, rules, outputs, API, CHANGELOG
    assert len(pages) >= 9
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            assert (page.parent / target).exists(), (
                f"{page.name} links to missing {target}"
            )
