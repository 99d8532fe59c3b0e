"""Descriptions of a project's layers and rules, for ``multiplan layers`` and ``rules``.

Library functions return plain data (dicts of JSON types) and text tables; the
CLI decides where they go.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from multiplan.areas import UnionAreas, area_m2, to_ha, to_mu
from multiplan.errors import InputError
from multiplan.layers import CLASS_COL, Layer, read_layer
from multiplan.progress import Progress, no_progress
from multiplan.summary import clean_features

if TYPE_CHECKING:
    from collections.abc import Sequence

    from multiplan.rules import Rule
    from multiplan.specs import Project

logger = logging.getLogger(__name__)

_NO_CLASS = "(no class)"


def describe_layer(layer: Layer, project: Project) -> dict[str, Any]:
    """Return what ``multiplan layers`` shows of one loaded layer, as JSON-able data."""
    s = layer.stats
    taxonomy = project.taxonomy
    working = project.working_crs
    d: dict[str, Any] = {
        "name": layer.name,
        "title": layer.spec.title,
        "kind": layer.spec.kind,
        "family": layer.family,
        "working_crs": f"EPSG:{working.to_epsg()}"
        if working.to_epsg()
        else working.name,
        **dataclasses.asdict(s),
    }
    if len(layer.frame):
        d["bounds"] = [
            round(float(v), 2)
            for v in shapely.total_bounds(np.asarray(layer.frame.geometry.array))
        ]
    if layer.family == "polygon":
        unions = layer_unions(layer, project)
        d.update(layer_overlaps(layer, unions))
        table = class_areas(layer, project, unions=unions)
        d["classes"] = [
            {
                "class": r["class"],
                "name": taxonomy.name(r["class"]),
                "features": int(r["features"]),
                "area_m2": round(float(r["area_m2"]), 2),
                "area_mu": round(float(r["area_mu"]), 2),
            }
            for _, r in table.iterrows()
        ]
    elif len(layer.frame):
        cls = (
            layer.frame[CLASS_COL]
            .fillna("<none>")
            .astype(str)
            .value_counts()
            .sort_index()
        )
        d["classes"] = [
            {"class": k, "name": taxonomy.name(k), "features": int(v)}
            for k, v in cls.items()
        ]
    if layer.raster is not None:
        r = layer.raster
        vals = r.values.compressed()
        d["raster"] = {
            "shape": list(r.shape),
            "resolution": [float(v) for v in r.res],
            "dtype": r.dtype,
            "nodata": r.nodata,
            "valid_pixels": int(vals.size),
            "min": float(vals.min()) if vals.size else None,
            "max": float(vals.max()) if vals.size else None,
            "mean": float(vals.mean()) if vals.size else None,
        }
    return d


def describe_project(
    project: Project, *, progress: Progress = no_progress
) -> list[dict[str, Any]]:
    """Read and describe every layer; a layer that fails is described by its error."""
    out = []
    for i, (name, spec) in enumerate(project.layers.items()):
        progress("reading", i, len(project.layers), name)
        try:
            out.append(describe_layer(read_layer(spec, project), project))
        except InputError as exc:
            logger.debug("layer %s failed: %s", name, exc)
            out.append(
                {
                    "name": name,
                    "title": spec.title,
                    "kind": spec.kind,
                    "source": spec.source,
                    "error": str(exc),
                }
            )
    return out


def _n(v: float) -> str:
    return f"{v:,.2f}"


def format_descriptions(
    project: Project, descriptions: Sequence[dict[str, Any]]
) -> str:
    """Format layer descriptions as text for a terminal."""
    lines = [
        f"{project.title} ({project.name}) — working CRS {project.crs}, {project.area} areas",
        "",
    ]
    for d in descriptions:
        head = d["name"] + (f"  {d['title']}" if d.get("title") else "")
        lines.append(head)
        if d.get("error"):
            lines.append(f"  ERROR     {d['error']}")
            lines.append("")
            continue
        enc = f", {d['encoding']}" if d.get("encoding") else ""
        lines.append(f"  source    {d['source']} ({d['driver']}{enc})")
        if d.get("encoding_note"):
            lines.append(f"  note      {d['encoding_note']}")
        for said in d.get("warnings") or ():
            lines.append(f"  GDAL      {said}")
        origin = " (from the manifest)" if d["crs_from"] == "manifest" else ""
        lines.append(f"  CRS       {d['source_crs']}{origin} → {d['working_crs']}")
        if d["kind"] == "raster" and "raster" in d:
            r = d["raster"]
            lines.append(
                f"  raster    {r['shape'][1]}×{r['shape'][0]} px of {r['resolution'][0]:g}×{r['resolution'][1]:g}, "
                f"{r['dtype']}, nodata {r['nodata']}, values {r['min']:g}–{r['max']:g} (mean {r['mean']:.4g})"
                if r["valid_pixels"]
                else "  raster    no valid pixels"
            )
        if d["kind"] == "raster":
            lines.append(
                f"  features  {d['features']:,} polygons from {d['rows']:,} valid pixels"
                if d["features"]
                else "  features  none: a value raster (give classes = [...] to use it in rules)"
            )
        else:
            skipped = f"{d['null']} null, {d['empty']} empty"
            lines.append(
                f"  features  {d['features']:,} of {d['rows']:,} rows; repaired {d['repaired']}, skipped {skipped}"
                + (f", filtered out {d['filtered_out']}" if d["filtered_out"] else "")
                + (f", Z dropped on {d['had_z']}" if d["had_z"] else "")
                + (
                    f", non-polygonal parts dropped on {d['dropped_parts']}"
                    if d["dropped_parts"]
                    else ""
                )
                + (
                    f", empty or degenerate rings dropped on {d['cleaned_rings']}"
                    if d.get("cleaned_rings")
                    else ""
                )
            )
            if d["geometry_types"]:
                gt = ", ".join(f"{k} {v:,}" for k, v in d["geometry_types"].items())
                lines.append(
                    f"  geometry  {gt}"
                    + (" → buffered to polygons" if d["buffered"] else "")
                )
        if "bounds" in d:
            b = d["bounds"]
            lines.append(
                f"  bounds    x {b[0]:,.0f}–{b[2]:,.0f}, y {b[1]:,.0f}–{b[3]:,.0f}"
            )
        if "area_m2" in d:
            lines.append(
                f"  area      {_n(d['area_mu'])} 亩 ({_n(to_ha(d['area_m2']))} ha) covered"
            )
        ov = d.get("overlaps") or {}
        if ov.get("features"):
            more = " …" if ov["features"] > len(ov["ids"]) else ""
            lines.append(
                f"  overlaps  {ov['features']:,} features overlap another ({ov['pairs']:,} pairs): "
                f"{_n(ov['area_mu'])} 亩 drawn more than once, counted once in the areas; "
                f"first: {', '.join(ov['ids'])}{more}"
            )
        classes = d.get("classes") or []
        if classes:
            lines.append(f"  classes   {len(classes)}")
            for c in classes[:12]:
                name = f" {c['name']}" if c.get("name") else ""
                area = (
                    f"  {_n(c['area_mu'])} 亩 ({_n(to_ha(c['area_m2']))} ha)"
                    if "area_mu" in c
                    else ""
                )
                lines.append(
                    f"    {c['class']}{name}: {c['features']:,} features{area}"
                )
            if len(classes) > 12:
                lines.append(f"    … and {len(classes) - 12} more classes")
        if d.get("unmapped"):
            items = ", ".join(f"{k} ({v})" for k, v in list(d["unmapped"].items())[:10])
            lines.append(
                f"  UNMAPPED  {sum(d['unmapped'].values()):,} features: {items}"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def format_rules(rules: Sequence[Rule], *, lang: str = "zh") -> str:
    """Format rules as a text table (one rule a line, then its selectors)."""
    if not rules:
        return "no rules (the manifest names no rule pack)\n"
    lines = []
    for r in rules:
        dist = f", within {r.distance:g} m" if r.distance else ""
        lines.append(f"{r.id}  [{r.severity}]  {r.label(lang)}")
        lines.append(
            f"    {r.relation}{dist}: A = {r.a.describe()}; B = {r.b.describe()}; min_area {r.min_area:g} m²"
        )
    lines.append(f"{len(rules)} rules")
    return "\n".join(lines) + "\n"


def layer_unions(layer: Layer, project: Project) -> UnionAreas:
    """Return the union areas of a polygon layer's features, measured as the project says.

    Features that overlap nothing count their own area; only clusters of
    overlapping features are unioned. Two features that GEOS's coverage check
    finds clean are known apart without the exact test.
    """
    geoms = np.asarray(layer.frame.geometry.array, dtype=object)
    clean = clean_features(layer.frame)

    def apart(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.asarray(clean[i] & clean[j], dtype=bool)

    return UnionAreas(
        geoms,
        area_m2(geoms, project.working_crs, project.area),
        project.working_crs,
        project.area,
        known_apart=apart,
    )


OVERLAP_MIN_M2 = 0.01
"""Two features overlap when they share at least this much (m²): less is a sliver."""


def layer_overlaps(layer: Layer, unions: UnionAreas) -> dict[str, Any]:
    """Return a polygon layer's area (the union of its features) and where its features overlap.

    ``area_m2`` is the land the layer covers, counted once; ``overlaps`` counts
    the features that share at least :data:`OVERLAP_MIN_M2` with another, the
    land drawn more than once (the features' areas beyond the union) and the
    first ids.
    """
    i, j = unions.pairs
    # interiors that meet over less than a survey's precision are slivers of
    # shared edges drawn twice, not land drawn twice
    shared = area_m2(
        shapely.intersection(unions.geoms[i], unions.geoms[j]),
        unions.crs,
        unions.mode,
    )
    keep = shared >= OVERLAP_MIN_M2
    i, j = i[keep], j[keep]
    total = unions.total()
    both = np.unique(np.concatenate([i, j]))
    ids = [str(v) for v in layer.frame.index[both[:10]]]
    drawn = float(unions.areas.sum()) - total
    return {
        "area_m2": round(total, 2),
        "area_mu": round(to_mu(total), 4),
        "overlaps": {
            "features": len(both),
            "pairs": len(i),
            "area_m2": round(max(drawn, 0.0), 2),
            "area_mu": round(to_mu(max(drawn, 0.0)), 4),
            "ids": ids,
        },
    }


def class_areas(
    layer: Layer, project: Project, *, unions: UnionAreas | None = None
) -> pd.DataFrame:
    """Return features and area (m², 亩) per class of a loaded layer, largest first.

    A class's area is the union of its features: where two features of a class
    overlap, the land counts once (:func:`layer_unions`, reused when given).
    """
    frame = layer.frame
    if frame.empty or layer.family != "polygon":
        return pd.DataFrame({"class": [], "features": [], "area_m2": [], "area_mu": []})
    unions = unions if unions is not None else layer_unions(layer, project)
    keys = (
        frame[CLASS_COL]
        .fillna(_NO_CLASS if layer.spec.class_field is None else "<unmapped>")
        .astype(str)
        .to_numpy(dtype=object)
    )
    area = {str(k): v for k, v in unions.by(keys).items()}
    counts = {str(k): int(v) for k, v in pd.Series(keys).value_counts().items()}
    names = sorted(area)
    out = pd.DataFrame(
        {
            "class": names,
            "features": [counts[k] for k in names],
            "area_m2": [area[k] for k in names],
        }
    )
    out["area_mu"] = to_mu(out["area_m2"])
    return out.sort_values(
        ["area_m2", "class"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
