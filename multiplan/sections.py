"""Validate the manifest's ``[yield]``, ``[fusion]`` and ``[site]`` tables into frozen values.

:func:`multiplan.read_project` calls these for every command, so that
``multiplan rules`` refuses ``forbid = ["no_such_tag"]`` as ``site`` would, and a
``compare = "tugui"`` (a string, not a list) is named for what it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multiplan.classify import TAG_RE, ZONE_TAGS, Taxonomy, load_crosswalk
from multiplan.errors import ManifestError, valid_keys_hint
from multiplan.filters import parse_where
from multiplan.specs import (
    FusionSpec,
    Grading,
    Indicator,
    LayerSpec,
    Revenue,
    Scenario,
    SiteSpec,
    YieldSpec,
)

if TYPE_CHECKING:
    from pathlib import Path

YIELD_KEYS = (
    "parcels",
    "table",
    "join",
    "indicators",
    "score",
    "grades",
    "revenue",
    "scenario",
    "park_field",
    "exempt",
    "encoding",
)
FUSION_KEYS = ("layers", "priority", "compare")
SITE_KEYS = ("forbid",)
_INDICATOR_KEYS = ("id", "title", "numerator", "denominator", "unit")
_SCENARIO_KEYS = ("id", "title", "area_mu", "layer", "net_revenue_per_mu", "cost")


def _err(path: Path, key: str, message: str, hint: str | None = None) -> ManifestError:
    return ManifestError(message, path=path, key=key, hint=hint)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_keys(table: Any, allowed: Sequence[str], *, path: Path, key: str) -> None:
    if not isinstance(table, Mapping):
        raise _err(path, key, "must be a table")
    for k in table:
        if k not in allowed:
            raise _err(path, f"{key}.{k}", "unknown key", valid_keys_hint(k, allowed))


def _layer_list(
    raw: Any, *, path: Path, key: str, layers: Mapping[str, LayerSpec]
) -> list[str]:
    """Check a list of layer names; a bare string is named as the mistake it is."""
    if isinstance(raw, str):
        raise _err(
            path,
            key,
            f"must be a list of layer names, not the string {raw!r}",
            f'Write {key.split(".")[-1]} = ["{raw}"]',
        )
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise _err(path, key, "must be a list of layer names")
    for v in raw:
        if v not in layers:
            raise _err(
                path,
                key,
                f"names no layer: {v!r}",
                f"Valid layers are: {', '.join(layers)}",
            )
    return list(raw)


def known_tags(layers: Mapping[str, LayerSpec]) -> set[str]:
    """Return the zone tags usable in selectors: built-in ones and any the layers declare.

    Examples
    --------
    >>> from pathlib import Path
    >>> sorted(known_tags({"w": LayerSpec("w", Path("w.gpkg"), cls="wetland_park")}))[-1]
    'wetland_park'
    """
    tags = set(ZONE_TAGS)
    for spec in layers.values():
        if spec.cls and TAG_RE.match(spec.cls):
            tags.add(spec.cls)
        for rc in spec.classes:
            if TAG_RE.match(rc.cls):
                tags.add(rc.cls)
        if spec.crosswalk_path is not None:
            tags.update(
                t
                for t in load_crosswalk(spec.crosswalk_path).targets.values()
                if TAG_RE.match(t)
            )
    return tags


# --------------------------------------------------------------------------- [fusion]


def parse_fusion(
    raw: Any,
    *,
    path: Path,
    layers: Mapping[str, LayerSpec],
    boundary: str | None,
    units: Sequence[str],
) -> FusionSpec:
    """Return the ``[fusion]`` settings, with defaults: every polygon layer but boundary and units.

    Raises
    ------
    ManifestError
        For an unknown key, a name that is no layer, a value raster among the
        fused layers, or a ``compare`` that is not two different plan layers.
    """
    raw = {} if raw is None else raw
    _check_keys(raw, FUSION_KEYS, path=path, key="fusion")
    lists = {
        k: _layer_list(raw[k], path=path, key=f"fusion.{k}", layers=layers)
        for k in ("layers", "priority")
        if k in raw
    }
    default = [
        n
        for n, s in layers.items()
        if n != boundary and n not in units and (s.kind == "vector" or s.classes)
    ]
    fused = tuple(lists.get("layers") or default)
    for n in fused:
        if layers[n].kind == "raster" and not layers[n].classes:
            raise _err(
                path,
                "fusion.layers",
                f"layer {n!r} is a value raster, which has no faces",
                "Fuse polygon layers (or rasters with classes)",
            )
    compare: tuple[str, str] | None = None
    if "compare" in raw:
        pair = _layer_list(
            raw["compare"], path=path, key="fusion.compare", layers=layers
        )
        if len(pair) != 2 or pair[0] == pair[1]:
            raise _err(
                path,
                "fusion.compare",
                "compare names two different plan layers",
                'e.g. compare = ["chenggui", "tugui"]',
            )
        for n in pair:
            if layers[n].class_field is None:
                raise _err(
                    path,
                    "fusion.compare",
                    f"layer {n!r} has no class per feature to compare",
                    "Compare two plans with class_field and a classification",
                )
        compare = (pair[0], pair[1])
        fused = tuple(dict.fromkeys([*fused, *compare]))
    priority = [n for n in lists.get("priority", []) if n in fused]
    priority += [n for n in fused if n not in priority]
    return FusionSpec(layers=fused, priority=tuple(priority), compare=compare)


# --------------------------------------------------------------------------- [site]


def parse_site(
    raw: Any, *, path: Path, layers: Mapping[str, LayerSpec], taxonomy: Taxonomy
) -> SiteSpec:
    """Return ``[site]``: ``forbid`` checked, each item a layer, a class code, a group or a zone tag.

    Raises
    ------
    ManifestError
        For an unknown key or an item that is none of these.
    """
    raw = {} if raw is None else raw
    _check_keys(raw, SITE_KEYS, path=path, key="site")
    forbid = raw.get("forbid", [])
    if not isinstance(forbid, list) or not all(isinstance(v, str) for v in forbid):
        raise _err(
            path, "site.forbid", "forbid must be a list of layers, classes or tags"
        )
    tags = known_tags(layers)
    for v in forbid:
        if not (
            v in layers or v in taxonomy.codes or v in taxonomy.groups or v in tags
        ):
            raise _err(
                path,
                "site.forbid",
                f"{v!r} is neither a layer, a class code, a group nor a zone tag",
                f"Layers are: {', '.join(layers)}; tags are: {', '.join(sorted(tags))}",
            )
    return SiteSpec(forbid=tuple(forbid))


# --------------------------------------------------------------------------- [yield]


def parse_yield(
    raw: Any, *, path: Path, layers: Mapping[str, LayerSpec]
) -> YieldSpec | None:
    """Validate the manifest's ``[yield]`` table; ``None`` when there is none.

    Raises
    ------
    ManifestError
        Naming the ``yield.*`` key and what would be valid.
    """
    if raw is None:
        return None
    _check_keys(raw, YIELD_KEYS, path=path, key="yield")
    parcels = raw.get("parcels")
    if parcels is not None and (not isinstance(parcels, str) or parcels not in layers):
        raise _err(
            path,
            "yield.parcels",
            f"names no layer: {parcels!r}",
            f"Valid layers are: {', '.join(layers)}",
        )
    if parcels is not None and layers[parcels].kind != "vector":
        raise _err(
            path, "yield.parcels", "the parcels must be a vector layer of polygons"
        )
    table = None
    if "table" in raw:
        if not isinstance(raw["table"], str):
            raise _err(path, "yield.table", "must be the path of a CSV file")
        table = (path.parent / raw["table"]).resolve()
        if not table.is_file():
            raise _err(
                path,
                "yield.table",
                f"file not found: {table}",
                "The path is relative to the manifest",
            )
    join = raw.get("join")
    if table is not None and not isinstance(join, str):
        raise _err(
            path,
            "yield.join",
            'a table needs join = "<its column holding the parcel id>"',
        )
    indicators = _parse_indicators(raw.get("indicators", []), path=path)
    ids = [ind.id for ind in indicators]
    score = raw.get("score", {})
    if not isinstance(score, Mapping) or not all(_num(v) for v in score.values()):
        raise _err(path, "yield.score", "must be a table of indicator = weight")
    for k in score:
        if k not in ids:
            raise _err(
                path,
                f"yield.score.{k}",
                "names no indicator",
                f"Valid indicators are: {', '.join(ids)}",
            )
    grading = _parse_grades(raw.get("grades"), ids, has_score=bool(score), path=path)
    revenue = _parse_revenue(raw.get("revenue"), path=path, layers=layers)
    scenarios = _parse_scenarios(raw.get("scenario", []), path=path, layers=layers)
    park_field = raw.get("park_field")
    if park_field is not None and not isinstance(park_field, str):
        raise _err(path, "yield.park_field", "must be a field name")
    exempt_ids: tuple[str, ...] = ()
    exempt_where = None
    exempt = raw.get("exempt")
    if isinstance(exempt, list):
        exempt_ids = tuple(str(v) for v in exempt)
    elif isinstance(exempt, Mapping):
        exempt_where = parse_where(
            exempt, path=path, key="yield.exempt", error=ManifestError
        )
    elif exempt is not None:
        raise _err(
            path,
            "yield.exempt",
            'must be a list of parcel ids or a filter such as { field = "founded", ge = 2024 }',
        )
    if (indicators or grading) and parcels is None:
        raise _err(path, "yield.parcels", "indicators and grades need a parcels layer")
    encoding = raw.get("encoding", "utf-8-sig")
    if not isinstance(encoding, str):
        raise _err(path, "yield.encoding", "must be the name of a text encoding")
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
        encoding=encoding,
    )


def _parse_indicators(raw: Any, *, path: Path) -> list[Indicator]:
    if not isinstance(raw, list):
        raise _err(path, "yield.indicators", "must be a list of tables")
    indicators = []
    for i, item in enumerate(raw):
        key = f"yield.indicators[{i}]"
        if not isinstance(item, Mapping):
            raise _err(
                path,
                key,
                'must be a table such as { id = "tax_per_mu", numerator = "tax_wan" }',
            )
        _check_keys(item, _INDICATOR_KEYS, path=path, key=key)
        iid, numerator = item.get("id"), item.get("numerator")
        if not isinstance(iid, str) or not iid.isidentifier():
            raise _err(
                path,
                f"{key}.id",
                f"invalid indicator id {iid!r}",
                "Use letters, digits and '_', e.g. \"tax_per_mu\"",
            )
        if not isinstance(numerator, str):
            raise _err(
                path, f"{key}.numerator", "every indicator needs a numerator field"
            )
        den = item.get("denominator")
        if den is not None and not isinstance(den, str):
            raise _err(
                path,
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
        raise _err(path, "yield.indicators", "indicator ids must be unique")
    return indicators


def _parse_grades(
    raw: Any, ids: Sequence[str], *, has_score: bool, path: Path
) -> Grading | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _err(
            path,
            "yield.grades",
            'must be a table such as { by = "tax_per_mu", A = 30, B = 15, C = 5 }',
        )
    by = raw.get("by")
    valid = [*ids, *(["score"] if has_score else [])]
    if by not in valid:
        raise _err(
            path,
            "yield.grades.by",
            f"grades by {by!r}, which is neither an indicator nor the score",
            f"Valid values are: {', '.join(valid)}",
        )
    for k in raw:
        if k not in ("by", "top", "A", "B", "C"):
            raise _err(
                path,
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
                path,
                "yield.grades.top",
                "must give cumulative shares for A, B and C, e.g. { A = 0.2, B = 0.6, C = 0.95 }",
            )
        if not 0 < top["A"] <= top["B"] <= top["C"] <= 1:
            raise _err(path, "yield.grades.top", "shares must rise: 0 < A ≤ B ≤ C ≤ 1")
        return Grading(by=str(by), top={k: float(v) for k, v in top.items()})
    th = {k: raw.get(k) for k in ("A", "B", "C")}
    if not all(_num(v) for v in th.values()):
        raise _err(
            path,
            "yield.grades",
            "thresholds need A, B and C numbers (or top = {...} to grade by rank)",
        )
    a, b, c = (float(th[k]) for k in ("A", "B", "C"))  # type: ignore[arg-type]
    if not a >= b >= c:
        raise _err(path, "yield.grades", "thresholds must fall: A ≥ B ≥ C")
    return Grading(by=str(by), thresholds={"A": a, "B": b, "C": c})


def _parse_revenue(
    raw: Any, *, path: Path, layers: Mapping[str, LayerSpec]
) -> Revenue | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or len({"table", "raster"} & set(raw)) != 1:
        raise _err(
            path,
            "yield.revenue",
            'give either table = "<code,yuan_per_mu CSV>" or raster = "<land-value raster layer>"',
        )
    for k in raw:
        if k not in ("table", "raster", "unit"):
            raise _err(
                path,
                f"yield.revenue.{k}",
                "unknown key",
                "Valid keys are: table, raster, unit",
            )
    if "table" in raw:
        p = (path.parent / str(raw["table"])).resolve()
        if not p.is_file():
            raise _err(path, "yield.revenue.table", f"file not found: {p}")
        return Revenue(table=p)
    name = raw["raster"]
    if name not in layers or layers[name].kind != "raster":
        raster_layers = [n for n, s in layers.items() if s.kind == "raster"]
        raise _err(
            path,
            "yield.revenue.raster",
            f"names no raster layer: {name!r}",
            f"Raster layers are: {', '.join(raster_layers) or 'none'}",
        )
    unit = raw.get("unit", "yuan_per_m2")
    if unit not in ("yuan_per_m2", "yuan_per_mu"):
        raise _err(
            path,
            "yield.revenue.unit",
            f"invalid unit {unit!r}",
            'Valid values are "yuan_per_m2" and "yuan_per_mu"',
        )
    return Revenue(raster=str(name), unit=str(unit))


def _parse_scenarios(
    raw: Any, *, path: Path, layers: Mapping[str, LayerSpec]
) -> tuple[Scenario, ...]:
    if not isinstance(raw, list):
        raise _err(path, "yield.scenario", "scenarios are [[yield.scenario]] tables")
    out = []
    for i, item in enumerate(raw):
        key = f"yield.scenario[{i}]"
        if not isinstance(item, Mapping):
            raise _err(path, key, "must be a table")
        _check_keys(item, _SCENARIO_KEYS, path=path, key=key)
        sid = item.get("id")
        if not isinstance(sid, str) or not sid:
            raise _err(path, f"{key}.id", "every scenario needs an id")
        if ("area_mu" in item) == ("layer" in item):
            raise _err(
                path, key, "give either area_mu or layer (whose area is measured)"
            )
        if "area_mu" in item and (not _num(item["area_mu"]) or item["area_mu"] < 0):
            raise _err(path, f"{key}.area_mu", "must be a number of 亩 ≥ 0")
        if "layer" in item and item["layer"] not in layers:
            raise _err(
                path,
                f"{key}.layer",
                f"names no layer: {item['layer']!r}",
                f"Valid layers are: {', '.join(layers)}",
            )
        for k in ("net_revenue_per_mu", "cost"):
            if not _num(item.get(k)):
                raise _err(path, f"{key}.{k}", "must be a number of 元")
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
