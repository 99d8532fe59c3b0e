"""PostGIS reading and writing: a 100 000-parcel layer through multiplan, against files.

    python benchmarks/postgis_io.py [--scale 1]

Uses the server named by ``MULTIPLAN_TEST_PG`` (with ``PGPASSWORD``), or starts
one with ``.ci/postgis start`` and stops it after. Plan A of
``synthetic.make_district`` (100 000 parcels at scale 1, with a code, a text
status and a number) is loaded as a table with a GiST index and a primary key,
and written as a GeoPackage. Each method runs in its own process; the script
prints wall time, peak memory (RSS) and the ratio to the GeoPackage read, which
is the baseline.

Methods:

* ``gpkg``: ``multiplan.layers.read_layer`` of the GeoPackage (pyogrio, Arrow);
* ``postgis``: ``read_layer`` of the table (psycopg 3, binary cursor, WKB);
* ``postgis-where``: the same with ``where = {field = "status", in = [...]}``,
  which the server decides (a third of the rows come back);
* ``gdal-pg``: pyogrio through GDAL's PostgreSQL driver, when the installed
  pyogrio's GDAL has it (the wheels do not: the script says so);
* ``write-gpkg`` / ``write-postgis``: the parcels written as conflicts.gpkg is
  written, and as the ``--db`` tables are (COPY, GiST index, one transaction).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

METHODS = ("gpkg", "postgis", "postgis-where", "gdal-pg", "write-gpkg", "write-postgis")
STATUS = ("planned", "approved", "draft")


def _manifest(folder: Path, path: str, layer: str | None, where: bool) -> Path:
    lines = ["[project]", 'name = "bench"', 'crs = "EPSG:4549"', "[layers.a]"]
    lines.append(f"path = {json.dumps(path)}")
    if layer:
        lines.append(f"layer = {json.dumps(layer)}")
    lines += ['class_field = "code"', 'classification = "gbt21010"', 'id_field = "aid"']
    if where:
        lines.append('where = { field = "status", in = ["planned"] }')
    m = folder / f"bench-{abs(hash((path, layer, where)))}.toml"
    m.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return m


def prepare(folder: Path, url: str, scale: float) -> int:
    """Write the parcels as a GeoPackage and a PostGIS table; return their number."""
    import contextlib

    import numpy as np
    import pyogrio
    from synthetic import make_district

    from multiplan.pgwrite import write_frame
    from multiplan.postgis import connect, parse_database

    a = make_district(scale)["a"]
    rng = np.random.default_rng(3)
    a["status"] = rng.choice(STATUS, size=len(a))
    a["height"] = rng.uniform(0, 100, size=len(a))
    pyogrio.write_dataframe(a, folder / "a.gpkg", layer="a", use_arrow=True)
    with contextlib.closing(connect(parse_database(url))) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE SCHEMA IF NOT EXISTS bench")
            write_frame(cur, "bench", "a", a, promote=False)
        conn.commit()
        conn.execute("ANALYZE bench.a")
        conn.commit()
    return len(a)


def method(name: str, folder: Path, url: str) -> dict[str, object]:
    """Run one method in this process; return what it found."""
    import contextlib

    import pyogrio

    from multiplan.layers import read_layer
    from multiplan.project import read_project

    if name == "gdal-pg":
        if "PostgreSQL" not in pyogrio.list_drivers():
            return {"skipped": "this pyogrio's GDAL has no PostgreSQL driver"}
        t = time.perf_counter()
        frame = pyogrio.read_dataframe("PG:" + url, layer="bench.a", use_arrow=True)
        return {"seconds": time.perf_counter() - t, "rows": len(frame)}
    if name.startswith("write-"):
        frame = pyogrio.read_dataframe(folder / "a.gpkg", layer="a")
        t = time.perf_counter()
        if name == "write-gpkg":
            from multiplan.io import gpkg_writer

            gpkg_writer(frame, layer="conflicts")(folder / f"w{os.getpid()}.gpkg")
        else:
            from multiplan.pgwrite import staged_tables
            from multiplan.postgis import parse_database

            db = parse_database(url + "?schema=bench_out")
            with staged_tables(db, {"conflicts": frame}, {}, command="bench"):
                pass
        return {"seconds": time.perf_counter() - t, "rows": len(frame)}
    where = name == "postgis-where"
    if name == "gpkg":
        m = _manifest(folder, str(folder / "a.gpkg"), "a", where)
    else:
        m = _manifest(folder, url, "bench.a", where)
    project = read_project(m)
    t = time.perf_counter()
    layer = read_layer(project.layers["a"], project)
    seconds = time.perf_counter() - t
    with contextlib.suppress(Exception):
        m.unlink()
    return {
        "seconds": seconds,
        "rows": len(layer.frame),
        "area": float(layer.frame.geometry.area.sum()),
    }


def run_method(name: str, folder: Path, url: str) -> dict[str, object]:
    """Run a method in a child process of its own."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            name,
            "--folder",
            str(folder),
            "--url",
            url,
        ],
        stdout=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        return {"skipped": f"exit {proc.returncode}"}
    return dict(json.loads(proc.stdout))


def main() -> int:
    """Prepare the data, run every method, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--child", choices=METHODS)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        result = method(args.child, args.folder, args.url)
        from synthetic import peak_mb

        result["peak_mb"] = peak_mb()
        print(json.dumps(result))
        return 0
    started = None
    url = os.environ.get("MULTIPLAN_TEST_PG")
    if not url:
        out = subprocess.run(
            [str(REPO / ".ci" / "postgis"), "start"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in out.split("\n")
            if line
        )
        os.environ.update(env)
        url, started = env["MULTIPLAN_TEST_PG"], env["MULTIPLAN_PG_DIR"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            n = prepare(folder, url, args.scale)
            print(f"{n:,} parcels; PostgreSQL at {url.split('@')[-1]}")
            print(f"{'method':<15}{'seconds':>9}{'peak MB':>10}{'rows':>10}  ÷ gpkg")
            base: dict[str, float] = {}
            for name in METHODS:
                r = run_method(name, folder, url)
                if "skipped" in r:
                    print(f"{name:<15}  skipped: {r['skipped']}")
                    continue
                seconds = float(r["seconds"])  # type: ignore[arg-type]
                ref = "write-gpkg" if name.startswith("write-") else "gpkg"
                base.setdefault(name, seconds)
                ratio = seconds / base[ref] if ref in base else 1.0
                print(
                    f"{name:<15}{seconds:>9.2f}{float(r['peak_mb']):>10,.0f}"  # type: ignore[arg-type]
                    f"{int(r['rows']):>10,}  {ratio:.2f}"  # type: ignore[call-overload]
                )
    finally:
        if started:
            subprocess.run(
                [str(REPO / ".ci" / "postgis"), "stop", started], check=False
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
