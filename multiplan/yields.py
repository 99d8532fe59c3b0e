"""Land yield (亩均效益): per-parcel indicators and grades, land value at stake, scenarios.

``yield`` is a Python keyword, hence the module's name. SPEC §8:

* indicators per parcel: a numerator field (of the parcels or a joined CSV) over a
  denominator field or, by default, the parcel's area in 亩; a missing or zero
  denominator gives no value (counted), never an error;
* a score: the weighted sum of each indicator over its median; grades by
  thresholds (value ≥ A → A …) or by rank (top 20 % A …), with exempt parcels;
* totals and area-weighted indicators per unit and per park;
* land value at stake on every conflict piece, from 元/亩 by class or from a
  land-value raster (exact partial-pixel weights);
* scenarios: gross = area 亩 × net revenue per 亩, net = gross − cost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan import crs as crs_mod
from multiplan.errors import InputError, ManifestError, valid_keys_hint
from multiplan.filters import Where, parse_where, where_mask
from multiplan.layers import public_fields

if TYPE_CHECKING:
    from multiplan.io import RasterSource
    from multiplan.layers import Layer
    from multiplan.project import Project

logger = logging.getLogger(__name__)

GRADES = ("A", "B", "C", "D")
_INDICATOR_KEYS = ("id", "title", "numerator", "denominator", "unit")
_SCENARIO_KEYS = ("id", "title", "area_mu", "layer", "net_revenue_per_mu", "cost")
AREA_MU = "area_mu"


@dataclass(frozen=True)
class Indicator:
    """numerator / denominator per parcel (denominator default: the parcel's area in 亩)."""

    id: str
    title: str
    numerator: str
    denominator: str | None = None
    unit: str = ""


@dataclass(frozen=True)
class Grading:
    """Grades by thresholds (``thresholds``) or by rank (``top``: cumulative shares)."""

    by: str
    thresholds: Mapping[str, float] | None = None
    top: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Scenario:
    """A land-revenue scenario: area (given, or measured from a layer) × net revenue − cost."""

    id: str
    title: str
    net_revenue_per_mu: float
    cost: float
    area_mu: float | None = None
    layer: str | None = None


@dataclass(frozen=True)
class Revenue:
    """Where land value comes from: a 元/亩 table by class, or a land-value raster."""

    table: Path | None = None
    raster: str | None = None
    unit: str = "yuan_per_m2"


@dataclass(frozen=True)
class YieldSpec:
    """The validated ``[yield]`` table of a manifest."""

    parcels: str | None
    table: Path | None = None
    join: str | None = None
    indicators: tuple[Indicator, ...] = ()
    score: Mapping[str, float] = field(default_factory=dict)
    grading: Grading | None = None
    revenue: Revenue | None = None
    scenarios: tuple[Scenario, ...] = ()
    park_field: str | None = None
    exempt_ids: tuple[str, ...] = ()
    exempt_where: Where | None = None
    encoding: str = "utf-8-sig"


def _err(
    project: Project, key: str, message: str, hint: str | None = None
) -> ManifestError:
    return ManifestError(message, path=project.path, key=key, hint=hint)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_yield_spec(project: Project) -> YieldSpec | None:
    """Validate the manifest's ``[yield]`` table; ``None`` when there is none.

    Raises
    ------
    ManifestError
        Naming the ``yield.*`` key and what would be valid.
    """
    raw = project.yield_
    if raw is None:
        return None
    parcels = raw.get("parcels")
    if parcels is not None and (
        not isinstance(parcels, str) or parcels not in project.layers
    ):
        raise _err(
            project,
            "yield.parcels",
            f"names no layer: {parcels!r}",
            f"Valid layers are: {', '.join(project.layers)}",
        )
    if parcels is not None and project.layers[parcels].kind != "vector":
        raise _err(
            project, "yield.parcels", "the parcels must be a vector layer of polygons"
        )
    table = None
    if "table" in raw:
        if not isinstance(raw["table"], str):
            raise _err(project, "yield.table", "must be the path of a CSV file")
        table = (project.path.parent / raw["table"]).resolve()
        if not table.is_file():
            raise _err(
                project,
                "yield.table",
                f"file not found: {table}",
                "The path is relative to the manifest",
            )
    join = raw.get("join")
    if table is not None and not isinstance(join, str):
        raise _err(
            project,
            "yield.join",
            'a table needs join = "<its column holding the parcel id>"',
        )
    indicators = []
    raw_ind = raw.get("indicators", [])
    if not isinstance(raw_ind, list):
        raise _err(project, "yield.indicators", "must be a list of tables")
    for i, item in enumerate(raw_ind):
        key = f"yield.indicators[{i}]"
        if not isinstance(item, Mapping):
            raise _err(
                project,
                key,
                'must be a table such as { id = "tax_per_mu", numerator = "tax_wan" }',
            )
        for k in item:
            if k not in _INDICATOR_KEYS:
                raise _err(
                    project,
                    f"{key}.{k}",
                    "unknown key",
                    valid_keys_hint(k, _INDICATOR_KEYS),
                )
        iid, numerator = item.get("id"), item.get("numerator")
        if not isinstance(iid, str) or not iid.isidentifier():
            raise _err(
                project,
                f"{key}.id",
                f"invalid indicator id {iid!r}",
                "Use letters, digits and '_', e.g. \"tax_per_mu\"",
            )
        if not isinstance(numerator, str):
            raise _err(
                project, f"{key}.numerator", "every indicator needs a numerator field"
            )
        den = item.get("denominator")
        if den is not None and not isinstance(den, str):
            raise _err(
                project,
                f"{key}.denominator",
                "must be a field name (default: the parcel's area in 亩)",
            )
        indicators.append(
            Indicator(
                iid,
                str(item.get("title", iid)),
                numerator,
                den,
                str(item.get("unit", "")),
            )
        )
    ids = [ind.id for ind in indicators]
    if len(set(ids)) != len(ids):
        raise _err(project, "yield.indicators", "indicator ids must be unique")
    score = raw.get("score", {})
    if not isinstance(score, Mapping) or not all(_num(v) for v in score.values()):
        raise _err(project, "yield.score", "must be a table of indicator = weight")
    for k in score:
        if k not in ids:
            raise _err(
                project,
                f"yield.score.{k}",
                "names no indicator",
                f"Valid indicators are: {', '.join(ids)}",
            )
    grading = _parse_grades(project, raw.get("grades"), ids, has_score=bool(score))
    revenue = _parse_revenue(project, raw.get("revenue"))
    scenarios = _parse_scenarios(project, raw.get("scenario", []))
    park_field = raw.get("park_field")
    if park_field is not None and not isinstance(park_field, str):
        raise _err(project, "yield.park_field", "must be a field name")
    exempt_ids: tuple[str, ...] = ()
    exempt_where = None
    exempt = raw.get("exempt")
    if isinstance(exempt, list):
        exempt_ids = tuple(str(v) for v in exempt)
    elif isinstance(exempt, Mapping):
        exempt_where = parse_where(
            exempt, path=project.path, key="yield.exempt", error=ManifestError
        )
    elif exempt is not None:
        raise _err(
            project,
            "yield.exempt",
            'must be a list of parcel ids or a filter such as { field = "founded", ge = 2024 }',
        )
    if (indicators or grading) and parcels is None:
        raise _err(
            project, "yield.parcels", "indicators and grades need a parcels layer"
        )
    encoding = raw.get("encoding", "utf-8-sig")
    return YieldSpec(
        parcels=parcels,
        table=table,
        join=join,
        indicators=tuple(indicators),
        score=dict(score),
        grading=grading,
        revenue=revenue,
        scenarios=scenarios,
        park_field=park_field,
        exempt_ids=exempt_ids,
        exempt_where=exempt_where,
        encoding=str(encoding),
    )


def _parse_grades(
    project: Project, raw: Any, ids: Sequence[str], *, has_score: bool
) -> Grading | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _err(
            project,
            "yield.grades",
            'must be a table such as { by = "tax_per_mu", A = 30, B = 15, C = 5 }',
        )
    by = raw.get("by")
    valid = [*ids, *(["score"] if has_score else [])]
    if by not in valid:
        raise _err(
            project,
            "yield.grades.by",
            f"grades by {by!r}, which is neither an indicator nor the score",
            f"Valid values are: {', '.join(valid)}",
        )
    for k in raw:
        if k not in ("by", "top", "A", "B", "C"):
            raise _err(
                project,
                f"yield.grades.{k}",
                "unknown key",
                "Valid keys are: by, A, B, C (thresholds) or top (shares by rank)",
            )
    if "top" in raw:
        top = raw["top"]
        if (
            not isinstance(top, Mapping)
            or set(top) != {"A", "B", "C"}
            or not all(_num(v) for v in top.values())
        ):
            raise _err(
                project,
                "yield.grades.top",
                "must give cumulative shares for A, B and C, e.g. { A = 0.2, B = 0.6, C = 0.95 }",
            )
        if not 0 < top["A"] <= top["B"] <= top["C"] <= 1:
            raise _err(
                project, "yield.grades.top", "shares must rise: 0 < A ≤ B ≤ C ≤ 1"
            )
        return Grading(by=str(by), top={k: float(v) for k, v in top.items()})
    th = {k: raw.get(k) for k in ("A", "B", "C")}
    if not all(_num(v) for v in th.values()):
        raise _err(
            project,
            "yield.grades",
            "thresholds need A, B and C numbers (or top = {...} to grade by rank)",
        )
    a, b, c = float(th["A"]), float(th["B"]), float(th["C"])  # type: ignore[arg-type]
    if not a >= b >= c:
        raise _err(project, "yield.grades", "thresholds must fall: A ≥ B ≥ C")
    return Grading(by=str(by), thresholds={"A": a, "B": b, "C": c})


def _parse_revenue(project: Project, raw: Any) -> Revenue | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or len({"table", "raster"} & set(raw)) != 1:
        raise _err(
            project,
            "yield.revenue",
            'give either table = "<code,yuan_per_mu CSV>" or raster = "<land-value raster layer>"',
        )
    for k in raw:
        if k not in ("table", "raster", "unit"):
            raise _err(
                project,
                f"yield.revenue.{k}",
                "unknown key",
                "Valid keys are: table, raster, unit",
            )
    if "table" in raw:
        p = (project.path.parent / str(raw["table"])).resolve()
        if not p.is_file():
            raise _err(project, "yield.revenue.table", f"file not found: {p}")
        return Revenue(table=p)
    name = raw["raster"]
    if name not in project.layers or project.layers[name].kind != "raster":
        raster_layers = [n for n, s in project.layers.items() if s.kind == "raster"]
        raise _err(
            project,
            "yield.revenue.raster",
            f"names no raster layer: {name!r}",
            f"Raster layers are: {', '.join(raster_layers) or 'none'}",
        )
    unit = raw.get("unit", "yuan_per_m2")
    if unit not in ("yuan_per_m2", "yuan_per_mu"):
        raise _err(
            project,
            "yield.revenue.unit",
            f"invalid unit {unit!r}",
            'Valid values are "yuan_per_m2" and "yuan_per_mu"',
        )
    return Revenue(raster=str(name), unit=str(unit))


def _parse_scenarios(project: Project, raw: Any) -> tuple[Scenario, ...]:
    if not isinstance(raw, list):
        raise _err(project, "yield.scenario", "scenarios are [[yield.scenario]] tables")
    out = []
    for i, item in enumerate(raw):
        key = f"yield.scenario[{i}]"
        if not isinstance(item, Mapping):
            raise _err(project, key, "must be a table")
        for k in item:
            if k not in _SCENARIO_KEYS:
                raise _err(
                    project,
                    f"{key}.{k}",
                    "unknown key",
                    valid_keys_hint(k, _SCENARIO_KEYS),
                )
        sid = item.get("id")
        if not isinstance(sid, str) or not sid:
            raise _err(project, f"{key}.id", "every scenario needs an id")
        if ("area_mu" in item) == ("layer" in item):
            raise _err(
                project, key, "give either area_mu or layer (whose area is measured)"
            )
        if "area_mu" in item and (not _num(item["area_mu"]) or item["area_mu"] < 0):
            raise _err(project, f"{key}.area_mu", "must be a number of 亩 ≥ 0")
        if "layer" in item and item["layer"] not in project.layers:
            raise _err(
                project,
                f"{key}.layer",
                f"names no layer: {item['layer']!r}",
                f"Valid layers are: {', '.join(project.layers)}",
            )
        for k in ("net_revenue_per_mu", "cost"):
            if not _num(item.get(k)):
                raise _err(project, f"{key}.{k}", "must be a number of 元")
        out.append(
            Scenario(
                sid,
                str(item.get("title", sid)),
                item["net_revenue_per_mu"],
                item["cost"],
                item.get("area_mu"),
                item.get("layer"),
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------- indicators and grades


@dataclass(frozen=True)
class YieldResult:
    """Per-parcel indicators and grades, their aggregates, scenarios, and what was counted."""

    parcels: gpd.GeoDataFrame
    by_unit: pd.DataFrame
    by_park: pd.DataFrame | None
    scenarios: pd.DataFrame
    notes: Mapping[str, Any]


def _read_table(spec: YieldSpec, project: Project) -> pd.DataFrame:
    assert spec.table is not None
    assert spec.join is not None
    try:
        table = pd.read_csv(spec.table, encoding=spec.encoding, dtype={spec.join: str})
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(
            f"cannot read the table ({exc})",
            path=spec.table,
            key="yield.table",
            hint='Save it as UTF-8 CSV, or set yield.encoding = "GBK"',
        ) from exc
    if spec.join not in table.columns:
        raise InputError(
            f"no column {spec.join!r} to join on",
            path=spec.table,
            key="yield.join",
            hint=f"Columns are: {', '.join(map(str, table.columns))}",
        )
    ids = table[spec.join].astype(str).str.strip()
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise InputError(
            f"{len(dup)} parcel ids appear more than once in the table ({', '.join(dup[:5])})",
            path=spec.table,
            key="yield.join",
            feature=dup[0],
            hint="Keep one row per parcel",
        )
    table = table.drop(columns=[spec.join])
    table.index = pd.Index(ids, name="id")
    return table


def compute_yield(
    project: Project, spec: YieldSpec, layers: Mapping[str, Layer]
) -> YieldResult:
    """Compute indicators, score and grade per parcel, their aggregates and the scenarios.

    Raises
    ------
    InputError
        For a duplicated id in the table or a field that neither the parcels nor
        the table have.
    """
    working = crs_mod.parse_crs(project.crs)
    notes: dict[str, Any] = {}
    if spec.parcels is None:
        parcels = gpd.GeoDataFrame(
            {"id": []}, geometry=gpd.GeoSeries([], crs=project.crs), crs=project.crs
        )
    else:
        layer = layers[spec.parcels]
        frame = layer.frame
        geoms = np.asarray(frame.geometry.array, dtype=object)
        area = crs_mod.area_m2(geoms, working, project.area)
        data = pd.DataFrame(index=frame.index.astype(str))
        data["area_m2"] = area
        data[AREA_MU] = area * 15.0 / 10000.0
        attrs = pd.DataFrame(frame.drop(columns=frame.geometry.name))
        attrs.index = data.index
        if spec.table is not None:
            table = _read_table(spec, project)
            unjoined = sorted(set(table.index) - set(data.index))
            missing = sorted(set(data.index) - set(table.index))
            notes["table_ids_without_parcel"] = unjoined
            notes["parcels_without_table_row"] = missing
            if unjoined:
                logger.warning(
                    "%d ids of %s have no parcel: %s",
                    len(unjoined),
                    spec.table.name if spec.table else "",
                    ", ".join(unjoined[:10]),
                )
            if missing:
                logger.warning(
                    "%d parcels have no row in the table: %s",
                    len(missing),
                    ", ".join(missing[:10]),
                )
            # a table column named like a parcel field is kept as <name>_table
            table = table.rename(
                columns={c: f"{c}_table" for c in table.columns if c in attrs.columns}
            )
            attrs = attrs.join(table)
        units = _unit_of(project, layers, geoms)
        parcels = gpd.GeoDataFrame(
            {"id": data.index.to_numpy(dtype=object), "unit": units},
            geometry=gpd.array.from_shapely(geoms, crs=project.crs),
            crs=project.crs,
        )
        parcels["area_m2"] = data["area_m2"].to_numpy()
        parcels[AREA_MU] = data[AREA_MU].to_numpy()
        if spec.park_field is not None:
            if spec.park_field not in attrs.columns:
                raise InputError(
                    f"no field {spec.park_field!r} in the parcels or the table",
                    path=project.path,
                    key="yield.park_field",
                    hint=f"Fields are: {', '.join(public_fields(attrs))}",
                )
            parcels["park"] = attrs[spec.park_field].astype(object).to_numpy()
        counts: dict[str, dict[str, int]] = {}
        for i, ind in enumerate(spec.indicators):
            num = _field(
                attrs, ind.numerator, project, f"yield.indicators[{i}].numerator"
            )
            den = (
                data[AREA_MU].to_numpy()
                if ind.denominator is None
                else _field(
                    attrs,
                    ind.denominator,
                    project,
                    f"yield.indicators[{i}].denominator",
                )
            )
            bad_den = ~np.isfinite(den) | (den == 0)
            bad_num = ~np.isfinite(num)
            with np.errstate(divide="ignore", invalid="ignore"):
                value = np.where(
                    bad_den | bad_num, np.nan, num / np.where(bad_den, 1.0, den)
                )
            parcels[ind.id] = value
            parcels[f"_{ind.numerator}_raw"] = num
            parcels[f"_{ind.id}_num"] = np.where(bad_den | bad_num, np.nan, num)
            parcels[f"_{ind.id}_den"] = np.where(bad_den | bad_num, np.nan, den)
            counts[ind.id] = {
                "missing_numerator": int(bad_num.sum()),
                "zero_or_missing_denominator": int(bad_den.sum()),
            }
        notes["indicators"] = counts
        exempt = np.isin(
            parcels["id"].to_numpy(dtype=object),
            np.array(spec.exempt_ids, dtype=object),
        )
        if spec.exempt_where is not None:
            for fld in spec.exempt_where.fields:
                if fld not in attrs.columns:
                    raise InputError(
                        f"the exempt filter reads a field {fld!r} that the parcels do not have",
                        path=project.path,
                        key="yield.exempt",
                    )
            exempt |= where_mask(attrs, spec.exempt_where)
        parcels["exempt"] = exempt
        notes["exempt"] = int(exempt.sum())
        parcels["score"] = _score(parcels, spec, exempt)
        # object columns keep None (pandas 3 would infer a string dtype with NaN)
        parcels["grade"] = pd.Series(
            _grades(parcels, spec, exempt), dtype=object, index=parcels.index
        )
        parcels["unit"] = pd.Series(units, dtype=object, index=parcels.index)
    by_unit = aggregate(parcels, spec, "unit")
    by_park = aggregate(parcels, spec, "park") if "park" in parcels.columns else None
    scenarios = compute_scenarios(spec.scenarios, project, layers)
    return YieldResult(
        parcels=parcels,
        by_unit=by_unit,
        by_park=by_park,
        scenarios=scenarios,
        notes=notes,
    )


def _field(attrs: pd.DataFrame, name: str, project: Project, key: str) -> np.ndarray:
    if name not in attrs.columns:
        raise InputError(
            f"no field {name!r} in the parcels or the joined table",
            path=project.path,
            key=key,
            hint=f"Fields are: {', '.join(public_fields(attrs))}",
        )
    return pd.to_numeric(attrs[name], errors="coerce").to_numpy(dtype=float)


def _unit_of(
    project: Project, layers: Mapping[str, Layer], geoms: np.ndarray
) -> np.ndarray:
    """Return the unit holding each parcel's representative point (None outside every unit)."""
    out = np.full(len(geoms), None, dtype=object)
    if not project.units or project.units not in layers or not len(geoms):
        return out
    uf = layers[project.units].frame
    names = uf[project.unit_name_field].to_numpy(dtype=object)
    pts = shapely.point_on_surface(geoms)
    ip, iu = shapely.STRtree(np.asarray(uf.geometry.array, dtype=object)).query(
        pts, predicate="within"
    )
    first = np.unique(ip, return_index=True)
    out[first[0]] = names[iu[first[1]]]
    return out


def _score(parcels: pd.DataFrame, spec: YieldSpec, exempt: np.ndarray) -> np.ndarray:
    """Weighted sum of each indicator over its median (medians over graded parcels with a value)."""
    if not spec.score:
        return np.full(len(parcels), np.nan)
    total = np.zeros(len(parcels))
    for iid, w in spec.score.items():
        v = parcels[iid].to_numpy(dtype=float)
        pool = v[np.isfinite(v) & ~exempt]
        med = float(np.median(pool)) if len(pool) else np.nan
        total = total + (w * v / med if med and np.isfinite(med) else np.nan)
    return total


def _grades(parcels: pd.DataFrame, spec: YieldSpec, exempt: np.ndarray) -> np.ndarray:
    """Return A–D per parcel (None for exempt parcels and parcels without a value)."""
    out = np.full(len(parcels), None, dtype=object)
    g = spec.grading
    if g is None:
        return out
    v = parcels[g.by].to_numpy(dtype=float)
    ok = np.isfinite(v) & ~exempt
    if g.thresholds is not None:
        grade = np.where(
            v >= g.thresholds["A"],
            "A",
            np.where(
                v >= g.thresholds["B"], "B", np.where(v >= g.thresholds["C"], "C", "D")
            ),
        )
        out[ok] = grade[ok]
        return out
    assert g.top is not None
    idx = np.flatnonzero(ok)
    n = len(idx)
    if not n:
        return out
    vals = v[idx]
    # rank 1 = best; ties share the best rank of their group (they get the same grade)
    order = np.argsort(-vals, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(1, n + 1)
    for value in np.unique(vals):
        same = vals == value
        ranks[same] = ranks[same].min()
    share = ranks / n
    grade = np.where(
        share <= g.top["A"] + 1e-12,
        "A",
        np.where(
            share <= g.top["B"] + 1e-12,
            "B",
            np.where(share <= g.top["C"] + 1e-12, "C", "D"),
        ),
    )
    out[idx] = grade
    return out


def aggregate(parcels: pd.DataFrame, spec: YieldSpec, by: str) -> pd.DataFrame:
    """Totals and area-weighted indicators (Σ numerator / Σ denominator) per group, and grade counts."""
    cols = [by, "parcels", "area_m2", AREA_MU]
    numerators = list(dict.fromkeys(ind.numerator for ind in spec.indicators))
    cols += [f"{n}_total" for n in numerators]
    cols += [ind.id for ind in spec.indicators]
    cols += list(GRADES)
    if not len(parcels):
        return pd.DataFrame(columns=cols)
    keys = (
        parcels[by].to_numpy(dtype=object)
        if by in parcels.columns
        else np.full(len(parcels), None, dtype=object)
    )
    groups = sorted(
        set(keys), key=lambda k: (k is not None, "" if k is None else str(k))
    )
    rows = []
    for k in groups:
        sel = np.array([x == k if k is not None else x is None for x in keys])
        sub = parcels[sel]
        row: dict[str, Any] = {
            by: k,
            "parcels": int(sel.sum()),
            "area_m2": float(sub["area_m2"].sum()),
            AREA_MU: float(sub[AREA_MU].sum()),
        }
        for n in numerators:
            # the total of a numerator over the parcels that have it
            vals = (
                pd.to_numeric(sub[f"_{n}_raw"], errors="coerce").to_numpy(dtype=float)
                if f"_{n}_raw" in sub
                else np.array([])
            )
            row[f"{n}_total"] = float(np.nansum(vals))
        for ind in spec.indicators:
            num = sub[f"_{ind.id}_num"].to_numpy(dtype=float)
            den = sub[f"_{ind.id}_den"].to_numpy(dtype=float)
            ok = np.isfinite(num) & np.isfinite(den)
            row[ind.id] = (
                float(num[ok].sum() / den[ok].sum())
                if ok.any() and den[ok].sum()
                else None
            )
        grades = sub["grade"].to_numpy(dtype=object) if "grade" in sub else np.array([])
        for gname in GRADES:
            row[gname] = int((grades == gname).sum())
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    out[by] = pd.Series([r[by] for r in rows], dtype=object)
    return out


def compute_scenarios(
    scenarios: Sequence[Scenario], project: Project, layers: Mapping[str, Layer]
) -> pd.DataFrame:
    """Return scenarios.csv: gross = area 亩 × net revenue per 亩; net = gross − cost.

    Examples
    --------
    The Shenyang Hunnan utility-tunnel case:

    >>> s = Scenario("hunnan", "综合管廊节约用地收益", net_revenue_per_mu=700000, cost=680000000, area_mu=2400)
    >>> compute_scenarios([s], None, {})[["gross_yuan", "net_yuan"]].iloc[0].tolist()  # type: ignore[arg-type]
    [1680000000, 1000000000]
    """
    rows = []
    for s in scenarios:
        if s.layer is not None:
            layer = layers[s.layer]
            union = shapely.union_all(
                np.asarray(layer.frame.geometry.array, dtype=object)
            )
            a = float(
                crs_mod.area_m2(
                    np.array([union], dtype=object),
                    crs_mod.parse_crs(project.crs),
                    project.area,
                )[0]
            )
            area_mu: float | int = a * 15.0 / 10000.0
        else:
            assert s.area_mu is not None
            area_mu = s.area_mu
        gross = _exact_product(area_mu, s.net_revenue_per_mu)
        net = gross - s.cost
        rows.append(
            {
                "id": s.id,
                "title": s.title,
                "area_mu": area_mu,
                "net_revenue_per_mu": s.net_revenue_per_mu,
                "gross_yuan": gross,
                "cost_yuan": s.cost,
                "net_yuan": net,
            }
        )
    cols = [
        "id",
        "title",
        "area_mu",
        "net_revenue_per_mu",
        "gross_yuan",
        "cost_yuan",
        "net_yuan",
    ]
    # object columns keep integers as integers: 2 400 × 700 000 is written 1680000000
    return pd.DataFrame(
        {c: pd.Series([r[c] for r in rows], dtype=object) for c in cols}, columns=cols
    )


def _exact_product(a: float | int, b: float | int) -> float | int:
    """Multiply exactly when both are integers (2400 × 700 000 stays an integer)."""
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    return float(a) * float(b)


# --------------------------------------------------------------------------- land value at stake


def piece_values(
    conflicts: pd.DataFrame,
    project: Project,
    spec: YieldSpec,
    layers: Mapping[str, Layer],
) -> np.ndarray:
    """Return ``value_yuan`` per conflict piece: 元/亩 by A class × 亩, or raster mean × m²."""
    n = len(conflicts)
    if spec.revenue is None or not n:
        return np.full(n, np.nan)
    area_m2 = conflicts["area_m2"].to_numpy(dtype=float)
    if spec.revenue.table is not None:
        rates = read_revenue_table(spec.revenue.table)
        per_mu = np.array(
            [_rate(rates, c) for c in conflicts["a_class"].to_numpy(dtype=object)],
            dtype=float,
        )
        out: np.ndarray = per_mu * area_m2 * 15.0 / 10000.0
        return out
    assert spec.revenue.raster is not None
    raster = layers[spec.revenue.raster].raster
    assert raster is not None
    mean = raster_means(
        np.asarray(conflicts.geometry.array, dtype=object),
        raster,
        crs_mod.parse_crs(project.crs),
    )
    scale = 15.0 / 10000.0 if spec.revenue.unit == "yuan_per_mu" else 1.0
    value: np.ndarray = mean * area_m2 * scale
    return value


def read_revenue_table(path: Path) -> dict[str, float]:
    """Read ``code,yuan_per_mu`` (元/亩 by taxonomy code prefix).

    Raises
    ------
    InputError
        On wrong columns or a value that is not a number.
    """
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", dtype={"code": str})
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(
            f"cannot read the revenue table ({exc})",
            path=path,
            key="yield.revenue.table",
        ) from exc
    if list(df.columns[:2]) != ["code", "yuan_per_mu"]:
        raise InputError(
            "wrong columns",
            path=path,
            key="yield.revenue.table",
            hint="The header must be code,yuan_per_mu",
        )
    values = pd.to_numeric(df["yuan_per_mu"], errors="coerce")
    if values.isna().any():
        bad = df["code"][values.isna()].iloc[0]
        raise InputError(
            f"yuan_per_mu of code {bad!r} is not a number",
            path=path,
            key="yield.revenue.table",
        )
    return dict(
        zip(df["code"].astype(str).str.strip(), values.astype(float), strict=True)
    )


def _rate(rates: Mapping[str, float], code: object) -> float:
    if not isinstance(code, str):
        return math.nan
    for n in range(len(code), 0, -1):
        if code[:n] in rates:
            return rates[code[:n]]
    return math.nan


def raster_means(geoms: np.ndarray, raster: RasterSource, crs: Any) -> np.ndarray:
    """Mean raster value over each polygon, each pixel weighted by the area it shares with it.

    Exact partial-pixel weights: pixels inside the polygon count whole, pixels on
    its edge by the area of their intersection; nodata pixels are left out. The
    polygons are taken into the raster's CRS. A polygon that covers no valid
    pixel gets NaN.

    Examples
    --------
    >>> from multiplan.io import RasterSource
    >>> from affine import Affine
    >>> values = np.ma.masked_array(np.array([[1.0, 3.0], [5.0, 7.0]]), mask=False)
    >>> r = RasterSource(values, Affine(10, 0, 0, 0, -10, 20), None, "MEM", (2, 2), (10, 10), (0, 0, 20, 20), None, "float64")
    >>> raster_means(np.array([shapely.box(5, 10, 15, 20)]), r, None).tolist()
    [2.0]
    """
    geoms = np.asarray(geoms, dtype=object)
    out = np.full(len(geoms), np.nan)
    t = raster.transform
    if t.b != 0 or t.d != 0:
        raise InputError(
            "the land-value raster is rotated; multiplan reads north-up rasters",
            key="yield.revenue.raster",
        )
    if raster.crs is not None and crs is not None and raster.crs != crs:
        geoms = crs_mod.transform_geometries(
            geoms, crs_mod.make_transformer(crs, raster.crs)
        )
    values = np.ma.filled(raster.values.astype("float64"), np.nan)
    h, w = values.shape
    x0, dx, y0, dy = t.c, t.a, t.f, t.e  # dy < 0 for north-up
    bounds = shapely.bounds(geoms)
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        minx, miny, maxx, maxy = bounds[i]
        c0 = max(math.floor((minx - x0) / dx), 0)
        c1 = min(math.ceil((maxx - x0) / dx), w)
        r0 = max(math.floor((maxy - y0) / dy), 0)
        r1 = min(math.ceil((miny - y0) / dy), h)
        if c0 >= c1 or r0 >= r1:
            continue
        grid_c, grid_r = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
        cols, rows = grid_c.ravel(), grid_r.ravel()
        v = values[rows, cols]
        valid = np.isfinite(v)
        if not valid.any():
            continue
        cols, rows, v = cols[valid], rows[valid], v[valid]
        boxes = shapely.box(
            x0 + cols * dx, y0 + (rows + 1) * dy, x0 + (cols + 1) * dx, y0 + rows * dy
        )
        shapely.prepare(g)
        inside = shapely.covers(g, boxes)
        weight = np.where(inside, abs(dx * dy), 0.0)
        edge = np.flatnonzero(~inside & shapely.intersects(g, boxes))
        if len(edge):
            weight[edge] = shapely.area(shapely.intersection(boxes[edge], g))
        total = weight.sum()
        if total > 0:
            out[i] = float((weight * v).sum() / total)
    return out


# --------------------------------------------------------------------------- outputs


YIELD_FILES = (
    "yield.gpkg",
    "yield.csv",
    "yield_by_unit.csv",
    "yield_by_park.csv",
    "scenarios.csv",
)


def yield_writers(result: YieldResult, spec: YieldSpec) -> dict[str, Any]:
    """Return writers for yield.gpkg, yield.csv, yield_by_unit.csv, yield_by_park.csv and scenarios.csv."""
    from multiplan.io import csv_bytes, gpkg_writer
    from multiplan.report import bytes_writer

    p = result.parcels
    cols = [
        "id",
        "unit",
        "area_m2",
        AREA_MU,
        *[i.id for i in spec.indicators],
        "score",
        "grade",
    ]
    table = pd.DataFrame({c: p[c] if c in p.columns else None for c in cols})
    public = [*public_fields(p), p.geometry.name]
    writers: dict[str, Any] = {
        "yield.gpkg": gpkg_writer(
            gpd.GeoDataFrame(p[public], geometry=p.geometry, crs=p.crs), layer="yield"
        ),
        "yield.csv": bytes_writer(csv_bytes(table)),
        "yield_by_unit.csv": bytes_writer(csv_bytes(result.by_unit)),
        "scenarios.csv": bytes_writer(csv_bytes(result.scenarios)),
    }
    if result.by_park is not None:
        writers["yield_by_park.csv"] = bytes_writer(csv_bytes(result.by_park))
    return writers


def yield_layers_needed(project: Project, spec: YieldSpec | None) -> list[str]:
    """Return the layers the yield stage reads: parcels, the value raster, scenario layers, units."""
    if spec is None:
        return []
    names = [
        spec.parcels,
        spec.revenue.raster if spec.revenue else None,
        *[s.layer for s in spec.scenarios],
        project.units,
    ]
    return [n for n in dict.fromkeys(names) if n]


def run_yield(
    project: Project, *, out: Path | None = None
) -> tuple[YieldResult, list[Path]]:
    """Compute land yield alone (``multiplan yield``) and write its outputs.

    Raises
    ------
    InputError
        When the manifest has no ``[yield]`` table, or for bad yield input.
    """
    from multiplan.io import remove_stale_temporaries, write_files
    from multiplan.layers import load_layer
    from multiplan.report import check_outputs_are_not_inputs

    spec = load_yield_spec(project)
    if spec is None:
        raise ManifestError(
            "the manifest has no [yield] table",
            path=project.path,
            key="yield",
            hint="Add [yield] with parcels, indicators and grades (SPEC §8)",
        )
    out_dir = Path(out) if out is not None else project.out
    check_outputs_are_not_inputs(project, out_dir)
    layers = {
        n: load_layer(project.layers[n], project)
        for n in yield_layers_needed(project, spec)
    }
    result = compute_yield(project, spec, layers)
    remove_stale_temporaries(out_dir)
    files = write_files(out_dir, yield_writers(result, spec))
    return result, files
