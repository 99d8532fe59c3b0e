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
from multiplan.areas import to_mu
from multiplan.classify import TAG_RE
from multiplan.colours import (
    CLASS_COLOURS,
    DIFF_COLOURS,
    GRADE_COLOURS,
    SEVERITY_COLOURS,
    ZONE_STYLES,
)
from multiplan.colours import (
    OTHER_ZONE as _OTHER_ZONE,
)
from multiplan.labels import Lang, label, labels
from multiplan.layers import CLASS_COL, public_fields
from multiplan.levels import GRID_LEVEL, grid_cells
from multiplan.piecestore import cell_texts

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from multiplan.layers import Layer
    from multiplan.rules import Rule
    from multiplan.specs import Project
    from multiplan.yields import YieldResult

logger = logging.getLogger(__name__)

Tiles = Literal["none", "osm", "tianditu", "gaode"]
TILES: tuple[Tiles, ...] = ("none", "osm", "tianditu", "gaode")

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


def display_geoms(
    geoms: np.ndarray, project: Project, tolerance_m: float, *, gcj02: bool
) -> np.ndarray:
    """Simplify in the working CRS, take to lon/lat (GCJ-02 if asked)."""
    g = np.asarray(geoms, dtype=object)
    if tolerance_m > 0:
        g = shapely.simplify(g, tolerance_m, preserve_topology=True)
    g = crs_mod.transform_geometries(  # the transformer lon/lat layers were read with
        g,
        crs_mod.transformer(crs_mod.parse_crs("EPSG:4326"), project.working_crs),
        inverse=True,
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


def _attribute_rows(frame: pd.DataFrame) -> list[list[list[str]]]:
    """Return each feature's popup attributes: ``[field, text]`` of the first few fields.

    Empty cells (None, NaN, pandas' NA and NaT) are left out. A column is read
    once, not a cell at a time (a layer of 5 000 features: about 1 s less).
    """
    rows: list[list[list[str]]] = [[] for _ in range(len(frame))]
    for c in public_fields(frame)[:_ATTRIBUTES_SHOWN]:
        for r, text in enumerate(cell_texts(frame[c])):
            if text is not None:
                rows[r].append([str(c), text])
    return rows


SECTIONS = (
    "site",
    "conflicts",
    "changes",
    "onemap",
    "controls",
    "plans",
    "yield",
    "base",
)
"""The layer panel's sections, in order; each group belongs to one."""
SECTION_LABELS = {
    "site": "site",
    "conflicts": "group_conflicts",
    "changes": "group_changes",
    "onemap": "group_onemap",
    "controls": "group_controls",
    "plans": "group_plans",
    "yield": "group_yield",
    "base": "group_base",
}


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


_SECTION_OF = {
    "boundary": "base",
    "units": "base",
    "points": "plans",
    "plan": "plans",
    "zone": "controls",
}
_VISIBLE = {"boundary", "units", "zone", "conflicts", "patches", "site"}
CONTROL_LINES = ("eco_redline", "basic_farmland", "urban_boundary")
"""The 三条控制线: drawn when the map opens."""
"""Groups drawn when the map opens: the boundary, units, control lines and conflicts;
plan fills are one click away, so that the map reads at a glance."""


class _Classes:
    """Class codes seen on the map, with their names (for popups and the legend)."""

    def __init__(self, project: Project) -> None:
        self.taxonomy = project.taxonomy
        self.names: dict[str, str] = {}

    def add(self, values: Any) -> None:
        for c in pd.unique(np.asarray(values, dtype=object)):
            if isinstance(c, str) and c not in self.names:
                self.names[c] = self.taxonomy.name(c) or c
                if c[:2].isdigit() and c[:2] not in self.names:
                    self.names[c[:2]] = self.taxonomy.name(c[:2]) or c[:2]


def _group(
    name: str, title: str, kind: str, features: list[Any], **extra: Any
) -> dict[str, Any]:
    section = extra.pop("section", None) or _SECTION_OF.get(kind, kind)
    return {
        "name": name,
        "title": title,
        "kind": kind,
        "section": section,
        "on": kind in _VISIBLE,
        "features": features,
        **extra,
    }


def layer_group(
    layer: Layer, project: Project, classes: _Classes, *, gcj: bool
) -> dict[str, Any]:
    """Return the map group of one layer: every feature with its id, class and a few attributes."""
    kind = _layer_kind(layer, project)
    frame = layer.frame
    cls = frame[CLASS_COL].to_numpy(dtype=object)
    classes.add(cls)
    geoms = np.asarray(frame.geometry.array, dtype=object)
    ids = [str(i) for i in frame.index]
    extra: dict[str, Any] = {}
    if kind == "points":
        enc: list[Any] = encode_points(display_geoms(geoms, project, 0, gcj02=gcj))
        attrs = _attribute_rows(frame)
        feats = [[e, [ids[i], cls[i], attrs[i]]] for i, e in enumerate(enc)]
    elif kind != "plan" and len(frame) > _PER_FEATURE_LIMIT:
        merged = np.array([shapely.union_all(geoms)], dtype=object)
        enc = encode_polygons(
            display_geoms(merged, project, _TOLERANCE_M["zone"], gcj02=gcj)
        )
        feats = [[enc[0], [None, cls[0] if len(cls) else None, []]]]
        extra["dissolved"] = True
    else:
        enc = encode_polygons(
            display_geoms(geoms, project, _TOLERANCE_M.get(kind, 0.5), gcj02=gcj)
        )
        attrs = (
            _attribute_rows(frame)
            if kind in ("zone", "units")
            else [[] for _ in range(len(frame))]
        )
        feats = [[e, [ids[i], cls[i], attrs[i]]] for i, e in enumerate(enc) if e]
    group = _group(layer.name, layer.spec.label, kind, feats, **extra)
    if kind == "units" and len(project.units) > 1:
        # the largest level drawn boldest, the smallest as a fine dashed line
        depth = project.units.index(layer.name)
        group["style"] = {
            "weight": max(0.6, 2.0 - 0.7 * depth),
            "dashArray": None if depth == 0 else "2 4",
        }
        group["on"] = depth == 0  # the smaller levels are a click away
    if kind == "zone":
        tag = next((c for c in pd.unique(cls) if isinstance(c, str)), None)
        stroke, fill, dash = ZONE_STYLES.get(tag or "", _OTHER_ZONE)
        group["style"] = {"color": stroke, "fillColor": fill, "dashArray": dash}
        # the three control lines (三条控制线) open with the map; other zones are a click away
        group["on"] = tag in CONTROL_LINES
        if tag is not None and not TAG_RE.match(tag):  # parcels with one land class
            group["section"] = "plans"
    return group


def conflict_groups(
    pieces: pd.DataFrame,
    rules: Sequence[Rule],
    project: Project,
    layer_index: Mapping[str, int],
    classes: _Classes,
    *,
    lang: Lang,
    gcj: bool,
) -> list[dict[str, Any]]:
    """Return one group per rule with pieces: [rule, A layer, A id, A class, B …, unit, m², value]."""
    if not len(pieces):
        return []
    rule_index = {r.id: i for i, r in enumerate(rules)}
    enc = encode_polygons(
        display_geoms(
            np.asarray(pieces.geometry.array, dtype=object),
            project,
            _TOLERANCE_M["conflicts"],
            gcj02=gcj,
        )
    )
    has_value = "value_yuan" in pieces.columns
    cols = list(pieces.columns)
    level_cols = cols[cols.index("unit") + 1 : cols.index("area_m2")]
    where = pieces["unit"].to_numpy(dtype=object)
    if level_cols:  # several levels: the unit at each, from the largest down
        where = np.array(
            [
                " › ".join(str(v) for v in vals if v is not None) or None
                for vals in zip(
                    *(pieces[c].to_numpy(dtype=object) for c in level_cols),
                    strict=False,
                )
            ],
            dtype=object,
        )
    feats: dict[int, list[Any]] = {}
    shown = np.array([bool(e) for e in enc], dtype=bool)
    # the classes in the order the pieces name them (A's, then B's, piece by piece)
    classes.add(
        np.column_stack(
            [
                pieces["a_class"].to_numpy(dtype=object)[shown],
                pieces["b_class"].to_numpy(dtype=object)[shown],
            ]
        ).ravel()
    )
    row: Any
    for k, row in enumerate(pieces.itertuples(index=False)):
        if not shown[k]:
            continue
        props = [
            rule_index.get(row.rule_id, -1),
            layer_index.get(row.a_layer, -1),
            row.a_id,
            row.a_class,
            layer_index.get(row.b_layer, -1) if row.b_layer is not None else -1,
            row.b_id,
            row.b_class,
            where[k],
            round(float(row.area_m2), 2),
        ]
        if has_value:
            v = row.value_yuan
            props.append(
                None
                if v is None or (isinstance(v, float) and np.isnan(v))
                else round(float(v), 0)
            )
        feats.setdefault(int(props[0]), []).append([enc[k], props])
    return [
        _group(
            f"conflicts:{r.id}",
            f"{r.id} {r.label(lang)}",
            "conflicts",
            feats[ri],
            rule=ri,
        )
        for ri, r in enumerate(rules)
        if ri in feats
    ]


def yield_group(
    yields: YieldResult, project: Project, *, lang: Lang, gcj: bool
) -> dict[str, Any]:
    """Return the land-yield group: parcels coloured by grade, with their indicators."""
    parcels = yields.parcels
    enc = encode_polygons(
        display_geoms(
            np.asarray(parcels.geometry.array, dtype=object),
            project,
            _TOLERANCE_M["zone"],
            gcj02=gcj,
        )
    )
    feats = []
    # each column read once, not a cell at a time
    indicators = [
        (ind, parcels[ind.id].to_numpy(dtype=object)) for ind in yields.spec.indicators
    ]
    score = parcels["score"].to_numpy(dtype=float) if "score" in parcels else None
    reason = parcels["reason"].to_numpy(dtype=object) if "reason" in parcels else None
    for k, (fid, grade) in enumerate(zip(parcels["id"], parcels["grade"], strict=True)):
        if not enc[k]:
            continue
        values = []
        for ind, column in indicators:
            v = column[k]
            values.append(
                [
                    ind.title,
                    "—"
                    if v is None or not np.isfinite(v)
                    else f"{v:,.2f} {ind.unit}".strip(),
                ]
            )
        if score is not None and np.isfinite(score[k]):
            values.append(["score", f"{score[k]:.3f}"])
        if reason is not None and isinstance(reason[k], str):
            values.append([label("not_graded", lang), reason[k]])
        feats.append(
            [enc[k], [str(fid), grade if isinstance(grade, str) else None, values]]
        )
    return _group("yield", label("yield_grade", lang), "yield", feats)


CHOROPLETH = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
"""ColorBrewer YlOrRd, 5 classes: the grid cells by their share of land in conflict."""
CHOROPLETH_BREAKS = (0.05, 0.15, 0.30, 0.50)
"""Upper bounds of the first four classes of share (the fifth is above 50 %)."""


def grid_group(
    project: Project,
    layers: Mapping[str, Layer],
    units: pd.DataFrame | None,
    *,
    lang: Lang,
    gcj: bool,
) -> dict[str, Any] | None:
    """Return the management grid as a choropleth of land in conflict per cell (SPEC §14).

    Each cell carries its name, the land in conflict (area of the union of every
    rule's pieces) and that land's share of the cell; cells without conflicts are
    drawn as outlines.
    """
    if not project.grid or units is None or "level" not in units.columns:
        return None
    rows = units[units["level"] == GRID_LEVEL]
    figures = {
        str(u): (float(a), None if pd.isna(sh) else float(sh))
        for u, a, sh in zip(rows["unit"], rows["area_m2"], rows["share"], strict=True)
        if u is not None
    }
    cells = grid_cells(project, {n: ly.frame for n, ly in layers.items()})
    enc = encode_polygons(
        display_geoms(
            np.asarray(cells.geometry.array, dtype=object), project, 0, gcj02=gcj
        )
    )
    feats = []
    for k, name in enumerate(cells["name"]):
        if not enc[k]:
            continue
        area, share = figures.get(str(name), (0.0, 0.0))
        shade = (
            None
            if not area
            else int(np.searchsorted(CHOROPLETH_BREAKS, share or 0.0, side="left"))
        )
        feats.append([enc[k], [str(name), round(area, 2), share, shade]])
    return _group(
        "grid",
        label("grid_level", lang),
        "grid",
        feats,
        section="conflicts",
    )


def _fit(
    layers: Mapping[str, Layer], project: Project, *, gcj: bool, focus: Any = None
) -> list[list[float]]:
    if focus is None and project.boundary and project.boundary in layers:
        focus = shapely.union_all(
            np.asarray(layers[project.boundary].frame.geometry.array, dtype=object)
        )
        pad = 0.0
    else:
        pad = 0.6
    if focus is not None:
        bounds = np.asarray(shapely.bounds(focus), dtype=float)
        pad *= max(bounds[2] - bounds[0], bounds[3] - bounds[1], 100.0)
        bounds = bounds + np.array([-pad, -pad, pad, pad])
    else:
        bounds = None
        for ly in layers.values():
            if len(ly.frame):
                b = np.asarray(
                    shapely.total_bounds(
                        np.asarray(ly.frame.geometry.array, dtype=object)
                    )
                )
                bounds = (
                    b
                    if bounds is None
                    else np.r_[
                        np.minimum(bounds[:2], b[:2]), np.maximum(bounds[2:], b[2:])
                    ]
                )
    if bounds is None:
        return [[31.8, 119.75], [32.07, 120.1]]
    box = display_geoms(np.array([shapely.box(*bounds)]), project, 0, gcj02=gcj)[0]
    x0, y0, x1, y1 = shapely.bounds(box)
    return [[y0, x0], [y1, x1]]


def build_map_data(
    project: Project,
    layers: Mapping[str, Layer],
    conflicts: pd.DataFrame,
    rules: Sequence[Rule],
    *,
    lang: Lang = "zh",
    tiles: Tiles = "none",
    yields: YieldResult | None = None,
    extra_groups: Callable[[_Classes, bool], list[dict[str, Any]]] | None = None,
    focus: Any = None,
    banner: Mapping[str, Any] | None = None,
    units: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Return the JSON-able data the page draws: groups of encoded features, rules, classes.

    Parameters
    ----------
    units
        units.csv of the check; with a management grid, its cells are drawn as a
        choropleth of land in conflict.
    extra_groups
        Called with the class registry and whether to shift to GCJ-02; returns more
        groups (the one map's faces and patches, a site).
    focus
        A geometry (working CRS) the map opens on, instead of every layer's extent.
    banner
        A box shown under the title: ``{"text": …, "tone": "pass" | "fail", "lines": […]}``.
    """
    gcj = tiles == "gaode"
    classes = _Classes(project)
    layer_names = [
        n
        for n, ly in layers.items()
        if ly.family in ("polygon", "point") and len(ly.frame)
    ]
    index = {n: i for i, n in enumerate(layer_names)}
    groups = [layer_group(layers[n], project, classes, gcj=gcj) for n in layer_names]
    groups += conflict_groups(
        conflicts, rules, project, index, classes, lang=lang, gcj=gcj
    )
    if yields is not None and len(yields.parcels):
        groups.append(yield_group(yields, project, lang=lang, gcj=gcj))
    grid = grid_group(project, layers, units, lang=lang, gcj=gcj)
    if grid is not None:
        groups.append(grid)
    if extra_groups is not None:
        groups += extra_groups(classes, gcj)
    names = classes.names
    return {
        "title": project.title,
        "lang": lang,
        "labels": labels(lang),
        "sections": [[s, label(SECTION_LABELS[s], lang)] for s in SECTIONS],
        "layers": [layers[n].spec.label for n in layer_names],
        "groups": groups,
        "rules": [
            {"id": r.id, "title": r.label(lang), "severity": r.severity} for r in rules
        ],
        "classes": {
            c: [
                n,
                CLASS_COLOURS.get(c[:2], "#cccccc") if c[:2].isdigit() else "#cccccc",
            ]
            for c, n in sorted(names.items())
        },
        "level1": [
            [c, names[c], CLASS_COLOURS.get(c, "#cccccc")]
            for c in sorted(names)
            if len(c) == 2 and c.isdigit()
        ],
        "severity": SEVERITY_COLOURS,
        "grades": GRADE_COLOURS,
        "choropleth": list(CHOROPLETH),
        "breaks": list(CHOROPLETH_BREAKS),
        "diff": DIFF_COLOURS,
        "bounds": _fit(layers, project, gcj=gcj, focus=focus),
        "quantum": _QUANTUM,
        "mu_per_m2": to_mu(1.0),
        "banner": dict(banner) if banner else None,
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


def empty_pieces(crs: Any) -> pd.DataFrame:
    """Return an empty frame of pieces, for a map with no conflicts."""
    import geopandas as gpd

    frame: pd.DataFrame = gpd.GeoDataFrame(
        {"rule_id": []}, geometry=gpd.GeoSeries([], crs=crs), crs=crs
    )
    return frame
