"""Screen a proposed site against every layer of a project (SPEC §9).

:func:`screen_site` intersects the site with every layer and returns, per layer
and class, the features touched, the area shared and its share of the site; the
site fails when it shares area with a layer, class or tag of ``[site] forbid``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from multiplan import crs as crs_mod
from multiplan.classify import load_taxonomy
from multiplan.errors import InputError, ManifestError
from multiplan.layers import CLASS_COL
from multiplan.rules import class_mask, known_tags

if TYPE_CHECKING:
    from collections.abc import Mapping

    from multiplan.layers import Layer
    from multiplan.project import Project

logger = logging.getLogger(__name__)

SITE_COLUMNS = ("layer", "class", "features", "area_m2", "area_mu", "share")


@dataclass(frozen=True)
class SiteResult:
    """What a site touches, and whether it touches anything forbidden."""

    site: shapely.Geometry
    table: pd.DataFrame
    forbidden: pd.DataFrame
    hits: Mapping[str, pd.DataFrame]

    @property
    def fails(self) -> bool:
        """Return whether the site shares area with anything in ``[site] forbid``."""
        return len(self.forbidden) > 0


def forbid_list(project: Project) -> tuple[str, ...]:
    """Return ``[site] forbid``, checked: each item a layer, a class code, a group or a zone tag.

    Raises
    ------
    ManifestError
        For an item that is none of these.
    """
    raw = (project.site or {}).get("forbid", [])
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ManifestError(
            "forbid must be a list of layers, classes or tags",
            path=project.path,
            key="site.forbid",
        )
    taxonomy = load_taxonomy(project.search_dirs)
    tags = known_tags(project)
    for v in raw:
        if not (
            v in project.layers
            or v in taxonomy.codes
            or v in taxonomy.groups
            or v in tags
        ):
            raise ManifestError(
                f"{v!r} is neither a layer, a class code, a group nor a zone tag",
                path=project.path,
                key="site.forbid",
                hint=f"Layers are: {', '.join(project.layers)}",
            )
    return tuple(raw)


def read_site(site: str, project: Project) -> shapely.Geometry:
    """Read the site: a vector file (any CRS it declares; else the working CRS) or WKT in the working CRS.

    Raises
    ------
    InputError
        When it is neither, or has no area.
    """
    text = site.strip()
    working = crs_mod.parse_crs(project.crs)
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
    site: shapely.Geometry, project: Project, layers: Mapping[str, Layer]
) -> SiteResult:
    """Intersect the site with every loaded layer; flag what ``[site] forbid`` lists."""
    working = crs_mod.parse_crs(project.crs)
    site_area = float(
        crs_mod.area_m2(np.array([site], dtype=object), working, project.area)[0]
    )
    shapely.prepare(site)
    rows = []
    hits: dict[str, pd.DataFrame] = {}
    forbid = forbid_list(project)
    taxonomy = load_taxonomy(project.search_dirs)
    flagged = []
    for name, layer in layers.items():
        frame = layer.frame
        if not len(frame) or name in (project.boundary, project.units):
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
            crs_mod.area_m2(parts, working, project.area)
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
            union_area = (
                float(
                    crs_mod.area_m2(
                        np.array([shapely.union_all(parts[sel])], dtype=object),
                        working,
                        project.area,
                    )[0]
                )
                if layer.family == "polygon"
                else 0.0
            )
            row = {
                "layer": name,
                "class": cls or None,
                "features": int(sel.sum()),
                "area_m2": union_area,
                "area_mu": union_area * 15.0 / 10000.0,
                "share": union_area / site_area if site_area else 0.0,
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
        site=site,
        table=table,
        forbidden=pd.DataFrame(flagged, columns=list(SITE_COLUMNS)),
        hits=hits,
    )


def site_map_html(
    result: SiteResult,
    project: Project,
    layers: Mapping[str, Layer],
    *,
    lang: str = "zh",
) -> str:
    """Return a small self-contained map centred on the site with what it touches."""
    import geopandas as gpd

    from multiplan import maps
    from multiplan.layers import Layer, LayerStats
    from multiplan.project import LayerSpec

    shown: dict[str, Layer] = {}
    for name, sub in result.hits.items():
        shown[name] = Layer(
            spec=layers[name].spec,
            frame=sub,
            family=layers[name].family,
            stats=layers[name].stats,
        )
    site_frame = gpd.GeoDataFrame(
        {"_class": ["site"], "_source_code": [None]},
        geometry=[result.site],
        crs=project.crs,
    )
    site_frame.index = pd.Index(["site"], name="id")
    shown["site"] = Layer(
        spec=LayerSpec(
            name="site",
            path="SITE",
            title="拟选址" if lang == "zh" else "Proposed site",
            cls="site",
        ),
        frame=site_frame,
        family="polygon",
        stats=LayerStats(source="SITE", driver=""),
    )
    empty: Any = gpd.GeoDataFrame(
        {"rule_id": []}, geometry=gpd.GeoSeries([], crs=project.crs), crs=project.crs
    )
    return maps.map_html(maps.build_map(project, shown, empty, (), lang=lang))  # type: ignore[arg-type]


def run_site(
    project: Project, site: str, *, out: Path | None = None, lang: str = "zh"
) -> tuple[SiteResult, list[Path]]:
    """Screen a site and write site.csv and site.html; the caller turns ``fails`` into exit 1."""
    from multiplan.io import csv_bytes, write_files
    from multiplan.layers import load_layer
    from multiplan.report import bytes_writer, check_outputs_are_not_inputs

    forbid_list(project)  # checked before any work
    geom = read_site(site, project)
    out_dir = Path(out) if out is not None else project.out
    check_outputs_are_not_inputs(project, out_dir)
    layers = {
        n: load_layer(s, project)
        for n, s in project.layers.items()
        if s.kind == "vector" or s.classes
    }
    result = screen_site(geom, project, layers)
    files = write_files(
        out_dir,
        {
            "site.csv": bytes_writer(csv_bytes(result.table)),
            "site.html": bytes_writer(
                site_map_html(result, project, layers, lang=lang).encode("utf-8")
            ),
        },
    )
    return result, files
