"""Scale: the whole ``multiplan check`` process against read + geopandas.overlay + write.

    python benchmarks/scale.py [--scales 1 4] [--fuse-scale 0.25] [--skip cluster] [--repeat 3]
    python benchmarks/scale.py --scales 40      # a 4-million-parcel province (needs hours and ~20 GiB)

At scale 1 the district has 100 000 parcels (plan A), 20 000 parcels (plan B) and
30 red-line zones of 2 000–7 000 vertices (``synthetic.make_district``); scale 4
has four times each. The rules are A × B and A × zones (intersect), what the
naive script computes. Each method runs in its own process; the script prints
wall time, CPU time (user + system, with the child processes that ended: the
work done, which a busy machine changes less than the wall time), peak memory
(VmHWM of the process that runs the check: a cluster's workers are separate
processes, not counted), pieces per second and the ratio of the naive script's
time to each method's. With ``--repeat N`` the methods run N
times in turn (naive, check, …, naive, check, …) and the run with the median time
of each is shown: on a shared machine one run can be 20 % off either way. The
outputs of every multiplan method must be byte-identical (conflicts.gpkg,
summary.csv); the script exits 1 if not.

Methods:

* ``naive``: ``geopandas.read_file`` of the three layers, two
  ``geopandas.overlay(how="intersection")``, the areas, one ``pyogrio`` write;
* ``check``: ``multiplan check --no-map`` as a planner runs it, the whole process
  (default tiles: one tile up to 250 000 parcels, then tiles of about 50 000,
  so nine at scale 4);
* ``one``: the same with ``--tile-size 0``, one tile: every piece kept in memory;
* ``tiled``: the same with tiles of 11.2 km (``--tile-size 11200``: about 25 000
  parcels a tile at every scale; pieces staged on disk tile by tile);
* ``cluster``: the tiles of ``tiled`` on ``--cluster local`` with two worker processes;
* ``fuse`` (at ``--fuse-scale``): ``multiplan fuse`` of plans A and B, faces.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

RULES = """[[rule]]
id = "AB"
title = "两规重叠"
severity = "medium"
relation = "intersect"
a = { layer = "a" }
b = { layer = "b" }

[[rule]]
id = "AZ"
title = "生态保护红线内"
severity = "high"
relation = "intersect"
a = { layer = "a" }
b = { layer = "zones" }
"""


TILE_M = 11_200
"""The tiles of ``tiled`` and ``cluster``: about 25 000 parcels each at every scale."""


def prepare(folder: Path, scale: float) -> tuple[Path, int, float]:
    """Write the district's layers and a manifest; return it, the parcels and the side."""
    from synthetic import make_district, write_project

    layers = make_district(scale)
    manifest = write_project(
        folder,
        {k: layers[k] for k in ("a", "b", "zones")},
        rules=RULES,
        name="scale",
        extra='[fusion]\nlayers = ["a", "b"]\npriority = ["b", "a"]',
    )
    return manifest, len(layers["a"]), 22_400.0 * math.sqrt(scale)


def child(method: str, manifest: Path, side: float) -> dict[str, object]:
    """Run one method in this process; return what it measured."""
    folder = manifest.parent
    t, c = time.perf_counter(), _cpu_seconds()
    if method == "naive":
        import geopandas as gpd
        import pandas as pd
        import pyogrio

        a = gpd.read_file(folder / "a.gpkg")
        b = gpd.read_file(folder / "b.gpkg")
        z = gpd.read_file(folder / "zones.gpkg")
        r1 = gpd.overlay(a, b, how="intersection", keep_geom_type=True)
        r2 = gpd.overlay(a, z, how="intersection", keep_geom_type=True)
        out = pd.concat([r1, r2], ignore_index=True)
        out["area_m2"] = out.area
        pyogrio.write_dataframe(out, folder / "naive.gpkg", layer="naive")
        pieces = len(out)
    else:
        from multiplan.cli import main

        out_dir = folder / f"out-{method}"
        args = ["--out", str(out_dir), "-q"]
        if method == "fuse":
            main(["fuse", str(manifest), *args], standalone_mode=False)
            import pyogrio

            pieces = int(
                pyogrio.read_info(out_dir / "onemap.gpkg", layer="onemap")["features"]
            )
        else:
            tile = {"one": ["--tile-size", "0"], "check": []}.get(
                method, ["--tile-size", str(TILE_M)]
            )
            extra = (
                ["--cluster", "local", "--workers", "2"] if method == "cluster" else []
            )
            main(
                [
                    "check",
                    str(manifest),
                    "--no-map",
                    *tile,
                    *args,
                    *extra,
                ],
                standalone_mode=False,
            )
            pieces = int(
                json.loads((out_dir / "run.json").read_text())["counts"]["pieces"]
            )
    from synthetic import peak_mb

    return {
        "seconds": time.perf_counter() - t,
        "cpu_seconds": _cpu_seconds() - c,
        "peak_mb": peak_mb(),
        "pieces": pieces,
    }


def _cpu_seconds() -> float:
    """Return the CPU time of this process and of its children that have ended (user + system)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run(method: str, manifest: Path, side: float) -> dict[str, object]:
    """Run a method in a process of its own."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            method,
            "--manifest",
            str(manifest),
            "--side",
            str(side),
        ],
        stdout=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        return {"failed": f"exit {proc.returncode}"}
    return dict(json.loads(proc.stdout.decode().strip().splitlines()[-1]))


def _median(tries: list[dict[str, object]]) -> dict[str, object]:
    """Return the run with the median time (a failed run fails the method)."""
    failed = [r for r in tries if "failed" in r]
    if failed:
        return failed[0]
    ranked = sorted(tries, key=lambda r: float(r["seconds"]))  # type: ignore[arg-type]
    return ranked[(len(ranked) - 1) // 2]


def _spread(tries: list[dict[str, object]]) -> str:
    """Return every run's time, when there were several."""
    if len(tries) < 2:
        return ""
    return "   (runs: " + " ".join(f"{float(r['seconds']):.2f}" for r in tries) + ")"  # type: ignore[arg-type]


def main() -> int:
    """Generate each scale, run every method, print the table; exit 1 on a mismatch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--fuse-scale", type=float, default=0.25)
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child")
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--side", type=float, default=0.0)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.manifest, args.side)))
        return 0
    ok = True
    results: dict[float, dict[str, dict[str, object]]] = {}
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            manifest, n, side = prepare(Path(tmp), scale)
            print(
                f"\nscale {scale:g}: {n:,} parcels (A) × {n // 5:,} (B) + {round(30 * scale)} zones"
            )
            print(
                f"{'method':<10}{'seconds':>9}{'CPU s':>8}{'peak MB':>10}{'pieces':>11}{'pieces/s':>11}  naive ÷ method"
            )
            methods = [
                m
                for m in ("naive", "check", "one", "tiled", "cluster")
                if m not in args.skip
            ]
            row: dict[str, dict[str, object]] = {}
            tries: dict[str, list[dict[str, object]]] = {m: [] for m in methods}
            for _ in range(args.repeat):
                for m in methods:
                    tries[m].append(run(m, manifest, side))
            for m in methods:
                r = _median(tries[m])
                row[m] = r
                if "failed" in r:
                    print(f"{m:<10}  {r['failed']}")
                    ok = False
                    continue
                sec = float(r["seconds"])  # type: ignore[arg-type]
                base = (
                    float(row["naive"]["seconds"])
                    if "seconds" in row.get("naive", {})
                    else sec
                )  # type: ignore[arg-type]
                print(
                    f"{m:<10}{sec:>9.2f}{float(r['cpu_seconds']):>8.1f}"  # type: ignore[arg-type]
                    f"{float(r['peak_mb']):>10,.0f}{int(r['pieces']):>11,}"  # type: ignore[arg-type,call-overload]
                    f"{int(r['pieces']) / sec:>11,.0f}  {base / sec:.2f}"  # type: ignore[call-overload]
                    + _spread(tries[m])
                )
            outs = [
                Path(tmp) / f"out-{m}"
                for m in ("check", "one", "tiled", "cluster")
                if m in row and "seconds" in row[m]
            ]
            for name in ("conflicts.gpkg", "summary.csv"):
                blobs = {o.name: (o / name).read_bytes() for o in outs}
                same = len(set(blobs.values())) <= 1
                ok &= same
                print(
                    f"{name}: {'identical' if same else 'DIFFERENT'} across {', '.join(blobs)}"
                )
            results[scale] = row
    if len(results) >= 2:
        s0, s1 = sorted(results)[:2]
        for m in ("check", "one", "tiled"):
            a, b = results[s0].get(m, {}), results[s1].get(m, {})
            if "seconds" in a and "seconds" in b:
                print(
                    f"{m}: {s1 / s0:g}× the data: {float(b['seconds']) / float(a['seconds']):.2f}× the time, "  # type: ignore[arg-type]
                    f"{float(b['cpu_seconds']) / float(a['cpu_seconds']):.2f}× the CPU time, "  # type: ignore[arg-type]
                    f"{float(b['peak_mb']) / float(a['peak_mb']):.2f}× the peak memory"  # type: ignore[arg-type]
                )
    if "fuse" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            manifest, n, side = prepare(Path(tmp), args.fuse_scale)
            r = run("fuse", manifest, side)
            if "seconds" in r:
                print(
                    f"\nfuse at scale {args.fuse_scale:g} ({n:,} + {n // 5:,} parcels): "
                    f"{float(r['seconds']):.2f} s, {float(r['peak_mb']):,.0f} MB, {int(r['pieces']):,} faces"  # type: ignore[arg-type,call-overload]
                )
            else:
                print(f"fuse: {r.get('failed')}")
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
