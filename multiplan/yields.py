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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd

from multiplan.areas import UnionAreas, area_m2, to_mu, union_area
from multiplan.errors import InputError, ManifestError
from multiplan.filters import where_mask
from multiplan.io import csv_writer, gpkg_writer
from multiplan.layers import (
    LayerInput,
    Layers,
    ensure_layers,
    public_fields,
)
from multiplan.levels import build_levels, per_level, units_at

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from multiplan.io import Writer
    from multiplan.specs import Project, Scenario, YieldSpec

logger = logging.getLogger(__name__)

GRADES = ("A", "B", "C", "D")
AREA_MU = "area_mu"


# --------------------------------------------------------------------------- indicators and grades


@dataclass(frozen=True)
class YieldResult:
    """Per-parcel indicators and grades, their aggregates, scenarios, and what was counted."""

    spec: YieldSpec
    parcels: gpd.GeoDataFrame
    by_unit: pd.DataFrame
    by_park: pd.DataFrame | None
    scenarios: pd.DataFrame
    notes: Mapping[str, Any]
    levels: tuple[str, ...] = ()
    """With several levels of units, their names: a column each after ``unit``."""

    def files(self) -> dict[str, Writer]:
        """Return yield.gpkg, yield.csv, yield_by_unit.csv, yield_by_park.csv, scenarios.csv as writers."""
        p = self.parcels
        cols = [
            "id",
            "unit",
            *[c for c in p.columns if c in self.levels],
            "area_m2",
            AREA_MU,
            *[i.id for i in self.spec.indicators],
            "score",
            "grade",
            "exempt",
            "reason",
        ]
        table = pd.DataFrame({c: p[c] if c in p.columns else None for c in cols})
        public = [*public_fields(p), p.geometry.name]
        files: dict[str, Writer] = {
            "yield.gpkg": gpkg_writer(
                gpd.GeoDataFrame(p[public], geometry=p.geometry, crs=p.crs),
                layer="yield",
            ),
            "yield.csv": csv_writer(table),
            "yield_by_unit.csv": csv_writer(self.by_unit),
            "scenarios.csv": csv_writer(self.scenarios),
        }
        if self.by_park is not None:
            files["yield_by_park.csv"] = csv_writer(self.by_park)
        return files


def land_yield(project: Project, *, layers: LayerInput | None = None) -> YieldResult:
    """Evaluate land yield (亩均效益) as the manifest's ``[yield]`` describes (SPEC §8).

    Parameters
    ----------
    project
        A manifest with a ``[yield]`` table.
    layers
        Layers already read (or GeoDataFrames to use); what is missing is read.

    Returns
    -------
    YieldResult
        Per parcel the indicators, score and grade; aggregates per unit and
        park; the scenarios; what was counted (exempt, missing figures).

    Raises
    ------
    ManifestError
        When the manifest has no ``[yield]`` table.
    InputError
        For bad yield input (a duplicated id in the table, a missing field).

    Examples
    --------
    >>> import multiplan
    >>> y = multiplan.land_yield(multiplan.read_project("layers/xinbei/project.toml"))
    >>> y.scenarios[["id", "gross_yuan", "net_yuan"]].iloc[0].tolist()
    ['hunnan-tunnel', 1680000000, 1000000000]
    """
    spec = project.yield_
    if spec is None:
        raise ManifestError(
            "the manifest has no [yield] table",
            path=project.path,
            key="yield",
            hint="Add [yield] with parcels, indicators and grades (see docs/manifest.md)",
        )
    return compute_yield(
        project, spec, ensure_layers(project, yield_layers_needed(project), layers)
    )


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


def compute_yield(project: Project, spec: YieldSpec, layers: Layers) -> YieldResult:
    """Compute indicators, score and grade per parcel, their aggregates and the scenarios.

    Raises
    ------
    InputError
        For a duplicated id in the table or a field that neither the parcels nor
        the table have.
    """
    working = project.working_crs
    notes: dict[str, Any] = {}
    levels = build_levels(project, layers) if spec.parcels is not None else None
    unions: UnionAreas | None = None
    if spec.parcels is None:
        parcels = gpd.GeoDataFrame(
            {"id": []}, geometry=gpd.GeoSeries([], crs=project.crs), crs=project.crs
        )
    else:
        frame = layers[spec.parcels]
        geoms = np.asarray(frame.geometry.array, dtype=object)
        area = area_m2(geoms, working, project.area)
        unions = _parcel_unions(geoms, area, project)
        shared = _overlapping(unions, len(geoms))
        notes["overlapping_parcels"] = int(shared.sum())
        if shared.any():
            logger.warning(
                "%d parcels of %s overlap another parcel (%s): the land they share is "
                "counted once in the area of a unit or park, and in each parcel's own "
                "indicators",
                int(shared.sum()),
                spec.parcels,
                ", ".join(str(i) for i in frame.index[shared][:10]),
            )
        data = pd.DataFrame(index=frame.index.astype(str))
        data["area_m2"] = area
        data[AREA_MU] = to_mu(area)
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
        units = units_at(levels, geoms)
        parcels = gpd.GeoDataFrame(
            {"id": data.index.to_numpy(dtype=object), **units},
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
        why_missing = np.full(len(parcels), None, dtype=object)
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
            parcels[ind.id] = significant(value)
            parcels[f"_{ind.numerator}_raw"] = num
            parcels[f"_{ind.id}_num"] = np.where(bad_den | bad_num, np.nan, num)
            parcels[f"_{ind.id}_den"] = np.where(bad_den | bad_num, np.nan, den)
            counts[ind.id] = {
                "missing_numerator": int(bad_num.sum()),
                "zero_or_missing_denominator": int(bad_den.sum()),
            }
            den_name = ind.denominator or "area"
            for mask, text in (
                (bad_num, f"no {ind.numerator}"),
                (bad_den & ~bad_num, f"no or zero {den_name}"),
            ):
                fresh = mask & np.array([w is None for w in why_missing], dtype=bool)
                why_missing[fresh] = f"{ind.id}: {text}"
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
            exempt |= where_mask(
                attrs, spec.exempt_where, path=project.path, key="yield.exempt"
            )
        parcels["exempt"] = exempt
        notes["exempt"] = int(exempt.sum())
        parcels["score"] = _score(parcels, spec, exempt)
        # object columns keep None (pandas 3 would infer a string dtype with NaN)
        parcels["grade"] = pd.Series(
            _grades(parcels, spec, exempt), dtype=object, index=parcels.index
        )
        for key, names in units.items():
            parcels[key] = pd.Series(names, dtype=object, index=parcels.index)
        reason = np.full(len(parcels), None, dtype=object)
        reason[exempt] = "exempt"
        ungraded = ~exempt & np.array([g is None for g in parcels["grade"]], dtype=bool)
        if spec.grading is not None:
            reason[ungraded] = [
                w or f"no {spec.grading.by}" for w in why_missing[ungraded]
            ]
        parcels["reason"] = pd.Series(reason, dtype=object, index=parcels.index)
        notes["ungraded"] = int(ungraded.sum()) if spec.grading is not None else 0
    by_unit = per_level(levels, lambda key: aggregate(parcels, spec, key, unions))
    by_park = (
        aggregate(parcels, spec, "park", unions) if "park" in parcels.columns else None
    )
    scenarios = compute_scenarios(spec.scenarios, project, layers)
    return YieldResult(
        spec=spec,
        parcels=parcels,
        by_unit=by_unit,
        by_park=by_park,
        scenarios=scenarios,
        notes=notes,
        levels=levels.names if levels is not None and levels.multi else (),
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


def _parcel_unions(geoms: np.ndarray, area: np.ndarray, project: Project) -> UnionAreas:
    """Return the union areas of the parcels: two clean parcels never overlap."""
    from multiplan.summary import clean_features

    clean = clean_features(gpd.GeoDataFrame(geometry=geoms))
    return UnionAreas(
        geoms,
        area,
        project.working_crs,
        project.area,
        known_apart=lambda i, j: clean[i] & clean[j],
    )


def _overlapping(unions: UnionAreas, n: int) -> np.ndarray:
    """Return which parcels share area with another parcel."""
    out = np.zeros(n, dtype=bool)
    i, j = unions.pairs
    out[i] = True
    out[j] = True
    return out


def aggregate(
    parcels: pd.DataFrame,
    spec: YieldSpec,
    by: str,
    unions: UnionAreas | None = None,
) -> pd.DataFrame:
    """Totals and area-weighted indicators (Σ numerator / Σ denominator) per group, and grade counts.

    A group's ``area_m2`` is the area of the union of its parcels (with ``unions``,
    the parcels' :class:`~multiplan.areas.UnionAreas`, in the rows of ``parcels``):
    land two parcels share is counted once.
    """
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
        area = (
            unions.total(mask=sel)
            if unions is not None
            else float(sub["area_m2"].sum())
        )
        row: dict[str, Any] = {
            by: k,
            "parcels": int(sel.sum()),
            "area_m2": area,
            AREA_MU: to_mu(area),
        }
        for n in numerators:
            # the total of a numerator over the parcels that have it
            vals = (
                pd.to_numeric(sub[f"_{n}_raw"], errors="coerce").to_numpy(dtype=float)
                if f"_{n}_raw" in sub
                else np.array([])
            )
            # not 261624.00000000003 in the CSV: an exact sum, to a millionth
            row[f"{n}_total"] = round(math.fsum(vals[~np.isnan(vals)]), 6)
        for ind in spec.indicators:
            num = sub[f"_{ind.id}_num"].to_numpy(dtype=float)
            den = sub[f"_{ind.id}_den"].to_numpy(dtype=float)
            ok = np.isfinite(num) & np.isfinite(den)
            total_den = math.fsum(den[ok])
            row[ind.id] = (
                float(significant(np.array([math.fsum(num[ok]) / total_den]))[0])
                if ok.any() and total_den
                else None
            )
        grades = sub["grade"].to_numpy(dtype=object) if "grade" in sub else np.array([])
        for gname in GRADES:
            row[gname] = int((grades == gname).sum())
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    out[by] = pd.Series([r[by] for r in rows], dtype=object)
    return out


SIGNIFICANT_DIGITS = 12
"""Digits an indicator keeps: a division's last bits are noise (0.7 / 0.1 is 6.999999999999999)."""


def significant(values: np.ndarray) -> np.ndarray:
    """Return ``values`` to :data:`SIGNIFICANT_DIGITS` significant digits (NaN stays NaN).

    So that a figure at a grade's threshold takes that grade, and the tables
    read as the figures were given.

    Examples
    --------
    >>> significant(np.array([0.7 / 0.1, 1 / 3, np.nan])).tolist()
    [7.0, 0.333333333333, nan]
    """
    out = np.array(
        [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in np.asarray(values, dtype=float)],
        dtype=float,
    )
    return out


def compute_scenarios(
    scenarios: Sequence[Scenario],
    project: Project,
    layers: Mapping[str, gpd.GeoDataFrame],
) -> pd.DataFrame:
    """Return scenarios.csv: gross = area 亩 × net revenue per 亩; net = gross − cost.

    Examples
    --------
    The Shenyang Hunnan utility-tunnel case:

    >>> from multiplan.specs import Scenario
    >>> s = Scenario("hunnan", "综合管廊节约用地收益", net_revenue_per_mu=700000, cost=680000000, area_mu=2400)
    >>> compute_scenarios([s], None, {})[["gross_yuan", "net_yuan"]].iloc[0].tolist()  # type: ignore[arg-type]
    [1680000000, 1000000000]
    """
    rows = []
    for s in scenarios:
        if s.layer is not None:
            a = union_area(
                np.asarray(layers[s.layer].geometry.array, dtype=object),
                project.working_crs,
                project.area,
            )
            area_mu: float | int = to_mu(a)
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


def yield_layers_needed(project: Project) -> list[str]:
    """Return the layers the yield stage reads: parcels, the value raster, scenario layers, units."""
    spec = project.yield_
    if spec is None:
        return []
    names = [
        spec.parcels,
        spec.revenue.raster if spec.revenue else None,
        *[s.layer for s in spec.scenarios],
        *project.units,
        project.boundary if project.grid else None,
    ]
    return [n for n in dict.fromkeys(names) if n]
