"""Fuse: the one-map faces at district scale, against chained geopandas.overlay(how="union").

    python benchmarks/fuse.py [--scale 1.0] [--baseline-scale 0.1] [--command-scale 0.5]

Runs the whole ``multiplan fuse`` command (read, conflict check, faces, attribution,
map, write) at ``--command-scale`` with ``--workers 1`` and ``--workers 2``, each in a
process of its own, checks that both write the same ``onemap.gpkg``, byte for byte,
and prints beside it this machine's own ceiling: the same GEOS work in one process,
then in two at once (on a shared or hyper-threaded host two cores give less than 2×).
Then builds the faces of plan A, plan B and the red-line zones of the generated
district (``synthetic.make_district``) in one pass and in tiles on two processes
(the same faces, coordinate for coordinate), checks that they never overlap and that
their areas sum to the union's, and times the chain of pairwise
``geopandas.overlay(how="union")`` calls a user would write, on a smaller district
measured in the same run (the chain is much slower), comparing both on it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from scale import prepare  # noqa: E402
from synthetic import make_district  # noqa: E402

from multiplan.facetiles import node_in_tiles  # noqa: E402


def ours(d, *, tiles=None, workers=1):
    """Time the faces of plan A, plan B and the zones (tiles from the data unless given)."""
    polygons = np.concatenate(
        [np.asarray(d[k].geometry.values, dtype=object) for k in ("a", "b", "zones")]
    )
    lines = shapely.boundary(polygons)
    t = time.perf_counter()
    faces = node_in_tiles(lines, tiles=tiles, workers=workers)
    seconds = time.perf_counter() - t
    # keep the faces inside a polygon (polygonize also closes gaps between them)
    inside = np.zeros(len(faces), dtype=bool)
    inside[
        shapely.STRtree(polygons).query(shapely.point_on_surface(faces), "within")[0]
    ] = True
    return seconds, faces[inside]


def _geos_work(seed):
    rng = np.random.default_rng(seed)
    pts = shapely.points(rng.random((20_000, 2)) * 1000)
    t = time.perf_counter()
    shapely.union_all(shapely.buffer(pts, 3))
    return time.perf_counter() - t


def ceiling() -> float:
    """Return how much faster two processes do two equal GEOS jobs than one does them in turn."""
    from concurrent.futures import ProcessPoolExecutor

    one = _geos_work(1) + _geos_work(2)
    with ProcessPoolExecutor(2) as pool:
        pool.submit(int).result()  # started
        t = time.perf_counter()
        list(pool.map(_geos_work, [1, 2]))
        two = time.perf_counter() - t
    return one / two


def chained(d):
    t = time.perf_counter()
    out = gpd.overlay(
        d["a"][["aid", "geometry"]],
        d["b"][["bid", "geometry"]],
        how="union",
        keep_geom_type=True,
    )
    out = gpd.overlay(
        out, d["zones"][["zid", "geometry"]], how="union", keep_geom_type=True
    )
    return time.perf_counter() - t, out


def check(faces, d):
    union = shapely.union_all(
        np.concatenate(
            [
                np.asarray(d[k].geometry.values, dtype=object)
                for k in ("a", "b", "zones")
            ]
        )
    )
    total = shapely.area(faces).sum()
    overlap = total - shapely.union_all(faces).area
    return abs(total - union.area) / union.area, overlap / total


CHILD = """
import sys, time
from pathlib import Path
from multiplan.cli import main
t = time.perf_counter()
main(["fuse", sys.argv[1], "--workers", sys.argv[2], "--out", sys.argv[3], "-q"], standalone_mode=False)
seconds = time.perf_counter() - t
peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
print(seconds, peak / 1024)
"""


def command(scale: float) -> bool:
    """Time ``multiplan fuse --workers 1`` and ``--workers 2``; return whether their faces are identical."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest, n, _ = prepare(Path(tmp), scale)
        seconds = {}
        for workers in (1, 2):
            out = Path(tmp) / f"out{workers}"
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(manifest), str(workers), str(out)],
                stdout=subprocess.PIPE,
                check=True,
            )
            sec, peak = map(float, proc.stdout.split()[-2:])
            seconds[workers] = sec
            print(
                f"multiplan fuse --workers {workers} at scale {scale:g} ({n:,} + {n // 5:,} parcels): "
                f"{sec:.2f} s, peak {peak:,.0f} MB"
            )
        same = (Path(tmp) / "out1" / "onemap.gpkg").read_bytes() == (
            Path(tmp) / "out2" / "onemap.gpkg"
        ).read_bytes()
        print(
            f"  two workers: {seconds[1] / seconds[2]:.2f}× one; onemap.gpkg identical: {same}; "
            f"this machine's ceiling (the same GEOS work on two processes): {ceiling():.2f}×"
        )
        return same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--baseline-scale", type=float, default=0.1)
    ap.add_argument("--command-scale", type=float, default=0.5)
    args = ap.parse_args()
    same = command(args.command_scale)
    small = make_district(args.baseline_scale)
    t_ours_small, faces_small = ours(small)
    t_chain, chain = chained(small)
    print(
        f"scale {args.baseline_scale:g}: multiplan {t_ours_small:.2f} s, {len(faces_small):,} faces; "
        f"chained geopandas.overlay(union) {t_chain:.2f} s, {len(chain):,} rows  ->  {t_chain / t_ours_small:.1f}×"
    )
    print(
        f"  chained overlay area {chain.geometry.area.sum():,.1f} m², ours {shapely.area(faces_small).sum():,.1f} m²"
    )
    big = make_district(args.scale)
    n = sum(len(big[k]) for k in ("a", "b", "zones"))
    t_one, one = ours(big, tiles=1)
    t_big, faces = ours(big, workers=2)
    equal = sorted(shapely.to_wkb(one)) == sorted(shapely.to_wkb(faces))
    rel, overlap = check(faces, big)
    print(
        f"scale {args.scale:g}: {n:,} polygons -> {len(faces):,} faces; one pass {t_one:.2f} s, "
        f"tiles on two processes {t_big:.2f} s ({t_one / t_big:.2f}×), the same faces: {equal}; "
        f"area vs union {rel:.1e} relative, overlap {overlap:.1e} of the area"
    )
    return 0 if rel < 1e-6 and overlap < 1e-6 and same and equal else 1


if __name__ == "__main__":
    sys.exit(main())
