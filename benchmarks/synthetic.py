"""A generated district for the benchmarks: parcels of two plans and red-line zones.

``make_district(scale)`` at scale 1 gives 100 000 parcels (plan A), 20 000 parcels
(plan B, not aligned with A) and 30 red-line zones of 2 000–7 000 vertices over
about 500 km² (a Xinbei-sized district, in EPSG:4549 coordinates); scale 4 gives
four times each over four times the area. ``peak_mb()`` is the peak memory the
scripts report.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

X0, Y0 = 470_000.0, 3_510_000.0
CODES_A = ["0101", "0701", "0601", "0301", "1104", "05H1", "0702", "1004"]
CODES_B = ["R21", "M2", "M3", "E2", "G1", "S1", "B11", "A33"]


def _cells(n: int, side: float, rng: np.random.Generator) -> np.ndarray:
    pts = rng.uniform(0, side, size=(n, 2)) + np.array([X0, Y0])
    extent = shapely.box(X0, Y0, X0 + side, Y0 + side)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent)
    )
    cells = shapely.intersection(cells, extent)
    return cells[shapely.area(cells) > 1.0]


def _zone(
    cx: float, cy: float, r: float, n: int, rng: np.random.Generator
) -> shapely.Polygon:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    # smooth, correlated variation at every scale down to a few vertices, as
    # digitised red lines that follow rivers, roads and parcels have
    rr = np.ones(n)
    for k in range(2, 9):
        rr += 0.18 / k * rng.normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    for k in range(9, n // 8, max(1, n // 400)):
        rr += 0.02 / k**0.8 * rng.normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    g = shapely.Polygon(np.c_[cx + r * rr * np.cos(t), cy + r * rr * np.sin(t)])
    return g if g.is_valid else shapely.make_valid(g, method="structure")


def make_district(scale: float = 1.0, *, seed: int = 7) -> dict[str, gpd.GeoDataFrame]:
    """Return the layers ``a``, ``b``, ``zones``, ``boundary`` and ``units`` of a generated district."""
    rng = np.random.default_rng(seed)
    side = 22_400.0 * np.sqrt(scale)
    a = _cells(int(100_000 * scale), side, rng)
    b = _cells(int(20_000 * scale), side, rng)
    nz = max(1, round(30 * scale))
    zones = [
        _zone(
            *(rng.uniform(0.05, 0.95, 2) * side + np.array([X0, Y0])),
            rng.uniform(500, 2500),
            int(rng.integers(2000, 7001)),
            rng,
        )
        for _ in range(nz)
    ]
    crs = "EPSG:4549"
    half = side / 2
    units = [
        shapely.box(
            X0 + i * half, Y0 + j * half, X0 + (i + 1) * half, Y0 + (j + 1) * half
        )
        for i in (0, 1)
        for j in (0, 1)
    ]
    return {
        "a": gpd.GeoDataFrame(
            {
                "aid": [f"A{i:07d}" for i in range(len(a))],
                "code": rng.choice(CODES_A, len(a)),
            },
            geometry=a,
            crs=crs,
        ),
        "b": gpd.GeoDataFrame(
            {
                "bid": [f"B{i:06d}" for i in range(len(b))],
                "code": rng.choice(CODES_B, len(b)),
            },
            geometry=b,
            crs=crs,
        ),
        "zones": gpd.GeoDataFrame(
            {"zid": [f"Z{i:03d}" for i in range(nz)]}, geometry=zones, crs=crs
        ),
        "boundary": gpd.GeoDataFrame(
            {"n": [1]},
            geometry=[
                shapely.Point(X0 + half, Y0 + half).buffer(half * 0.98, quad_segs=64)
            ],
            crs=crs,
        ),
        "units": gpd.GeoDataFrame(
            {"name": ["西南", "西北", "东南", "东北"]}, geometry=units, crs=crs
        ),
    }


RULES = """
[[rule]]
id = "ECO"
title = "建设用地在红线内"
severity = "high"
a = { layer = "a", class = ["construction"] }
b = { layer = "zones" }

[[rule]]
id = "PLAN"
title = "两规重叠：土规农用地与城规建设用地"
severity = "medium"
a = { layer = "a", class = ["agricultural"] }
b = { layer = "b", class = ["construction"] }

[[rule]]
id = "DIFF"
title = "城规建设用地、土规不允许建设"
severity = "medium"
a = { layer = "b", class = ["construction"] }
b = { layer = "a", class = ["construction"] }
relation = "difference"
min_area = 10.0

[[rule]]
id = "NEAR"
title = "三类工业300米内的居住用地"
severity = "low"
a = { layer = "b", class = ["07"] }
b = { layer = "b", class = ["100103"] }
distance = 300.0

[[rule]]
id = "GAP"
title = "距红线200米外的农用地"
severity = "low"
a = { layer = "a", class = ["01"] }
b = { layer = "zones" }
relation = "difference"
distance = 200.0
"""


LAYER_SECTIONS = {
    "a": 'path = "a.gpkg"\nclass_field = "code"\nclassification = "gbt21010"\nid_field = "aid"',
    "b": 'path = "b.gpkg"\nclass_field = "code"\nclassification = "gb50137"\nid_field = "bid"',
    "zones": 'path = "zones.gpkg"\nclass = "eco_redline"\nid_field = "zid"',
    "boundary": 'path = "boundary.gpkg"',
    "units": 'path = "units.gpkg"',
}
"""How the manifest declares each layer of :func:`make_district`."""


def write_project(
    folder: Path,
    layers: dict[str, gpd.GeoDataFrame],
    *,
    units: bool = True,
    rules: str = RULES,
    name: str = "synthetic",
    extra: str = "",
) -> Path:
    """Write the layers as GeoPackages with a manifest and a rule pack; return the manifest.

    The manifest declares the layers given (a boundary and units when they are
    among them, the units only with ``units``); ``extra`` is appended to it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for key, g in layers.items():
        g.to_file(folder / f"{key}.gpkg", layer=key)
    (folder / "rules.toml").write_text(rules, encoding="utf-8")
    head = [f'name = "{name}"', 'crs = "EPSG:4549"']
    if "boundary" in layers:
        head.append('boundary = "boundary"')
    if units and "units" in layers:
        head.append('units = "units"')
    head += ['rules = ["rules.toml"]', 'out = "out"']
    sections = [f"[layers.{key}]\n{LAYER_SECTIONS[key]}" for key in layers]
    manifest = folder / "project.toml"
    manifest.write_text(
        "\n\n".join(["[project]\n" + "\n".join(head), *sections, extra]).strip() + "\n",
        encoding="utf-8",
    )
    return manifest


def peak_mb() -> float:
    """Return this process's peak RSS in MB (VmHWM: since exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
