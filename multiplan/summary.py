"""The summarise stage: ``summary.csv``, ``by_unit.csv``, ``units.csv`` and district totals.

Every figure here is the area of a *union* of pieces, never a sum: land that two
pairs, or three rules, hit is counted once (SPEC §6). The report, the map and
the ledgers read these tables and never add areas up themselves.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from multiplan.areas import Anchored, UnionAreas, to_mu
from multiplan.geometry import boxes_meet
from multiplan.levels import Levels, build_levels, level_names, per_level
from multiplan.schema import BY_UNIT_COLUMNS, SUMMARY_COLUMNS, UNITS_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from multiplan.layers import Layers
    from multiplan.rules import Rule
    from multiplan.specs import Project

    Cleans = Mapping[str, np.ndarray] | Future[dict[str, np.ndarray]]
    """Which features of each layer are clean, or a future of it (:func:`cleans_ahead`)."""

logger = logging.getLogger(__name__)

SEVERITIES = ("high", "medium", "low")


@dataclass(frozen=True)
class Summaries:
    """The tables of the summarise stage, and the district totals (areas of unions, m²)."""

    summary: pd.DataFrame
    by_unit: pd.DataFrame | None
    units: pd.DataFrame | None
    totals: Mapping[str, float] = field(default_factory=dict)
    snapped: int = 0
    """Clusters GEOS could union only on a 1 mm grid (counted in run.json)."""


def summarise(
    pieces: pd.DataFrame,
    rules: Sequence[Rule],
    project: Project,
    layers: Layers,
    *,
    workers: int = 1,
    levels: Levels | None = None,
    cleans: Cleans | None = None,
) -> Summaries:
    """Return the summary tables of a check's pieces.

    The overlaps between pieces are found once; each table then unions only the
    clusters of overlapping pieces of its groups (:class:`~multiplan.areas.UnionAreas`).

    Parameters
    ----------
    pieces
        The pieces of :func:`multiplan.check` (SPEC §6 columns).
    rules
        The rules that ran, in pack order (rules without pieces get a row).
    project, layers
        For the working CRS, the area mode and the units layer.
    workers
        Threads for the overlap test and the unions.
    levels
        The levels of units (built from the project when not given). With
        several, ``by_unit`` and ``units`` have a first column ``level`` and a
        block of rows per level (SPEC §14).
    cleans
        The rule layers' clean features (:func:`layer_cleans`), or a future of
        them (:func:`cleans_ahead`); found here when not given.
    """
    names = level_names(project)
    if levels is None and names and all(n in layers for n in project.units):
        levels = build_levels(project, layers)
    unions = piece_unions(
        pieces,
        project,
        workers=workers,
        layers=layers,
        rules=rules,
        cleans=resolve(cleans),
    )
    keys = summary_keys(pieces, unit_columns(levels, names))
    areas: dict[str, dict[Any, float]] = {}
    if unions.valuer is not None:  # values first: their unions' areas are kept
        for name in VALUED:
            areas[f"value:{name}"] = unions.by(keys[name], measure="value")
    areas.update({name: unions.by(k) for name, k in keys.items()})
    return summary_tables(pieces, rules, project, areas, levels, unions.snapped)


def unit_columns(levels: Levels | None, names: Sequence[str]) -> list[str]:
    """Return the pieces' columns the per-unit tables group by: ``unit``, or one per level."""
    if not names:
        return []
    if levels is None or not levels.multi:
        return ["unit"]
    return list(levels.names)


def summary_keys(
    pieces: pd.DataFrame, unit_cols: Sequence[str]
) -> dict[str, np.ndarray]:
    """Return the groupings of the summary tables: a name → each piece's key.

    ``rule``, ``severity`` and ``all``, and per unit column ``unit_rule:COL``,
    ``unit:COL`` and ``unit_severity:COL``. Each table is built from the union
    areas of these groups (:func:`summary_tables`).
    """
    return {name: summary_key(pieces, name) for name in summary_key_names(unit_cols)}


def summary_key_names(unit_cols: Sequence[str]) -> list[str]:
    """Return the names of the groupings of :func:`summary_keys`, in its order."""
    names = ["rule", "severity", "all"]
    for col in unit_cols:
        names += [f"unit_rule:{col}", f"unit:{col}", f"unit_severity:{col}"]
    return names


def summary_key(pieces: pd.DataFrame, name: str) -> np.ndarray:
    """Return each piece's key in one grouping of :func:`summary_keys`.

    One at a time, the keys of a big check need not all be in memory at once
    (a grouping by unit and rule holds a tuple a piece).
    """
    kind, _, col = name.partition(":")
    if kind == "all":
        return np.zeros(len(pieces), dtype=object)
    if kind in ("rule", "severity"):
        return _column(pieces, "rule_id" if kind == "rule" else "severity")
    units = _column(pieces, col)
    if kind == "unit":
        return units
    other = _column(pieces, "rule_id" if kind == "unit_rule" else "severity")
    return _pairs(units, other)


VALUED = ("rule", "all")
"""The groupings whose land value at stake is reported (summary.csv, the district total)."""


def summary_tables(
    pieces: pd.DataFrame,
    rules: Sequence[Rule],
    project: Project,
    areas: Mapping[str, Mapping[Any, float]],
    levels: Levels | None,
    snapped: int = 0,
) -> Summaries:
    """Return the tables from the union areas of the groupings of :func:`summary_keys`.

    ``pieces`` needs the attribute columns only (no geometry).
    """
    names = level_names(project)
    summary = build_summary(
        pieces, rules, areas["rule"], values=areas.get("value:rule")
    )
    by_unit = units = None
    if names:
        own = levels.own if levels is not None else {}
        by_unit = per_level(
            levels,
            lambda key: build_by_unit(
                pieces, rules, areas[f"unit_rule:{key}"], column=key
            ),
        )
        units = per_level(
            levels,
            lambda key: build_units(
                pieces,
                areas[f"unit:{key}"],
                areas[f"unit_severity:{key}"],
                own.get(key if key != "unit" else names[0], {}),
                column=key,
            ),
        )
    totals = {
        "all": areas["all"].get(0, 0.0),
        **{s: areas["severity"].get(s, 0.0) for s in SEVERITIES},
    }
    if "value:all" in areas:
        totals["value"] = areas["value:all"].get(0, 0.0)
    return Summaries(summary, by_unit, units, totals, snapped)


def piece_unions(
    pieces: pd.DataFrame,
    project: Project,
    *,
    workers: int = 1,
    layers: Layers | None = None,
    rules: Sequence[Rule] = (),
    geoms: np.ndarray | None = None,
    cleans: Mapping[str, np.ndarray] | None = None,
) -> UnionAreas:
    """Return the union areas of a check's pieces, measured as the project says.

    With the layers and rules, candidate pairs of pieces that cannot overlap are
    known from where the pieces came from (:func:`provenance_apart`) and skip the
    exact test. ``geoms`` gives the pieces' geometries when ``pieces`` holds
    their attributes only; ``cleans`` the layers' clean features when known.
    """
    if geoms is None:
        geoms = (
            np.asarray(pieces.geometry.array, dtype=object)
            if len(pieces)
            else np.zeros(0, dtype=object)
        )
    areas = pieces["area_m2"].to_numpy(dtype=float) if len(pieces) else np.zeros(0)
    apart = (
        provenance_apart(pieces, layers, rules, cleans, workers=workers)
        if layers is not None and len(pieces)
        else None
    )
    values = valuer = None
    revenue = project.yield_.revenue if project.yield_ is not None else None
    if "value_yuan" in pieces.columns and revenue is not None and layers is not None:
        from multiplan.values import union_valuer

        values = pieces["value_yuan"].to_numpy(dtype=float)
        valuer = union_valuer(pieces, geoms, project, revenue, layers)
    return UnionAreas(
        geoms,
        areas,
        project.working_crs,
        project.area,
        workers=workers,
        known_apart=apart,
        values=values,
        valuer=valuer,
    )


def clean_features(frame: pd.DataFrame) -> np.ndarray:
    """Return which features of a layer are clean: none of their edges is an invalid coverage edge.

    Two clean features never share area. Where the interiors of two features
    meet, the edges of one of them run inside the other, or the two are the same
    (GEOS marks both); but a feature that holds another inside it keeps clean
    edges, so a clean feature alone may still be overlapped.
    """
    geoms = np.asarray(frame.geometry.array, dtype=object)
    return _clean(geoms)


def _clean(geoms: np.ndarray) -> np.ndarray:
    if not len(geoms):
        return np.zeros(0, dtype=bool)
    if shapely.coverage_is_valid(geoms):
        return np.ones(len(geoms), dtype=bool)
    return np.asarray(
        shapely.is_empty(shapely.coverage_invalid_edges(geoms)), dtype=bool
    )


_CLEAN_CHUNK = 20_000
"""Features of one layer below which its coverage check is not cut into strips."""

_CLEAN_STRIP = 100_000
"""The most features of one strip: GEOS's working memory for 800 000 parcels at once
was about 100 MB, and a strip's own features are most of what it checks."""


def _strips(geoms: np.ndarray, parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut a layer into ``parts`` strips by x for its coverage check: (own, subset) each.

    GEOS checks a feature's edges against the features whose boxes meet its box,
    so a strip's own features get the flags of the whole layer when the check
    runs on them and every feature whose box meets the box of all of them.
    """
    b = shapely.bounds(geoms)
    order = np.argsort(b[:, 0] + b[:, 2], kind="stable")
    out = []
    for own in np.array_split(order, parts):
        own = np.sort(own)
        box = (b[own, 0].min(), b[own, 1].min(), b[own, 2].max(), b[own, 3].max())
        out.append((own, np.flatnonzero(boxes_meet(b, box))))
    return out


def resolve(cleans: Cleans | None) -> Mapping[str, np.ndarray] | None:
    """Return the clean flags, waiting for them if they are being found."""
    return cleans.result() if isinstance(cleans, Future) else cleans


def rule_layers(rules: Sequence[Rule]) -> list[str]:
    """Return the layers the rules read (A and B sides), each once."""
    return list(dict.fromkeys(n for r in rules for n in (r.a.layer, r.b.layer) if n))


def cleans_ahead(
    layers: Layers, names: Sequence[str], workers: int = 2
) -> Future[dict[str, np.ndarray]]:
    """Start :func:`layer_cleans` in a thread of its own; return its future.

    The coverage check is GEOS work (it releases the GIL) that needs only the
    layers, so a check starts it before its overlay and uses it to summarise:
    it fills the moments the overlay leaves a core free. The geometries are
    taken here, in the calling thread.
    """
    geoms = _layer_geoms(layers, names)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="multiplan-cleans")
    try:
        return pool.submit(_geoms_cleans, geoms, workers)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one job


def _layer_geoms(layers: Layers, names: Sequence[str]) -> dict[str, np.ndarray]:
    return {
        n: np.asarray(layers[n].geometry.array, dtype=object)
        for n in dict.fromkeys(names)
        if n in layers
    }


def layer_cleans(
    layers: Layers, names: Sequence[str], workers: int = 2
) -> dict[str, np.ndarray]:
    """Return, per layer, which features overlap no other feature of it (:func:`clean_features`).

    GEOS's coverage check runs on ``workers`` threads (it releases the GIL): a
    layer at a time, or a big layer in strips (:func:`_strips`, a strip per
    worker and at most :data:`_CLEAN_STRIP` features each), with the same flags
    as one check of the whole layer.
    """
    return _geoms_cleans(_layer_geoms(layers, names), workers)


def _geoms_cleans(geoms: dict[str, np.ndarray], workers: int) -> dict[str, np.ndarray]:
    names = list(geoms)
    jobs: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
    for n in names:
        n_features = len(geoms[n])
        parts = max(
            min(max(1, workers), n_features // _CLEAN_CHUNK),
            -(-n_features // _CLEAN_STRIP),  # GEOS's working memory grows with a strip
        )
        if parts > 1:
            jobs.extend((n, own, near) for own, near in _strips(geoms[n], parts))
        else:
            jobs.append((n, None, None))

    def run(job: tuple[str, np.ndarray | None, np.ndarray | None]) -> np.ndarray:
        n, own, near = job
        if own is None or near is None:
            return _clean(geoms[n])
        flags = _clean(geoms[n][near])
        return flags[np.searchsorted(near, own)]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = list(pool.map(run, jobs))
    out = {n: np.zeros(len(geoms[n]), dtype=bool) for n in names}
    for (n, own, _), flags in zip(jobs, done, strict=True):
        if own is None:
            out[n] = flags
        else:
            out[n][own] = flags
    return out


def provenance_apart(
    pieces: pd.DataFrame,
    layers: Layers,
    rules: Sequence[Rule],
    cleans: Mapping[str, np.ndarray] | None = None,
    *,
    workers: int = 2,
) -> Anchored:
    """Return a test of candidate pairs of pieces that cannot overlap, from where they came from (:class:`~multiplan.areas.Anchored`).

    Two pieces cannot share area when they lie in different units (pieces are split
    at unit borders), or lie in two different features of one layer that are both
    clean (:func:`clean_features`): a piece lies inside its A feature, and for
    ``intersect`` without a ``distance`` also inside its B feature (with a distance
    it lies inside the B feature's buffer, and the buffers of clean features
    overlap). One clean feature is not enough: a feature that holds another inside
    it has clean edges.
    """
    n = len(pieces)
    inside_b = {r.id: r.relation == "intersect" and r.distance == 0 for r in rules}
    names = [
        name
        for side in ("a", "b")
        for name in pd.unique(pieces[f"{side}_layer"].to_numpy(dtype=object))
        if name is not None and name in layers
    ]
    if cleans is None or not set(names) <= set(cleans):
        cleans = layer_cleans(layers, names, workers)
    units = pd.factorize(pieces["unit"].to_numpy(dtype=object), use_na_sentinel=True)[0]
    sides = []
    for side in ("a", "b"):
        layer_col = pieces[f"{side}_layer"].to_numpy(dtype=object)
        ids = pieces[f"{side}_id"].to_numpy(dtype=object)
        feature = np.full(n, -1, dtype=np.int64)
        clean = np.zeros(n, dtype=bool)
        lcode = pd.factorize(layer_col, use_na_sentinel=True)[0]
        for name in pd.unique(layer_col):
            if name is None or name not in layers:
                continue
            mine = layer_col == name
            pos = layers.index(name).get_indexer(ids[mine])
            feature[mine] = pos
            clean[mine] = np.where(pos >= 0, cleans[name][np.maximum(pos, 0)], False)
        if side == "b":  # only a piece of intersect, distance 0, lies inside its B
            rule, rule_ids = pd.factorize(pieces["rule_id"].to_numpy(dtype=object))
            inside = np.array([inside_b.get(r, False) for r in rule_ids] + [False])
            outside = ~inside[rule]  # a piece of no rule (-1) is outside too
            feature[outside] = -1
            clean[outside] = False
        sides.append((lcode, feature, clean))

    # with units, a piece outside every unit (-1) is outside each of them too
    split = bool((units >= 0).any())

    def apart(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out: np.ndarray = (
            (units[i] != units[j]) if split else np.zeros(len(i), dtype=bool)
        )
        for lcode, feature, clean in sides:
            same_layer = (lcode[i] == lcode[j]) & (lcode[i] >= 0)
            other = (feature[i] != feature[j]) & (feature[i] >= 0) & (feature[j] >= 0)
            out |= same_layer & other & clean[i] & clean[j]
        return out

    # pieces of clean A features: only those of one feature can overlap
    lcode, feature, clean = sides[0]
    anchor = np.where(clean & (feature >= 0) & (lcode >= 0), feature, -1)
    return Anchored(apart, lcode, anchor)


def _column(pieces: pd.DataFrame, name: str) -> np.ndarray:
    return (
        pieces[name].to_numpy(dtype=object)
        if len(pieces)
        else np.zeros(0, dtype=object)
    )


def build_summary(
    pieces: pd.DataFrame,
    rules: Sequence[Rule],
    area: Mapping[Any, float],
    *,
    values: Mapping[Any, float] | None = None,
    lang: str = "zh",
) -> pd.DataFrame:
    """Return summary.csv: one row per rule in pack order, rules without pieces included.

    With land yield, ``values`` gives ``value_yuan``, the land value at stake on
    the union of the rule's pieces (land counted once, :func:`multiplan.values.union_valuer`).
    """
    rid = _column(pieces, "rule_id")
    has_value = "value_yuan" in pieces.columns
    if has_value and values is None:
        raise ValueError("pieces with value_yuan need the values of their unions")
    rows = []
    for r in rules:
        mine = rid == r.id
        a = area.get(r.id, 0.0)
        row = {
            "rule_id": r.id,
            "title": r.label(lang),
            "severity": r.severity,
            "pieces": int(mine.sum()),
            "area_m2": a,
            "area_mu": to_mu(a),
        }
        if has_value:
            assert values is not None
            row["value_yuan"] = values.get(r.id, 0.0)
        rows.append(row)
    out = pd.DataFrame(
        rows, columns=[*SUMMARY_COLUMNS, *(["value_yuan"] if has_value else [])]
    )
    out["pieces"] = out["pieces"].astype(int)
    return out


def _pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return an object array of ``(a, b)`` tuples (numpy would make a 2-D array of them)."""
    out = np.empty(len(a), dtype=object)
    for k, pair in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        out[k] = pair
    return out


def _unit_order(unit: object) -> tuple[bool, str]:
    return (unit is not None, "" if unit is None else str(unit))


def build_by_unit(
    pieces: pd.DataFrame,
    rules: Sequence[Rule],
    area: Mapping[Any, float],
    *,
    column: str = "unit",
) -> pd.DataFrame:
    """Return by_unit.csv: per unit (nulls first, then by name) and rule (pack order) with pieces.

    ``column`` names the pieces' column that holds the unit (a level's, SPEC §14).
    """
    order = {r.id: i for i, r in enumerate(rules)}
    keys = _pairs(_column(pieces, column), _column(pieces, "rule_id"))
    counts: dict[tuple[Any, Any], int] = {}
    for k in keys.tolist():
        counts[k] = counts.get(k, 0) + 1
    rows = []
    for u, r in sorted(counts, key=lambda k: (*_unit_order(k[0]), order.get(k[1], 0))):
        a = area[(u, r)]
        rows.append(
            {
                "unit": u,
                "rule_id": r,
                "pieces": counts[(u, r)],
                "area_m2": a,
                "area_mu": to_mu(a),
            }
        )
    out = pd.DataFrame(rows, columns=list(BY_UNIT_COLUMNS))
    # keep text as objects: pandas 3 would infer a string dtype with NaN for a null unit
    out["unit"] = pd.Series([r["unit"] for r in rows], dtype=object)
    out["rule_id"] = pd.Series([r["rule_id"] for r in rows], dtype=object)
    return out


def build_units(
    pieces: pd.DataFrame,
    area: Mapping[Any, float],
    by_sev: Mapping[Any, float],
    own: Mapping[str, float],
    *,
    column: str = "unit",
) -> pd.DataFrame:
    """Return units.csv: per unit the union of *all* rules' pieces, its share, and per severity.

    Every unit gets a row (sorted by name), conflicts or not; a first row with
    ``unit`` empty holds land in no unit when there is any. ``column`` names the
    pieces' column that holds the unit (a level's, SPEC §14).
    """
    units = _column(pieces, column)
    counts: dict[object, int] = {}
    for u in units.tolist():
        counts[u] = counts.get(u, 0) + 1
    keys: list[str | None] = [*sorted(own)]
    if None in counts:
        keys = [None, *keys]
    rows = []
    for u in keys:
        a = area.get(u, 0.0)
        unit_area = own.get(u) if u is not None else None
        row: dict[str, object] = {
            "unit": u,
            "unit_area_m2": unit_area,
            "pieces": counts.get(u, 0),
            "area_m2": a,
            "area_mu": to_mu(a),
            "share": a / unit_area if unit_area else None,
        }
        for s in SEVERITIES:
            row[f"{s}_m2"] = by_sev.get((u, s), 0.0)
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(UNITS_COLUMNS))
    out["unit"] = pd.Series(keys, dtype=object)
    return out
