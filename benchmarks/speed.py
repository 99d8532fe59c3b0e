"""Speed: multiplan's overlay engine against what a planner could use instead.

    python benchmarks/speed.py [--scales 1 4] [--skip postgis duckdb]

The workload is the overlay step of a district check: 100 000 parcels (plan A)
intersected with 20 000 parcels (plan B) and with 30 red-line zones of
2 000–7 000 vertices (``synthetic.make_district``); then 4× that. Every method
runs in its own process on the same data (loading is not timed) and must find
the same pieces; the script prints wall time, peak memory (RSS) and the ratio
of each method to multiplan, then the targets of issue 3.

Methods, each tuned as its experts would:

* ``multiplan``: ``multiplan.overlay.intersect_pieces`` on 2 threads (and
  ``multiplan-1`` on one, for the threading gain);
* ``geopandas``: ``geopandas.overlay(how="intersection")``, what a user writes today;
* ``postgis``: Debian's PostgreSQL + PostGIS, started by this script on a private
  Unix socket (no TCP) and stopped after; GiST indexes, two parallel workers, the
  covers fast path in SQL (``CASE WHEN ST_CoveredBy … THEN … ELSE ST_Intersection``),
  and the zones forced to the outer side of the join (``LATERAL``) so that each
  zone is prepared once;
* ``duckdb``: DuckDB 1.4.4 with the spatial extension from the PyPI package
  ``duckdb-ext-spatial``, tables stored in row groups of 16 384 rows so that both
  threads work, the same covers fast path;
* ``limit``: the floor — the index query, the covers test and ``shapely.intersection``
  over exactly the remaining pairs, each split over both cores, nothing else.

Needs: ``apt-get install postgresql postgis`` and ``pip install duckdb==1.4.4
duckdb-ext-spatial "psycopg[binary]"``; a method whose tools are missing is
skipped with a note. Run as root (PostgreSQL is started with ``runuser -u postgres``)
or as a user who may run ``initdb``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import site
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import shapely

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

METHODS = ("multiplan", "multiplan-1", "limit", "geopandas", "postgis", "duckdb")


# --------------------------------------------------------------------------- data


def write_data(folder: Path, scale: float) -> dict[str, int]:
    from synthetic import make_district

    d = make_district(scale)
    arrays = {
        k: shapely.to_wkb(np.asarray(d[k].geometry.values)) for k in ("a", "b", "zones")
    }
    with (folder / "data.pkl").open("wb") as f:
        pickle.dump(arrays, f)
    return {k: len(v) for k, v in arrays.items()}


def load_data(folder: Path) -> dict[str, np.ndarray]:
    with (folder / "data.pkl").open("rb") as f:
        arrays = pickle.load(f)
    return {k: shapely.from_wkb(v) for k, v in arrays.items()}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- methods (child process)


def run_multiplan(data, workers):
    from multiplan.overlay import intersect_pieces

    a, b, z = data["a"], data["b"], data["zones"]
    t = time.perf_counter()
    r1 = intersect_pieces(a, b, workers=workers)
    r2 = intersect_pieces(a, z, workers=workers)
    secs = time.perf_counter() - t
    g = np.concatenate([r1[2], r2[2]])
    return secs, len(g), float(shapely.area(g).sum())


def run_limit(data):
    a, b, z = data["a"], data["b"], data["zones"]
    tree = shapely.STRtree(a)
    t = time.perf_counter()
    n_pairs = 0
    area = 0.0
    with ThreadPoolExecutor(2) as pool:
        for q in (b, z):
            shapely.prepare(q)
            halves = np.array_split(np.arange(len(q)), 2)

            def query(idx, q=q):
                iq, ia = tree.query(q[idx], predicate="intersects")
                iq = idx[iq]
                cov = shapely.covers(q[iq], a[ia])
                return iq[~cov], ia[~cov], int(cov.sum())

            parts = list(pool.map(query, halves))
            iq = np.concatenate([p[0] for p in parts])
            ia = np.concatenate([p[1] for p in parts])
            n_pairs += len(iq) + sum(p[2] for p in parts)
            x, y = a[ia], q[iq]
            h = len(x) // 2
            out = list(
                pool.map(
                    lambda s, x=x, y=y: shapely.intersection(x[s], y[s]),
                    [slice(0, h), slice(h, len(x))],
                )
            )
            area += float(sum(shapely.area(o).sum() for o in out))
    secs = time.perf_counter() - t
    return secs, n_pairs, None  # pairs, not pieces: the limit does not build results


def run_geopandas(data):
    import geopandas as gpd

    a = gpd.GeoDataFrame({"ia": np.arange(len(data["a"]))}, geometry=data["a"])
    b = gpd.GeoDataFrame({"ib": np.arange(len(data["b"]))}, geometry=data["b"])
    z = gpd.GeoDataFrame({"iz": np.arange(len(data["zones"]))}, geometry=data["zones"])
    t = time.perf_counter()
    r1 = gpd.overlay(a, b, how="intersection", keep_geom_type=True)
    r2 = gpd.overlay(a, z, how="intersection", keep_geom_type=True)
    secs = time.perf_counter() - t
    area = r1.geometry.area
    area2 = r2.geometry.area
    return (
        secs,
        int((area > 0).sum() + (area2 > 0).sum()),
        float(area.sum() + area2.sum()),
    )


PG_AB = """
CREATE UNLOGGED TABLE out_ab AS
SELECT a.id AS a_id, b.id AS b_id,
       CASE WHEN ST_CoveredBy(a.geom, b.geom) THEN a.geom
            WHEN ST_CoveredBy(b.geom, a.geom) THEN b.geom
            ELSE ST_Intersection(a.geom, b.geom) END AS geom
FROM b JOIN a ON ST_Intersects(a.geom, b.geom)
"""
PG_AZ = """
CREATE UNLOGGED TABLE out_az AS
WITH zs AS MATERIALIZED (SELECT id, ST_Subdivide(geom, 256) AS geom FROM z),
p AS (
    SELECT a.id AS a_id, zs.id AS z_id,
           CASE WHEN ST_CoveredBy(a.geom, zs.geom) THEN a.geom ELSE ST_Intersection(a.geom, zs.geom) END AS geom
    FROM zs JOIN a ON ST_Intersects(a.geom, zs.geom)
)
SELECT a_id, z_id, CASE WHEN count(*) = 1 THEN (array_agg(geom))[1] ELSE ST_Union(geom) END AS geom
FROM p GROUP BY a_id, z_id
"""
# PostGIS turns a zone of thousands of vertices into a GEOS geometry again for every
# ST_Intersection call (only predicates have its prepared-geometry cache): with the
# zones on the outer side of a LATERAL join this query took 11.2 s at scale 1. Experts
# ST_Subdivide large polygons first and union the parts per pair: 2.4 s, same pieces.


def run_postgis(data, sock):
    import psycopg

    with psycopg.connect(
        host=sock, dbname="postgres", user="postgres", autocommit=True
    ) as con:
        cur = con.cursor()
        cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        for name, arr in (("a", data["a"]), ("b", data["b"]), ("z", data["zones"])):
            cur.execute(
                f"DROP TABLE IF EXISTS {name}; CREATE UNLOGGED TABLE {name} (id int, geom geometry)"
            )
            with cur.copy(f"COPY {name} (id, geom) FROM STDIN") as cp:
                for i, h in enumerate(shapely.to_wkb(arr, hex=True)):
                    cp.write_row((i, h))
            cur.execute(f"CREATE INDEX ON {name} USING gist (geom); ANALYZE {name}")
        cur.execute("DROP TABLE IF EXISTS out_ab; DROP TABLE IF EXISTS out_az")
        for setting in (
            "max_parallel_workers_per_gather = 2",
            "max_parallel_workers = 2",
            "parallel_setup_cost = 0",
            "parallel_tuple_cost = 0",
            "min_parallel_table_scan_size = 0",
            "work_mem = '256MB'",
        ):
            cur.execute(f"SET {setting}")
        peak = _ServerMemory()
        t = time.perf_counter()
        cur.execute(PG_AB)
        cur.execute(PG_AZ)
        secs = time.perf_counter() - t
        peak.stop()
        cur.execute(
            "SELECT count(*), sum(ST_Area(geom)) FROM (SELECT geom FROM out_ab UNION ALL SELECT geom FROM out_az) s WHERE ST_Area(geom) > 0"
        )
        n, area = cur.fetchone()
        return secs, int(n), float(area), peak.mb


class _ServerMemory:
    """Poll the summed RSS of the postgres processes; keep the peak."""

    def __init__(self) -> None:
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    text = Path(status).read_text()
                except OSError:
                    continue
                if "\nName:\tpostgres" in "\n" + text:
                    for line in text.splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            self.mb = max(self.mb, total / 1024.0)
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_duckdb(data, folder):
    import duckdb

    ext = sorted(
        Path(site.getsitepackages()[0], "duckdb_ext", "extensions").glob(
            "*/*/spatial.duckdb_extension"
        )
    )
    con = duckdb.connect(config={"threads": 2, "allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{ext[0]}'")
    db = folder / "bench.duckdb"
    db.unlink(missing_ok=True)
    con.execute(f"ATTACH '{db}' AS d (ROW_GROUP_SIZE 16384)")
    con.execute("USE d")
    for name, arr in (("a", data["a"]), ("b", data["b"]), ("z", data["zones"])):
        import pandas as pd

        df = pd.DataFrame({"id": np.arange(len(arr)), "wkb": list(shapely.to_wkb(arr))})  # noqa: F841 - read by DuckDB
        con.execute(
            f"CREATE TABLE {name} AS SELECT id, ST_GeomFromWKB(wkb) AS geom FROM df"
        )
    t = time.perf_counter()
    con.execute("""CREATE TABLE out_ab AS SELECT a.id AS a_id, b.id AS b_id,
        CASE WHEN ST_CoveredBy(a.geom, b.geom) THEN a.geom WHEN ST_CoveredBy(b.geom, a.geom) THEN b.geom
             ELSE ST_Intersection(a.geom, b.geom) END AS geom
        FROM a JOIN b ON ST_Intersects(a.geom, b.geom)""")
    con.execute("""CREATE TABLE out_az AS SELECT a.id AS a_id, z.id AS z_id,
        CASE WHEN ST_CoveredBy(a.geom, z.geom) THEN a.geom ELSE ST_Intersection(a.geom, z.geom) END AS geom
        FROM a JOIN z ON ST_Intersects(a.geom, z.geom)""")
    secs = time.perf_counter() - t
    n, area = con.execute(
        "SELECT count(*), sum(ST_Area(geom)) FROM (SELECT geom FROM out_ab UNION ALL SELECT geom FROM out_az) WHERE ST_Area(geom) > 0"
    ).fetchone()
    con.close()
    return secs, int(n), float(area)


def child(method: str, folder: Path, sock: str | None) -> None:
    data = load_data(folder)
    base = _rss_mb()
    server = None
    if method == "multiplan":
        secs, n, area = run_multiplan(data, 2)
    elif method == "multiplan-1":
        secs, n, area = run_multiplan(data, 1)
    elif method == "limit":
        secs, n, area = run_limit(data)
    elif method == "geopandas":
        secs, n, area = run_geopandas(data)
    elif method == "postgis":
        secs, n, area, server = run_postgis(data, sock)
    elif method == "duckdb":
        secs, n, area = run_duckdb(data, folder)
    else:
        raise SystemExit(f"unknown method {method}")
    print(
        json.dumps(
            {
                "seconds": secs,
                "pieces": n,
                "area": area,
                "peak_mb": _rss_mb(),
                "base_mb": base,
                "server_mb": server,
            }
        )
    )


# --------------------------------------------------------------------------- PostgreSQL (parent)


class Postgres:
    """A throw-away PostgreSQL server on a private Unix socket."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError(
                "PostgreSQL is not installed (apt-get install postgresql postgis)"
            )
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="mp-pg-"))
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            [
                *self.prefix,
                str(self.bin / "initdb"),
                "-D",
                str(self.dir / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
        )
        opts = f"-k {self.dir} -c listen_addresses='' -c shared_buffers=1GB -c max_worker_processes=8 -c max_parallel_workers=2 -c jit=off"
        subprocess.run(
            [
                *self.prefix,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-o",
                opts,
                "-w",
                "-l",
                str(self.dir / "log"),
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self.socket = str(self.dir)

    def stop(self) -> None:
        subprocess.run(
            [
                *self.prefix,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- parent


def measure(method: str, folder: Path, sock: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--data", str(folder)]
    if sock:
        cmd += ["--sock", sock]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--skip", nargs="*", default=[], choices=METHODS)
    ap.add_argument("--child")
    ap.add_argument("--data")
    ap.add_argument("--sock")
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.data), args.sock)
        return 0
    methods = [m for m in METHODS if m not in args.skip]
    pg = None
    if "postgis" in methods:
        try:
            pg = Postgres()
        except Exception as exc:
            print(f"postgis skipped: {exc}")
            methods.remove("postgis")
    results: dict[float, dict[str, dict]] = {}
    try:
        for scale in args.scales:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                sizes = write_data(folder, scale)
                print(
                    f"\nscale {scale:g}: {sizes['a']:,} parcels (A) × {sizes['b']:,} parcels (B) + {sizes['zones']} zones"
                )
                print(
                    f"{'method':<13}{'seconds':>9}{'peak MB':>10}{'pieces':>10}{'area km²':>12}{'÷ multiplan':>13}"
                )
                res = {}
                for m in methods:
                    r = measure(m, folder, pg.socket if pg else None)
                    res[m] = r
                    if "error" in r:
                        print(f"{m:<13}  error: {r['error']}")
                        continue
                    ratio = (
                        r["seconds"] / res["multiplan"]["seconds"]
                        if "multiplan" in res and "seconds" in res["multiplan"]
                        else float("nan")
                    )
                    mem = r["server_mb"] if r.get("server_mb") else r["peak_mb"]
                    tag = " (server)" if r.get("server_mb") else ""
                    area = (
                        f"{r['area'] / 1e6:12,.3f}"
                        if r["area"] is not None
                        else f"{'(pairs)':>12}"
                    )
                    print(
                        f"{m:<13}{r['seconds']:>9.2f}{mem:>10,.0f}{r['pieces']:>10,}{area}{ratio:>13.2f}{tag}"
                    )
                results[scale] = res
    finally:
        if pg is not None:
            pg.stop()
    return report(results)


def report(results: dict[float, dict[str, dict]]) -> int:
    ok = True

    def line(text: str, passed: bool) -> None:
        nonlocal ok
        ok &= passed
        print(f"  [{'PASS' if passed else 'FAIL'}] {text}")

    print("\ntargets (issue 3)")
    base = results.get(1.0) or next(iter(results.values()))
    mp = base.get("multiplan", {}).get("seconds")
    if mp is None:
        print("  multiplan did not run")
        return 1
    if "seconds" in base.get("geopandas", {}):
        r = base["geopandas"]["seconds"] / mp
        line(f"≥ 3× faster than geopandas.overlay: {r:.2f}×", r >= 3)
    for peer in ("postgis", "duckdb"):
        if "seconds" in base.get(peer, {}):
            r = base[peer]["seconds"] / mp
            line(f"faster than {peer}: {r:.2f}×", r > 1)
    if "seconds" in base.get("limit", {}):
        r = mp / base["limit"]["seconds"]
        line(f"within 1.5× of the intersection-only limit: {r:.2f}×", r <= 1.5)
    if "seconds" in base.get("multiplan-1", {}):
        r = base["multiplan-1"]["seconds"] / mp
        line(f"--workers 2 ≥ 1.6× over --workers 1: {r:.2f}×", r >= 1.6)
        same = (
            base["multiplan-1"]["pieces"] == base["multiplan"]["pieces"]
            and base["multiplan-1"]["area"] == base["multiplan"]["area"]
        )
        line("--workers 1 and 2 find identical pieces and areas", same)
    if (
        4.0 in results
        and 1.0 in results
        and "seconds" in results[4.0].get("multiplan", {})
    ):
        r = results[4.0]["multiplan"]["seconds"] / mp
        line(f"4× the data costs ≤ 4.5× the time: {r:.2f}×", r <= 4.5)
    for scale, res in results.items():
        areas = {m: r["area"] for m, r in res.items() if r.get("area") is not None}
        if "multiplan" in areas:
            worst = max(
                abs(v - areas["multiplan"]) / areas["multiplan"] for v in areas.values()
            )
            line(
                f"scale {scale:g}: every method's total piece area agrees with multiplan's (worst {worst:.1e})",
                worst < 1e-6,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
