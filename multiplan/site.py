"""Screen a proposed site against every layer of a project (SPEC §9).

:func:`screen_site` intersects the site with every layer and returns, per layer
and class, the features touched, the area shared and its share of the site; the
site fails when it shares area with a layer, class or tag of ``[site] forbid``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely

from multiplan import crs as crs_mod
from multiplan.areas import area_m2, to_mu, union_area
from multiplan.errors import InputError
from multiplan.io import csv_writer
from multiplan.layers import CLASS_COL, LayerInput, ensure_layers
from multiplan.outputs import OutputFolder, write_set
from multiplan.record import input_files
from multiplan.rules import class_mask
from multiplan.schema import SITE_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Mapping

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


def read_site(site: str, project: Project) -> shapely.Geometry:
    """Read the site: a vector file (any CRS it declares; else the working CRS) or WKT in the working CRS.

    Raises
    ------
    InputError
        When it is neither, or has no area.
    """
    text = site.strip()
    working = project.working_crs
    if text.upper().startswith(("POLYGON", "MULTIPOLYGON")):
        try:
            geom = shapely.from_wkt(text)
        except shapely.errors.GEOSException as exc:
            raise InputError(f"the site is not valid WKT ({exc})", key="SITE") from exc
    else:
        path = Path(site)
        if not path.exists():
            raise InputError(
                "the site is neither a file nor a WKT polygon",
                path=path,
                key="SITE",
                hint="Give a vector file, or WKT such as 'POLYGON ((x y, …))' in the working CRS",
            )
        import pyogrio

        try:
            frame = pyogrio.read_dataframe(path)
        except Exception as exc:
            raise InputError(
                f"GDAL cannot open the site ({str(exc).splitlines()[0]})",
                path=path,
                key="SITE",
            ) from exc
        geoms = np.asarray(frame.geometry.array, dtype=object)
        if frame.crs is not None:
            src = crs_mod.parse_crs(frame.crs.to_wkt())
            if src != working:
                geoms = crs_mod.transform_geometries(
                    geoms, crs_mod.make_transformer(src, working)
                )
        geom = shapely.union_all(geoms[~shapely.is_missing(geoms)])
    geom = shapely.make_valid(
        shapely.force_2d(geom), method="structure", keep_collapsed=False
    )
    polys = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon"]
    if not polys or sum(p.area for p in polys) <= 0:
        raise InputError("the site has no area", key="SITE", hint="Give a polygon")
    return shapely.union_all(polys)


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
        A polygon in the working CRS, or what :func:`read_site` reads (a vector
        file, or WKT in the working CRS).
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
        When the site cannot be read or has no area.

    Examples
    --------
    >>> import multiplan
    >>> project = multiplan.read_project("layers/xinbei/project.toml")
    >>> site = shapely.box(490000, 3530000, 490300, 3530300)
    >>> multiplan.screen_site(project, site).verdict
    'fail'
    """
    geom = site if isinstance(site, shapely.Geometry) else read_site(str(site), project)
    names = [
        n
        for n, s in project.layers.items()
        if (s.kind == "vector" or s.classes)
        and n != project.boundary
        and n not in project.units
    ]
    return screen(project, geom, ensure_layers(project, names, layers))


def screen(project: Project, site: shapely.Geometry, layers: Layers) -> SiteResult:
    """Intersect the site with every loaded layer; flag what ``[site] forbid`` lists."""
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
        table=table,
        forbidden=pd.DataFrame(flagged, columns=list(SITE_COLUMNS)),
        hits=hits,
    )
