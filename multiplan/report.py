"""``report.html``: the run for people who do not open GIS, one self-contained page.

The report reads the summary tables (areas of unions) and never adds areas up
itself. Every value shown is HTML-escaped.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from multiplan.areas import to_ha, to_mu
from multiplan.labels import label
from multiplan.levels import level_title

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from multiplan.labels import Lang
    from multiplan.rules import Rule
    from multiplan.specs import Project
    from multiplan.yields import YieldResult

logger = logging.getLogger(__name__)


class CheckOutcome(Protocol):
    """What the report reads of a check (a :class:`multiplan.CheckResult`)."""

    @property
    def project(self) -> Project: ...  # noqa: D102
    @property
    def rules(self) -> tuple[Rule, ...]: ...  # noqa: D102
    @property
    def attributes(self) -> pd.DataFrame: ...  # noqa: D102
    @property
    def summary(self) -> pd.DataFrame: ...  # noqa: D102
    @property
    def by_unit(self) -> pd.DataFrame | None: ...  # noqa: D102
    @property
    def run(self) -> Mapping[str, Any]: ...  # noqa: D102
    @property
    def yields(self) -> YieldResult | None: ...  # noqa: D102
    @property
    def units(self) -> pd.DataFrame | None: ...  # noqa: D102
    @property
    def totals(self) -> Mapping[str, float]: ...  # noqa: D102


def report_writer(result: CheckOutcome, *, lang: Lang = "zh") -> Callable[[Path], None]:
    """Return a writer of report.html for a check."""
    text = build_report_html(result, lang=lang)

    def write(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    return write


def escape(value: object) -> str:
    """HTML-escape any value for a report (also backtick, dollar and backslash, as the map).

    Examples
    --------
    >>> escape("<b>西夏墅镇</b>"), escape(None)
    ('&lt;b&gt;西夏墅镇&lt;/b&gt;', '')
    """
    text = (
        ""
        if value is None or (isinstance(value, float) and np.isnan(value))
        else str(value)
    )
    out = html.escape(text, quote=True)
    for ch in "`$\\":
        out = out.replace(ch, f"&#{ord(ch)};")
    return out


_e = escape


def _bars(
    items: Sequence[tuple[str, float]], *, colour: str = "#c0392b", width: int = 640
) -> str:
    """Return a horizontal bar chart as inline SVG."""
    if not items:
        return ""
    top = max(v for _, v in items) or 1.0
    h = 22
    rows = []
    for i, (name, v) in enumerate(items):
        w = max(1.0, (width - 330) * v / top)
        y = i * h
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="12">{_e(name)}</text>'
            f'<rect x="230" y="{y + 4}" width="{w:.1f}" height="14" fill="{colour}"/>'
            f'<text x="{236 + w:.1f}" y="{y + 15}" font-size="12">{v:,.2f}</text>'
        )
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{len(items) * h + 4}">{"".join(rows)}</svg>'


def _empty_sides(run: Mapping[str, Any], L: Callable[[str], str]) -> list[str]:
    """Return the report's warning for rules whose A or B side selects no feature (run.json's counts)."""
    items = []
    for r in run.get("rules", []):
        if r.get("a_features", 1) == 0:
            why, side = "empty_a", r.get("a")
        elif r.get("b_features", 1) == 0:
            why = (
                "empty_b_difference" if r.get("relation") == "difference" else "empty_b"
            )
            side = r.get("b")
        else:
            continue
        items.append(f"<li>{_e(r['id'])} ({_e(side)}): {L(why)}</li>")
    if not items:
        return []
    return [f"<p class='warn'>{L('empty_side')}:</p><ul class='warn'>", *items, "</ul>"]


def build_report_html(result: CheckOutcome, *, lang: Lang = "zh") -> str:
    """Return report.html: the run for people who do not open GIS, self-contained."""

    def L(key: str) -> str:
        return _e(label(key, "en" if lang == "en" else "zh"))

    p = result.project
    run = result.run
    s = result.summary
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_e(p.title)} — {L('report')}</title>",
        "<style>body{font-family:'PingFang SC','Microsoft YaHei','Noto Sans CJK SC',sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f0f0f0}tr.total td{background:#fafafa;border-top:2px solid #888}td:first-child{white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}.high{color:#d7191c;font-weight:600}"
        ".medium{color:#e67e22}.low{color:#b7950b}h2{margin-top:28px;border-bottom:1px solid #ddd}.warn{color:#a04000}</style></head><body>",
        f"<h1>{_e(p.title)} — {L('report')}</h1>",
        f"<p>{L('generated')}: {_e(run.get('created'))} · multiplan {_e(run.get('multiplan'))} · "
        f"{L('crs')}: {_e(p.crs)} · {_e(p.area)} · {L('pieces')}: {len(result.attributes):,}</p>",
        f"<h2>{L('summary')}</h2><table><tr><th>{L('rule')}</th><th>{L('title')}</th><th>{L('severity')}</th>"
        f"<th>{L('pieces')}</th><th>{L('m2')}</th><th>{L('mu')}</th><th>{L('ha')}</th></tr>",
    ]
    has_value = "value_yuan" in s.columns
    if has_value:
        parts[-1] = parts[-1].replace(
            "</tr>", f"<th>{L('value')} ({L('yuan')})</th></tr>"
        )
    titles = {r.id: r.label(lang) for r in result.rules}
    for _, r in s.iterrows():
        value = f"<td class='n'>{r['value_yuan']:,.0f}</td>" if has_value else ""
        parts.append(
            f"<tr><td>{_e(r['rule_id'])}</td><td>{_e(titles.get(r['rule_id'], r['title']))}</td><td class='{_e(r['severity'])}'>{L(r['severity'])}</td>"
            f"<td class='n'>{int(r['pieces']):,}</td><td class='n'>{r['area_m2']:,.2f}</td>"
            f"<td class='n'>{r['area_mu']:,.2f}</td><td class='n'>{to_ha(r['area_m2']):,.2f}</td>{value}</tr>"
        )
    total = result.totals.get("all", 0.0)
    value_total = (
        f"<td class='n'><b>{result.totals.get('value', 0.0):,.0f}</b></td>"
        if has_value
        else ""
    )
    parts.append(
        f"<tr class='total'><td colspan='3'><b>{L('district_total')}</b></td><td class='n'>{len(result.attributes):,}</td>"
        f"<td class='n'><b>{total:,.2f}</b></td><td class='n'><b>{to_mu(total):,.2f}</b></td>"
        f"<td class='n'><b>{to_ha(total):,.2f}</b></td>{value_total}</tr>"
    )
    parts.append("</table>")
    parts.extend(_empty_sides(run, L))
    parts.append(
        f"<p>{L('in_conflict')}: <b>{to_mu(total):,.2f} {L('mu')}</b> ({to_ha(total):,.2f} {L('ha')}); "
        + " · ".join(
            f"{L(sev)} {to_mu(result.totals.get(sev, 0.0)):,.2f} {L('mu')}"
            for sev in ("high", "medium", "low")
        )
        + f". {L('union_note')}</p>"
    )
    parts.append(f"<h3>{L('area_by_rule')}</h3>")
    parts.append(
        _bars([(f"{r['rule_id']}", float(r["area_mu"])) for _, r in s.iterrows()])
    )
    if result.by_unit is not None and result.units is not None and len(result.units):
        for level, by_unit, units in _levels(result.by_unit, result.units):
            parts.append(
                _unit_section(
                    result, by_unit, units, level_title(p, level, lang), L, lang
                )
            )
    if result.yields is not None:
        parts.append(_yield_section(result.yields, L))
    c = result.attributes
    if len(c):
        top = _largest(c, 20)
        parts.append(
            f"<h2>{L('largest')}</h2><table><tr><th>{L('rule')}</th><th>{L('feature_a')}</th><th>{L('feature_b')}</th>"
            f"<th>{L('unit')}</th><th>{L('m2')}</th><th>{L('mu')}</th></tr>"
        )
        for _, r in top.iterrows():
            b = (
                f"{_e(r['b_layer'])} · {_e(r['b_id'])}"
                if r["b_layer"] is not None
                else "—"
            )
            parts.append(
                f"<tr><td>{_e(r['rule_id'])}</td><td>{_e(r['a_layer'])} · {_e(r['a_id'])} · {_e(r['a_class'])}</td>"
                f"<td>{b}</td><td>{_e(r['unit'])}</td><td class='n'>{r['area_m2']:,.2f}</td><td class='n'>{r['area_mu']:,.3f}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        f"<h2>{L('inputs')}</h2><table><tr><th>{L('layer')}</th><th>{L('source')}</th><th>{L('crs')}</th>"
        f"<th>{L('features')}</th><th>{L('repaired')}</th><th>{L('skipped')}</th></tr>"
    )
    for name, ly in run.get("counts", {}).get("layers", {}).items():
        parts.append(
            f"<tr><td>{_e(name)}</td><td>{_e(ly.get('source'))}</td><td>{_e(ly.get('source_crs'))}</td>"
            f"<td class='n'>{ly.get('features', 0):,}</td><td class='n'>{ly.get('repaired', 0):,}</td>"
            f"<td class='n'>{ly.get('null', 0) + ly.get('empty', 0):,}</td></tr>"
        )
    parts.append("</table>")
    sw = run.get("software", {})
    parts.append(
        f"<p style='color:#777;font-size:12px'>{L('software')}: "
        + ", ".join(f"{_e(k)} {_e(v)}" for k, v in sw.items())
        + "</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _largest(pieces: pd.DataFrame, n: int) -> pd.DataFrame:
    """Return the ``n`` largest pieces (ties by rule, then A feature), sorting only those that can be.

    A stable sort of the pieces whose area reaches the ``n``-th largest gives
    the same rows as sorting every piece, without copying a million rows.

    Examples
    --------
    >>> df = pd.DataFrame({"area_m2": [1.0, 5.0, 3.0, 5.0], "rule_id": ["a", "b", "a", "a"], "a_id": ["1", "2", "3", "4"]})
    >>> _largest(df, 2)["a_id"].tolist()
    ['4', '2']
    """
    area = pieces["area_m2"].to_numpy(dtype=float)
    if len(area) > n:
        cut = np.partition(area, len(area) - n)[len(area) - n]
        if not np.isnan(cut):
            pieces = pieces[area >= cut]
    return pieces.sort_values(
        ["area_m2", "rule_id", "a_id"], ascending=[False, True, True], kind="stable"
    ).head(n)


UNIT_ROWS = 50
"""A level with more units (a grid) shows the units with the most land in conflict."""


def _levels(
    by_unit: pd.DataFrame, units: pd.DataFrame
) -> list[tuple[str | None, pd.DataFrame, pd.DataFrame]]:
    """Return (level, by_unit rows, units rows) per level: one block without levels."""
    if "level" not in units.columns:
        return [(None, by_unit, units)]
    return [
        (
            str(level),
            by_unit[by_unit["level"] == level],
            units[units["level"] == level],
        )
        for level in pd.unique(units["level"])
    ]


def _unit_section(
    result: CheckOutcome,
    by_unit: pd.DataFrame,
    units: pd.DataFrame,
    level: str,
    L: Callable[[str], str],
    lang: Lang,
) -> str:
    """Return the per-unit tables of one level: by rule, the units table and its chart."""
    no_unit = label("no_unit", "en" if lang == "en" else "zh")
    head = _e(level) if level else L("unit")

    def T(key: str) -> str:  # a heading, naming the level when there are several
        if not level:
            return L(key)
        return _e(label(f"{key}_of", "en" if lang == "en" else "zh").format(level))

    shown = units
    note = ""
    if len(units) > UNIT_ROWS:
        shown = units.sort_values("area_m2", ascending=False, kind="stable").head(
            UNIT_ROWS
        )
        note = (
            f"<p>{L('top_units')}: {UNIT_ROWS:,} / {len(units):,} "
            f"({L('all_in_units_csv')})</p>"
        )
    keep = set(shown["unit"].tolist())
    parts = []
    bu = by_unit[[u in keep for u in by_unit["unit"]]].copy()
    if len(bu):
        bu["unit"] = [u if u is not None else no_unit for u in bu["unit"]]
        pivot = bu.pivot_table(
            index="unit",
            columns="rule_id",
            values="area_mu",
            aggfunc="sum",
            fill_value=0.0,
            sort=False,
        )
        order = [r.id for r in result.rules if r.id in pivot.columns]
        pivot = pivot[order]
        parts.append(
            f"<h2>{T('by_unit')} ({L('mu')})</h2>{note}<table><tr><th>{head}</th>"
            + "".join(f"<th>{_e(c)}</th>" for c in order)
            + "</tr>"
        )
        for unit, row in pivot.iterrows():
            parts.append(
                f"<tr><td>{_e(unit)}</td>"
                + "".join(f"<td class='n'>{v:,.2f}</td>" for v in row)
                + "</tr>"
            )
        parts.append("</table>")
    total = result.totals.get("all", 0.0)
    parts.append(
        f"<h2>{T('units_table')}</h2>{note}<table><tr><th>{head}</th><th>{T('unit_area_mu')}</th>"
        f"<th>{L('pieces')}</th><th>{L('in_conflict')} ({L('mu')})</th><th>{L('share')}</th>"
        f"<th>{L('high')} ({L('mu')})</th><th>{L('medium')} ({L('mu')})</th><th>{L('low')} ({L('mu')})</th></tr>"
    )
    for _, r in shown.iterrows():
        unit_mu = (
            "" if pd.isna(r["unit_area_m2"]) else f"{to_mu(r['unit_area_m2']):,.2f}"
        )
        share = "" if pd.isna(r["share"]) else f"{r['share']:.1%}"
        parts.append(
            f"<tr><td>{_e(r['unit'] if r['unit'] is not None else no_unit)}</td><td class='n'>{unit_mu}</td>"
            f"<td class='n'>{int(r['pieces']):,}</td><td class='n'>{r['area_mu']:,.2f}</td><td class='n'>{share}</td>"
            + "".join(
                f"<td class='n'>{to_mu(float(r[f'{sev}_m2'])):,.2f}</td>"
                for sev in ("high", "medium", "low")
            )
            + "</tr>"
        )
    parts.append(
        f"<tr class='total'><td><b>{L('district_total')}</b></td><td></td><td class='n'>{len(result.attributes):,}</td>"
        f"<td class='n'><b>{to_mu(total):,.2f}</b></td><td></td>"
        + "".join(
            f"<td class='n'>{to_mu(result.totals.get(sev, 0.0)):,.2f}</td>"
            for sev in ("high", "medium", "low")
        )
        + "</tr></table>"
    )
    parts.append(f"<h3>{T('area_by_unit')}</h3>")
    ordered = shown.sort_values("area_mu", ascending=False, kind="stable")
    parts.append(
        _bars(
            [
                (
                    str(r["unit"] if r["unit"] is not None else no_unit),
                    float(r["area_mu"]),
                )
                for _, r in ordered.iterrows()
            ],
            colour="#2e75b6",
        )
    )
    return "".join(parts)


def _yield_section(y: Any, L: Callable[[str], str]) -> str:
    """Return the land-yield part of report.html: grades per park and unit, scenarios."""
    parts = [f"<h2>{L('yield')}</h2>"]
    grades = (
        y.parcels["grade"].to_numpy(dtype=object) if len(y.parcels) else np.array([])
    )
    counts = ", ".join(
        f"{g}: {int((grades == g).sum()):,}" for g in ("A", "B", "C", "D")
    )
    parts.append(
        f"<p>{L('parcels')}: {len(y.parcels):,} · {L('grade')} {_e(counts)} · "
        f"{L('not_graded')}: {y.notes.get('exempt', 0):,} {L('exempt')}, "
        f"{y.notes.get('ungraded', 0):,} {L('no_figures')}</p>"
    )
    if y.notes.get("overlapping_parcels"):
        parts.append(
            f"<p class='warn'>{y.notes['overlapping_parcels']:,} "
            f"{_e(L('overlapping_parcels'))}</p>"
        )
    for title_key, table in (("park", y.by_park), ("unit", y.by_unit)):
        if table is None or not len(table):
            continue
        cols = [c for c in table.columns if c not in ("area_m2",)]
        parts.append(
            f"<h3>{L(title_key)}</h3><table><tr>"
            + "".join(f"<th>{_e(c)}</th>" for c in cols)
            + "</tr>"
        )
        for _, r in table.iterrows():
            cells = []
            for c in cols:
                v = r[c]
                if isinstance(v, float):
                    cells.append(
                        f"<td class='n'>{'' if np.isnan(v) else f'{v:,.2f}'}</td>"
                    )
                elif isinstance(v, int | np.integer):
                    cells.append(f"<td class='n'>{int(v):,}</td>")
                else:
                    cells.append(f"<td>{_e(v)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    if len(y.scenarios):
        parts.append(
            f"<h3>{L('scenarios')}</h3><table><tr>"
            + "".join(f"<th>{_e(c)}</th>" for c in y.scenarios.columns)
            + "</tr>"
        )
        for _, r in y.scenarios.iterrows():
            parts.append(
                "<tr>"
                + "".join(
                    f"<td class='n'>{v:,.2f}</td>"
                    if isinstance(v, float)
                    else f"<td class='n'>{v:,}</td>"
                    if isinstance(v, int | np.integer)
                    else f"<td>{_e(v)}</td>"
                    for v in r
                )
                + "</tr>"
            )
        parts.append("</table>")
    return "\n".join(parts)
