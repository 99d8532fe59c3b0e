"""The Excel ledgers (台账) a 多规合一 office keeps: ``ledger.xlsx`` and ``differences.xlsx``.

Written with XlsxWriter: Chinese headers (English with ``lang="en"``), figures as
numbers shown with two decimals, the header row frozen, an autofilter, class names
beside codes, and totals rows that are areas of unions (read from the summary
tables, never summed here). Every text cell is written as a string, so that a cell
starting with ``=`` stays text, and the file's timestamp is fixed, so that the same
figures give the same bytes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from multiplan.areas import to_mu
from multiplan.labels import label
from multiplan.workbook import Sheet

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd

    from multiplan.classify import Taxonomy
    from multiplan.labels import Lang
    from multiplan.rules import Rule

logger = logging.getLogger(__name__)

LEDGER_MAX_PIECES = 100_000
"""Above this many pieces the per-rule sheets are left out of ledger.xlsx, saying so.

XlsxWriter needs 4–8 µs a cell on the project's 2-core machine: 284 000 pieces would
take 16–32 s. Every piece stays in conflicts.gpkg."""
Column = tuple[str, str]
"""A ledger column: (header label key, kind) with kind ``text``, ``m2``, ``mu``, ``share``, ``yuan`` or ``int``."""


def _name(taxonomy: Taxonomy, code: object) -> str | None:
    return taxonomy.name(code) if isinstance(code, str) else None


def check_ledger(
    *,
    rules: Sequence[Rule],
    pieces: pd.DataFrame,
    summary: pd.DataFrame,
    units: pd.DataFrame | None,
    totals: Mapping[str, float],
    taxonomy: Taxonomy,
    lang: Lang = "zh",
    levels: Mapping[str, str] | None = None,
) -> list[Sheet]:
    """Return the sheets of ``ledger.xlsx``: 汇总 (per rule, then the district total), 镇街, one per rule.

    The total rows are unions of pieces (``totals``, ``units``), never sums.
    ``levels`` maps each level of units (the pieces' column, and ``level`` in
    ``units``) to its title, from the largest down, when there are several
    (SPEC §14): the 镇街 sheet then has a first column 层级 with a block of rows
    per level, and each rule's sheet a unit column per level.
    """

    def L(key: str) -> str:
        return label(key, lang)

    has_value = "value_yuan" in summary.columns
    cols = [
        (L("rule_id"), "text"),
        (L("rule_title"), "text"),
        (L("severity"), "text"),
        (L("pieces"), "int"),
        (L("area_m2_h"), "m2"),
        (L("area_mu_h"), "mu"),
    ]
    if has_value:
        cols.append((L("value_yuan"), "yuan"))
    head = Sheet(L("sheet_summary"), cols)
    titles = {r.id: r.label(lang) for r in rules}
    for _, r in summary.iterrows():
        row = [
            r["rule_id"],
            titles.get(r["rule_id"], r["title"]),
            L(str(r["severity"])),
            r["pieces"],
            r["area_m2"],
            r["area_mu"],
        ]
        if has_value:
            row.append(r["value_yuan"])
        head.rows.append(row)
    total = totals.get("all", 0.0)
    row = [L("district_total"), None, None, len(pieces), total, to_mu(total)]
    if has_value:
        row.append(float(totals.get("value", 0.0)))  # land valued once
    head.totals.append(row)
    for sev in ("high", "medium", "low"):
        if totals.get(sev):
            n = int((pieces["severity"] == sev).sum())
            head.totals.append(
                [
                    f"{L('total_union')} · {L(sev)}",
                    None,
                    L(sev),
                    n,
                    totals[sev],
                    to_mu(totals[sev]),
                    *([None] if has_value else []),
                ]
            )
    sheets = [head]
    leveled = bool(levels) and units is not None and "level" in units.columns
    titles_of = dict(levels or {}) if leveled else {}
    if units is not None:
        u = Sheet(
            L("sheet_units"),
            [
                *([(L("level"), "text")] if leveled else []),
                (L("level_unit" if leveled else "unit"), "text"),
                (L("level_unit_area" if leveled else "unit_area"), "m2"),
                (L("pieces"), "int"),
                (L("conflict_m2"), "m2"),
                (L("conflict_mu"), "mu"),
                (L("share"), "share"),
                (L("high_m2"), "m2"),
                (L("medium_m2"), "m2"),
                (L("low_m2"), "m2"),
            ],
        )
        for _, r in units.iterrows():
            u.rows.append(
                [
                    *([titles_of.get(r["level"], r["level"])] if leveled else []),
                    r["unit"] if r["unit"] is not None else L("no_unit"),
                    r["unit_area_m2"],
                    r["pieces"],
                    r["area_m2"],
                    r["area_mu"],
                    r["share"],
                    r["high_m2"],
                    r["medium_m2"],
                    r["low_m2"],
                ]
            )
        u.totals.append(
            [
                L("district_total"),
                *([None] if leveled else []),
                None,
                len(pieces),
                total,
                to_mu(total),
                None,
                totals.get("high", 0.0),
                totals.get("medium", 0.0),
                totals.get("low", 0.0),
            ]
        )
        sheets.append(u)
    area_of = dict(zip(summary["rule_id"], summary["area_m2"], strict=True))
    value_of = (
        dict(zip(summary["rule_id"], summary["value_yuan"], strict=True))
        if has_value
        else {}
    )
    if len(pieces) > LEDGER_MAX_PIECES:
        note = Sheet(L("sheet_note"), [(L("note"), "text")])
        note.rows.append(
            [
                L("ledger_too_big").format(
                    n=f"{len(pieces):,}", max=f"{LEDGER_MAX_PIECES:,}"
                )
            ]
        )
        sheets.append(note)
        logger.warning(
            "ledger.xlsx lists no pieces per rule: %d pieces are more than %d; every piece is in conflicts.gpkg",
            len(pieces),
            LEDGER_MAX_PIECES,
        )
        return sheets
    for rule in rules:
        mine = pieces[pieces["rule_id"] == rule.id] if len(pieces) else pieces
        cols = [
            (L("a_layer"), "text"),
            (L("a_id"), "text"),
            (L("a_class"), "text"),
            (L("a_name"), "text"),
            (L("b_layer"), "text"),
            (L("b_id"), "text"),
            (L("b_class"), "text"),
            (L("b_name"), "text"),
            *([(t, "text") for t in titles_of.values()] or [(L("unit"), "text")]),
            (L("area_m2_h"), "m2"),
            (L("area_mu_h"), "mu"),
        ]
        if has_value:
            cols.append((L("value_yuan"), "yuan"))
        s = Sheet(rule.id, cols)
        unit_cols = list(titles_of) or ["unit"]
        n_units = len(unit_cols)
        fields = ["a_layer", "a_id", "a_class", "b_layer", "b_id", "b_class"]
        fields += [*unit_cols, "area_m2", "area_mu"]
        fields += ["value_yuan"] if has_value else []
        # plain tuples by position: a level's column may be named in Chinese
        for t in mine[fields].itertuples(index=False, name=None):
            s.rows.append(
                [
                    *t[:3],
                    _name(taxonomy, t[2]),
                    *t[3:6],
                    _name(taxonomy, t[5]),
                    *t[6:],
                ]
            )
        area = float(area_of.get(rule.id, 0.0))
        row = [L("total_union"), *([None] * (7 + n_units)), area, to_mu(area)]
        if has_value:
            row.append(float(value_of.get(rule.id, 0.0)))
        s.totals.append(row)
        sheets.append(s)
    return sheets


def differences_ledger(
    patches: pd.DataFrame,
    differences: pd.DataFrame,
    compare: tuple[str, str],
    taxonomy: Taxonomy,
    *,
    titles: Mapping[str, str],
    lang: Lang = "zh",
) -> list[Sheet]:
    """Return the sheets of ``differences.xlsx``: the 差异图斑台账 and the areas by class and unit.

    One row per patch with its number, unit, both plans' classes and names, area in
    m² and 亩, and the empty sign-off columns 调整方向, 处理意见, 状态. Patches never
    overlap, so the total row (their union) is their sum.
    """

    def L(key: str) -> str:
        return label(key, lang)

    first, second = compare
    t1, t2 = titles.get(first, first), titles.get(second, second)
    cols = [
        (L("patch_no"), "text"),
        (L("diff_class"), "text"),
        (L("unit"), "text"),
        (f"{t1} {L('class_code')}", "text"),
        (f"{t1} {L('class_name')}", "text"),
        (f"{t2} {L('class_code')}", "text"),
        (f"{t2} {L('class_name')}", "text"),
        (L("area_m2_h"), "m2"),
        (L("area_mu_h"), "mu"),
        (L("adjust_plan"), "text"),
        (L("opinion"), "text"),
        (L("status"), "text"),
    ]
    sheet = Sheet(L("sheet_patches"), cols)
    for r in patches.itertuples(index=False):
        c1, c2 = getattr(r, f"{first}_class"), getattr(r, f"{second}_class")
        sheet.rows.append(
            [
                r.patch_no,
                f"{r.diff_class} {L('diff_' + str(r.diff_class))}",
                r.unit,
                c1,
                _name(taxonomy, c1),
                c2,
                _name(taxonomy, c2),
                r.area_m2,
                r.area_mu,
                r.adjust_plan,
                r.opinion,
                r.status,
            ]
        )
    area = float(patches["area_m2"].sum()) if len(patches) else 0.0
    sheet.totals.append(
        [
            L("total"),
            None,
            None,
            None,
            None,
            None,
            None,
            area,
            to_mu(area),
            None,
            None,
            None,
        ]
    )
    leveled = "level" in differences.columns  # several levels of units: a block each
    summary = Sheet(
        L("sheet_by_class"),
        [
            *([(L("level"), "text")] if leveled else []),
            (L("diff_class"), "text"),
            (L("unit"), "text"),
            (L("patches"), "int"),
            (L("area_m2_h"), "m2"),
            (L("area_mu_h"), "mu"),
        ],
    )
    for d in differences.to_dict("records"):
        summary.rows.append(
            [
                *([d["level"]] if leveled else []),
                f"{d['diff_class']} {L('diff_' + str(d['diff_class']))}",
                d["unit"],
                d["patches"],
                d["area_m2"],
                d["area_mu"],
            ]
        )
    if not leveled:  # per level, each block adds up to the patches' total
        summary.totals.append([L("total"), None, len(patches), area, to_mu(area)])
    return [sheet, summary]
