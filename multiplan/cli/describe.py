"""``multiplan layers`` and ``multiplan rules``: look before you check."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from multiplan.cli.options import (
    InputFailure,
    common_options,
    lang_option,
    project_argument,
    read_project,
    stage_progress,
)

if TYPE_CHECKING:
    from pathlib import Path


@click.command(name="layers")
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

    project = read_project(project_path)
    with stage_progress() as progress:
        descriptions = describe_project(project, progress=progress)
    if fmt == "json":
        click.echo(json.dumps(descriptions, ensure_ascii=False, indent=2))
    else:
        click.echo(format_descriptions(project, descriptions))
    failed = [d for d in descriptions if d.get("error")]
    if failed:
        more = f" (and {len(failed) - 1} more layers failed)" if len(failed) > 1 else ""
        raise InputFailure(failed[0]["error"] + more)


@click.command(name="rules")
@project_argument
@lang_option("Language of the titles.")
@common_options
def rules_cmd(project_path: Path, lang: str) -> None:
    """List the rules that `check` would run, in pack order.

    The manifest (every section) and every rule pack are validated first
    (unknown keys, duplicate ids, unknown layers, classes or tags).

    \b
    Example:
        multiplan rules layers/xinbei/project.toml
        multiplan rules layers/xinbei/project.toml --lang en
    """
    from multiplan.describe import format_rules
    from multiplan.rules import read_rules

    click.echo(format_rules(read_rules(read_project(project_path)), lang=lang))
