"""The ``multiplan`` command line: a thin shell over the library.

Exit codes (SPEC §10): 0 done; 1 done with conflicts at or above ``--fail-on``;
2 bad usage or bad input (one clear line, no traceback); 3 an internal error (one
line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from multiplan import __version__
from multiplan.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger(__name__)


class InputFailure(click.ClickException):
    """An :class:`InputError` shown as one line, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:  # noqa: D102 - click's own API
        click.echo(f"Error: {self.format_message()}", err=True)


class InternalFailure(click.ClickException):
    """An unexpected error shown as one line, exit code 3."""

    exit_code = 3

    def show(self, file: Any = None) -> None:  # noqa: D102 - click's own API
        click.echo(f"multiplan: internal error: {self.format_message()}", err=True)


@contextlib.contextmanager
def reporting(debug: bool) -> Iterator[None]:
    """Map library exceptions to exit codes: InputError → 2, anything else → 3."""
    try:
        yield
    except InputError as exc:
        if debug:
            raise
        raise InputFailure(str(exc)) from None
    except (
        click.ClickException,
        click.exceptions.Exit,
        click.Abort,
        KeyboardInterrupt,
    ):
        raise
    except Exception as exc:
        if debug:
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise InternalFailure(
            f"{type(exc).__name__}: {text}; rerun with --debug to see the traceback"
        ) from None


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    root = logging.getLogger("multiplan")
    root.setLevel(level)
    if not any(getattr(h, "_multiplan", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler._multiplan = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def common_options(f: F) -> F:
    """Add ``-v``, ``-q/--quiet`` and ``--debug`` to a command."""

    @click.option(
        "-v",
        "--verbose",
        count=True,
        help="More log output on stderr (-v info, -vv debug).",
    )
    @click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="No progress bars and only errors on stderr.",
    )
    @click.option(
        "--debug", is_flag=True, help="Show the traceback of an internal error."
    )
    @functools.wraps(f)
    def wrapper(
        *args: Any, verbose: int, quiet: bool, debug: bool, **kwargs: Any
    ) -> Any:
        _configure_logging(verbose, quiet)
        ctx = click.get_current_context()
        ctx.meta["multiplan.quiet"] = quiet
        with reporting(debug):
            return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def out_option(
    help_text: str = "Output folder (default: the manifest's out).",
) -> Callable[[F], F]:
    """Return the ``--out DIR`` option (one definition for every command)."""
    return click.option(
        "--out",
        "out",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


def workers_option(help_text: str) -> Callable[[F], F]:
    """Return the ``--workers N`` option (default: all cores)."""
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help=help_text,
    )


def lang_option(help_text: str) -> Callable[[F], F]:
    """Return the ``--lang zh|en`` option (Chinese by default)."""
    return click.option(
        "--lang",
        type=click.Choice(["zh", "en"]),
        default="zh",
        show_default=True,
        help=help_text,
    )


tiles_option = click.option(
    "--tiles",
    type=click.Choice(["none", "osm", "tianditu", "gaode"]),
    default="none",
    show_default=True,
    help="Base map under the data when online (tianditu needs TIANDITU_KEY; gaode shifts the data to GCJ-02).",
)

project_argument = click.argument(
    "project_path",
    metavar="PROJECT.toml",
    type=click.Path(dir_okay=False, path_type=Path),
)


def _progress(
    label: str, total: int
) -> contextlib.AbstractContextManager[Callable[[str], None]]:
    """Return a click progress bar on stderr, hidden with --quiet or when stderr is not a terminal."""
    quiet = click.get_current_context().meta.get("multiplan.quiet", False)
    if quiet or not sys.stderr.isatty():
        return contextlib.nullcontext(lambda _item: None)

    @contextlib.contextmanager
    def bar() -> Iterator[Callable[[str], None]]:
        with click.progressbar(
            length=total,
            label=label,
            file=sys.stderr,
            show_pos=True,
            item_show_func=lambda s: s,
        ) as b:
            state = {"first": True}

            def step(item: str) -> None:
                if not state["first"]:
                    b.update(1)
                state["first"] = False
                b.label = f"{label} {item}"
                b.render_progress()

            yield step
            b.update(1)

    return bar()


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="multiplan")
def main() -> None:
    """Put a district's plans on one map (一张图) and check them against each other.

    \b
    Example:
        multiplan check layers/xinbei/project.toml
        multiplan layers layers/xinbei/project.toml
        multiplan rules layers/xinbei/project.toml
    """


@main.command(name="check")
@project_argument
@out_option()
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="RULE_ID",
    help="Run only this rule (repeatable).",
)
@click.option(
    "--fail-on",
    "fail_on",
    type=click.Choice(["high", "medium", "low", "never"]),
    default="never",
    show_default=True,
    help="Exit 1 when conflicts at or above this severity are found.",
)
@workers_option(
    "Threads for the overlay (default: all cores); results are identical for every N."
)
@lang_option("Language of rule titles in tables.")
@click.option(
    "--allow-unmapped",
    is_flag=True,
    help="Accept source codes the crosswalk does not map (their class is null).",
)
@tiles_option
@click.option("--no-map", "no_map", is_flag=True, help="Do not draw map.html.")
@common_options
def check_cmd(
    project_path: Path,
    out: Path | None,
    only: tuple[str, ...],
    fail_on: str,
    workers: int | None,
    lang: str,
    allow_unmapped: bool,
    tiles: str,
    no_map: bool,
) -> None:
    """Check a project's plans against its rules and write the conflicts.

    Writes conflicts.gpkg (one row per conflict piece), summary.csv (per rule,
    UTF-8 with BOM for Excel), by_unit.csv (per town/street, when the manifest
    has units), run.json (inputs with SHA-256, software, timings, counts),
    map.html (one self-contained file that opens offline by double-click) and
    report.html.
    Exit code 1 when --fail-on finds conflicts at or above that severity.

    \b
    Example:
        multiplan check layers/xinbei/project.toml
        multiplan check layers/xinbei/project.toml --only ECO-01 --fail-on high
    """
    from multiplan.check import run_check
    from multiplan.report import format_closing_table

    project = _load(project_path)
    with _stage_progress() as progress:
        result = run_check(
            project,
            out=out,
            only=only or None,
            workers=workers,
            allow_unmapped=allow_unmapped,
            make_map=not no_map,
            lang=lang,  # type: ignore[arg-type]
            tiles=tiles,  # type: ignore[arg-type]
            progress=progress,
        )
    if not click.get_current_context().meta.get("multiplan.quiet", False):
        click.echo(format_closing_table(result, lang=lang), err=True, nl=False)
    if result.fails(fail_on):
        click.get_current_context().exit(1)


@contextlib.contextmanager
def _stage_progress() -> Iterator[Callable[[str, int, int, str], None]]:
    """Yield a ``progress(stage, done, total, item)`` drawing one bar per stage on stderr.

    Nothing is drawn with --quiet or when stderr is not a terminal.
    """
    quiet = click.get_current_context().meta.get("multiplan.quiet", False)
    if quiet or not sys.stderr.isatty():
        yield lambda _stage, _done, _total, _item: None
        return
    state: dict[str, Any] = {"stage": None, "bar": None}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].update(state["bar"].length - state["bar"].pos)
            state["bar"].render_finish()
            state["bar"] = None

    def progress(stage: str, done: int, total: int, item: str) -> None:
        if stage != state["stage"]:
            close()
            state["stage"] = stage
            state["bar"] = click.progressbar(
                length=max(total, 1),
                label=f"{stage:<9}",
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda s: s,
            )
        bar = state["bar"]
        bar.current_item = item
        bar.update(done - bar.pos)
        bar.render_progress()

    try:
        yield progress
    finally:
        close()


@main.command(name="map")
@project_argument
@out_option("The folder of an earlier check (default: the manifest's out).")
@lang_option("Language of the map.")
@tiles_option
@common_options
def map_cmd(project_path: Path, out: Path | None, lang: str, tiles: str) -> None:
    """Draw map.html again from the outputs of an earlier check.

    Reads conflicts.gpkg from the output folder and the project's layers, and
    writes map.html beside them: one file that opens by double-click with no
    server and no internet.

    \b
    Example:
        multiplan map layers/xinbei/project.toml --lang en
        multiplan map layers/xinbei/project.toml --tiles tianditu
    """
    from multiplan.maps import redraw_map

    project = _load(project_path)
    target = redraw_map(project, out=out, lang=lang, tiles=tiles)  # type: ignore[arg-type]
    if not click.get_current_context().meta.get("multiplan.quiet", False):
        click.echo(f"wrote {target}", err=True)


@main.command(name="yield")
@project_argument
@out_option()
@common_options
def yield_cmd(project_path: Path, out: Path | None) -> None:
    """Evaluate land yield (亩均效益): indicators and grades per parcel, scenarios.

    Reads the manifest's [yield] table and writes yield.gpkg, yield.csv,
    yield_by_unit.csv (and yield_by_park.csv with park_field) and scenarios.csv.
    `check` does the same when the manifest has [yield], and adds the land value
    at stake to every conflict piece.

    \b
    Example:
        multiplan yield layers/xinbei/project.toml
    """
    from multiplan.yields import run_yield

    project = _load(project_path)
    result, files = run_yield(project, out=out)
    if not click.get_current_context().meta.get("multiplan.quiet", False):
        grades = (
            result.parcels["grade"].value_counts().to_dict()
            if len(result.parcels)
            else {}
        )
        summary = ", ".join(f"{g} {grades.get(g, 0):,}" for g in ("A", "B", "C", "D"))
        click.echo(f"{len(result.parcels):,} parcels; grades {summary}", err=True)
        for _, s in result.scenarios.iterrows():
            click.echo(
                f"scenario {s['id']}: gross {s['gross_yuan']:,.0f} 元, net {s['net_yuan']:,.0f} 元",
                err=True,
            )
        click.echo(
            f"wrote {', '.join(f.name for f in files)} in {files[0].parent if files else out}",
            err=True,
        )


@main.command(name="fuse")
@project_argument
@out_option()
@workers_option("Threads for the conflict check.")
@common_options
def fuse_cmd(project_path: Path, out: Path | None, workers: int | None) -> None:
    """Build the one map (一张图): onemap.gpkg, and the two-plan differences.

    Writes onemap.gpkg (layer onemap): the faces of the overlay of the [fusion]
    layers inside the boundary, each with every layer's ids and class, the
    resolved class and source by [fusion] priority, and the rules whose
    conflicts cover it. With [fusion] compare = [first, second] also
    differences.gpkg (numbered difference patches, 差异图斑, with empty ledger
    columns for sign-off) and differences.csv (area by class and unit).

    \b
    Example:
        multiplan fuse layers/xinbei/project.toml
    """
    from multiplan.fuse import run_fuse

    project = _load(project_path)
    result, files = run_fuse(project, out=out, workers=workers)
    if not click.get_current_context().meta.get("multiplan.quiet", False):
        click.echo(f"{len(result.faces):,} faces", err=True)
        if result.patches is not None:
            counts = result.patches["diff_class"].value_counts().to_dict()
            click.echo(
                f"difference patches: 02 {counts.get('02', 0):,}, 03 {counts.get('03', 0):,}",
                err=True,
            )
        click.echo(
            f"wrote {', '.join(f.name for f in files)} in {files[0].parent}", err=True
        )


@main.command(name="site")
@project_argument
@click.argument("site", metavar="SITE")
@out_option()
@lang_option("Language of the map.")
@common_options
def site_cmd(project_path: Path, site: str, out: Path | None, lang: str) -> None:
    """Screen a proposed site against every layer; exit 1 if it touches [site] forbid.

    SITE is a vector file or a WKT polygon in the working CRS. Writes site.csv
    (layer, class, features, area_m2, area_mu, share of the site) and site.html
    (a small map centred on the site).

    \b
    Example:
        multiplan site layers/xinbei/project.toml site.geojson
        multiplan site layers/xinbei/project.toml "POLYGON ((490000 3530000, 490300 3530000, 490300 3530300, 490000 3530000))"
    """
    from multiplan.site import run_site

    project = _load(project_path)
    result, files = run_site(project, site, out=out, lang=lang)
    if not click.get_current_context().meta.get("multiplan.quiet", False):
        for _, r in result.table.iterrows():
            flag = (
                "  FORBIDDEN"
                if (
                    (result.forbidden["layer"] == r["layer"])
                    & (result.forbidden["class"].astype(object) == r["class"])
                ).any()
                else ""
            )
            click.echo(
                f"{r['layer']:<16} {r['class'] or ''!s:<20} {int(r['features']):>5} features {r['area_mu']:>12,.2f} 亩 {r['share']:>7.1%}{flag}",
                err=True,
            )
        click.echo(
            f"wrote {', '.join(f.name for f in files)} in {files[0].parent}", err=True
        )
    if result.fails:
        names = "; ".join(
            f"{layer}: {', '.join(map(str, list(result.hits[layer].index)[:5]))}"
            for layer in sorted(set(result.forbidden["layer"]))
        )
        click.echo(f"the site touches what [site] forbids: {names}", err=True)
        click.get_current_context().exit(1)


@main.command(name="layers")
@project_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Text for people, JSON for scripts.",
)
@common_options
def layers_cmd(project_path: Path, fmt: str) -> None:
    """Inspect every layer of a project: counts, CRS, geometry, repairs, classes.

    Reads each layer as `check` would and reports what it found: source and
    driver, text encoding, features, geometry types, source CRS → working CRS,
    bounds, repaired and skipped geometries, the classes found with their area
    in 亩, and source codes the crosswalk does not map. A layer that cannot be
    read is reported and the others still are; the exit code is then 2.

    \b
    Example:
        multiplan layers layers/xinbei/project.toml
        multiplan layers layers/xinbei/project.toml --format json > layers.json
    """
    from multiplan.describe import describe_project, format_descriptions

    project = _load(project_path)
    with _progress("reading", len(project.layers)) as step:
        descriptions = describe_project(project, progress=step)
    if fmt == "json":
        click.echo(json.dumps(descriptions, ensure_ascii=False, indent=2))
    else:
        click.echo(format_descriptions(project, descriptions))
    failed = [d for d in descriptions if d.get("error")]
    if failed:
        raise InputFailure(
            failed[0]["error"]
            + (
                f" (and {len(failed) - 1} more layers failed)"
                if len(failed) > 1
                else ""
            )
        )


@main.command(name="rules")
@project_argument
@lang_option("Language of the titles.")
@common_options
def rules_cmd(project_path: Path, lang: str) -> None:
    """List the rules that `check` would run, in pack order.

    Every rule pack of the manifest is validated first (unknown keys, duplicate
    ids, unknown layers, classes or tags).

    \b
    Example:
        multiplan rules layers/xinbei/project.toml
        multiplan rules layers/xinbei/project.toml --lang en
    """
    from multiplan.describe import format_rules
    from multiplan.rules import load_rules

    project = _load(project_path)
    rules = load_rules(project)
    click.echo(format_rules(rules, lang=lang))


def _load(path: Path) -> Any:
    from multiplan.project import load_project

    return load_project(path)


if __name__ == "__main__":  # pragma: no cover
    main()
