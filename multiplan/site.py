"""Screen a proposed site against every layer of a project (SPEC §9).

:func:`screen_site` intersects the site with every layer and returns, per layer
and class, the features touched, the area shared and its share of the site; the
site fails when it shares area with a layer, class or tag of ``[site] forbid``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from multiplan.areas import area_m2, to_mu, union_area
from multiplan.classify import TAG_RE
from multiplan.io import csv_writer, json_writer
from multiplan.layers import CLASS_COL, LayerInput, ensure_layers
from multiplan.outputs import OutputFolder, write_set
from multiplan.record import input_files
from multiplan.rules import class_mask
from multiplan.schema import SITE_COLUMNS
from multiplan.sitefiles import SiteInput, read_site, site_box

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
    site_area_m2: float
    ids: Mapping[tuple[str, str | None], list[str]]
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

    def record(self) -> dict[str, Any]:
        """Return what ``site.json`` holds: the verdict and every hit, for scripts."""
        return {
            "verdict": self.verdict,
            "site_area_m2": round(self.site_area_m2, 2),
            "site_area_mu": round(to_mu(self.site_area_m2), 4),
            "outside_study_area_m2": round(self.source.outside_m2, 2),
            "source": self.source.source,
            "crs": self.source.crs,
            "parcels": list(self.source.parcels),
            "notes": list(self.source.notes),
            "hits": [
                {
                    "layer": r["layer"],
                    "class": r["class"],
                    "ids": self.ids.get((r["layer"], r["class"]), []),
                    "area_m2": round(float(r["area_m2"]), 2),
                    "area_mu": round(float(r["area_mu"]), 4),
                    "forbidden": bool(r["forbidden"]),
                }
                for _, r in self.table.iterrows()
            ],
        }

    def explore(self, *, lang: Lang = "zh") -> folium.Map:
        """Return a map centred on the site: outlined, with the verdict and what it touches."""
        return build_site_map(self, lang=lang)

    def files(self, *, lang: Lang = "zh") -> dict[str, Writer]:
        """Return site.csv, site.json and site.html as writers."""
        from multiplan.maps import map_writer

        return {
            "site.csv": csv_writer(self.table),
            "site.json": json_writer(self.record()),
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
    near = site_box(found.geometry)
    return screen(project, found, ensure_layers(project, names, layers, near=near))


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
    ids: dict[tuple[str, str | None], list[str]] = {}
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
            ids[(name, cls or None)] = sorted(str(i) for i in sub.index[sel])
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
    flagged_keys = {(r["layer"], r["class"]) for r in flagged}
    table["forbidden"] = pd.Series(
        [(r["layer"], r["class"]) in flagged_keys for r in rows], dtype=bool
    )
    return SiteResult(
        project=project,
        site=site,
        site_area_m2=site_area,
        ids=ids,
        source=found,
        table=table,
        forbidden=pd.DataFrame(flagged, columns=list(SITE_COLUMNS)),
        hits=hits,
    )


def build_site_map(result: SiteResult, *, lang: Lang = "zh") -> folium.Map:
    """Build the site's map: centred on the site, outlined, with the verdict and what it touches."""
    from multiplan.labels import label
    from multiplan.layers import Layer, LayerStats
    from multiplan.mapdata import (
        build_map_data,
        display_geoms,
        empty_pieces,
        encode_polygons,
    )
    from multiplan.maps import MultiplanLayers, OneMap

    project = result.project
    shown = {
        name: Layer(
            spec=project.layers[name],
            frame=frame,
            family="point" if (frame.geom_type == "Point").all() else "polygon",
            stats=LayerStats(source=project.layers[name].source, driver=""),
        )
        for name, frame in result.hits.items()
    }
    lines = []
    for _, r in result.table.iterrows():
        ids = result.ids.get((r["layer"], r["class"]), [])
        shown_ids = ", ".join(ids[:4]) + (
            f" … (+{len(ids) - 4})" if len(ids) > 4 else ""
        )
        flag = f" ⚠ {label('forbidden', lang)}" if r["forbidden"] else ""
        cls = (
            f" {r['class']}" if r["class"] and not TAG_RE.match(str(r["class"])) else ""
        )
        lines.append(
            f"{project.layers[r['layer']].label}{cls}: {shown_ids} · {r['area_mu']:,.2f} {label('mu', lang)}{flag}"
        )
    verdict = label("verdict_fail" if result.fails else "verdict_pass", lang)
    area = f"{label('site_area', lang)} {to_mu(result.site_area_m2):,.2f} {label('mu', lang)}"
    outside = result.source.outside_m2
    if outside > 0:
        share = outside / result.site_area_m2 if result.site_area_m2 else 0.0
        area += (
            f" · ⚠ {label('outside_study_area', lang)} {to_mu(outside):,.2f} "
            f"{label('mu', lang)} ({share:.1%})"
        )
    banner = {"text": verdict, "tone": result.verdict, "lines": [area, *lines]}

    def site_group(classes: Any, gcj: bool) -> list[dict[str, Any]]:
        enc = encode_polygons(
            display_geoms(np.array([result.site], dtype=object), project, 0, gcj02=gcj)
        )
        return [
            {
                "name": "site",
                "title": label("site", lang),
                "kind": "site",
                "section": "site",
                "on": True,
                "features": [[enc[0], ["site", round(result.site_area_m2, 2)]]],
            }
        ]

    data = build_map_data(
        project,
        shown,
        empty_pieces(project.crs),
        (),
        lang=lang,
        extra_groups=site_group,
        focus=result.site,
        banner=banner,
    )
    for g in data["groups"]:
        if g["kind"] != "site":
            g["on"] = True
    m = OneMap()
    m.add_child(MultiplanLayers(data, title=f"{project.title} · {label('site', lang)}"))
    return m
