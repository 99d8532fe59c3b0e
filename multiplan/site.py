"""Screen a proposed site against every layer of a project (SPEC §9).

:func:`screen_site` intersects the site with every layer and returns, per layer
and class, the features touched, the area shared and its share of the site; the
site fails when it shares area with a layer, class or tag of ``[site] forbid``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely

from multiplan.areas import area_m2, to_mu, union_area
from multiplan.io import csv_writer
from multiplan.layers import CLASS_COL, LayerInput, ensure_layers
from multiplan.outputs import OutputFolder, write_set
from multiplan.record import input_files
from multiplan.rules import class_mask
from multiplan.schema import SITE_COLUMNS
from multiplan.sitefiles import SiteInput, read_site

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import folium
    import geopandas as gpd

    from multiplan.io import Writer
    from multiplan.labels import Lang
    from multiplan.layers import Layers
    from multiplan.specs import Project

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteResult:
    """What a site touches, and whether it touches anything forbidden."""

    project: Project
    site: shapely.Geometry
    source: SiteInput
    table: pd.DataFrame
    forbidden: pd.DataFrame
    hits: Mapping[str, gpd.GeoDataFrame]

    @property
    def fails(self) -> bool:
        """Return whether the site shares area with anything in ``[site] forbid``."""
        return len(self.forbidden) > 0

    @property
    def verdict(self) -> str:
        """Return ``"fail"`` when the site touches what ``[site] forbid`` lists, else ``"pass"``."""
        return "fail" if self.fails else "pass"

    def explore(self, *, lang: Lang = "zh") -> folium.Map:
        """Return a small map centred on the site with what it touches."""
        from multiplan.maps import build_site_map

        return build_site_map(self.project, self.site, self.hits, lang=lang)

    def files(self, *, lang: Lang = "zh") -> dict[str, Writer]:
        """Return site.csv and site.html as writers."""
        from multiplan.maps import map_writer

        return {
            "site.csv": csv_writer(self.table),
            "site.html": map_writer(self.explore(lang=lang)),
        }

    def write(self, out: str | Path | OutputFolder, *, lang: Lang = "zh") -> list[Path]:
        """Write site.csv and site.html into ``out`` as one set; return the files.

        Raises
        ------
        OutputError
            When the folder is busy, not writable, or holds something else.
        """
        return write_set(
            out,
            self.files(lang=lang),
            command="site",
            inputs=input_files(self.project),
        )


def screen_site(
    project: Project,
    site: shapely.Geometry | str | Path,
    *,
    layers: LayerInput | None = None,
) -> SiteResult:
    """Screen a proposed site against every layer; flag what ``[site] forbid`` lists.

    Parameters
    ----------
    project
        A manifest from :func:`multiplan.read_project`.
    site
        A polygon in the working CRS, or what
        :func:`multiplan.sitefiles.read_site` reads: WKT in the working CRS, a
        vector file, a 自然资源部 coordinate file (``.txt``) or a DXF drawing.
    layers
        Layers already read (or GeoDataFrames to use); what is missing is read.

    Returns
    -------
    SiteResult
        ``.verdict`` (``"pass"`` or ``"fail"``), ``.table`` per layer and class,
        ``.forbidden`` (the rows ``[site] forbid`` lists), ``.hits`` (the
        features touched, per layer).

    Raises
    ------
    InputError
        When the site cannot be read, has no area, is in the wrong units or zone,
        or lies outside the study area.

    Examples
    --------
    >>> import multiplan
    >>> project = multiplan.read_project("layers/xinbei/project.toml")
    >>> site = shapely.box(490000, 3530000, 490300, 3530300)
    >>> multiplan.screen_site(project, site).verdict
    'fail'
    """
    found = read_site(site, project)
    names = [
        n
        for n, s in project.layers.items()
        if (s.kind == "vector" or s.classes)
        and n != project.boundary
        and n not in project.units
    ]
    return screen(project, found, ensure_layers(project, names, layers))


def screen(project: Project, found: SiteInput, layers: Layers) -> SiteResult:
    """Intersect the site with every loaded layer; flag what ``[site] forbid`` lists."""
    site = found.geometry
    working = project.working_crs
    site_area = float(area_m2(np.array([site], dtype=object), working, project.area)[0])
    shapely.prepare(site)
    rows = []
    hits: dict[str, gpd.GeoDataFrame] = {}
    forbid = project.site.forbid
    taxonomy = project.taxonomy
    flagged = []
    for name in layers:
        layer = layers.layer(name)
        frame = layer.frame
        if not len(frame) or name == project.boundary or name in project.units:
            continue
        geoms = np.asarray(frame.geometry.array, dtype=object)
        idx = shapely.STRtree(geoms).query(site, predicate="intersects")
        if not len(idx):
            continue
        idx = np.sort(idx)
        sub = frame.iloc[idx]
        parts = (
            shapely.intersection(geoms[idx], site)
            if layer.family == "polygon"
            else geoms[idx]
        )
        area = (
            area_m2(parts, working, project.area)
            if layer.family == "polygon"
            else np.zeros(len(idx))
        )
        keep = (
            (area > 0) if layer.family == "polygon" else np.ones(len(idx), dtype=bool)
        )
        if not keep.any():
            continue
        sub, parts, area = sub[keep], parts[keep], area[keep]
        hits[name] = sub
        classes = sub[CLASS_COL].to_numpy(dtype=object)
        key = np.array(["" if c is None else str(c) for c in classes], dtype=object)
        for cls in sorted(set(key.tolist())):
            sel = key == cls
            shared = (
                union_area(parts[sel], working, project.area)
                if layer.family == "polygon"
                else 0.0
            )
            row = {
                "layer": name,
                "class": cls or None,
                "features": int(sel.sum()),
                "area_m2": shared,
                "area_mu": to_mu(shared),
                "share": shared / site_area if site_area else 0.0,
            }
            rows.append(row)
            forbidden = name in forbid or (
                cls
                and (
                    class_mask(
                        np.array([cls], dtype=object),
                        [f for f in forbid if f not in project.layers],
                        taxonomy,
                    )[0]
                )
            )
            if forbidden:
                flagged.append(row)
    table = pd.DataFrame(rows, columns=list(SITE_COLUMNS))
    for c in ("layer", "class"):
        table[c] = pd.Series([r[c] for r in rows], dtype=object)
    return SiteResult(
        project=project,
        site=site,
        source=found,
        table=table,
        forbidden=pd.DataFrame(flagged, columns=list(SITE_COLUMNS)),
        hits=hits,
    )
