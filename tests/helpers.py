"""Helpers shared by the tests: data builders, a TOML writer, hashing."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely

import multiplan

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "layers" / "xinbei" / "project.toml"
DEFAULT_PACK = REPO / "rules" / "multiplan-default.toml"
#: the ten towns and streets of the demo (issue 2)
TOWNS = {
    "新桥街道",
    "薛家镇",
    "罗溪镇",
    "西夏墅镇",
    "孟河镇",
    "奔牛镇",
    "春江街道",
    "龙虎塘街道",
    "三井街道",
    "河海街道",
}
# a Xinbei-like origin in EPSG:4549
X0, Y0 = 490_000.0, 3_530_000.0


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    """A box in metres from the Xinbei-like origin."""
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        s = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def toml_dumps(data: Mapping[str, Any]) -> str:
    """Write a manifest-shaped dict as TOML: [project], [layers.x], [[rule]]."""
    out: list[str] = []
    for key, value in data.items():
        if key == "layers":
            for name, table in value.items():
                out.append(f"[layers.{name}]")
                out.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
                out.append("")
        elif key == "rule":
            for table in value:
                out.append("[[rule]]")
                out.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
                out.append("")
        elif isinstance(value, Mapping):
            out.append(f"[{key}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
            out.append("")
        else:
            out.insert(0, f"{key} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


def squares(
    n: int, *, size: float = 100.0, x0: float = X0, y0: float = Y0
) -> list[shapely.Polygon]:
    """A row of ``n`` touching squares."""
    return [
        shapely.box(x0 + i * size, y0, x0 + (i + 1) * size, y0 + size) for i in range(n)
    ]


def zoo() -> dict[str, shapely.Geometry | None]:
    """Geometries that real plan layers contain."""
    x, y = X0, Y0
    return {
        "square": shapely.box(x, y, x + 100, y + 100),
        "holed": shapely.Polygon(
            [(x + 200, y), (x + 300, y), (x + 300, y + 100), (x + 200, y + 100)],
            [
                [
                    (x + 225, y + 25),
                    (x + 275, y + 25),
                    (x + 275, y + 75),
                    (x + 225, y + 75),
                ]
            ],
        ),
        "multipart": shapely.MultiPolygon(
            [
                shapely.box(x + 400, y, x + 450, y + 50),
                shapely.box(x + 460, y, x + 500, y + 40),
            ]
        ),
        "bowtie": shapely.Polygon(
            [(x + 600, y), (x + 700, y + 100), (x + 700, y), (x + 600, y + 100)]
        ),
        "touching": shapely.box(x + 100, y, x + 200, y + 100),
        "sliver": shapely.box(x, y + 100, x + 100, y + 100.001),
        "z": shapely.Polygon(
            [
                (x + 800, y, 5),
                (x + 900, y, 5),
                (x + 900, y + 100, 7),
                (x + 800, y + 100, 5),
            ]
        ),
        "empty": shapely.Polygon(),
        "null": None,
        "collection": shapely.GeometryCollection(
            [
                shapely.box(x + 1000, y, x + 1100, y + 100),
                shapely.LineString([(x, y), (x + 5, y + 5)]),
            ]
        ),
    }


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under a folder, to prove inputs are unchanged."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def area_mu(area_m2: float) -> float:
    return area_m2 * 15 / 10000


PAYLOAD = '<img src=x onerror="window.__pwned=1">'
TEMPLATE = "${window.__pwned2=1}`\\"
JINJA = "{{ 'jin' ~ 'ja-ran' }}{% for x in [1] %}{% endfor %}"
"""A Jinja2 template: run as one, it would print jinja-ran."""


def make_hostile_project(tmp_path):
    """Write and load a project whose ids, names and titles carry HTML and template-literal payloads."""
    zone = gpd.GeoDataFrame(
        {"zid": [PAYLOAD], "MC": [TEMPLATE], "note": [JINJA]},
        geometry=[shapely.box(X0, Y0, X0 + 200, Y0 + 200)],
        crs="EPSG:4549",
    )
    plan = gpd.GeoDataFrame(
        {"pid": ["p&1", TEMPLATE], "code": ["R21", "M1"]},
        geometry=[
            shapely.box(X0 + 100, Y0, X0 + 300, Y0 + 100),
            shapely.box(X0, Y0 + 100, X0 + 90, Y0 + 190),
        ],
        crs="EPSG:4549",
    )
    zone.to_file(tmp_path / "zone.gpkg")
    plan.to_file(tmp_path / "plan.gpkg")
    (tmp_path / "pack.toml").write_text(
        '[[rule]]\nid = "X1"\ntitle = "<b>标题</b>${1}'
        + JINJA
        + '"\na = { layer = "plan" }\nb = { layer = "zone" }\n',
        encoding="utf-8",
    )
    (tmp_path / "project.toml").write_text(
        f"""[project]
name = "hostile"
title = "{PAYLOAD.replace('"', "'")} 新北"
rules = ["pack.toml"]
out = "out"

[layers.plan]
title = "<script>window.__pwned3=1</script>"
path = "plan.gpkg"
class_field = "code"
classification = "gb50137"
id_field = "pid"

[layers.zone]
path = "zone.gpkg"
class = "eco_redline"
id_field = "zid"
""",
        encoding="utf-8",
    )
    from multiplan.project import read_project

    return read_project(tmp_path / "project.toml")


def run_check(
    project: Any,
    *,
    out: Path | None = None,
    lang: str = "zh",
    tiles: str = "none",
    with_map: bool = True,
    **kwargs: Any,
) -> Any:
    """Check and write the output set, as `multiplan check` does (default: the manifest's out)."""

    result = multiplan.check(project, **kwargs)
    result.write(
        out if out is not None else project.out,
        lang=lang,
        tiles=tiles,
        with_map=with_map,
    )
    return result


def map_data(html: str) -> dict[str, Any]:
    """Return the data a map.html hands to its drawing script."""
    import json

    start = html.rindex("multiplanDraw(")  # the call, after the definition
    start = html.index("{", start)
    data, _ = json.JSONDecoder().raw_decode(html, start)
    return data


def pixel_weighted_means(geoms: Any, raster: Any, crs: Any) -> Any:
    """An independent reference for multiplan's raster means: exact weights pixel by pixel.

    Pixels inside a polygon count whole, pixels on its edge by the area of their
    intersection, nodata pixels not at all (the loop multiplan used before it
    moved to exactextract; the tests compare the two).
    """
    import math

    import numpy as np
    import shapely

    from multiplan import crs as crs_mod

    geoms = np.asarray(geoms, dtype=object)
    out = np.full(len(geoms), np.nan)
    t = raster.transform
    if t.b != 0 or t.d != 0:
        raise ValueError("the land-value raster is rotated")
    if raster.crs is not None and crs is not None and raster.crs != crs:
        geoms = crs_mod.transform_geometries(
            geoms, crs_mod.make_transformer(crs, raster.crs)
        )
    values = np.ma.filled(raster.values.astype("float64"), np.nan)
    h, w = values.shape
    x0, dx, y0, dy = t.c, t.a, t.f, t.e  # dy < 0 for north-up
    bounds = shapely.bounds(geoms)
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        minx, miny, maxx, maxy = bounds[i]
        c0 = max(math.floor((minx - x0) / dx), 0)
        c1 = min(math.ceil((maxx - x0) / dx), w)
        r0 = max(math.floor((maxy - y0) / dy), 0)
        r1 = min(math.ceil((miny - y0) / dy), h)
        if c0 >= c1 or r0 >= r1:
            continue
        grid_c, grid_r = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
        cols, rows = grid_c.ravel(), grid_r.ravel()
        v = values[rows, cols]
        valid = np.isfinite(v)
        if not valid.any():
            continue
        cols, rows, v = cols[valid], rows[valid], v[valid]
        boxes = shapely.box(
            x0 + cols * dx, y0 + (rows + 1) * dy, x0 + (cols + 1) * dx, y0 + rows * dy
        )
        shapely.prepare(g)
        inside = shapely.covers(g, boxes)
        weight = np.where(inside, abs(dx * dy), 0.0)
        edge = np.flatnonzero(~inside & shapely.intersects(g, boxes))
        if len(edge):
            weight[edge] = shapely.area(shapely.intersection(boxes[edge], g))
        total = weight.sum()
        if total > 0:
            out[i] = float((weight * v).sum() / total)
    return out
