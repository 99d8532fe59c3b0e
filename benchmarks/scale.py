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
time to each method's. With ``--repeat N`` the methods run in N
rounds, each running every scale's methods in turn (naive, check, … at scale 1,
then at scale 4), and the run with the median time of each is shown: on a shared
machine one run can be 20 % off either way. How the time grows with the data is
the median of the rounds' ratios, each from two runs made minutes apart. The
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
import statistics
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


def _table(
    scale: float, n: int, methods: list[str], tries: dict[str, list[dict[str, object]]]
) -> dict[str, dict[str, object]]:
    """Print one scale's table (each method's median run) and return those runs."""
    print(
        f"\nscale {scale:g}: {n:,} parcels (A) × {n // 5:,} (B) + {round(30 * scale)} zones"
    )
    print(
        f"{'method':<10}{'seconds':>9}{'CPU s':>8}{'peak MB':>10}{'pieces':>11}{'pieces/s':>11}  naive ÷ method"
    )
    row: dict[str, dict[str, object]] = {}
    for m in methods:
        r = _median(tries[m])
        row[m] = r
        if "failed" in r:
            print(f"{m:<10}  {r['failed']}")
            continue
        sec = float(r["seconds"])  # type: ignore[arg-type]
        naive = row.get("naive", {})
        base = float(naive["seconds"]) if "seconds" in naive else sec  # type: ignore[arg-type]
        print(
            f"{m:<10}{sec:>9.2f}{float(r['cpu_seconds']):>8.1f}"  # type: ignore[arg-type]
            f"{float(r['peak_mb']):>10,.0f}{int(r['pieces']):>11,}"  # type: ignore[arg-type,call-overload]
            f"{int(r['pieces']) / sec:>11,.0f}  {base / sec:.2f}" + _spread(tries[m])  # type: ignore[call-overload]
        )
    return row


def _same_outputs(folder: Path, row: dict[str, dict[str, object]]) -> bool:
    """Print whether every multiplan method wrote the same conflicts.gpkg and summary.csv."""
    outs = [
        folder / f"out-{m}"
        for m in ("check", "one", "tiled", "cluster")
        if m in row and "seconds" in row[m]
    ]
    ok = True
    for name in ("conflicts.gpkg", "summary.csv"):
        blobs = {o.name: (o / name).read_bytes() for o in outs}
        same = len(set(blobs.values())) <= 1
        ok &= same
        print(
            f"{name}: {'identical' if same else 'DIFFERENT'} across {', '.join(blobs)}"
        )
    return ok


def _growth(
    method: str,
    times: float,
    small: list[dict[str, object]],
    large: list[dict[str, object]],
) -> str:
    """Return how time, CPU time and peak memory grew from the smaller scale to the larger.

    Each figure is the median of the rounds' ratios (a round runs both scales
    within minutes of each other); the time's ratio in every round follows.
    """
    pairs = [
        (a, b)
        for a, b in zip(small, large, strict=True)
        if "seconds" in a and "seconds" in b
    ]
    if not pairs:
        return f"{method}: no round ran at both scales"

    def ratio(key: str) -> list[float]:
        return [float(b[key]) / float(a[key]) for a, b in pairs]  # type: ignore[arg-type]

    each = " ".join(f"{r:.2f}" for r in ratio("seconds"))
    return (
        f"{method}: {times:g}× the data: {statistics.median(ratio('seconds')):.2f}× the time, "
        f"{statistics.median(ratio('cpu_seconds')):.2f}× the CPU time, "
        f"{statistics.median(ratio('peak_mb')):.2f}× the peak memory "
        f"(medians over {len(pairs)} rounds; the time in each: {each})"
    )


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
    methods = [
        m for m in ("naive", "check", "one", "tiled", "cluster") if m not in args.skip
    ]
    results: dict[float, dict[str, dict[str, object]]] = {}
    tries: dict[float, dict[str, list[dict[str, object]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        made = {}
        for scale in args.scales:
            folder = Path(tmp) / f"scale-{scale:g}"
            folder.mkdir()
            made[scale] = prepare(folder, scale)
            tries[scale] = {m: [] for m in methods}
        # rounds of every scale and method in turn: the scales are compared on
        # runs made in the same minutes, which a shared machine's speed changes
        for _ in range(args.repeat):
            for scale in args.scales:
                manifest, _n, side = made[scale]
                for m in methods:
                    tries[scale][m].append(run(m, manifest, side))
        for scale in args.scales:
            manifest, n, side = made[scale]
            results[scale] = _table(scale, n, methods, tries[scale])
            ok &= _same_outputs(manifest.parent, results[scale])
            ok &= all("seconds" in r for r in results[scale].values())
    if len(results) >= 2:
        s0, s1 = sorted(results)[:2]
        for m in ("check", "one", "tiled"):
            if m in methods:
                print(_growth(m, s1 / s0, tries[s0][m], tries[s1][m]))
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
