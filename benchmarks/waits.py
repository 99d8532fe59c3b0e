"""Waits: what a planner waits on in the demo, outside the conflict check itself.

    python benchmarks/waits.py [--repeat 3]

* Land value at stake: the mean of the land-value raster under every conflict piece
  of the demo, through exactextract (what ``check`` does) against the per-piece loop
  of exact pixel weights multiplan used before (the tests' second method), with the
  largest difference between them.
* ``multiplan site``: the command on the demo as a planner runs it (a new process:
  imports, reading what lies near the site, screening, writing site.html, site.csv,
  site.json), and ``screen_site`` alone with the layers read.
* ``multiplan check`` on the demo as a planner runs it (a new process: the map,
  the report and the ledger included), with the stages run.json times.
* ``import multiplan`` and ``import multiplan.cli`` in a new process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DEMO = ROOT / "layers" / "xinbei" / "project.toml"
SITE = "POLYGON ((495568 3531178, 495768 3531178, 495768 3531378, 495568 3531378, 495568 3531178))"


def land_values() -> bool:
    """Time the raster means both ways on the demo's pieces; return whether they agree."""
    from helpers import pixel_weighted_means  # the per-piece loop, kept in the tests

    import multiplan
    from multiplan.values import raster_means

    project = multiplan.read_project(DEMO)
    layers = multiplan.read_layers(project)
    pieces = multiplan.check(project, layers=layers).pieces
    raster = layers.layer(project.yield_.revenue.raster).raster
    geoms = np.asarray(pieces.geometry.array, dtype=object)
    t = time.perf_counter()
    fast = raster_means(geoms, raster, project.working_crs)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    loop = pixel_weighted_means(geoms, raster, project.working_crs)
    t_loop = time.perf_counter() - t
    both = np.isfinite(fast) & np.isfinite(loop)
    same_nan = bool((np.isnan(fast) == np.isnan(loop)).all())
    rel = float(
        np.max(np.abs(fast[both] - loop[both]) / np.maximum(np.abs(loop[both]), 1e-9))
    )
    print(
        f"land value at stake, {len(geoms):,} demo pieces: exactextract {t_fast:.2f} s, "
        f"per-piece loop {t_loop:.2f} s ({t_loop / t_fast:.1f}×); "
        f"largest relative difference {rel:.1e}, same pieces without a value: {same_nan}"
    )
    return same_nan and rel < 1e-6


def _command_walls(args: list[str], tmp: Path, repeat: int) -> list[float]:
    """Run ``multiplan ARGS --out TMP/oK -q`` ``repeat`` times in new processes; return the wall times.

    Exit 1 is a finding (conflicts, a forbidden site), not a failure.
    """
    walls = []
    for k in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "multiplan",
                *args,
                "--out",
                str(tmp / f"o{k}"),
                "-q",
            ],
            capture_output=True,
            check=False,
        )
        walls.append(time.perf_counter() - t)
        if proc.returncode not in (0, 1):
            raise SystemExit(proc.stderr.decode())
    return walls


def site(repeat: int) -> None:
    """Time ``multiplan site`` on the demo in new processes, and the screening alone."""
    import multiplan

    with tempfile.TemporaryDirectory() as tmp:
        walls = _command_walls(["site", str(DEMO), SITE], Path(tmp), repeat)
    project = multiplan.read_project(DEMO)
    layers = multiplan.read_layers(project)
    t = time.perf_counter()
    result = multiplan.screen_site(project, SITE, layers=layers)
    t_screen = time.perf_counter() - t
    floor = []
    for _ in range(
        repeat
    ):  # the libraries site cannot do without, imported and nothing else
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", f"import {', '.join(SITE_NEEDS)}"], check=True
        )
        floor.append(time.perf_counter() - t)
    print(
        f"multiplan site on the demo: {statistics.median(walls):.2f} s (median of {repeat}, a new "
        f"process each); of which importing {', '.join(SITE_NEEDS)} alone takes "
        f"{statistics.median(floor):.2f} s; screen_site with the layers read {t_screen:.3f} s; "
        f"verdict {result.verdict}"
    )


SITE_NEEDS = ("geopandas", "folium", "rasterio", "pyogrio", "pyproj", "click")
"""What ``multiplan site`` needs: reading (geopandas, pyogrio, rasterio, pyproj), the map, the CLI."""


def demo_check(repeat: int) -> None:
    """Time the whole ``multiplan check`` on the demo in new processes (map, report, ledger)."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        walls = _command_walls(["check", str(DEMO)], Path(tmp), repeat)
        stages = json.loads((Path(tmp) / f"o{repeat - 1}" / "run.json").read_text())
        timings = ", ".join(f"{k} {v:.2f} s" for k, v in stages["timings_s"].items())
    print(
        f"multiplan check on the demo (map, report, ledger): {statistics.median(walls):.2f} s "
        f"(median of {repeat}, a new process each); the last run's stages: {timings}"
    )


def imports(repeat: int) -> None:
    """Time importing the package and its command line in new processes."""
    for module in ("multiplan", "multiplan.cli"):
        walls = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
            walls.append(time.perf_counter() - t)
        base = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            base.append(time.perf_counter() - t)
        print(
            f"import {module}: {statistics.median(walls) - statistics.median(base):.2f} s "
            f"(beyond Python's own start)"
        )


def main() -> int:
    """Print every wait; exit 1 when the two land-value methods disagree."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ok = land_values()
    site(args.repeat)
    demo_check(args.repeat)
    imports(args.repeat)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
