"""Staging: reading a check's pieces back from its tiles' files, in SPEC §6's order.

    python benchmarks/staging.py [--pieces 1000000] [--tiles 9 36 81]

A check of many tiles stages each tile's pieces (sorted) on disk and reads them back
in the order of all pieces when it writes conflicts.gpkg (``PieceStore``), a batch of
8 192 at a time. The output is the merge of the tiles, so each output batch holds a
few pieces of every tile. This script stages random polygons in T tiles (each
piece in a random tile, each tile in output order, as a check leaves them), then
reads them back batch by batch, and prints the time against the baseline of the
same batches' WKB taken from memory (``MemoryGeometries``, a one-tile check), with
the process's peak memory. The reading must not grow with the number of tiles.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import shapely

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from synthetic import peak_mb  # noqa: E402

from multiplan.piecestore import BATCH_ROWS, MemoryGeometries, PieceStore  # noqa: E402


def pieces(n: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``n`` small random polygons (12 vertices each, some in two parts)."""
    x = rng.uniform(400_000, 600_000, size=n)
    y = rng.uniform(3_400_000, 3_600_000, size=n)
    g = np.asarray(shapely.buffer(shapely.points(x, y), 15, quad_segs=3), dtype=object)
    two = np.flatnonzero(rng.random(n) < 0.2)
    moved = shapely.transform(g[two], lambda xy: xy + 50.0)
    g[two] = shapely.multipolygons(np.stack([g[two], moved], axis=1))
    return g


def read_all(geometries: MemoryGeometries | PieceStore, n: int) -> float:
    """Read every piece's WKB batch by batch as the GeoPackage writer does; return seconds."""
    t = time.perf_counter()
    for start in range(0, n, BATCH_ROWS):
        geometries.wkb(start, min(start + BATCH_ROWS, n))
    return time.perf_counter() - t


def main() -> int:
    """Print, per number of tiles, the time to read the staged pieces back in order."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=1_000_000)
    ap.add_argument("--tiles", type=int, nargs="+", default=[9, 36, 81])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    geoms = pieces(args.pieces, rng)
    n = len(geoms)
    base = read_all(MemoryGeometries(geoms), n)
    print(f"{n:,} pieces; baseline, their WKB from memory: {base:.2f} s")
    for count in args.tiles:
        tile_of = rng.integers(0, count, n)
        tiles = [np.flatnonzero(tile_of == t) for t in range(count)]
        store = PieceStore()
        t = time.perf_counter()
        for members in tiles:
            store.add(geoms[members])
        staged = time.perf_counter() - t
        store.seal(np.argsort(np.concatenate(tiles), kind="stable"))
        took = read_all(store, n)
        same = bool(np.array_equal(store.wkb(n - 5, n), shapely.to_wkb(geoms[n - 5 :])))
        store.close()
        print(
            f"{count:3d} tiles: staged in {staged:.2f} s, read back in order in {took:.2f} s "
            f"({took / base:.1f}× the baseline), the last pieces the same: {same}; "
            f"peak {peak_mb():.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
