"""``multiplan check`` and ``multiplan map``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from multiplan.cli.options import (
    common_options,
    database,
    db_option,
    echo,
    force_option,
    is_quiet,
    lang_option,
    out_option,
    output_folder,
    project_argument,
    read_project,
    scale_options,
    stage_progress,
    tiles_option,
    workers_option,
    wrote,
)

if TYPE_CHECKING:
    from pathlib import Path

    from multiplan.rulecheck import CheckResult


@click.command(name="check")
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
@lang_option("Language of rule titles in tables, the map and the report.")
@click.option(
    "--allow-unmapped",
    is_flag=True,
    help="Accept source codes the crosswalk does not map (their class is null).",
)
@tiles_option
@click.option(
    "--no-map",
    "no_map",
    is_flag=True,
    help="Do not draw map.html (an earlier one is removed).",
)
@scale_options
@db_option
@force_option
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
    tile_size: float | None,
    cluster: str | None,
    db: str | None,
    force: bool,
) -> None:
    """Check a project's plans against its rules and write the conflicts.

    Writes conflicts.gpkg (one row per conflict piece), summary.csv (per rule,
    UTF-8 with BOM for Excel), by_unit.csv (per town/street, when the manifest
    has units), run.json (inputs with SHA-256, software, timings, counts),
    map.html (one self-contained file that opens offline by double-click) and
    report.html. The folder is replaced as one set. With --db (or the
    manifest's [project] db) the tables conflicts, summary, by_unit and units
    are also written to PostGIS, in one transaction, with a row in runs.
    Exit code 1 when --fail-on finds conflicts at or above that severity.

    \b
    Example:
        multiplan check layers/xinbei/project.toml
        multiplan check layers/xinbei/project.toml --only ECO-01 --fail-on high
        multiplan check project.toml --db postgresql://planner@gis.local/onemap?schema=xinbei
    """
    from multiplan.rulecheck import check

    project = read_project(project_path)
    if not no_map:  # folium is imported only for a map
        from multiplan.maps import check_tiles

        check_tiles(tiles)
    target = database(project, db)
    with (
        output_folder(project, out, force=force) as folder,
        stage_progress() as progress,
    ):
        result = check(
            project,
            only=only or None,
            workers=workers,
            allow_unmapped=allow_unmapped,
            progress=progress,
            tile_size=tile_size,
            cluster=cluster,
        )
        progress("writing", 0, 1, str(folder.path))
        files = result.write(
            folder,
            lang=lang,  # type: ignore[arg-type]
            tiles=tiles,  # type: ignore[arg-type]
            with_map=not no_map,
            db=target,
        )
    if not is_quiet():
        click.echo(closing_table(result, lang=lang), err=True, nl=False)
    wrote(files)
    if result.fails(fail_on):
        click.get_current_context().exit(1)


def closing_table(result: CheckResult, *, lang: str = "zh") -> str:
    """Return the closing table for the terminal: rules with pieces, 亩 and hectares."""
    from multiplan.areas import to_ha

    s = result.summary
    lines = [f"{'rule':<10} {'severity':<8} {'pieces':>7} {'亩':>13} {'ha':>11}  title"]
    labels = {r.id: r.label(lang) for r in result.rules}
    for _, r in s.iterrows():
        lines.append(
            f"{r['rule_id']:<10} {r['severity']:<8} {int(r['pieces']):>7,} {r['area_mu']:>13,.2f} "
            f"{to_ha(r['area_m2']):>11,.2f}  {labels[r['rule_id']]}"
        )
    lines.append(f"{len(s)} rules, {len(result.attributes):,} pieces")
    return "\n".join(lines) + "\n"


@click.command(name="map")
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
    from multiplan.maps import map_writer, redraw_map

    project = read_project(project_path)
    with output_folder(project, out) as folder:
        m = redraw_map(project, folder.path, lang=lang, tiles=tiles)  # type: ignore[arg-type]
        files = folder.write({"map.html": map_writer(m)}, command="map")
    wrote(files)
    echo(f"map: {files[0]}")
