"""The data the shared map draws: display geometry, encoded compactly, and every label.

Display data is simplified and quantised for display only (the analysis never
changes): geometry is simplified in the working CRS, taken to lon/lat (shifted to
GCJ-02 for Gaode tiles), quantised to 1e-6° (about 0.1 m) and delta-encoded as
integers that the page decodes. The JSON is safe inside a ``<script>`` element.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import shapely

from multiplan import crs as crs_mod
from multiplan.labels import Lang, label, labels
from multiplan.layers import CLASS_COL, public_fields

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from multiplan.layers import Layer
    from multiplan.rules import Rule
    from multiplan.specs import Project
    from multiplan.yields import YieldResult

logger = logging.getLogger(__name__)

Tiles = Literal["none", "osm", "tianditu", "gaode"]
TILES: tuple[Tiles, ...] = ("none", "osm", "tianditu", "gaode")

GRADE_COLOURS = {"A": "#1a9641", "B": "#a6d96a", "C": "#fdae61", "D": "#d7191c"}
SEVERITY_COLOURS = {"high": "#d7191c", "medium": "#f28e2b", "low": "#e6c619"}
#: Fill colours by 用地用海 level-1 class, after the usual planning colours.
CLASS_COLOURS = {
    "01": "#f3eea2",
    "02": "#bfe3a0",
    "03": "#5fa75e",
    "04": "#cdebb0",
    "05": "#7fcdbb",
    "06": "#d9d4b0",
    "07": "#ffd37f",
    "08": "#ff8fc7",
    "09": "#ff5a5a",
    "10": "#b08868",
    "11": "#a57fd1",
    "12": "#a6a6a6",
    "13": "#4f8fd1",
    "14": "#4cc35e",
    "15": "#7e8f3c",
    "16": "#e5e5e5",
    "17": "#74b7e8",
    "18": "#9ecae1",
    "19": "#9ecae1",
    "20": "#9ecae1",
    "21": "#9ecae1",
    "22": "#9ecae1",
    "23": "#cbbf9f",
    "24": "#9ecae1",
}
#: Outline styles of zone tags (constraint layers): stroke colour, fill colour, dash.
ZONE_STYLES = {
    "eco_redline": ("#1a9850", "#1a9850", "6 3"),
    "basic_farmland": ("#b8860b", "#e8d35c", None),
    "urban_boundary": ("#c51b7d", None, "10 4"),
    "industrial_park": ("#6a3d9a", "#cab2d6", "4 3"),
    "transport_corridor": ("#555555", "#999999", None),
}
_OTHER_ZONE = ("#444444", "#bbbbbb", "3 3")
#: Display simplification tolerance in metres per kind of layer.
_TOLERANCE_M = {
    "plan": 1.0,
    "zone": 0.5,
    "conflicts": 0.25,
    "boundary": 5.0,
    "units": 5.0,
    "points": 0.0,
}
_PER_FEATURE_LIMIT = 5000
_ATTRIBUTES_SHOWN = 6
_QUANTUM = 1e6  # integer units per degree


# --------------------------------------------------------------------------- geometry encoding


def _display_geoms(
    geoms: np.ndarray, project: Project, tolerance_m: float, *, gcj02: bool
) -> np.ndarray:
    """Simplify in the working CRS, take to lon/lat (GCJ-02 if asked)."""
    g = np.asarray(geoms, dtype=object)
    if tolerance_m > 0:
        g = shapely.simplify(g, tolerance_m, preserve_topology=True)
    g = crs_mod.transform_geometries(
        g, crs_mod.make_transformer(project.working_crs, crs_mod.parse_crs("EPSG:4326"))
    )
    if gcj02:
        g = shapely.transform(g, crs_mod.wgs84_to_gcj02)
    return g


def encode_polygons(geoms: np.ndarray) -> list[list[list[list[int]]]]:
    """Encode lon/lat polygons as integer deltas: geometry → polygons → rings → [x0, y0, dx, dy, …].

    Coordinates are in 1e-6 degrees (about 0.1 m); the closing vertex is left
    out (Leaflet closes rings) and rings that collapse are dropped.

    Examples
    --------
    >>> encode_polygons(np.array([shapely.box(120, 31, 120.001, 31.001)]))
    [[[[120001000, 31000000, 0, 1000, -1000, 0, 0, -1000]]]]
    """
    geoms = np.asarray(geoms, dtype=object)
    out: list[list[list[list[int]]]] = [[] for _ in range(len(geoms))]
    if not len(geoms):
        return out
    polys, poly_of = shapely.get_parts(geoms, return_index=True)
    poly_of = np.asarray(poly_of)
    polys = np.asarray(polys)
    keep = shapely.get_type_id(polys) == 3
    polys, poly_of = polys[keep], poly_of[keep]
    rings, ring_of = shapely.get_rings(polys, return_index=True)
    coords, coord_of = shapely.get_coordinates(rings, return_index=True)
    q = np.round(coords * _QUANTUM).astype(np.int64)
    # drop each ring's closing vertex
    last = np.r_[coord_of[1:] != coord_of[:-1], True]
    q, coord_of = q[~last], coord_of[~last]
    starts = np.r_[0, np.flatnonzero(np.diff(coord_of)) + 1]
    deltas = q.copy()
    deltas[1:] -= q[:-1]
    deltas[starts] = q[starts]
    ring_ids = coord_of[starts]
    ends = np.r_[starts[1:], len(q)]
    polygons: dict[int, list[list[int]]] = {}
    for rid, s, e in zip(
        ring_ids.tolist(), starts.tolist(), ends.tolist(), strict=True
    ):
        if e - s < 3:
            continue
        pid = int(ring_of[rid])
        polygons.setdefault(pid, []).append(deltas[s:e].ravel().tolist())
    for pid, ring_list in polygons.items():
        out[int(poly_of[pid])].append(ring_list)
    return out


def encode_points(geoms: np.ndarray) -> list[list[int]]:
    """Encode lon/lat points as ``[x, y]`` in 1e-6 degrees."""
    c = shapely.get_coordinates(np.asarray(geoms, dtype=object))
    out: list[list[int]] = np.round(c * _QUANTUM).astype(np.int64).tolist()
    return out


# --------------------------------------------------------------------------- data for the page


def _attributes(frame: pd.DataFrame, row: int) -> list[list[str]]:
    cols = public_fields(frame)
    out = []
    for c in cols[:_ATTRIBUTES_SHOWN]:
        v = frame[c].iloc[row]
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        out.append([str(c), str(v)])
    return out


def _layer_kind(layer: Layer, project: Project) -> str:
    if layer.name == project.boundary:
        return "boundary"
    if layer.name in project.units:
        return "units"
    if layer.family == "point":
        return "points"
    if layer.spec.class_field is not None:
        return "plan"
    return "zone"


def build_map_data(
    project: Project,
    layers: Mapping[str, Layer],
    conflicts: pd.DataFrame,
    rules: Sequence[Rule],
    *,
    lang: Lang = "zh",
    tiles: Tiles = "none",
    yields: YieldResult | None = None,
) -> dict[str, Any]:
    """Return the JSON-able data the page draws: groups of encoded features, rules, classes."""
    gcj = tiles == "gaode"
    taxonomy = project.taxonomy
    classes: dict[str, str] = {}
    groups: list[dict[str, Any]] = []
    layer_names = [
        n
        for n, ly in layers.items()
        if ly.family in ("polygon", "point") and len(ly.frame)
    ]
    index = {n: i for i, n in enumerate(layer_names)}
    for name in layer_names:
        layer = layers[name]
        kind = _layer_kind(layer, project)
        frame = layer.frame
        group: dict[str, Any] = {"name": name, "title": layer.spec.label, "kind": kind}
        cls = frame[CLASS_COL].to_numpy(dtype=object)
        for c in pd.unique(cls):
            if isinstance(c, str):
                classes[c] = taxonomy.name(c) or c
        geoms = np.asarray(frame.geometry.array, dtype=object)
        if kind == "points":
            group["features"] = [
                [pt, [str(fid), cls[i], _attributes(frame, i)]]
                for i, (fid, pt) in enumerate(
                    zip(
                        frame.index,
                        encode_points(_display_geoms(geoms, project, 0, gcj02=gcj)),
                        strict=True,
                    )
                )
            ]
        elif kind == "plan" and len(frame) > 0:
            # dissolved by class for display
            key = np.array(["" if c is None else c for c in cls], dtype=object)
            codes = sorted(set(key.tolist()))
            merged = np.array(
                [shapely.union_all(geoms[key == c]) for c in codes], dtype=object
            )
            enc = encode_polygons(
                _display_geoms(merged, project, _TOLERANCE_M["plan"], gcj02=gcj)
            )
            group["features"] = [
                [g, [c or None]] for c, g in zip(codes, enc, strict=True) if g
            ]
            group["dissolved"] = True
        else:
            dissolve = len(frame) > _PER_FEATURE_LIMIT
            if dissolve:
                merged = np.array([shapely.union_all(geoms)], dtype=object)
                enc = encode_polygons(
                    _display_geoms(merged, project, _TOLERANCE_M["zone"], gcj02=gcj)
                )
                group["features"] = [[enc[0], [None, cls[0] if len(cls) else None, []]]]
                group["dissolved"] = True
            else:
                enc = encode_polygons(
                    _display_geoms(
                        geoms, project, _TOLERANCE_M.get(kind, 0.5), gcj02=gcj
                    )
                )
                group["features"] = [
                    [
                        g,
                        [
                            str(fid),
                            cls[i],
                            _attributes(frame, i) if kind in ("zone", "units") else [],
                        ],
                    ]
                    for i, (fid, g) in enumerate(zip(frame.index, enc, strict=True))
                    if g
                ]
        tag = next((c for c in pd.unique(cls) if isinstance(c, str)), None)
        if kind == "zone":
            stroke, fill, dash = ZONE_STYLES.get(tag or "", _OTHER_ZONE)
            group["style"] = {"color": stroke, "fillColor": fill, "dashArray": dash}
        groups.append(group)
    for c in list(classes):
        if c[:2].isdigit() and c[:2] not in classes:
            classes[c[:2]] = taxonomy.name(c[:2]) or c[:2]
    rule_list = [
        {"id": r.id, "title": r.label(lang), "severity": r.severity} for r in rules
    ]
    rule_index = {r.id: i for i, r in enumerate(rules)}
    if len(conflicts):
        geoms = np.asarray(conflicts.geometry.array, dtype=object)
        enc = encode_polygons(
            _display_geoms(geoms, project, _TOLERANCE_M["conflicts"], gcj02=gcj)
        )
        has_value = "value_yuan" in conflicts.columns
        feats: dict[int, list[Any]] = {}
        row: Any
        for k, row in enumerate(conflicts.itertuples(index=False)):
            if not enc[k]:
                continue
            for c in (row.a_class, row.b_class):
                if isinstance(c, str):
                    classes.setdefault(c, taxonomy.name(c) or c)
            props = [
                rule_index.get(row.rule_id, -1),
                index.get(row.a_layer, -1),
                row.a_id,
                row.a_class,
                index.get(row.b_layer, -1) if row.b_layer is not None else -1,
                row.b_id,
                row.b_class,
                row.unit,
                round(float(row.area_m2), 2),
            ]
            if has_value:
                v = row.value_yuan
                props.append(
                    None
                    if v is None or (isinstance(v, float) and np.isnan(v))
                    else round(float(v), 0)
                )
            feats.setdefault(props[0], []).append([enc[k], props])
        for ri, r in enumerate(rules):
            if ri in feats:
                groups.append(
                    {
                        "name": f"conflicts:{r.id}",
                        "title": f"{r.id} {r.label(lang)}",
                        "kind": "conflicts",
                        "rule": ri,
                        "features": feats[ri],
                    }
                )
    for c in list(classes):
        if c[:2].isdigit() and c[:2] not in classes:
            classes[c[:2]] = taxonomy.name(c[:2]) or c[:2]
    if yields is not None and len(yields.parcels):
        indicators = yields.spec.indicators
        parcels = yields.parcels
        enc = encode_polygons(
            _display_geoms(
                np.asarray(parcels.geometry.array, dtype=object),
                project,
                _TOLERANCE_M["zone"],
                gcj02=gcj,
            )
        )
        feats_y = []
        for k, (fid, grade) in enumerate(
            zip(parcels["id"], parcels["grade"], strict=True)
        ):
            if not enc[k]:
                continue
            values = []
            for ind in indicators:
                v = parcels[ind.id].iloc[k]
                values.append(
                    [
                        f"{ind.title}",
                        "—"
                        if v is None or not np.isfinite(v)
                        else f"{v:,.2f} {ind.unit}".strip(),
                    ]
                )
            if "score" in parcels and np.isfinite(parcels["score"].iloc[k]):
                values.append(["score", f"{parcels['score'].iloc[k]:.3f}"])
            feats_y.append(
                [enc[k], [str(fid), grade if isinstance(grade, str) else None, values]]
            )
        groups.append(
            {
                "name": "yield",
                "title": label("yield_grade", lang),
                "kind": "yield",
                "features": feats_y,
            }
        )
    bounds = None
    for ly in layers.values():
        if len(ly.frame):
            b = np.asarray(
                shapely.total_bounds(np.asarray(ly.frame.geometry.array, dtype=object))
            )
            bounds = (
                b
                if bounds is None
                else np.r_[np.minimum(bounds[:2], b[:2]), np.maximum(bounds[2:], b[2:])]
            )
    if bounds is not None:
        box = _display_geoms(np.array([shapely.box(*bounds)]), project, 0, gcj02=gcj)[0]
        x0, y0, x1, y1 = shapely.bounds(box)
        fit = [[y0, x0], [y1, x1]]
    else:
        fit = [[31.8, 119.75], [32.07, 120.1]]
    return {
        "title": project.title,
        "lang": lang,
        "labels": labels(lang),
        "layers": [layers[n].spec.label for n in layer_names],
        "groups": groups,
        "rules": rule_list,
        "classes": {
            c: [
                n,
                CLASS_COLOURS.get(c[:2], "#cccccc") if c[:2].isdigit() else "#cccccc",
            ]
            for c, n in sorted(classes.items())
        },
        "level1": [
            [c, classes[c], CLASS_COLOURS.get(c, "#cccccc")]
            for c in sorted(classes)
            if len(c) == 2 and c.isdigit()
        ],
        "severity": SEVERITY_COLOURS,
        "grades": GRADE_COLOURS,
        "bounds": fit,
        "quantum": _QUANTUM,
    }


def safe_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``</script>``, ``<!--`` or line separators."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for a, b in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(a, b)
    return text
