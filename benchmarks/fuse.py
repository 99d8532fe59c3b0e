"""Fuse: the one-map faces at district scale, against chained geopandas.overlay(how="union").

    python benchmarks/fuse.py [--scale 1.0] [--baseline-scale 0.1] [--command-scale 0.5]

Builds the faces of plan A, plan B and the red-line zones of the generated district
(``synthetic.make_district``) with multiplan's single noding pass, checks that they
never overlap and that their areas sum to the union's, and times the chain of
pairwise ``geopandas.overlay(how="union")`` calls a user would write, on a smaller
district measured in the same run (the chain is much slower), comparing both on it.
Then runs the whole ``multiplan fuse`` command (read, conflict check, faces,
attribution, map, write) at ``--command-scale`` with ``--workers 1`` and
``--workers 2``, each in a process of its own, and checks that both write the same
``onemap.gpkg``, byte for byte.
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

from multiplan.noding import build_faces  # noqa: E402


def ours(d):
    t = time.perf_counter()
    faces = build_faces(
        [np.asarray(d[k].geometry.values, dtype=object) for k in ("a", "b", "zones")],
        None,
    )
    return time.perf_counter() - t, faces


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
            f"  two workers: {seconds[1] / seconds[2]:.2f}× one; onemap.gpkg identical: {same}"
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
    t_big, faces = ours(big)
    rel, overlap = check(faces, big)
    print(
        f"scale {args.scale:g}: {n:,} polygons -> {len(faces):,} faces in {t_big:.2f} s; "
        f"area vs union {rel:.1e} relative, overlap {overlap:.1e} of the area"
    )
    return 0 if rel < 1e-6 and overlap < 1e-6 and same else 1


if __name__ == "__main__":
    sys.exit(main())
