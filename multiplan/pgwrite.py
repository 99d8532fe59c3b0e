"""PostGIS as a sink: a run's tables written in one transaction (SPEC §13).

``--db postgresql://…/DB?schema=NAME`` (or ``[project] db``) writes the tables of
a run (:meth:`multiplan.rulecheck.CheckResult.tables`,
:meth:`multiplan.onemap.FuseResult.tables`) and a row of ``runs``. Names are
quoted identifiers, values are bound or copied, never pasted into SQL.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from multiplan.piecestore import cell_texts
from multiplan.postgis import (
    Database,
    DatabaseError,
    as_user,
    connect,
    parse_database,
    refused,
)

if TYPE_CHECKING:
    import psycopg

    from multiplan.piecestore import Geometries

logger = logging.getLogger(__name__)

GEOMETRY_COLUMN = "geom"
"""The geometry column of every output table."""
COPY_ROWS = 65_536
"""Rows sent to COPY per batch (geometries of staged pieces are read a batch at a time)."""


@dataclass(frozen=True)
class StagedTable:
    """A table whose geometries are read a batch at a time (the pieces of a tiled check).

    ``attributes`` are its columns; ``geometries`` a
    :class:`~multiplan.piecestore.Geometries` in the same order; ``crs`` theirs.
    """

    attributes: pd.DataFrame
    geometries: Geometries
    crs: CRS


Table = pd.DataFrame | StagedTable
"""What a database table is written from: a (Geo)DataFrame, or staged pieces."""


def preflight(db: Database) -> None:
    """Check before a run that the database takes its tables: reachable, schema writable.

    Raises
    ------
    DatabaseError
        When the server cannot be reached, PostGIS is not installed, or the user
        may not create tables in the schema.
    """
    import psycopg

    with contextlib.closing(connect(db)) as conn:
        try:
            has_postgis = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'postgis'"
            ).fetchone()
            if has_postgis is None:
                raise DatabaseError(
                    f"{db.where} has no PostGIS",
                    path=db.shown,
                    hint="Run CREATE EXTENSION postgis in the database (or ask its owner to)",
                )
            row = conn.execute(
                "SELECT has_schema_privilege(n.oid, 'CREATE') FROM pg_namespace n WHERE nspname = %s",
                (db.schema,),
            ).fetchone()
            if row is None:
                can = conn.execute(
                    "SELECT has_database_privilege(current_database(), 'CREATE')"
                ).fetchone()
                allowed = bool(can and can[0])
                doing = f'to create the schema "{db.schema}"'
            else:
                allowed = bool(row[0])
                doing = f'to create tables in the schema "{db.schema}"'
            if not allowed:
                raise DatabaseError(
                    f"{db.where} does not allow{as_user(db)} {doing[3:]}",
                    path=db.shown,
                    hint="Ask the database's owner for CREATE on the schema, or name another with ?schema=",
                )
        except psycopg.Error as exc:
            raise refused(db, exc, "to be checked") from exc


@contextlib.contextmanager
def staged_tables(
    db: Database,
    tables: Mapping[str, Table],
    run: Mapping[str, Any],
    *,
    command: str,
) -> Iterator[None]:
    """Write ``tables`` and a ``runs`` row in one transaction, committed when the block ends.

    Every table is dropped and created anew (with a GiST index on ``geom``
    where it has geometry) inside the transaction, so that a reader sees the
    previous run's tables until the commit and this run's after it, never a
    mix. An exception in the block rolls everything back.

    Raises
    ------
    DatabaseError
        When the server cannot be reached or refuses a step.
    """
    import psycopg

    conn = connect(db)
    try:
        try:
            with conn.cursor() as cur:
                _write_all(cur, db.schema, tables, run, command)
        except psycopg.Error as exc:
            conn.rollback()
            raise refused(db, exc, f'to write the tables in "{db.schema}"') from exc
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        try:
            conn.commit()
        except psycopg.Error as exc:
            raise refused(db, exc, "to commit the run's tables") from exc
        logger.info("wrote %s to %s, schema %s", ", ".join(tables), db.shown, db.schema)
    finally:
        conn.close()


@contextlib.contextmanager
def maybe_staged(
    db: str | Database | None,
    tables: Callable[[], Mapping[str, Table]],
    run: Mapping[str, Any],
    *,
    command: str,
) -> Iterator[None]:
    """:func:`staged_tables` when ``db`` names a database, else nothing.

    ``tables`` is called only when there is a database to write to.
    """
    if db is None:
        yield
        return
    target = db if isinstance(db, Database) else parse_database(db)
    with staged_tables(target, tables(), run, command=command):
        yield


def write_tables(
    db: Database | str,
    tables: Mapping[str, Table],
    run: Mapping[str, Any],
    *,
    command: str,
) -> None:
    """Write ``tables`` and a ``runs`` row into a database in one transaction.

    Parameters
    ----------
    db
        A :class:`Database`, or a ``postgresql://…/DB?schema=NAME`` URL.
    tables
        Table name → frame; a GeoDataFrame gets a ``geom`` column with a GiST index.
    run
        The run's record (``run.json``), stored as ``jsonb``.
    command
        The command that made the run (``check``, ``fuse``).
    """
    target = db if isinstance(db, Database) else parse_database(db)
    with staged_tables(target, tables, run, command=command):
        pass


def _write_all(
    cur: psycopg.Cursor[Any],
    schema: str,
    tables: Mapping[str, Table],
    run: Mapping[str, Any],
    command: str,
) -> None:
    from psycopg import sql
    from psycopg.types.json import Jsonb

    cur.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
    )
    for name, frame in tables.items():
        write_frame(cur, schema, name, frame)
    runs = sql.Identifier(schema, "runs")
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (run_id bigserial PRIMARY KEY, "
            "created timestamptz NOT NULL DEFAULT now(), command text NOT NULL, "
            "tables text[] NOT NULL, run jsonb NOT NULL)"
        ).format(runs)
    )
    cur.execute(
        sql.SQL("INSERT INTO {} (command, tables, run) VALUES (%s, %s, %s)").format(
            runs
        ),
        (command, list(tables), Jsonb(_plain(run))),
    )


def _plain(obj: Any) -> Any:
    """Return ``obj`` with numpy scalars and paths made JSON's own types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    return str(obj)


def _pg_type(col: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(col):
        return "boolean"
    if pd.api.types.is_integer_dtype(col):
        return "bigint"
    if pd.api.types.is_float_dtype(col):
        return "double precision"
    if pd.api.types.is_datetime64_any_dtype(col):
        return "timestamptz"
    return "text"


def write_frame(
    cur: psycopg.Cursor[Any],
    schema: str,
    name: str,
    frame: Table,
    *,
    promote: bool = True,
) -> None:
    """Replace the table ``schema.name`` with ``frame`` (in the cursor's transaction).

    A GeoDataFrame's geometry becomes ``geom geometry(Geometry, SRID)`` with a
    GiST index; every table gets ``fid``, 1, 2, … as its primary key, as a
    GeoPackage has. Text, numbers, booleans and times keep their types; NaN
    becomes NULL. Names are quoted identifiers whatever they hold. With
    ``promote`` (the default) polygons are written as multipolygons, as a
    GeoPackage layer holds them; without, every geometry is kept as it is.
    A :class:`StagedTable` is read and sent :data:`COPY_ROWS` rows at a time.
    """
    from psycopg import sql

    relation = sql.Identifier(schema, name)
    staged = isinstance(frame, StagedTable)
    attributes = frame.attributes if isinstance(frame, StagedTable) else frame
    geometry_name = frame.geometry.name if isinstance(frame, gpd.GeoDataFrame) else None
    attrs = [c for c in attributes.columns if c != geometry_name]
    defs: list[sql.Composable] = [sql.SQL("fid bigint PRIMARY KEY")]
    defs += [
        sql.SQL("{} {}").format(
            sql.Identifier(str(c)), sql.SQL(_pg_type(attributes[c]))
        )
        for c in attrs
    ]
    crs = frame.crs if isinstance(frame, StagedTable | gpd.GeoDataFrame) else None
    has_geometry = staged or geometry_name is not None
    srid = (CRS.from_user_input(crs).to_epsg() or 0) if crs is not None else 0
    kind = "Geometry"
    if has_geometry:
        if isinstance(frame, StagedTable):
            types = set(frame.geometries.types()) if len(frame.geometries) else set()
        else:
            present = frame.geometry.array[~frame.geometry.isna().to_numpy()]
            types = set(np.asarray(present.geom_type, dtype=object).tolist())
        if promote and types and types <= {"Polygon", "MultiPolygon"}:
            kind = "MultiPolygon"
        defs.append(
            sql.SQL("{} geometry({}, {})").format(
                sql.Identifier(GEOMETRY_COLUMN), sql.SQL(kind), sql.Literal(srid)
            )
        )
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(relation))
    cur.execute(
        sql.SQL("CREATE TABLE {} ({})").format(relation, sql.SQL(", ").join(defs))
    )
    names = [sql.Identifier("fid")] + [sql.Identifier(str(c)) for c in attrs]
    if has_geometry:
        names.append(sql.Identifier(GEOMETRY_COLUMN))
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        relation, sql.SQL(", ").join(names)
    )
    n = len(attributes)
    with cur.copy(copy_sql) as copy:
        for start in range(0, n, COPY_ROWS):
            stop = min(start + COPY_ROWS, n)
            part = attributes.iloc[start:stop]
            columns: list[Sequence[Any]] = [range(start + 1, stop + 1)]
            columns += [_cells(part[c]) for c in attrs]
            if isinstance(frame, StagedTable):
                geoms = np.asarray(
                    shapely.from_wkb(frame.geometries.wkb(start, stop)), dtype=object
                )
            elif geometry_name is not None:
                geoms = np.asarray(part.geometry.array, dtype=object)
            if has_geometry:
                if kind == "MultiPolygon":
                    geoms = _as_multi(geoms)[0]
                geoms = shapely.set_srid(geoms, srid)
                columns.append(
                    shapely.to_wkb(geoms, hex=True, include_srid=True).tolist()
                )
            for row in zip(*columns, strict=True):
                copy.write_row(row)
    if has_geometry:
        cur.execute(
            sql.SQL("CREATE INDEX {} ON {} USING GIST ({})").format(
                sql.Identifier(f"{name}_geom_idx"),
                relation,
                sql.Identifier(GEOMETRY_COLUMN),
            )
        )


def _as_multi(geoms: np.ndarray) -> tuple[np.ndarray, str]:
    """Return polygons as multipolygons (as a GeoPackage layer holds them) and the type.

    Layers of polygons and multipolygons are written as ``MultiPolygon`` (what
    GDAL's GeoPackage writer promotes them to); anything else as ``Geometry``.
    """
    present = geoms[~shapely.is_missing(geoms)]
    types = set(shapely.get_type_id(present).tolist())
    if not present.size or not types <= {3, 6}:
        return geoms, "Geometry"
    out = geoms.copy()
    single = ~shapely.is_missing(geoms) & (shapely.get_type_id(geoms) == 3)
    if single.any():
        out[single] = shapely.multipolygons(geoms[single].reshape(-1, 1).tolist())
    return out, "MultiPolygon"


def _cells(col: pd.Series) -> list[Any]:
    """Return a column as Python values, NaN and NaT as ``None``."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return [None if pd.isna(v) else v.to_pydatetime() for v in col]
    if pd.api.types.is_float_dtype(col):
        values = col.to_numpy(dtype=float)
        return [None if math.isnan(v) else v for v in values.tolist()]
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_integer_dtype(col):
        return [None if v is pd.NA else v for v in col.tolist()]
    return cell_texts(col)


def read_back(db: Database | str, name: str) -> pd.DataFrame:
    """Return an output table as a frame (a GeoDataFrame when it has ``geom``), by ``fid``.

    Parameters
    ----------
    db
        A :class:`Database`, or a ``postgresql://…/DB?schema=NAME`` URL.
    name
        ``conflicts``, ``summary``, ``by_unit``, ``units``, ``onemap``, ``differences``.
    """
    from psycopg import sql

    target = db if isinstance(db, Database) else parse_database(db)
    with contextlib.closing(connect(target)) as conn, conn.cursor(binary=True) as cur:
        relation = sql.Identifier(target.schema, name)
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY fid").format(relation))
        assert cur.description is not None
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
    frame: pd.DataFrame = pd.DataFrame.from_records(rows, columns=names)
    frame = frame.drop(columns="fid")
    if GEOMETRY_COLUMN not in frame.columns:
        return frame
    geoms = shapely.from_wkb(frame.pop(GEOMETRY_COLUMN).to_numpy(dtype=object))
    srid = int(shapely.get_srid(geoms[0])) if len(geoms) else 0
    crs = CRS.from_epsg(srid) if srid > 0 else None
    out = gpd.GeoDataFrame(
        frame, geometry=gpd.array.from_shapely(geoms, crs=crs), crs=crs
    )
    return cast("pd.DataFrame", out)
