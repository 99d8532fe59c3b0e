"""``multiplan diff``: two editions of a plan compared (修编对比, 转移矩阵)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from multiplan.cli.options import (
    cluster_option,
    common_options,
    echo,
    force_option,
    lang_option,
    out_option,
    output_folder,
    project_argument,
    read_project,
    stage_progress,
    workers_option,
    wrote,
)

if TYPE_CHECKING:
    from pathlib import Path


@click.command(name="diff")
@project_argument
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@out_option()
@click.option(
    "--level",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="Taxonomy level at which classes are compared: 1 (01 耕地) or 2 (0101 水田).",
)
@workers_option(
    "Processes that node the faces and threads that attribute them (the faces "
    "are the same for any number)."
)
@lang_option("Language of the map, the report and the ledger.")
@cluster_option
@force_option
@common_options
def diff_cmd(
    project_path: Path,
    old: str,
    new: str,
    out: Path | None,
    level: int,
    workers: int | None,
    lang: str,
    cluster: str | None,
    force: bool,
) -> None:
    """Compare two editions of a plan (OLD and NEW, two layers of the manifest).

    Writes changes.gpkg (layer changes: the faces of one overlay of both
    editions inside the boundary, split at units, each with both editions' ids
    and classes and whether its land was added, removed, reclassified or stayed
    the same), transitions.csv (the transfer matrix, 转移矩阵, at --level),
    transitions_by_unit.csv (with units), changes.xlsx (the matrix in 亩, the
    transitions, per unit and the changed faces), changes.html (a map of the
    changes) and transitions.html (the matrix as a table a planner reads).

    \b
    Example:
        multiplan diff layers/xinbei/project.toml tugui tugui_2024
        multiplan diff layers/xinbei/project.toml tugui tugui_2024 --level 2
        multiplan diff layers/xinbei/project.toml tugui tugui_2024 --cluster local
    """
    from multiplan.areas import to_mu
    from multiplan.editions import check_editions, diff
    from multiplan.editions_out import totals

    project = read_project(project_path)
    check_editions(project, old, new, level)
    with (
        output_folder(project, out, force=force) as folder,
        stage_progress() as progress,
    ):
        result = diff(
            project,
            old,
            new,
            level=level,
            progress=progress,
            workers=workers,
            cluster=cluster,
        )
        progress("writing", 0, 1, str(folder.path))
        files = result.write(folder, lang=lang)  # type: ignore[arg-type]
    t = totals(result)
    echo(
        f"{len(result.changes):,} faces; "
        + ", ".join(
            f"{kind} {to_mu(t[kind]):,.2f} 亩"
            for kind in ("added", "removed", "reclassified")
        )
    )
    wrote(files)
