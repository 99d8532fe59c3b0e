"""``multiplan yield``: land yield (亩均效益) on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from multiplan.cli.options import (
    common_options,
    echo,
    force_option,
    out_option,
    output_folder,
    project_argument,
    read_project,
    wrote,
)

if TYPE_CHECKING:
    from pathlib import Path


@click.command(name="yield")
@project_argument
@out_option()
@force_option
@common_options
def yield_cmd(project_path: Path, out: Path | None, force: bool) -> None:
    """Evaluate land yield (亩均效益): indicators and grades per parcel, scenarios.

    Reads the manifest's [yield] table and writes yield.gpkg, yield.csv,
    yield_by_unit.csv (and yield_by_park.csv with park_field) and scenarios.csv.
    `check` does the same when the manifest has [yield], and adds the land value
    at stake to every conflict piece.

    \b
    Example:
        multiplan yield layers/xinbei/project.toml
    """
    from multiplan.outputs import write_set
    from multiplan.yields import land_yield

    project = read_project(project_path)
    with output_folder(project, out, force=force) as folder:
        result = land_yield(project)
        files = write_set(folder, result.files(), command="yield")
    p = result.parcels
    grades = p["grade"].value_counts().to_dict() if len(p) else {}
    summary = ", ".join(f"{g} {grades.get(g, 0):,}" for g in ("A", "B", "C", "D"))
    echo(
        f"{len(p):,} parcels; grades {summary}; not graded: "
        f"{result.notes.get('exempt', 0):,} exempt, {result.notes.get('ungraded', 0):,} without the figures (see reason in yield.csv)"
    )
    if result.notes.get("overlapping_parcels"):
        echo(
            f"{result.notes['overlapping_parcels']:,} parcels overlap another: the land "
            "they share counts once in a park's or unit's area, and in each parcel's own indicators"
        )
    for _, s in result.scenarios.iterrows():
        echo(
            f"scenario {s['id']}: gross {s['gross_yuan']:,.0f} 元, net {s['net_yuan']:,.0f} 元"
        )
    wrote(files)
