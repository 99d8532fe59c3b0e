"""``multiplan fuse``: the one map (一张图) and the two-plan differences."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from multiplan.cli.options import (
    common_options,
    database,
    db_option,
    echo,
    force_option,
    lang_option,
    out_option,
    output_folder,
    project_argument,
    read_project,
    scale_options,
    stage_progress,
    workers_option,
    wrote,
)

if TYPE_CHECKING:
    from pathlib import Path


@click.command(name="fuse")
@project_argument
@out_option()
@workers_option(
    "Processes that node the faces and threads for the conflict check and the "
    "faces' attribution (same faces for any number)."
)
@lang_option("Language of the map and the ledger.")
@scale_options
@db_option
@force_option
@common_options
def fuse_cmd(
    project_path: Path,
    out: Path | None,
    workers: int | None,
    lang: str,
    tile_size: float | None,
    cluster: str | None,
    db: str | None,
    force: bool,
) -> None:
    """Build the one map (一张图): onemap.gpkg, and the two-plan differences.

    Writes onemap.gpkg (layer onemap): the faces of the overlay of the [fusion]
    layers inside the boundary, each with every layer's ids and class, the
    resolved class and source by [fusion] priority, and the rules whose
    conflicts cover it. With [fusion] compare = [first, second] also
    differences.gpkg (numbered difference patches, 差异图斑, with empty ledger
    columns for sign-off), differences.csv (area by class and unit) and
    differences.xlsx (the 差异图斑台账), and onemap.html, a map of it all.
    With --db (or [project] db) the tables onemap and differences are also
    written to PostGIS, in one transaction, with a row in runs.

    \b
    Example:
        multiplan fuse layers/xinbei/project.toml
    """
    from multiplan.onemap import fuse

    project = read_project(project_path)
    target = database(project, db)
    with (
        output_folder(project, out, force=force) as folder,
        stage_progress() as progress,
    ):
        result = fuse(
            project,
            workers=workers,
            progress=progress,
            tile_size=tile_size,
            cluster=cluster,
        )
        progress("writing", 0, 1, str(folder.path))
        files = result.write(folder, lang=lang, db=target)  # type: ignore[arg-type]
    by_area = result.notes.get("faces_attributed_by_area", 0)
    echo(
        f"{len(result.faces):,} faces ({by_area:,} narrow ones attributed by area, not by an interior point)"
    )
    if result.patches is not None and result.spec.compare is not None:
        from multiplan.labels import label

        first, second = (project.layers[n].label for n in result.spec.compare)
        counts = result.patches["diff_class"].value_counts().to_dict()
        areas = result.patches.groupby("diff_class")["area_mu"].sum().to_dict()
        echo(f"difference patches (两规差异), {first} against {second}:")
        for cls, plan in (("02", first), ("03", second)):
            echo(
                f"  {cls} {label('diff_' + cls, lang)}, construction only in {plan}: "  # type: ignore[arg-type]
                f"{counts.get(cls, 0):,} patches, {areas.get(cls, 0.0):,.2f} 亩"
            )
    wrote(files)
