"""Fuse: the one-map faces at district scale, against chained geopandas.overlay(how="union").

    python benchmarks/fuse.py [--scale 1.0] [--baseline-scale 0.1]

Builds the faces of plan A, plan B and the red-line zones of the generated district
(``synthetic.make_district``) with multiplan's single noding pass, checks that they
never overlap and that their areas sum to the union's, and times the chain of
pairwise ``geopandas.overlay(how="union")`` calls a user would write, on a smaller
district measured in the same run (the chain is much slower), comparing both on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from synthetic import make_district  # noqa: E402

from multiplan.fuse import build_faces  # noqa: E402


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--baseline-scale", type=float, default=0.1)
    args = ap.parse_args()
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
    return 0 if rel < 1e-6 and overlap < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
