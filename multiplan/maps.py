"""The shared map: one self-contained HTML file that opens by double-click.

:func:`build_map` makes a :class:`folium.Map` holding every plan layer (styled by
class), the constraint zones, the study boundary and units, and the conflicts
coloured by severity, with a legend, a layer panel, a search by feature id and
a scale bar. :func:`map_html` renders it with Leaflet's script and style sheet
inlined from the installed ``xstatic-leaflet`` package, so the file needs no
network; base-map tiles are optional (``tiles``).

Display data is simplified and quantised for display only (the analysis never
changes): geometry is simplified in the working CRS, taken to lon/lat (shifted to
GCJ-02 for Gaode tiles), quantised to 1e-6° (about 0.1 m) and delta-encoded as
integers that the page decodes. Plan layers with a class per feature are
dissolved by class for display; every other feature keeps its id.

Safety: no attribute ever reaches ``innerHTML``. The page builds popups and
lists with ``textContent``, and the embedded JSON escapes ``<``, ``>``, ``&``,
U+2028 and U+2029, so an attribute like ``<img src=x onerror=alert(1)>`` or
``${alert(1)}`` shows as text and runs nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import shapely

from multiplan import crs as crs_mod
from multiplan.classify import load_taxonomy
from multiplan.errors import InputError
from multiplan.labels import Lang, label, labels
from multiplan.layers import CLASS_COL, public_fields

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import folium

    from multiplan.layers import Layer
    from multiplan.project import Project
    from multiplan.rules import Rule
    from multiplan.yields import Indicator

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
_INLINE = "multiplan-inline:"


# --------------------------------------------------------------------------- geometry encoding


def _display_geoms(
    geoms: np.ndarray, project: Project, tolerance_m: float, *, gcj02: bool
) -> np.ndarray:
    """Simplify in the working CRS, take to lon/lat (GCJ-02 if asked)."""
    g = np.asarray(geoms, dtype=object)
    if tolerance_m > 0:
        g = shapely.simplify(g, tolerance_m, preserve_topology=True)
    working = crs_mod.parse_crs(project.crs)
    g = crs_mod.transform_geometries(
        g, crs_mod.make_transformer(working, crs_mod.parse_crs("EPSG:4326"))
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
    if layer.name == project.units:
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
    yields: pd.DataFrame | None = None,
    indicators: Sequence[Indicator] = (),
) -> dict[str, Any]:
    """Return the JSON-able data the page draws: groups of encoded features, rules, classes."""
    gcj = tiles == "gaode"
    taxonomy = load_taxonomy(project.search_dirs)
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
    if yields is not None and len(yields):
        enc = encode_polygons(
            _display_geoms(
                np.asarray(yields.geometry.array, dtype=object),
                project,
                _TOLERANCE_M["zone"],
                gcj02=gcj,
            )
        )
        feats_y = []
        for k, (fid, grade) in enumerate(
            zip(yields["id"], yields["grade"], strict=True)
        ):
            if not enc[k]:
                continue
            values = []
            for ind in indicators:
                v = yields[ind.id].iloc[k]
                values.append(
                    [
                        f"{ind.title}",
                        "—"
                        if v is None or not np.isfinite(v)
                        else f"{v:,.2f} {ind.unit}".strip(),
                    ]
                )
            if "score" in yields and np.isfinite(yields["score"].iloc[k]):
                values.append(["score", f"{yields['score'].iloc[k]:.3f}"])
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


def _safe_json(data: Any) -> str:
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


# --------------------------------------------------------------------------- folium map


def build_map(
    project: Project,
    layers: Mapping[str, Layer],
    conflicts: pd.DataFrame,
    rules: Sequence[Rule],
    *,
    lang: Lang = "zh",
    tiles: Tiles = "none",
    yields: pd.DataFrame | None = None,
    indicators: Sequence[Indicator] = (),
) -> folium.Map:
    """Build the shared map as a folium Map (render it with :func:`map_html`).

    Raises
    ------
    InputError
        For ``tiles="tianditu"`` without a key in ``TIANDITU_KEY``.
    """
    import folium
    from branca.element import Element

    data = build_map_data(
        project,
        layers,
        conflicts,
        rules,
        lang=lang,
        tiles=tiles,
        yields=yields,
        indicators=indicators,
    )
    m = folium.Map(
        location=None,
        tiles=None,
        control_scale=False,
        prefer_canvas=True,
        zoom_control=True,
    )
    m._id = "multiplan"  # a stable name: the same inputs give the same file
    m.default_js = [("leaflet", f"{_INLINE}leaflet.js")]
    m.default_css = [("leaflet_css", f"{_INLINE}leaflet.css")]
    _add_tiles(m, tiles)
    root: Any = m.get_root()
    root.header.add_child(
        Element(f"<title>{_html_text(project.title)}</title>\n<style>{_CSS}</style>"),
        name="multiplan_css",
    )
    m.add_child(
        _DrawScript(
            f"window.MP = {_safe_json(data)};\n{_JS}\nmultiplanDraw({m.get_name()}, window.MP);"
        )
    )
    return m


def _DrawScript(code: str) -> Any:
    """Return a folium element whose script runs after the map is created."""
    from branca.element import MacroElement
    from jinja2 import Template

    el: Any = MacroElement()  # type: ignore[no-untyped-call]
    el._name = "MultiplanDraw"
    el._id = "draw"
    el.code = code
    el._template = Template(
        "{% macro script(this, kwargs) %}{{ this.code }}{% endmacro %}"
    )
    return el


def _html_text(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def _add_tiles(m: folium.Map, tiles: Tiles) -> None:
    import folium

    if tiles == "none":
        return
    if tiles == "osm":
        layer = folium.TileLayer(
            "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
            attr="© OpenStreetMap contributors",
            name="OpenStreetMap",
            max_zoom=19,
        )
        layer._id = "osm"
        layer.add_to(m)
    elif tiles == "tianditu":
        key = check_tiles(tiles)
        for name, lyr in (("vec", "矢量底图"), ("cva", "矢量注记")):
            url = (
                f"https://t{{s}}.tianditu.gov.cn/{name}_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER={name}"
                f"&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={{z}}&TILEROW={{y}}&TILECOL={{x}}&tk={key}"
            )
            layer = folium.TileLayer(
                url,
                attr="天地图 Tianditu",
                name=f"天地图{lyr}",
                subdomains="01234567",
                max_zoom=18,
                overlay=name == "cva",
            )
            layer._id = f"tianditu_{name}"
            layer.add_to(m)
    elif tiles == "gaode":
        url = "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}"
        layer = folium.TileLayer(
            url,
            attr="高德地图 (GCJ-02; data shifted to match)",
            name="高德地图",
            subdomains="1234",
            max_zoom=18,
        )
        layer._id = "gaode"
        layer.add_to(m)


def check_tiles(tiles: str) -> str:
    """Check that a base map can be used; return the Tianditu key (or "").

    Raises
    ------
    InputError
        For an unknown name, or Tianditu without ``TIANDITU_KEY``.
    """
    if tiles not in TILES:
        raise InputError(
            f"unknown base map {tiles!r}",
            key="--tiles",
            hint=f"Valid values are: {', '.join(TILES)}",
        )
    if tiles != "tianditu":
        return ""
    key = os.environ.get("TIANDITU_KEY", "").strip()
    if not key:
        raise InputError(
            "Tianditu tiles need a key",
            key="--tiles tianditu",
            hint="Set the environment variable TIANDITU_KEY (free at console.tianditu.gov.cn), or use --tiles none",
        )
    return key


def _leaflet_assets() -> tuple[str, str]:
    import xstatic.pkg.leaflet as xl

    base = Path(xl.BASE_DIR)
    js = (
        (base / "leaflet.js")
        .read_text(encoding="utf-8")
        .replace("</script", "<\\/script")
    )
    css = (base / "leaflet.css").read_text(encoding="utf-8")

    def data_uri(match: re.Match[str]) -> str:
        path = base / match.group(1)
        if not path.is_file():
            return match.group(0)
        return f"url(data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"

    css = re.sub(r"url\((images/[^)]+\.png)\)", data_uri, css)
    return js, css


def map_html(m: folium.Map) -> str:
    """Render the map as one HTML document with every script and style inlined."""
    html = m.get_root().render()
    js, css = _leaflet_assets()
    html = html.replace(
        f'<script src="{_INLINE}leaflet.js"></script>', f"<script>{js}</script>"
    )
    html = html.replace(
        f'<link rel="stylesheet" href="{_INLINE}leaflet.css"/>', f"<style>{css}</style>"
    )
    leftover = re.findall(r'<script[^>]+src=|<link[^>]+href="(?:https?:)?//', html)
    if leftover or _INLINE in html:
        raise RuntimeError("the map still refers to an external script or style")
    return html


# --------------------------------------------------------------------------- page assets (ours)

_CSS = """
html, body { font-family: "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif; }
.leaflet-container { background: #f4f4f0; }
.mp-box { background: #fff; padding: 6px 8px; border-radius: 4px; box-shadow: 0 1px 4px rgba(0,0,0,.35); font-size: 13px; max-width: 340px; }
.mp-title { font-weight: 600; font-size: 15px; }
.mp-legend { max-height: 45vh; overflow-y: auto; }
.mp-legend .sw { display: inline-block; width: 14px; height: 10px; margin-right: 6px; border: 1px solid #555; vertical-align: middle; }
.mp-legend .row { white-space: nowrap; line-height: 18px; }
.mp-legend h4 { margin: 6px 0 2px; font-size: 13px; }
.mp-search input { width: 200px; padding: 3px; }
.mp-search .msg { color: #555; margin-top: 3px; }
.mp-search .hit { cursor: pointer; color: #0645ad; }
.mp-popup table { border-collapse: collapse; }
.mp-popup td { padding: 1px 6px 1px 0; vertical-align: top; }
.mp-popup td:first-child { color: #666; white-space: nowrap; }
.mp-popup .sev { font-weight: 600; }
.leaflet-control-layers-expanded { max-height: 55vh; max-width: 330px; overflow-y: auto; font-size: 12px; }
.leaflet-control-layers-overlays label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.mp-legend { font-size: 12px; }
"""

_JS = r"""
function multiplanDraw(map, D) {
  var L_ = D.labels, Q = D.quantum;
  // Leaflet's layer control writes names with innerHTML: escape them first
  function escHTML(s) { return String(s).replace(/[&<>"'`$\\]/g, function (ch) { return '&#' + ch.charCodeAt(0) + ';'; }); }
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
  function row(t, k, v) { var tr = el('tr'); tr.appendChild(el('td', k)); tr.appendChild(el('td', v)); t.appendChild(tr); }
  function ring(r) { var out = [], x = 0, y = 0; for (var i = 0; i < r.length; i += 2) { x += r[i]; y += r[i + 1]; out.push([y / Q, x / Q]); } return out; }
  function latlngs(g) { return g.map(function (poly) { return poly.map(ring); }); }
  function clsName(c) { if (c === null || c === undefined) return ''; var k = D.classes[c]; return k && k[0] !== c ? c + ' ' + k[0] : c; }
  function clsColour(c) { var k = c && D.classes[c]; return k ? k[1] : '#cccccc'; }
  function fmt(x, d) { return Number(x).toLocaleString(undefined, {minimumFractionDigits: d, maximumFractionDigits: d}); }
  var overlays = {}, index = {}, counts = {}, all = L.featureGroup();
  function remember(id, layer) { if (id === null || id === undefined) return; var k = String(id); (index[k] = index[k] || []).push(layer); }
  function popupFor(group, p) {
    return function () {
      var box = el('div', null, 'mp-popup'); box.appendChild(el('div', group.title, 'mp-title'));
      var t = el('table'); box.appendChild(t);
      if (group.kind === 'plan') { row(t, L_['class'], clsName(p[0])); }
      else if (group.kind === 'yield') { row(t, L_['id'], p[0]); row(t, L_['grade'], p[1] === null ? '—' : p[1]); (p[2] || []).forEach(function (kv) { row(t, kv[0], kv[1]); }); }
      else if (group.kind === 'conflicts') {
        var r = D.rules[p[0]] || {id: '?', title: '', severity: 'low'};
        row(t, L_['rule'], r.id + ' ' + r.title);
        var s = el('tr'); s.appendChild(el('td', L_['severity'])); var sv = el('td', L_[r.severity], 'sev'); sv.style.color = D.severity[r.severity]; s.appendChild(sv); t.appendChild(s);
        row(t, L_['feature_a'], (D.layers[p[1]] || '') + ' · ' + p[2] + ' · ' + clsName(p[3]));
        row(t, L_['feature_b'], p[4] >= 0 ? (D.layers[p[4]] || '') + ' · ' + p[5] + ' · ' + clsName(p[6]) : L_['difference']);
        if (p[7] !== null) row(t, L_['unit'], p[7]);
        row(t, L_['area'], fmt(p[8], 2) + ' ' + L_['m2'] + ' = ' + fmt(p[8] * 15 / 10000, 3) + ' ' + L_['mu']);
        if (p.length > 9 && p[9] !== null) row(t, L_['value'], fmt(p[9], 0) + ' ' + L_['yuan']);
      } else {
        if (p[0] !== null) row(t, L_['id'], p[0]);
        if (p[1] !== null) row(t, L_['class'], clsName(p[1]));
        (p[2] || []).forEach(function (kv) { row(t, kv[0], kv[1]); });
      }
      return box;
    };
  }
  D.groups.forEach(function (group) {
    var fg = L.featureGroup(), kind = group.kind;
    group.features.forEach(function (f) {
      var g = f[0], p = f[1], layer;
      if (kind === 'points') {
        layer = L.circleMarker([g[1] / Q, g[0] / Q], {radius: 5, color: '#333', weight: 1, fillColor: '#1f78b4', fillOpacity: 0.9});
      } else {
        var style;
        if (kind === 'plan') style = {color: '#777', weight: 0.4, fillColor: clsColour(p[0]), fillOpacity: 0.6};
        else if (kind === 'conflicts') { var r = D.rules[p[0]] || {severity: 'low'}; var c = D.severity[r.severity]; style = {color: c, weight: 1.2, fillColor: c, fillOpacity: 0.55}; }
        else if (kind === 'boundary') style = {color: '#222', weight: 2.5, fill: false};
        else if (kind === 'yield') { var gc = D.grades[p[1]] || '#bbbbbb'; style = {color: '#444', weight: 0.6, fillColor: gc, fillOpacity: 0.75}; }
        else if (kind === 'units') style = {color: '#555', weight: 1, dashArray: '2 4', fill: false};
        else { var s = group.style || {}; style = {color: s.color, weight: 1.5, dashArray: s.dashArray, fillColor: s.fillColor || s.color, fillOpacity: s.fillColor ? 0.25 : 0, fill: !!s.fillColor}; }
        layer = L.polygon(latlngs(g), style);
      }
      if (kind !== 'boundary') layer.bindPopup(popupFor(group, p), {maxWidth: 420});
      if (kind === 'conflicts') { remember(p[2], layer); remember(p[5], layer); }
      else if (kind !== 'plan') remember(p[0], layer);
      fg.addLayer(layer);
    });
    counts[group.name] = group.features.length;
    if (kind === 'conflicts') counts.conflicts = (counts.conflicts || 0) + group.features.length;
    overlays[escHTML(group.title) + ' (' + group.features.length.toLocaleString() + ')'] = fg;
    fg.addTo(map);
    if (kind !== 'plan') all.addLayer(fg);
  });
  var panel = L.control.layers(null, overlays, {collapsed: false, position: 'topright'}).addTo(map);
  L.DomEvent.disableScrollPropagation(panel.getContainer());
  L.control.scale({imperial: false, maxWidth: 160}).addTo(map);
  map.fitBounds(D.bounds);
  // title
  var title = L.control({position: 'topleft'});
  title.onAdd = function () { var b = el('div', null, 'mp-box'); b.appendChild(el('div', D.title, 'mp-title')); var n = counts['conflicts'] || 0; b.appendChild(el('div', L_['conflicts'] + ': ' + n.toLocaleString())); return b; };
  title.addTo(map);
  // legend
  var legend = L.control({position: 'bottomright'});
  legend.onAdd = function () {
    var b = el('div', null, 'mp-box mp-legend'); b.appendChild(el('div', L_['legend'], 'mp-title'));
    b.appendChild(el('h4', L_['conflicts']));
    ['high', 'medium', 'low'].forEach(function (s) { var r = el('div', null, 'row'); var sw = el('span', null, 'sw'); sw.style.background = D.severity[s]; r.appendChild(sw); r.appendChild(document.createTextNode(L_['severity'] + ' ' + L_[s])); b.appendChild(r); });
    D.groups.forEach(function (g) {
      if (g.kind !== 'zone') return; var r = el('div', null, 'row'); var sw = el('span', null, 'sw'); var s = g.style || {};
      sw.style.borderColor = s.color; sw.style.borderStyle = s.dashArray ? 'dashed' : 'solid'; sw.style.background = s.fillColor || 'transparent'; r.appendChild(sw); r.appendChild(document.createTextNode(g.title)); b.appendChild(r);
    });
    if (D.groups.some(function (g) { return g.kind === 'yield'; })) {
      b.appendChild(el('h4', L_['yield_grade']));
      ['A', 'B', 'C', 'D'].forEach(function (k) { var r = el('div', null, 'row'); var sw = el('span', null, 'sw'); sw.style.background = D.grades[k]; r.appendChild(sw); r.appendChild(document.createTextNode(k)); b.appendChild(r); });
    }
    b.appendChild(el('h4', L_['class']));
    D.level1.forEach(function (k) { var r = el('div', null, 'row'); var sw = el('span', null, 'sw'); sw.style.background = k[2]; r.appendChild(sw); r.appendChild(document.createTextNode(k[0] + ' ' + k[1])); b.appendChild(r); });
    L.DomEvent.disableScrollPropagation(b); return b;
  };
  legend.addTo(map);
  // search by id
  var search = L.control({position: 'topleft'});
  search.onAdd = function () {
    var b = el('div', null, 'mp-box mp-search'), input = el('input'), msg = el('div', null, 'msg');
    input.type = 'search'; input.placeholder = L_['search']; b.appendChild(input); b.appendChild(msg);
    function go() {
      var q = input.value.trim(); msg.textContent = ''; if (!q) return;
      var hits = index[q] || [];
      if (!hits.length) { msg.textContent = L_['not_found']; return; }
      var fg = L.featureGroup(hits); map.fitBounds(fg.getBounds(), {maxZoom: 17}); hits[0].openPopup();
      msg.textContent = L_['found'].replace('{n}', hits.length);
    }
    input.addEventListener('keydown', function (e) { if (e.key === 'Enter') go(); });
    L.DomEvent.disableClickPropagation(b); return b;
  };
  search.addTo(map);
  var c = map.getContainer();
  c.setAttribute('data-groups', D.groups.length);
  c.setAttribute('data-conflicts', counts['conflicts'] || 0);
  c.setAttribute('data-drawn', 'yes');
  window.multiplanSearch = function (q) { var i = c.querySelector('.mp-search input'); i.value = q; i.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); };
}
"""


# --------------------------------------------------------------------------- helpers for check and map


def display_layers(project: Project, layers: Mapping[str, Layer]) -> dict[str, Layer]:
    """Return the layers to draw: those loaded for the check plus every other vector layer.

    A layer that no rule needs and that cannot be read is left out of the map
    with a warning, so that it cannot stop the check.
    """
    from multiplan.layers import load_layer

    out: dict[str, Layer] = {}
    for name, spec in project.layers.items():
        if name in layers:
            out[name] = layers[name]
        elif spec.kind == "vector" or spec.classes:
            try:
                out[name] = load_layer(spec, project)
            except InputError as exc:
                logger.warning("layer %s is left out of the map: %s", name, exc)
    return out


def read_conflicts(path: Path) -> pd.DataFrame:
    """Read a conflicts.gpkg written by ``multiplan check`` (nulls as ``None``)."""
    import pyogrio

    frame = pyogrio.read_dataframe(path, layer="conflicts")
    for c in frame.columns:
        if c != frame.geometry.name and not pd.api.types.is_numeric_dtype(frame[c]):
            frame[c] = pd.Series(
                [
                    None if v is None or (isinstance(v, float) and np.isnan(v)) else v
                    for v in frame[c]
                ],
                dtype=object,
                index=frame.index,
            )
    result: pd.DataFrame = frame
    return result


def redraw_map(
    project: Project,
    *,
    out: Path | None = None,
    lang: Lang = "zh",
    tiles: Tiles = "none",
) -> Path:
    """Draw map.html again from the outputs of an earlier ``multiplan check``.

    Raises
    ------
    InputError
        When the output folder holds no conflicts.gpkg.
    """
    from multiplan.io import write_bytes
    from multiplan.rules import load_rules

    check_tiles(tiles)
    out_dir = Path(out) if out is not None else project.out
    gpkg = out_dir / "conflicts.gpkg"
    if not gpkg.is_file():
        raise InputError(
            "no conflicts.gpkg to draw",
            path=gpkg,
            key="--out",
            hint="Run `multiplan check` first, or give --out the folder it wrote",
        )
    conflicts = read_conflicts(gpkg)
    rules = load_rules(project)
    layers = display_layers(project, {})
    html = map_html(
        build_map(project, layers, conflicts, rules, lang=lang, tiles=tiles)
    )
    target = out_dir / "map.html"
    write_bytes(html.encode("utf-8"), target)
    return target
