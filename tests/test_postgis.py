"""PostGIS as a source and a sink (SPEC §13), against a real server.

``.ci/run`` starts a private PostgreSQL + PostGIS (``.ci/postgis start``) and
exports ``MULTIPLAN_TEST_PG`` (a URL without password) and ``PGPASSWORD``; it
sets ``MULTIPLAN_REQUIRE_PG=1`` so that CI fails, not skips, without a server.
The tests that need no server (URL parsing, masking, an unreachable port) run
everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from helpers import DEMO, REPO, X0, Y0

from multiplan.cli import main
from multiplan.dburl import mask
from multiplan.errors import InputError
from multiplan.layers import read_layer
from multiplan.pgwrite import read_back, write_frame
from multiplan.postgis import DatabaseError, connect, parse_database
from multiplan.project import read_project

PG_URL = os.environ.get("MULTIPLAN_TEST_PG")


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def pg_url():
    if not PG_URL:
        if os.environ.get("MULTIPLAN_REQUIRE_PG"):
            pytest.fail("MULTIPLAN_REQUIRE_PG is set but MULTIPLAN_TEST_PG is not")
        pytest.skip("no PostGIS server (start one with: eval $(.ci/postgis start))")
    return PG_URL


def _sql(url, *statements, params=None):
    from psycopg import sql

    with contextlib.closing(connect(parse_database(url))) as conn:
        rows = None
        for s in statements:
            cur = conn.execute(s if not isinstance(s, str) else sql.SQL(s), params)
            if cur.description is not None:
                rows = cur.fetchall()
        conn.commit()
        return rows


@pytest.fixture
def schema(pg_url):
    """A fresh schema for one test, dropped afterwards (its name needs quoting)."""
    from psycopg import sql

    name = f"t {uuid.uuid4().hex[:8]}"
    yield name
    _sql(
        pg_url, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
    )


def load(url, schema, tables):
    """Load frames as tables, as an office loads its layers (ogr2ogr, shp2pgsql)."""
    from psycopg import sql

    with contextlib.closing(connect(parse_database(url))) as conn:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
            for name, frame in tables.items():
                write_frame(cur, schema, name, frame, promote=False)
        conn.commit()


def demo_manifest(tmp_path, replace):
    """A copy of the demo project, some layers replaced by PostGIS tables."""
    folder = tmp_path / "xinbei"
    shutil.copytree(DEMO.parent, folder)
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace('"../../rules/', f'"{REPO / "rules"}/')
    text = re.sub(r'^out = ".*"$', f'out = "{tmp_path / "out"}"', text, flags=re.M)
    for name, (url, table) in replace.items():
        section = re.search(rf"^\[layers\.{name}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
        assert section is not None
        body = section.group(1)
        body = re.sub(r"^path = .*$", f'path = "{url}"', body, flags=re.M)
        body = re.sub(r"^(layer|encoding) = .*\n", "", body, flags=re.M)
        body = body.replace(f'path = "{url}"', f'path = "{url}"\nlayer = "{table}"')
        text = text[: section.start(1)] + body + text[section.end(1) :]
    path = folder / "project.toml"
    path.write_text(text, encoding="utf-8")
    return path


DEMO_FILES = {
    "tugui": ("tugui.shp", None, "GBK"),
    "chenggui": ("chenggui.gpkg", "kgdk", None),
    "eco_redline": ("eco_redline.shp", None, None),
}


@pytest.fixture(scope="module")
def demo_runs(pg_url, tmp_path_factory):
    """The demo checked from files, and with 土规, 城规 and the red line in PostGIS (--db)."""
    from psycopg import sql

    schema = f"plans {uuid.uuid4().hex[:6]}"
    out_schema = f"out {uuid.uuid4().hex[:6]}"
    load(
        pg_url,
        schema,
        {
            name: pyogrio.read_dataframe(DEMO.parent / f, layer=layer, encoding=enc)
            for name, (f, layer, enc) in DEMO_FILES.items()
        },
    )
    tmp = tmp_path_factory.mktemp("pg")
    manifest = demo_manifest(
        tmp, {name: (pg_url, f"{schema}.{name}") for name in DEMO_FILES}
    )
    files = run("check", DEMO, "--out", tmp / "files", "--no-map", "-q")
    assert files.exit_code == 0, files.output
    db_url = f"{pg_url}?schema={out_schema}"
    from_db = run("check", manifest, "--out", tmp / "db", "--no-map", "--db", db_url)
    yield files, from_db, tmp, db_url, manifest
    _sql(
        pg_url,
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)),
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(out_schema)),
    )


def test_demo_from_postgis_gives_the_figures_of_the_files(demo_runs):
    files, from_db, tmp, _, _ = demo_runs
    assert from_db.exit_code == 0, from_db.output
    a, b = tmp / "files", tmp / "db"
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()
    assert (a / "by_unit.csv").read_bytes() == (b / "by_unit.csv").read_bytes()
    assert (a / "conflicts.gpkg").read_bytes() == (b / "conflicts.gpkg").read_bytes()
    run_db = json.loads((b / "run.json").read_text(encoding="utf-8"))
    run_files = json.loads((a / "run.json").read_text(encoding="utf-8"))
    for name in DEMO_FILES:
        db_stats = run_db["counts"]["layers"][name]
        file_stats = run_files["counts"]["layers"][name]
        assert db_stats["driver"].startswith("PostgreSQL")
        assert db_stats["sha256"]
        assert file_stats["sha256"] is None
        for key in ("rows", "features", "filtered_out", "repaired"):
            assert db_stats[key] == file_stats[key], (name, key)
        if name != "chenggui":  # geometry types are counted on the rows read
            assert db_stats["geometry_types"] == file_stats["geometry_types"]
    # 城规's where = status in [planned, approved] was decided by the server
    assert run_db["counts"]["layers"]["chenggui"]["filtered_out"] > 0


def _assert_same_rows(table: gpd.GeoDataFrame, gpkg: gpd.GeoDataFrame) -> None:
    """A table read back from PostGIS holds the GeoPackage's rows: values and exact geometries."""
    pd.testing.assert_frame_equal(
        pd.DataFrame(table.drop(columns="geometry")),
        pd.DataFrame(gpkg.drop(columns="geometry")),
        check_dtype=False,
    )
    assert shapely.equals_exact(
        table.geometry.to_numpy(), gpkg.geometry.to_numpy(), tolerance=0
    ).all()


def test_db_tables_equal_the_files_and_a_second_run_replaces_them(demo_runs, pg_url):
    _, from_db, tmp, db_url, manifest = demo_runs
    assert from_db.exit_code == 0, from_db.output
    out = tmp / "db"
    conflicts = read_back(db_url, "conflicts")
    gpkg = pyogrio.read_dataframe(out / "conflicts.gpkg", layer="conflicts")
    assert conflicts.crs.to_epsg() == 4549
    _assert_same_rows(conflicts, gpkg)
    for name in ("summary", "by_unit", "units"):
        table = read_back(db_url, name)
        csv = pd.read_csv(out / f"{name}.csv", encoding="utf-8-sig")
        pd.testing.assert_frame_equal(table, csv, check_dtype=False)
    db = parse_database(db_url)
    indexes = _sql(
        pg_url,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'conflicts'",
        params=(db.schema,),
    )
    assert any("USING gist (geom)" in row[0] for row in indexes)
    runs = _sql(
        pg_url,
        f'SELECT command, tables, run FROM "{db.schema}".runs ORDER BY run_id',
    )
    assert [r[0] for r in runs] == ["check"]
    assert runs[0][2]["counts"]["pieces"] == len(gpkg)
    # a second run (one rule) replaces every table in one go and adds a row to runs
    second = run(
        "check", manifest, "--out", tmp / "db2", "--no-map", "--only", "ECO-01",
        "--db", db_url, "-q",
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    replaced = read_back(db_url, "conflicts")
    assert set(replaced["rule_id"]) == {"ECO-01"}
    assert len(read_back(db_url, "summary")) == 1
    runs = _sql(pg_url, f'SELECT count(*) FROM "{db.schema}".runs')
    assert runs[0][0] == 2
    tables = _sql(
        pg_url,
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
        params=(db.schema,),
    )
    assert [t[0] for t in tables] == [
        "by_unit",
        "conflicts",
        "runs",
        "summary",
        "units",
    ]


def test_a_tiled_run_sends_its_staged_pieces_in_batches(pg_url, schema, tmp_path):
    """A check of many tiles writes conflicts from its staged geometries, as the file holds them."""
    import multiplan
    from multiplan.piecestore import PieceStore

    project = read_project(DEMO)
    result = multiplan.check(project, only=["ECO-01", "FARM-02"], tile_size=3000)
    assert isinstance(result.geometries, PieceStore)
    url = f"{pg_url}?schema={schema}"
    result.write(tmp_path / "out", with_map=False, db=url)
    table = read_back(url, "conflicts")
    gpkg = pyogrio.read_dataframe(
        tmp_path / "out" / "conflicts.gpkg", layer="conflicts"
    )
    assert len(table) == len(gpkg) == len(result.attributes) > 0
    _assert_same_rows(table, gpkg)
    assert set(table.geom_type) == {"MultiPolygon"}


def test_a_killed_run_leaves_the_previous_tables(pg_url, schema, tmp_path):
    """The tables are committed after the files are in place; a run killed before leaves both as they were."""
    db_url = f"{pg_url}?schema={schema}"
    project = _small_project(tmp_path)
    first = run("check", project, "--no-map", "--db", db_url, "-q")
    assert first.exit_code == 0, first.output
    before = read_back(db_url, "conflicts")
    env = {**os.environ, "MULTIPLAN_TEST_KILL": "staging"}
    proc = subprocess.run(
        [sys.executable, "-m", "multiplan", "check", str(project), "--no-map",
         "--only", "R1", "--db", db_url, "-q"],
        capture_output=True, env=env, check=False,
    )  # fmt: skip
    # the supervisor passes the child's death on as a shell does: 128 + SIGKILL
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr
    after = read_back(db_url, "conflicts")
    pd.testing.assert_frame_equal(
        pd.DataFrame(before.drop(columns="geometry")),
        pd.DataFrame(after.drop(columns="geometry")),
    )
    runs = _sql(pg_url, f'SELECT count(*) FROM "{schema}".runs')
    assert runs[0][0] == 1


def _small_project(tmp_path, a_path=None, b_path=None, extra=""):
    """Two plans crossing: R1 intersect (a 0101 against b R), R2 against a buffer."""
    if a_path is None:
        gpd.GeoDataFrame(
            {"code": ["a1", "a2"], "DLBM": ["0101", "0701"]},
            geometry=[
                shapely.box(X0, Y0, X0 + 100, Y0 + 100),
                shapely.box(X0 + 100, Y0, X0 + 200, Y0 + 100),
            ],
            crs="EPSG:4549",
        ).to_file(tmp_path / "a.gpkg")
        a_path = tmp_path / "a.gpkg"
    if b_path is None:
        gpd.GeoDataFrame(
            {"code": ["b1"], "YDDM": ["R2"]},
            geometry=[shapely.box(X0 + 50, Y0 + 50, X0 + 150, Y0 + 150)],
            crs="EPSG:4549",
        ).to_file(tmp_path / "b.gpkg")
        b_path = tmp_path / "b.gpkg"
    (tmp_path / "rules.toml").write_text(
        """[[rule]]
id = "R1"
title = "耕地上的居住用地"
severity = "high"
relation = "intersect"
a = { layer = "a", class = "0101" }
b = { layer = "b", class = "07" }
[[rule]]
id = "R2"
title = "居住与居住"
severity = "low"
relation = "intersect"
a = { layer = "a", class = "0701" }
b = { layer = "b", class = "07" }
""",
        encoding="utf-8",
    )
    path = tmp_path / "project.toml"
    path.write_text(
        f"""[project]
name = "small"
crs = "EPSG:4549"
rules = ["rules.toml"]
out = "out"
[layers.a]
path = "{a_path}"
class_field = "DLBM"
classification = "gbt21010"
id_field = "code"
[layers.b]
path = "{b_path}"
class_field = "YDDM"
classification = "gb50137"
id_field = "code"
{extra}""",
        encoding="utf-8",
    )
    return path


def test_wrong_password_is_exit_2_naming_host_and_database(pg_url, tmp_path):
    db = parse_database(pg_url)
    project = _small_project(tmp_path)
    r = run(
        "check", project, "--no-map", "--db", pg_url,
        env={"PGPASSWORD": "not-the-password-7q"},
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert line.count("\n") == 0
    assert f"{db.host}:{db.port}" in line
    assert db.dbname in line
    assert "password authentication failed" in line
    assert "not-the-password-7q" not in line
    assert not (
        tmp_path / "out"
    ).exists()  # nothing was written: checked before the work
    # nor is a wrong password written in the URL
    inline = pg_url.replace(f"//{db.user}@", f"//{db.user}:S3cret-inline-pw@")
    r = run("check", project, "--no-map", "--db", inline, env={"PGPASSWORD": ""})
    assert r.exit_code == 2
    assert "password authentication failed" in r.output
    assert "S3cret-inline-pw" not in r.output


def test_an_inline_password_is_never_shown(pg_url, schema, tmp_path):
    password = os.environ["PGPASSWORD"]
    db = parse_database(pg_url)
    inline = pg_url.replace(f"//{db.user}@", f"//{db.user}:{password}@")
    load(pg_url, schema, {"b": gpd.read_file(_b_file(tmp_path))})
    project = _small_project(tmp_path, b_path=inline)
    text = project.read_text(encoding="utf-8").replace(
        f'path = "{inline}"', f'path = "{inline}"\nlayer = "{schema}.b"'
    )
    project.write_text(text, encoding="utf-8")
    r = run(
        "check", project, "-vv", "--db", f"{inline}?schema={schema}",
        env={"PGPASSWORD": "", "MULTIPLAN_COMMAND": None},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert password not in r.output
    out = tmp_path / "out"
    for f in out.iterdir():
        if f.is_file():
            assert password.encode() not in f.read_bytes(), f.name
    runs = _sql(pg_url, f'SELECT run::text FROM "{schema}".runs')
    assert password not in runs[0][0]
    assert "***" in runs[0][0]  # the command line, masked
    spec = read_project(project).layers["b"]
    assert password not in repr(spec)
    assert password not in spec.source


def _b_file(tmp_path):
    sub = tmp_path / "src"
    sub.mkdir(exist_ok=True)
    gpd.GeoDataFrame(
        {"code": ["b1"], "YDDM": ["R2"]},
        geometry=[shapely.box(X0 + 50, Y0 + 50, X0 + 150, Y0 + 150)],
        crs="EPSG:4549",
    ).to_file(sub / "b.gpkg")
    return sub / "b.gpkg"


HOSTILE_SCHEMA = '规划"; DROP TABLE sentinel; --'
HOSTILE_TABLE = "用地'); DELETE FROM sentinel; --.v2"


def test_hostile_table_and_column_names_are_only_names(pg_url, tmp_path):
    from psycopg import sql

    _sql(pg_url, "CREATE TABLE IF NOT EXISTS public.sentinel (x int)")
    _sql(
        pg_url, "DELETE FROM public.sentinel", "INSERT INTO public.sentinel VALUES (1)"
    )
    hostile = gpd.GeoDataFrame(
        {
            '编号"; --': ["b1", "b2", "b3"],
            "用地;代码": ["R2", "R2", "A33"],
            "状态'": ["规划'; DROP TABLE sentinel; --", "draft", None],
        },
        geometry=[
            shapely.box(X0 + 50, Y0 + 50, X0 + 150, Y0 + 150),
            shapely.box(X0 + 10, Y0 + 10, X0 + 20, Y0 + 20),
            shapely.box(X0 + 60, Y0 + 60, X0 + 70, Y0 + 70),
        ],
        crs="EPSG:4549",
    )
    hostile.to_file(tmp_path / "hostile.gpkg")
    try:
        load(pg_url, HOSTILE_SCHEMA, {HOSTILE_TABLE: hostile})
        where = (
            'where = { field = "状态\'", in = ["规划\'; DROP TABLE sentinel; --"] }\n'
        )

        def layer_b(path, table=None):
            lines = [f"[layers.b]\npath = {json.dumps(str(path), ensure_ascii=False)}"]
            if table is not None:
                lines.append(f"layer = {json.dumps(table, ensure_ascii=False)}")
            lines += [
                'class_field = "用地;代码"',
                'classification = "gb50137"',
                "id_field = '编号\"; --'",
                where,
            ]
            return "\n".join(lines)

        results = {}
        for kind, b in (
            ("db", layer_b(pg_url, f"{HOSTILE_SCHEMA}.{HOSTILE_TABLE}")),
            ("file", layer_b(tmp_path / "hostile.gpkg")),
        ):
            folder = tmp_path / kind
            folder.mkdir()
            project = _small_project(folder)
            text = project.read_text(encoding="utf-8")
            text = text[: text.index("[layers.b]")] + b
            project.write_text(text, encoding="utf-8")
            r = run("check", project, "--no-map", "-q")
            assert r.exit_code == 0, r.output
            results[kind] = folder / "out"
        for name in ("summary.csv", "conflicts.gpkg"):
            assert (results["db"] / name).read_bytes() == (
                results["file"] / name
            ).read_bytes()
        pieces = pyogrio.read_dataframe(
            results["db"] / "conflicts.gpkg", layer="conflicts"
        )
        assert set(pieces["b_id"]) == {"b1"}  # the filter held: b2 is draft, b3 null
        assert _sql(pg_url, "SELECT count(*) FROM public.sentinel")[0][0] == 1
    finally:
        _sql(
            pg_url,
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(HOSTILE_SCHEMA)
            ),
        )


def test_filters_decided_by_the_server_as_by_pandas(pg_url, schema, tmp_path):
    """Every operator on numbers, text and numbers held as text, with NULLs, both ways."""
    frame = gpd.GeoDataFrame(
        {
            "n": pd.array([1, 5, None, 9, 3], dtype="Int64"),
            "x": [0.5, np.nan, 2.5, 7.0, 1.0],
            "s": ["a", "b", None, "c", "a"],
            "t": ["950", "1000", "20", None, "1000"],
        },
        geometry=[shapely.box(X0 + i, Y0, X0 + i + 1, Y0 + 1) for i in range(5)],
        crs="EPSG:4549",
    )
    frame.to_file(tmp_path / "f.gpkg")
    load(pg_url, schema, {"f": frame})
    filters = [
        {"field": "n", "gt": 2},
        {"field": "n", "not_in": [5]},
        {"field": "x", "le": 1.0},
        {"field": "x", "ne": 7},
        {"field": "s", "in": ["a", "c"]},
        {"field": "s", "ne": "a"},
        {"field": "s", "not_in": ["b"]},
        {"field": "s", "lt": "b"},
        {"field": "t", "ge": 1000},
        {"field": "t", "in": [1000]},
    ]
    for i, where in enumerate(filters):
        ids = {}
        for kind, path, layer in (
            ("file", tmp_path / "f.gpkg", None),
            ("db", pg_url, f"{schema}.f"),
        ):
            folder = tmp_path / f"{kind}{i}"
            folder.mkdir()
            m = folder / "p.toml"
            lines = ["[project]", 'name = "f"', 'crs = "EPSG:4549"', "[layers.f]"]
            lines.append(f"path = {json.dumps(str(path))}")
            if layer:
                lines.append(f"layer = {json.dumps(layer)}")
            lines.append(f"where = {_inline(where)}")
            m.write_text("\n".join(lines) + "\n", encoding="utf-8")
            project = read_project(m)
            got = read_layer(project.layers["f"], project)
            ids[kind] = sorted(shapely.bounds(got.frame.geometry.to_numpy())[:, 0])
            if kind == "db":
                assert got.stats.filtered_out == 5 - len(got.frame), where
        assert ids["db"] == ids["file"], where


def _inline(table):
    parts = []
    for k, v in table.items():
        parts.append(f"{k} = {json.dumps(v)}")
    return "{ " + ", ".join(parts) + " }"


def test_a_window_reads_through_the_index_with_the_same_ids(pg_url, schema, tmp_path):
    """Reading near a box (site screening) gives the features a file read gives."""
    frame = gpd.GeoDataFrame(
        {"v": list(range(30))},
        geometry=[
            shapely.box(X0 + 100 * i, Y0, X0 + 100 * i + 50, Y0 + 50) for i in range(30)
        ],
        crs="EPSG:4549",
    ).to_crs("EPSG:4490")
    frame.to_file(tmp_path / "w.gpkg")
    load(pg_url, schema, {"w": frame})
    got = {}
    for kind, path, layer in (
        ("file", tmp_path / "w.gpkg", None),
        ("db", pg_url, f"{schema}.w"),
    ):
        m = tmp_path / f"{kind}.toml"
        lines = ["[project]", 'name = "w"', 'crs = "EPSG:4549"', "[layers.w]"]
        lines.append(f"path = {json.dumps(str(path))}")
        if layer:
            lines.append(f"layer = {json.dumps(layer)}")
        m.write_text("\n".join(lines) + "\n", encoding="utf-8")
        project = read_project(m)
        near = (X0 + 520, Y0 + 10, X0 + 880, Y0 + 20)
        got[kind] = read_layer(project.layers["w"], project, near=near).frame
    # no id_field: a file's ids are row numbers, a table's its primary key (fid 1, 2, …)
    assert sorted(int(i) for i in got["file"].index) == [5, 6, 7, 8]
    assert sorted(int(i) - 1 for i in got["db"].index) == [5, 6, 7, 8]
    assert sorted(got["db"]["v"]) == sorted(got["file"]["v"])


def test_a_window_goes_back_through_the_layers_pipeline(pg_url, schema, tmp_path):
    """The box near a site reaches the table through the layer's own transformation."""
    frame = gpd.GeoDataFrame(
        {"v": list(range(30))},
        geometry=[
            shapely.box(X0 + 100 * i, Y0, X0 + 100 * i + 50, Y0 + 50) for i in range(30)
        ],
        crs="EPSG:2385",  # Xian 1980, brought over by a published shift
    )
    load(pg_url, schema, {"x80": frame})
    m = tmp_path / "x80.toml"
    m.write_text(
        "\n".join(
            [
                "[project]",
                'name = "w"',
                'crs = "EPSG:4549"',
                "[layers.w]",
                f"path = {json.dumps(pg_url)}",
                f"layer = {json.dumps(f'{schema}.x80')}",
                'transformation = "+proj=pipeline +step +proj=affine +xoff=250"',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    project = read_project(m)
    near = (X0 + 770, Y0 + 10, X0 + 1130, Y0 + 20)  # features 5 to 8, 250 m east
    got = read_layer(project.layers["w"], project, near=near).frame
    assert sorted(got["v"]) == [5, 6, 7, 8]


def test_fuse_writes_onemap_and_differences(pg_url, schema, tmp_path):
    (tmp_path / "p").mkdir()
    folder = tmp_path / "p"
    boxes = {
        "cg": [("c1", "R21", (0, 0, 150, 100)), ("c2", "E2", (150, 0, 300, 100))],
        "tg": [("t1", "0701", (0, 0, 100, 100)), ("t2", "0101", (100, 0, 300, 100))],
    }
    for name, rows in boxes.items():
        gpd.GeoDataFrame(
            {"ID": [r[0] for r in rows], "CODE": [r[1] for r in rows]},
            geometry=[
                shapely.box(X0 + r[2][0], Y0 + r[2][1], X0 + r[2][2], Y0 + r[2][3])
                for r in rows
            ],
            crs="EPSG:4549",
        ).to_file(folder / f"{name}.gpkg")
    (folder / "p.toml").write_text(
        f"""[project]
name = "f"
crs = "EPSG:4549"
out = "out"
db = "{pg_url}?schema={schema}"
[layers.chenggui]
path = "cg.gpkg"
class_field = "CODE"
classification = "gb50137"
id_field = "ID"
[layers.tugui]
path = "tg.gpkg"
class_field = "CODE"
classification = "gbt21010"
id_field = "ID"
[fusion]
priority = ["chenggui", "tugui"]
compare = ["chenggui", "tugui"]
""",
        encoding="utf-8",
    )
    r = run("fuse", folder / "p.toml", "-q")
    assert r.exit_code == 0, r.output
    db_url = f"{pg_url}?schema={schema}"
    for table, file in (("onemap", "onemap.gpkg"), ("differences", "differences.gpkg")):
        got = read_back(db_url, table)
        want = pyogrio.read_dataframe(folder / "out" / file)
        assert len(got) == len(want) > 0
        assert got.geometry.area.sum() == pytest.approx(want.geometry.area.sum())
        assert list(got.columns) == list(want.columns)
    runs = _sql(pg_url, f'SELECT command, tables FROM "{schema}".runs')
    assert runs == [("fuse", ["onemap", "differences"])]


def test_a_user_who_may_not_create_tables_is_told_before_the_work(pg_url, tmp_path):
    from psycopg import sql

    role = f"reader_{uuid.uuid4().hex[:6]}"
    secret = uuid.uuid4().hex
    db = parse_database(pg_url)
    _sql(
        pg_url,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(secret)
        ),
        sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(db.dbname)
        ),
    )
    try:
        url = pg_url.replace(f"//{db.user}@", f"//{role}@")
        r = run(
            "check", _small_project(tmp_path), "--no-map", "--db", f"{url}?schema=nope",
            env={"PGPASSWORD": secret},
        )  # fmt: skip
        assert r.exit_code == 2, r.output
        assert 'does not allow as user "' + role in r.output
        assert db.dbname in r.output
        assert secret not in r.output
        assert not (tmp_path / "out").exists()
    finally:
        _sql(pg_url, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_missing_table_lists_the_tables_there_are(pg_url, schema, tmp_path):
    load(pg_url, schema, {"b": gpd.read_file(_b_file(tmp_path))})
    project = _small_project(tmp_path, b_path=pg_url)
    text = project.read_text(encoding="utf-8").replace(
        f'path = "{pg_url}"', f'path = "{pg_url}"\nlayer = "{schema}.nope"'
    )
    project.write_text(text, encoding="utf-8")
    r = run("check", project, "--no-map")
    assert r.exit_code == 2
    assert f"no spatial table '{schema}.nope'" in r.output
    assert f"{schema}.b" in r.output


# --------------------------------------------------------------- no server needed


def test_urls_parse_and_passwords_are_masked():
    db = parse_database("postgresql://planner:pw%40x@db.local:5433/onemap?schema=s1")
    assert (db.host, db.port, db.dbname, db.user, db.schema) == (
        "db.local", "5433", "onemap", "planner", "s1",
    )  # fmt: skip
    assert "pw" not in repr(db)
    assert "pw" not in db.shown
    assert "schema" not in db.conninfo  # libpq does not know the parameter
    assert mask("PG:dbname=x password='a b'") == "PG:dbname=x password=***"
    assert parse_database("postgresql://u@h/d").schema == "multiplan"
    with pytest.raises(DatabaseError):
        parse_database("postgresql://u@h/d?schema=")


def test_an_unreachable_server_is_exit_2_naming_it(tmp_path):
    project = _small_project(tmp_path)
    r = run(
        "check", project, "--db", "postgresql://planner:hunter2@127.0.0.1:9/onemap",
    )  # fmt: skip
    assert r.exit_code == 2
    assert "127.0.0.1:9" in r.output
    assert '"onemap"' in r.output
    assert "hunter2" not in r.output
    assert isinstance(DatabaseError("x"), InputError)


def test_db_must_be_a_postgresql_url(tmp_path):
    r = run("check", _small_project(tmp_path), "--db", "sqlite:///x.db")
    assert r.exit_code == 2
    assert "postgresql://" in r.output


def test_the_manifest_repr_masks_a_layer_password(tmp_path):
    project = _small_project(tmp_path, b_path="postgresql://u:topsecret@127.0.0.1:9/d")
    text = project.read_text(encoding="utf-8").replace(
        'topsecret@127.0.0.1:9/d"', 'topsecret@127.0.0.1:9/d"\nlayer = "s.t"'
    )
    project.write_text(text, encoding="utf-8")
    p = read_project(project)
    assert "topsecret" not in repr(p)
    assert "topsecret" not in p.layers["b"].source
