"""What ``multiplan diff`` hands over: the map of changes, changes.xlsx and transitions.html.

The report and the ledger read the transfer matrix (:meth:`DiffResult.matrix`)
and the transition tables; they never add areas of overlapping land (faces never
overlap). Every value shown in HTML is escaped; no spreadsheet cell is a formula.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from multiplan.areas import to_ha, to_mu
from multiplan.colours import CHANGE_COLOURS
from multiplan.labels import label
from multiplan.ledger import LEDGER_MAX_PIECES
from multiplan.levels import level_title
from multiplan.report import escape as _e
from multiplan.workbook import Sheet

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import folium

    from multiplan.classify import Taxonomy
    from multiplan.labels import Lang
    from multiplan.layers import Layers
    from multiplan.specs import Project

logger = logging.getLogger(__name__)


class DiffResult(Protocol):
    """What the map, ledger and report read of a comparison (:class:`multiplan.DiffResult`)."""

    @property
    def project(self) -> Project: ...  # noqa: D102
    @property
    def old(self) -> str: ...  # noqa: D102
    @property
    def new(self) -> str: ...  # noqa: D102
    @property
    def level(self) -> int: ...  # noqa: D102
    @property
    def changes(self) -> pd.DataFrame: ...  # noqa: D102
    @property
    def transitions(self) -> pd.DataFrame: ...  # noqa: D102
    @property
    def transitions_by_unit(self) -> pd.DataFrame | None: ...  # noqa: D102
    @property
    def layers(self) -> Layers | None: ...  # noqa: D102
    def matrix(self) -> pd.DataFrame: ...  # noqa: D102


SHOWN_CHANGES = ("added", "removed", "reclassified")
"""Changes drawn when the map opens; land that stayed the same is one click away."""


def _title(result: DiffResult, name: str) -> str:
    return result.project.layers[name].label


def _class_text(taxonomy: Taxonomy, code: object, lang: Lang) -> str:
    if code is None or (isinstance(code, float) and np.isnan(code)) or code == "":
        return label("no_land", lang)
    name = taxonomy.name(str(code))
    return f"{code} {name}" if name and name != code else str(code)


def totals(result: DiffResult) -> dict[str, float]:
    """Return the area in m² of each kind of change (faces never overlap: sums are unions)."""
    c = result.changes
    out = dict.fromkeys(("added", "removed", "reclassified", "same"), 0.0)
    if len(c):
        sums = c.groupby("change")["area_m2"].sum()
        out.update({str(k): float(v) for k, v in sums.items()})
    return out


# --------------------------------------------------------------------------- map


def build_changes_map(result: DiffResult, *, lang: Lang = "zh") -> folium.Map:
    """Build the map of the changes: both editions a click away, changes by kind."""
    from multiplan.mapdata import (
        build_map_data,
        display_geoms,
        empty_pieces,
        encode_polygons,
    )
    from multiplan.maps import MultiplanLayers, OneMap

    project = result.project
    lay = result.layers
    assert lay is not None
    names = [result.old, result.new, project.boundary, *project.units]
    base = {n: lay.layer(n) for n in dict.fromkeys(names) if n and n in lay}

    def groups(classes: Any, gcj: bool) -> list[dict[str, Any]]:
        c = result.changes
        classes.add(c["old_class"].to_numpy(dtype=object))
        classes.add(c["new_class"].to_numpy(dtype=object))
        enc = encode_polygons(
            display_geoms(
                np.asarray(c.geometry.array, dtype=object), project, 0.5, gcj02=gcj
            )
        )
        cols = list(c.columns)
        levels = cols[cols.index("unit") + 1 : cols.index("area_m2")]
        out = []
        for kind in ("added", "removed", "reclassified", "same"):
            rows = np.flatnonzero(c["change"].to_numpy(dtype=object) == kind)
            feats = []
            for k in rows:
                if not enc[k]:
                    continue
                r = c.iloc[k]
                where = (
                    " › ".join(str(r[v]) for v in levels if r[v] is not None)
                    if levels
                    else r["unit"]
                )
                feats.append(
                    [
                        enc[k],
                        [
                            r["old_id"],
                            r["old_class"],
                            r["new_id"],
                            r["new_class"],
                            kind,
                            where or None,
                            round(float(r["area_m2"]), 2),
                        ],
                    ]
                )
            if feats:
                out.append(
                    {
                        "name": f"changes:{kind}",
                        "title": label(f"change_{kind}", lang),
                        "kind": "changes",
                        "section": "changes",
                        "on": kind in SHOWN_CHANGES,
                        "features": feats,
                    }
                )
        return out

    t = totals(result)
    lines = [
        f"{label(f'change_{k}', lang)}: {to_mu(t[k]):,.2f} {label('mu', lang)}"
        for k in SHOWN_CHANGES
    ]
    data = build_map_data(
        project,
        base,
        empty_pieces(project.crs),
        (),
        lang=lang,
        extra_groups=groups,
        banner={
            "text": f"{_title(result, result.old)} → {_title(result, result.new)}",
            "lines": lines,
        },
    )
    data["editions"] = [_title(result, result.old), _title(result, result.new)]
    data["changes"] = CHANGE_COLOURS
    m = OneMap()
    m.add_child(
        MultiplanLayers(data, title=f"{project.title} · {label('group_changes', lang)}")
    )
    return m


# --------------------------------------------------------------------------- ledger


def changes_ledger(result: DiffResult, *, lang: Lang = "zh") -> list[Sheet]:
    """Return the sheets of changes.xlsx: the matrix (亩), the transitions, per unit, the faces."""

    def L(key: str) -> str:
        return label(key, lang)

    taxonomy = result.project.taxonomy
    matrix = result.matrix()
    old_t, new_t = _title(result, result.old), _title(result, result.new)
    sheets = []
    cols: list[tuple[str, str]] = [(f"{old_t} \\ {new_t}", "text")]
    cols += [(_class_text(taxonomy, c, lang), "mu") for c in matrix.columns]
    cols.append((L("total"), "mu"))
    m = Sheet(f"{L('sheet_matrix')} ({L('mu')})", cols)
    for old, row in matrix.iterrows():
        values = row.to_numpy(dtype=float)
        m.rows.append(
            [_class_text(taxonomy, old, lang), *values.tolist(), float(values.sum())]
        )
    if len(matrix):
        col_sums = matrix.to_numpy(dtype=float).sum(axis=0)
        m.totals.append([L("total"), *col_sums.tolist(), float(col_sums.sum())])
    sheets.append(m)

    def transition_sheet(name: str, table: pd.DataFrame) -> Sheet:
        lead = [c for c in ("level", "unit") if c in table.columns]
        sheet = Sheet(
            name,
            [
                *[(L(c), "text") for c in lead],
                (f"{old_t} {L('class_code')}", "text"),
                (f"{old_t} {L('class_name')}", "text"),
                (f"{new_t} {L('class_code')}", "text"),
                (f"{new_t} {L('class_name')}", "text"),
                (L("area_m2_h"), "m2"),
                (L("area_mu_h"), "mu"),
            ],
        )
        for d in table.to_dict("records"):
            sheet.rows.append(
                [
                    *[d[c] for c in lead],
                    d["old_class"],
                    _class_text(taxonomy, d["old_class"], lang),
                    d["new_class"],
                    _class_text(taxonomy, d["new_class"], lang),
                    d["area_m2"],
                    d["area_mu"],
                ]
            )
        return sheet

    detail = transition_sheet(L("sheet_transitions"), result.transitions)
    total = float(result.changes["area_m2"].sum()) if len(result.changes) else 0.0
    detail.totals.append([L("total"), None, None, None, total, to_mu(total)])
    sheets.append(detail)
    if result.transitions_by_unit is not None:
        sheets.append(
            transition_sheet(L("sheet_transitions_by_unit"), result.transitions_by_unit)
        )
    changed = result.changes[result.changes["change"] != "same"]
    faces = Sheet(
        L("sheet_changes"),
        [
            (L("change"), "text"),
            (L("unit"), "text"),
            (f"{old_t} {L('id')}", "text"),
            (f"{old_t} {L('class_code')}", "text"),
            (f"{new_t} {L('id')}", "text"),
            (f"{new_t} {L('class_code')}", "text"),
            (L("area_m2_h"), "m2"),
            (L("area_mu_h"), "mu"),
        ],
    )
    if len(changed) <= LEDGER_MAX_PIECES:
        for r in changed.itertuples(index=False):
            faces.rows.append(
                [
                    L(f"change_{r.change}"),
                    r.unit,
                    r.old_id,
                    r.old_class,
                    r.new_id,
                    r.new_class,
                    r.area_m2,
                    r.area_mu,
                ]
            )
        area = float(changed["area_m2"].sum()) if len(changed) else 0.0
        faces.totals.append(
            [L("total"), None, None, None, None, None, area, to_mu(area)]
        )
    else:
        logger.warning(
            "changes.xlsx lists no faces: %d changed faces are more than %d; all are in changes.gpkg",
            len(changed),
            LEDGER_MAX_PIECES,
        )
        faces.rows.append(
            [L("faces_in_gpkg"), None, None, None, None, None, None, None]
        )
    sheets.append(faces)
    return sheets


# --------------------------------------------------------------------------- report


def report_writer(result: DiffResult, *, lang: Lang = "zh") -> Callable[[Path], None]:
    """Return a writer of transitions.html (:func:`build_report_html`)."""

    def write(path: Path) -> None:
        path.write_text(build_report_html(result, lang=lang), encoding="utf-8")

    return write


def build_report_html(result: DiffResult, *, lang: Lang = "zh") -> str:
    """Return transitions.html: the transfer matrix (转移矩阵) a planner reads, and per unit."""

    def L(key: str) -> str:
        return _e(label(key, "en" if lang == "en" else "zh"))

    p = result.project
    taxonomy = p.taxonomy
    old_t, new_t = _title(result, result.old), _title(result, result.new)
    t = totals(result)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_e(p.title)} — {L('transitions_report')}</title>",
        "<style>body{font-family:'PingFang SC','Microsoft YaHei','Noto Sans CJK SC',sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}td.d{background:#f4f4f4}"
        "tr.total td{background:#fafafa;border-top:2px solid #888}td:first-child{white-space:nowrap}"
        "h2{margin-top:28px;border-bottom:1px solid #ddd}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}</style></head><body>",
        f"<h1>{_e(p.title)} — {L('transitions_report')}</h1>",
        f"<p>{_e(old_t)} → {_e(new_t)} · {L('class_level')} {result.level} · "
        f"{L('crs')}: {_e(p.crs)} · {_e(p.area)} · {L('diff_faces')}: {len(result.changes):,}</p>",
        "<table><tr>"
        + "".join(
            f"<th><span class='sw' style='background:{CHANGE_COLOURS[k]}'></span>{L('change_' + k)}</th>"
            for k in ("added", "removed", "reclassified", "same")
        )
        + "</tr><tr>"
        + "".join(
            f"<td class='n'>{to_mu(t[k]):,.2f} {L('mu')}<br>{to_ha(t[k]):,.2f} {L('ha')}</td>"
            for k in ("added", "removed", "reclassified", "same")
        )
        + "</tr></table>",
        f"<p>{L('transitions_note')}</p>",
    ]
    matrix = result.matrix()
    parts.append(
        f"<h2>{L('sheet_matrix')} ({L('mu')})</h2><p>{L('matrix_rows')}: {_e(old_t)} · "
        f"{L('matrix_cols')}: {_e(new_t)}</p>"
    )
    if len(matrix):
        parts.append(
            f"<table><tr><th>{_e(old_t)} \\ {_e(new_t)}</th>"
            + "".join(
                f"<th>{_e(_class_text(taxonomy, c, lang))}</th>" for c in matrix.columns
            )
            + f"<th>{L('total')}</th></tr>"
        )
        for old, row in matrix.iterrows():
            cells = "".join(
                f"<td class='n{' d' if old == new else ''}'>{v:,.2f}</td>"
                if v
                else f"<td class='n{' d' if old == new else ''}'></td>"
                for new, v in row.items()
            )
            parts.append(
                f"<tr><td>{_e(_class_text(taxonomy, old, lang))}</td>{cells}"
                f"<td class='n'><b>{float(row.sum()):,.2f}</b></td></tr>"
            )
        col_sums = matrix.sum(axis=0)
        parts.append(
            f"<tr class='total'><td><b>{L('total')}</b></td>"
            + "".join(f"<td class='n'><b>{v:,.2f}</b></td>" for v in col_sums)
            + f"<td class='n'><b>{float(col_sums.sum()):,.2f}</b></td></tr></table>"
        )
    by_unit = result.transitions_by_unit
    if by_unit is not None and len(by_unit):
        parts.append(_unit_changes(result, by_unit, L, lang))
    parts.append("</body></html>")
    return "".join(parts)


def _unit_changes(
    result: DiffResult, by_unit: pd.DataFrame, L: Callable[[str], str], lang: Lang
) -> str:
    """Return, per level, a table of land added, removed and reclassified per unit (亩)."""
    p = result.project
    levels = (
        [(str(v), by_unit[by_unit["level"] == v]) for v in pd.unique(by_unit["level"])]
        if "level" in by_unit.columns
        else [("", by_unit)]
    )
    no_unit = label("no_unit", "en" if lang == "en" else "zh")
    parts = []
    for level, table in levels:
        title = level_title(p, level, lang)
        kind = np.where(
            table["old_class"].isna(),
            "added",
            np.where(
                table["new_class"].isna(),
                "removed",
                np.where(
                    table["old_class"].to_numpy(dtype=object)
                    == table["new_class"].to_numpy(dtype=object),
                    "same",
                    "reclassified",
                ),
            ),
        )
        frame = pd.DataFrame(
            {
                "unit": [no_unit if u is None else u for u in table["unit"]],
                "kind": kind,
                "mu": table["area_mu"].to_numpy(dtype=float),
            }
        )
        pivot = frame.pivot_table(
            index="unit", columns="kind", values="mu", aggfunc="sum", fill_value=0.0
        )
        suffix = f" · {_e(title)}" if title else ""
        parts.append(
            f"<h2>{L('changes_by_unit')}{suffix} ({L('mu')})</h2><table><tr><th>{_e(title) or L('unit')}</th>"
            + "".join(
                f"<th>{L('change_' + k)}</th>"
                for k in ("added", "removed", "reclassified", "same")
            )
            + "</tr>"
        )
        for unit, row in pivot.iterrows():
            parts.append(
                f"<tr><td>{_e(unit)}</td>"
                + "".join(
                    f"<td class='n'>{float(row.get(k, 0.0)):,.2f}</td>"
                    for k in ("added", "removed", "reclassified", "same")
                )
                + "</tr>"
            )
        parts.append("</table>")
    return "".join(parts)
