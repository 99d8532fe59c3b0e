"""``multiplan site``: screen a proposed site against every layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from multiplan.cli.options import (
    common_options,
    echo,
    force_option,
    lang_option,
    out_option,
    output_folder,
    project_argument,
    read_project,
    wrote,
)

if TYPE_CHECKING:
    from pathlib import Path


@click.command(name="site")
@project_argument
@click.argument("site", metavar="SITE")
@out_option()
@lang_option("Language of the map.")
@force_option
@common_options
def site_cmd(
    project_path: Path, site: str, out: Path | None, lang: str, force: bool
) -> None:
    """Screen a proposed site against every layer; exit 1 if it touches [site] forbid.

    SITE is a vector file or a WKT polygon in the working CRS. Writes site.csv
    (layer, class, features, area_m2, area_mu, share of the site) and site.html
    (a small map centred on the site).

    \b
    Example:
        multiplan site layers/xinbei/project.toml site.geojson
        multiplan site layers/xinbei/project.toml "POLYGON ((490000 3530000, 490300 3530000, 490300 3530300, 490000 3530000))"
    """
    from multiplan.site import screen_site

    project = read_project(project_path)
    with output_folder(project, out, force=force) as folder:
        result = screen_site(project, site)
        files = result.write(folder, lang=lang)  # type: ignore[arg-type]
    forbidden = {(r["layer"], r["class"]) for _, r in result.forbidden.iterrows()}
    for _, r in result.table.iterrows():
        flag = "  FORBIDDEN" if (r["layer"], r["class"]) in forbidden else ""
        echo(
            f"{r['layer']:<16} {r['class'] or ''!s:<20} {int(r['features']):>5} features "
            f"{r['area_mu']:>12,.2f} 亩 {r['share']:>7.1%}{flag}"
        )
    wrote(files)
    if result.fails:
        names = "; ".join(
            f"{layer}: {', '.join(map(str, list(result.hits[layer].index)[:5]))}"
            for layer in sorted(set(result.forbidden["layer"]))
        )
        click.echo(f"the site touches what [site] forbids: {names}", err=True)
        click.get_current_context().exit(1)
