"""PostGIS as a source of layers and a sink of outputs (SPEC §13), through psycopg 3.

A layer's ``path`` may be ``postgresql://USER@HOST:PORT/DB`` with ``layer =
"schema.table"``; :func:`read_table` reads it as :func:`multiplan.io.read_vector`
reads a file. :mod:`multiplan.pgwrite` writes a run's tables.

Nothing from a manifest or a table is pasted into SQL: names go through
:class:`psycopg.sql.Identifier`, values are bound parameters. Passwords come from
``PGPASSWORD``, ``~/.pgpass`` or a ``service`` (libpq reads them); a password
written in a URL is accepted but masked (:func:`mask`) wherever a URL is shown.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from multiplan import crs as crs_mod
from multiplan.dburl import mask
from multiplan.errors import InputError, LayerError
from multiplan.io import VectorSource

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    from multiplan.filters import Condition, Where
    from multiplan.specs import LayerSpec

logger = logging.getLogger(__name__)

DEFAULT_SCHEMA = "multiplan"
"""The schema ``--db`` writes into when its URL names none."""
DRIVER = "PostgreSQL (psycopg)"
CONNECT_TIMEOUT_S = 10

_NUMERIC = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
_TEXT = ("text", "character varying", "character", "name")
_AS_IS = (*_NUMERIC, *_TEXT, "boolean", "date", "timestamp", "time")


class DatabaseError(InputError):
    """A database cannot be reached, or refuses what multiplan asks of it."""


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database as a URL names it, with the schema to write into.

    ``repr`` and :attr:`shown` never show a password.
    """

    conninfo: str
    """What libpq is given (may hold a password written in the URL)."""
    schema: str
    host: str
    port: str
    dbname: str
    user: str | None
    shown: str
    """The URL as it may be shown: the password masked."""

    def __repr__(self) -> str:
        return f"Database({self.shown!r}, schema={self.schema!r})"

    @property
    def where(self) -> str:
        """Return ``host:port, database "db"`` for messages."""
        return f'PostgreSQL at {self.host}:{self.port}, database "{self.dbname}"'


def parse_database(url: str, *, default_schema: str = DEFAULT_SCHEMA) -> Database:
    """Parse a ``postgresql://`` URL (or a GDAL ``PG:`` conninfo) into a :class:`Database`.

    The query parameter ``schema`` names the schema outputs go to; the others
    (``service``, ``sslmode``, …) are libpq's.

    Raises
    ------
    DatabaseError
        When libpq cannot parse the URL.

    Examples
    --------
    >>> db = parse_database("postgresql://planner@db.local:5433/onemap?schema=run1")
    >>> db.host, db.port, db.dbname, db.user, db.schema
    ('db.local', '5433', 'onemap', 'planner', 'run1')
    >>> parse_database("postgresql://planner:pw@db.local/onemap")
    Database('postgresql://planner:***@db.local/onemap', schema='multiplan')
    """
    import os

    from psycopg.conninfo import conninfo_to_dict

    shown = mask(url)
    schema = default_schema
    if url.startswith("PG:"):
        conninfo = url[3:]
    else:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        schemas = [v for k, v in query if k == "schema"]
        if schemas:
            schema = schemas[-1]
        rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
        conninfo = urllib.parse.urlunsplit(parts._replace(query=rest))
    try:
        params = conninfo_to_dict(conninfo)
    except Exception as exc:
        raise DatabaseError(
            f"not a PostgreSQL URL libpq can read ({_reason(exc, url)})",
            path=shown,
            hint="Write it as postgresql://USER@HOST:PORT/DATABASE",
        ) from exc
    if not schema:
        raise DatabaseError(
            "the schema parameter is empty",
            path=shown,
            hint="Write ?schema=NAME, or leave it out for the schema 'multiplan'",
        )
    service = params.get("service")
    return Database(
        conninfo=conninfo,
        schema=schema,
        host=str(
            params.get("host") or os.environ.get("PGHOST") or service or "localhost"
        ),
        port=str(params.get("port") or os.environ.get("PGPORT") or "5432"),
        dbname=str(
            params.get("dbname")
            or os.environ.get("PGDATABASE")
            or params.get("user")
            or ""
        ),
        user=str(params.get("user") or os.environ.get("PGUSER") or "") or None,
        shown=shown,
    )


def _reason(exc: BaseException, *secrets: str) -> str:
    """Return the first informative line of a libpq error, with no password in it."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    # libpq: 'connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  …'
    text = re.sub(r"^.* failed: (FATAL:\s+)?", "", text)
    text = mask(text)
    for secret in secrets:
        password = urllib.parse.urlsplit(secret).password if "://" in secret else None
        if password:
            text = text.replace(password, "***")
    return text.rstrip(".")


def connect(db: Database) -> psycopg.Connection[Any]:
    """Open a connection (UTF-8 text, a 10 s timeout).

    Raises
    ------
    DatabaseError
        One line naming host, port and database (never the password) when the
        server cannot be reached or refuses the user.
    """
    import psycopg

    try:
        return psycopg.connect(
            db.conninfo,
            connect_timeout=CONNECT_TIMEOUT_S,
            client_encoding="utf8",
            application_name="multiplan",
        )
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot connect to {db.where}{as_user(db)}: {_reason(exc, db.conninfo)}",
            hint="Check host, port and database; give the password in PGPASSWORD or ~/.pgpass, never in the manifest",
        ) from exc


def as_user(db: Database) -> str:
    """Return `` as user "u"`` for messages (empty when no user is named)."""
    return f' as user "{db.user}"' if db.user else ""


def refused(db: Database, exc: BaseException, doing: str) -> DatabaseError:
    """Return the :class:`DatabaseError` for a server's refusal while ``doing``."""
    return DatabaseError(
        f"{db.where} refused {doing}{as_user(db)}: {_reason(exc, db.conninfo)}",
        path=db.shown,
        hint="Ask the database's owner for the right to do it, or use another schema or database",
    )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Table:
    """A spatial table as the catalogue describes it."""

    schema: str
    name: str
    geometry: str
    srid: int
    columns: tuple[tuple[str, str], ...]
    """(name, type) of every column but the geometry, in table order."""
    key: str | None
    """The single-column primary key, if the table has one."""

    @property
    def label(self) -> str:
        """Return ``schema.table`` as a user writes it."""
        return f"{self.schema}.{self.name}"


_TABLES_SQL = """
SELECT f_table_schema, f_table_name, f_geometry_column, srid
FROM geometry_columns
ORDER BY f_table_schema, f_table_name, f_geometry_column
"""

_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_KEY_SQL = """
SELECT a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary AND i.indnatts = 1
"""


def find_table(conn: psycopg.Connection[Any], spec: LayerSpec) -> Table:
    """Find the spatial table a layer names (``schema.table``, or ``table`` in ``public``).

    A name may itself hold dots: every split of ``layer`` at a dot is tried
    against the catalogue.

    Raises
    ------
    LayerError
        When no spatial table has that name, listing those there are, or when
        the table has more than one geometry column.
    """
    spatial = conn.execute(_TABLES_SQL).fetchall()
    layer = spec.layer or ""
    candidates = [("public", layer)] + [
        (layer[:i], layer[i + 1 :]) for i, ch in enumerate(layer) if ch == "."
    ]
    found = [
        row for row in spatial if (row[0], row[1]) in candidates and row[2] is not None
    ]
    if not found:
        names = sorted({f"{s}.{t}" for s, t, _, _ in spatial})
        shown = ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
        raise LayerError(
            f"no spatial table {layer!r} in the database"
            if layer
            else 'a PostGIS layer needs layer = "schema.table"',
            path=spec.source,
            layer=spec.name,
            key=f"layers.{spec.name}.layer",
            hint=f"Spatial tables are: {shown}"
            if names
            else "The database has no spatial table (is PostGIS installed, and the table's geometry typed?)",
        )
    schema, name = found[0][0], found[0][1]
    geoms = [row for row in found if (row[0], row[1]) == (schema, name)]
    if len(geoms) > 1:
        raise LayerError(
            f"the table {schema}.{name} has {len(geoms)} geometry columns ({', '.join(g[2] for g in geoms)})",
            path=spec.source,
            layer=spec.name,
            key=f"layers.{spec.name}.layer",
            hint="Make a view with the one geometry column to check, and name the view",
        )
    geometry, srid = str(geoms[0][2]), int(geoms[0][3] or 0)
    columns = tuple(
        (str(n), str(t))
        for n, t in conn.execute(_COLUMNS_SQL, (schema, name)).fetchall()
        if n != geometry
    )
    keys = conn.execute(_KEY_SQL, (schema, name)).fetchall()
    return Table(
        schema, name, geometry, srid, columns, str(keys[0][0]) if keys else None
    )


def table_crs(conn: psycopg.Connection[Any], srid: int) -> CRS | None:
    """Return the CRS of an SRID from ``spatial_ref_sys`` (``None`` for 0 or unknown)."""
    if srid <= 0:
        return None
    row = conn.execute(
        "SELECT auth_name, auth_srid, srtext FROM spatial_ref_sys WHERE srid = %s",
        (srid,),
    ).fetchone()
    if row is None:
        return None
    auth, code, wkt = row
    if auth and str(auth).upper() == "EPSG" and code:
        return CRS.from_epsg(int(code))
    return CRS.from_wkt(str(wkt)) if wkt else None


def _base_type(pg_type: str) -> str:
    return pg_type.split("(", 1)[0].strip()


def _select_item(name: str, pg_type: str) -> sql.Composable:
    """Return the select-list item of a column: numbers as float8, odd types as text."""
    from psycopg import sql

    base = _base_type(pg_type)
    col = sql.Identifier(name)
    if base == "numeric":
        return sql.SQL("{}::float8").format(col)
    if base == "character" or (base not in _AS_IS and not base.startswith("timestamp")):
        return sql.SQL("{}::text").format(col)
    return col


def pushdown(where: Where, table: Table) -> tuple[list[sql.Composable], list[Any]]:
    """Return the conditions of ``where`` that SQL decides exactly as pandas would.

    Numbers against a numeric column, and text ``eq``/``ne``/``in``/``not_in``
    against a text column, become ``column op %s`` with the value bound; the
    rest is left to :func:`multiplan.filters.where_mask` after reading (which
    is applied to every row anyway, so a condition decided twice does no harm).
    A NULL satisfies no condition, in SQL as in :func:`~multiplan.filters.where_mask`.
    """
    types = {n: _base_type(t) for n, t in table.columns}
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for cond in where.conditions:
        clause = _condition(cond, types.get(cond.field))
        if clause is not None:
            clauses.append(clause[0])
            params.append(clause[1])
    return clauses, params


def _condition(
    cond: Condition, pg_type: str | None
) -> tuple[sql.Composable, Any] | None:
    from psycopg import sql

    values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    col = sql.Identifier(cond.field)
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
    texts = all(isinstance(v, str) for v in values)
    if pg_type in _NUMERIC and numbers:
        left: sql.Composable = sql.SQL("{}::float8").format(col)
        bound: Any = [float(v) for v in values]
        array = sql.SQL("%s::float8[]")
    elif pg_type in _TEXT and texts and cond.op in ("eq", "ne", "in", "not_in"):
        left = sql.SQL("{}::text").format(col)
        bound = list(values)
        array = sql.SQL("%s::text[]")
    else:
        return None
    if cond.op == "in":
        return sql.SQL("{} = ANY({})").format(left, array), bound
    if cond.op == "not_in":
        return sql.SQL("NOT ({} = ANY({}))").format(left, array), bound
    op = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[cond.op]
    return sql.SQL("{} " + op + " %s").format(left), bound[0]


def read_table(
    spec: LayerSpec,
    *,
    near: tuple[float, float, float, float] | None = None,
    working: CRS | None = None,
    pad: float = 0.0,
) -> VectorSource:
    """Read a PostGIS layer's features and attributes as the table holds them.

    The CRS is the table's SRID (from ``geometry_columns``); the filter
    ``where`` is decided by the server where it decides it as pandas would
    (:func:`pushdown`); ids, when the layer names no ``id_field``, are the
    primary key's values (row numbers in physical order for a table without
    one). Text arrives as the server holds it (UTF-8 to us).

    Parameters
    ----------
    spec
        The layer as the manifest describes it (a ``postgresql://`` path).
    near, working, pad
        Read only the features whose bounding boxes meet the box ``near`` (in
        the working CRS ``working``), grown by ``pad``, through the table's
        spatial index.

    Raises
    ------
    DatabaseError
        When the server cannot be reached or refuses the read.
    LayerError
        When the table is not there, is ambiguous or cannot be read.
    """
    import psycopg

    db = parse_database(str(spec.path))
    with contextlib.closing(connect(db)) as conn:
        try:
            table = find_table(conn, spec)
            src_crs = table_crs(conn, table.srid)
            encoding = str(conn.execute("SHOW server_encoding").fetchone()[0])  # type: ignore[index]
            return _read(conn, spec, table, src_crs, encoding, near, working, pad)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise refused(db, exc, f"to read {spec.layer}") from exc
        except psycopg.Error as exc:
            raise LayerError(
                f"PostgreSQL cannot read the table ({_reason(exc, db.conninfo)})",
                path=spec.source,
                layer=spec.name,
                key=f"layers.{spec.name}.layer",
            ) from exc


def _read(
    conn: psycopg.Connection[Any],
    spec: LayerSpec,
    table: Table,
    src_crs: CRS | None,
    encoding: str,
    near: tuple[float, float, float, float] | None,
    working: CRS | None,
    pad: float,
) -> VectorSource:
    from psycopg import sql

    relation = sql.Identifier(table.schema, table.name)
    geom = sql.Identifier(table.geometry)
    names = [n for n, _ in table.columns]
    items = [_select_item(n, t) for n, t in table.columns]
    wkb = sql.SQL(
        "ST_AsBinary(CASE WHEN ST_HasArc({g}) THEN ST_CurveToLine({g}) ELSE {g} END)"
    ).format(g=geom)
    number_rows = spec.id_field is None and table.key is None
    order = (
        sql.SQL("ORDER BY {}").format(sql.Identifier(table.key))
        if table.key is not None
        else sql.SQL("ORDER BY ctid")
    )
    clauses, params = pushdown(spec.where, table)
    box = None
    if near is not None and src_crs is not None and working is not None:
        box = crs_mod.window(
            near, working, src_crs, pad=pad, pipeline=spec.transformation
        )
    if box is not None:  # else the whole table
        clauses.append(
            sql.SQL("{} && ST_MakeEnvelope(%s, %s, %s, %s, %s)").format(geom)
        )
        params.extend([*box, table.srid])
    where = (
        sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
    )
    row_item = sql.SQL("row_number() OVER (ORDER BY ctid) - 1")
    if number_rows:
        # row numbers of the whole table, then the filter: no index for a box here
        inner = sql.SQL("SELECT *, {} AS {} FROM {}").format(
            row_item, sql.Identifier("__multiplan_row"), relation
        )
        relation_sql: sql.Composable = sql.SQL("({}) AS t").format(inner)
        order = sql.SQL("ORDER BY {}").format(sql.Identifier("__multiplan_row"))
        extra = [sql.Identifier("__multiplan_row")]
    else:
        relation_sql = relation
        extra = [sql.Identifier(table.key)] if table.key is not None else []
    query = sql.SQL("SELECT {items} FROM {rel}{where} {order}").format(
        items=sql.SQL(", ").join([*items, wkb, *extra]),
        rel=relation_sql,
        where=where,
        order=order,
    )
    with conn.cursor(binary=True) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
        total = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(relation)
        ).fetchone()
    n = len(names)
    columns = list(zip(*rows, strict=True)) if rows else [()] * (n + 1 + len(extra))
    attrs = pd.DataFrame(
        {
            name: pd.Series(list(columns[i]), dtype=object)
            for i, name in enumerate(names)
        }
    )
    attrs = attrs.infer_objects()
    blobs = np.array(columns[n], dtype=object) if rows else np.array([], dtype=object)
    geoms = shapely.from_wkb(blobs)
    ids = None
    if spec.id_field is None:
        ids = (
            np.asarray(columns[n + 1], dtype=object)
            if rows
            else np.array([], dtype=object)
        )
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(bytes(blob) if blob is not None else b"\0")
    frame = gpd.GeoDataFrame(
        attrs, geometry=gpd.array.from_shapely(geoms, crs=src_crs), crs=src_crs
    )
    rows_total = int(total[0]) if total else len(frame)
    skipped = 0
    if spec.where.conditions or near is not None:
        skipped = max(rows_total - len(frame), 0) if near is None else 0
    logger.info(
        "layer %s: %d of %d rows read from %s (%s)",
        spec.name,
        len(frame),
        rows_total,
        table.label,
        "filter and box in SQL" if clauses else "whole table",
    )
    return VectorSource(
        frame,
        src_crs,
        DRIVER,
        encoding,
        None,
        table.label,
        (),
        filtered_at_source=skipped,
        feature_ids=ids,
        digest=digest.hexdigest(),
    )
