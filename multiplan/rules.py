"""Rule packs (TOML) → validated :class:`Rule` values; selector matching.

A rule relates two selections of features (SPEC §5). Packs are validated as a
whole, against the project's layers and the taxonomy, before any work: unknown
keys, duplicate ids, unknown layers, classes or tags, bad severities, relations
or distances each stop with one message naming the pack, the rule and the key.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from multiplan.errors import RulePackError, valid_keys_hint
from multiplan.filters import Where, parse_where, where_mask
from multiplan.sections import known_tags

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from multiplan.classify import Taxonomy
    from multiplan.specs import Project

logger = logging.getLogger(__name__)

Severity = Literal["high", "medium", "low"]
Relation = Literal["intersect", "difference"]
SEVERITIES: tuple[Severity, ...] = ("high", "medium", "low")
RELATIONS: tuple[Relation, ...] = ("intersect", "difference")
SEVERITY_RANK: Mapping[str, int] = {"high": 3, "medium": 2, "low": 1}

_RULE_KEYS = (
    "id",
    "title",
    "title_en",
    "severity",
    "a",
    "b",
    "relation",
    "distance",
    "min_area",
    "basis",
)
_SELECTOR_KEYS = ("layer", "class", "where")
_PACK_KEYS = ("pack", "rule")
_PACK_META_KEYS = ("name", "title", "version", "description")


@dataclass(frozen=True)
class Selector:
    """A selection of features: a layer, optionally narrowed by classes and a filter."""

    layer: str
    classes: tuple[str, ...] = ()
    where: Where = field(default_factory=Where)

    def describe(self) -> str:
        """Return a short text form, e.g. ``chenggui[construction]``."""
        text = self.layer
        if self.classes:
            text += "[" + ",".join(self.classes) + "]"
        if self.where.conditions:
            text += " where " + " and ".join(
                f"{c.field} {c.op} {c.value!r}" for c in self.where.conditions
            )
        return text


@dataclass(frozen=True)
class Rule:
    """A validated conflict rule."""

    id: str
    title: str
    severity: Severity
    a: Selector
    b: Selector
    relation: Relation = "intersect"
    distance: float = 0.0
    min_area: float = 1.0
    title_en: str | None = None
    basis: str | None = None
    pack: Path | None = None

    def label(self, lang: str = "zh") -> str:
        """Return the title in the chosen language (falls back to Chinese)."""
        return (self.title_en or self.title) if lang == "en" else self.title


def read_rules(
    project: Project, *, only: Iterable[str] | None = None
) -> tuple[Rule, ...]:
    """Read and validate every rule pack of a project, in pack order.

    Parameters
    ----------
    project
        The loaded manifest; its layers and taxonomy validate the selectors.
    only
        Rule ids to keep (``--only``); an unknown id is an error.

    Raises
    ------
    RulePackError
        At the first problem, naming the pack, the rule and the key.
    """
    taxonomy = project.taxonomy
    tags = known_tags(project.layers)
    rules: list[Rule] = []
    seen: dict[str, Path] = {}
    for pack in project.rules:
        for rule in _load_pack(pack, project=project, taxonomy=taxonomy, tags=tags):
            if rule.id in seen:
                raise RulePackError(
                    f"rule id {rule.id!r} is already used in {seen[rule.id]}",
                    path=pack,
                    key=f"rule {rule.id}.id",
                    hint="Rule ids must be unique across all packs of a project",
                )
            seen[rule.id] = pack
            rules.append(rule)
    if only is not None:
        wanted = list(dict.fromkeys(only))
        missing = [w for w in wanted if w not in seen]
        if missing:
            raise RulePackError(
                f"--only names no rule {missing[0]!r}",
                hint=f"Valid rule ids are: {', '.join(seen) or 'none'}",
            )
        rules = [r for r in rules if r.id in wanted]
    return tuple(rules)


def _load_pack(
    pack: Path, *, project: Project, taxonomy: Taxonomy, tags: set[str]
) -> list[Rule]:
    try:
        data = tomllib.loads(pack.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RulePackError(f"cannot read the rule pack ({exc})", path=pack) from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulePackError(f"not valid TOML ({exc})", path=pack) from exc
    for k in data:
        if k not in _PACK_KEYS:
            raise RulePackError(
                "unknown key",
                path=pack,
                key=k,
                hint="A rule pack holds [pack] and [[rule]] tables",
            )
    meta = data.get("pack", {})
    if not isinstance(meta, Mapping):
        raise RulePackError("must be a table", path=pack, key="pack")
    for k in meta:
        if k not in _PACK_META_KEYS:
            raise RulePackError(
                "unknown key",
                path=pack,
                key=f"pack.{k}",
                hint=valid_keys_hint(k, _PACK_META_KEYS),
            )
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RulePackError(
            "rules must be an array of tables: [[rule]]", path=pack, key="rule"
        )
    out = []
    ids: set[str] = set()
    for i, raw in enumerate(raw_rules):
        rule = _parse_rule(
            raw, i, pack=pack, project=project, taxonomy=taxonomy, tags=tags
        )
        if rule.id in ids:
            raise RulePackError(
                f"duplicate rule id {rule.id!r}",
                path=pack,
                key=f"rule {rule.id}.id",
                hint="Rule ids must be unique across all packs of a project",
            )
        ids.add(rule.id)
        out.append(rule)
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _parse_rule(
    raw: Any,
    index: int,
    *,
    pack: Path,
    project: Project,
    taxonomy: Taxonomy,
    tags: set[str],
) -> Rule:
    if not isinstance(raw, Mapping):
        raise RulePackError("a rule must be a table", path=pack, key=f"rule[{index}]")
    rid = raw.get("id")
    where = f"rule {rid}" if isinstance(rid, str) and rid else f"rule[{index}]"
    for k in raw:
        if k not in _RULE_KEYS:
            raise RulePackError(
                "unknown key",
                path=pack,
                key=f"{where}.{k}",
                hint=valid_keys_hint(k, _RULE_KEYS),
            )
    if not isinstance(rid, str) or not rid.strip():
        raise RulePackError(
            "every rule needs an id",
            path=pack,
            key=f"{where}.id",
            hint='Add id = "ECO-01"',
        )
    title = raw.get("title", rid)
    if not isinstance(title, str):
        raise RulePackError("must be a string", path=pack, key=f"{where}.title")
    title_en = raw.get("title_en")
    if title_en is not None and not isinstance(title_en, str):
        raise RulePackError("must be a string", path=pack, key=f"{where}.title_en")
    severity = raw.get("severity", "medium")
    if severity not in SEVERITIES:
        raise RulePackError(
            f"invalid severity {severity!r}",
            path=pack,
            key=f"{where}.severity",
            hint="Valid values are high, medium, low",
        )
    relation = raw.get("relation", "intersect")
    if relation not in RELATIONS:
        raise RulePackError(
            f"invalid relation {relation!r}",
            path=pack,
            key=f"{where}.relation",
            hint="Valid values are intersect, difference",
        )
    distance = raw.get("distance", 0)
    if not _number(distance) or distance < 0:
        raise RulePackError(
            f"distance must be a number of metres ≥ 0, not {distance!r}",
            path=pack,
            key=f"{where}.distance",
        )
    min_area = raw.get("min_area", 1.0)
    if not _number(min_area) or min_area < 0:
        raise RulePackError(
            f"min_area must be a number of m² ≥ 0, not {min_area!r}",
            path=pack,
            key=f"{where}.min_area",
        )
    basis = raw.get("basis")
    if basis is not None and not isinstance(basis, str):
        raise RulePackError("must be a string", path=pack, key=f"{where}.basis")
    for side in ("a", "b"):
        if side not in raw:
            raise RulePackError(
                f"the rule has no '{side}' selector",
                path=pack,
                key=f"{where}.{side}",
                hint='Add e.g. b = { layer = "eco_redline" }',
            )
    a = _parse_selector(
        raw["a"],
        pack=pack,
        key=f"{where}.a",
        project=project,
        taxonomy=taxonomy,
        tags=tags,
    )
    b = _parse_selector(
        raw["b"],
        pack=pack,
        key=f"{where}.b",
        project=project,
        taxonomy=taxonomy,
        tags=tags,
    )
    for side, sel in (("a", a), ("b", b)):
        spec = project.layers[sel.layer]
        if spec.kind == "raster" and not spec.classes:
            raise RulePackError(
                f"layer {sel.layer!r} is a value raster, which no rule can select",
                path=pack,
                key=f"{where}.{side}.layer",
                hint="Give the layer classes = [...] to use it in rules",
            )
    return Rule(
        id=rid.strip(),
        title=title,
        title_en=title_en,
        severity=cast("Severity", severity),
        a=a,
        b=b,
        relation=cast("Relation", relation),
        distance=float(distance),
        min_area=float(min_area),
        basis=basis,
        pack=pack,
    )


def _parse_selector(
    raw: Any,
    *,
    pack: Path,
    key: str,
    project: Project,
    taxonomy: Taxonomy,
    tags: set[str],
) -> Selector:
    if not isinstance(raw, Mapping):
        raise RulePackError(
            'a selector must be a table such as { layer = "tugui", class = ["01"] }',
            path=pack,
            key=key,
        )
    for k in raw:
        if k not in _SELECTOR_KEYS:
            raise RulePackError(
                "unknown key",
                path=pack,
                key=f"{key}.{k}",
                hint=valid_keys_hint(k, _SELECTOR_KEYS),
            )
    layer = raw.get("layer")
    if not isinstance(layer, str) or layer not in project.layers:
        raise RulePackError(
            f"names no layer of the project: {layer!r}",
            path=pack,
            key=f"{key}.layer",
            hint=f"Valid layers are: {', '.join(project.layers)}",
        )
    classes = raw.get("class", [])
    if isinstance(classes, str):
        classes = [classes]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise RulePackError(
            "class must be a list of codes, groups or tags",
            path=pack,
            key=f"{key}.class",
        )
    for c in classes:
        if not (c in taxonomy.codes or c in taxonomy.groups or c in tags):
            raise RulePackError(
                f"unknown class {c!r}",
                path=pack,
                key=f"{key}.class",
                hint=(
                    f'Use a 用地用海 code (e.g. "07", "0701"), a group ({", ".join(taxonomy.groups)}) '
                    f"or a zone tag ({', '.join(sorted(tags))})"
                ),
            )
    where = (
        parse_where(raw["where"], path=pack, key=f"{key}.where", error=RulePackError)
        if "where" in raw
        else Where()
    )
    return Selector(layer=layer, classes=tuple(classes), where=where)


def class_mask(
    classes: pd.Series | np.ndarray, items: Iterable[str], taxonomy: Taxonomy
) -> np.ndarray:
    """Return which classes match any selector item (code prefix, group or tag).

    A null class matches nothing.

    Examples
    --------
    >>> from types import MappingProxyType as P
    >>> from multiplan.classify import Taxonomy
    >>> tx = Taxonomy(P({"07": "", "0701": "", "10": ""}), P({"construction": ("07", "10")}), P({}))
    >>> class_mask(np.array(["0701", "1001", "01", None, "eco_redline"], dtype=object),
    ...            ["construction", "eco_redline"], tx).tolist()
    [True, True, False, False, True]
    """
    values = np.asarray(classes, dtype=object)
    prefixes: list[str] = []
    exact: set[str] = set()
    for item in items:
        if item in taxonomy.groups:
            prefixes.extend(taxonomy.groups[item])
        elif item in taxonomy.codes:
            prefixes.append(item)
        else:
            exact.add(item)
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, str) and (
            v in exact or (v[:2].isdigit() and any(v.startswith(p) for p in prefixes))
        ):
            out[i] = True
    return out


def select(
    frame: pd.DataFrame,
    selector: Selector,
    taxonomy: Taxonomy,
    *,
    class_col: str,
    path: Path | None = None,
    key: str | None = None,
) -> np.ndarray:
    """Return a boolean mask of the features of ``frame`` that ``selector`` selects.

    Raises
    ------
    FilterError
        For a filter that cannot mean anything on the data (``path`` and ``key``
        name the rule pack and the selector).
    """
    mask = np.ones(len(frame), dtype=bool)
    if selector.classes:
        mask &= class_mask(frame[class_col], selector.classes, taxonomy)
    if selector.where.conditions:
        mask &= where_mask(frame, selector.where, path=path, key=key)
    return mask
