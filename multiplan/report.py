"""Tables and records of a check: summary.csv, by_unit.csv, run.json, the closing table.

Areas in the summaries are areas of the *union* of the pieces (land counted once
even where two pairs overlap it), in m² (planar or ellipsoidal per the manifest)
and 亩 (``area_m2 * 15 / 10000``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from multiplan import __version__
from multiplan import crs as crs_mod
from multiplan.errors import InputError
from multiplan.io import (
    csv_bytes,
    gpkg_writer,
    json_bytes,
    remove_stale_temporaries,
    write_files,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from multiplan.check import CheckResult
    from multiplan.project import Project
    from multiplan.rules import Rule

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("rule_id", "title", "severity", "pieces", "area_m2", "area_mu")
BY_UNIT_COLUMNS = ("unit", "rule_id", "pieces", "area_m2", "area_mu")
OUTPUT_FILES = (
    "conflicts.gpkg",
    "summary.csv",
    "by_unit.csv",
    "run.json",
    "map.html",
    "report.html",
    "yield.gpkg",
    "yield.csv",
    "yield_by_unit.csv",
    "yield_by_park.csv",
    "scenarios.csv",
    "onemap.gpkg",
    "differences.gpkg",
    "differences.csv",
    "site.csv",
    "site.html",
)
"""Every file a command of multiplan may write into an output folder."""


def _union_area(geoms: np.ndarray, project: Project) -> float:
    if not len(geoms):
        return 0.0
    union = shapely.union_all(np.asarray(geoms, dtype=object))
    return float(
        crs_mod.area_m2(
            np.array([union], dtype=object),
            crs_mod.parse_crs(project.crs),
            project.area,
        )[0]
    )


def build_summary(
    conflicts: pd.DataFrame,
    rules: Sequence[Rule],
    project: Project,
    *,
    lang: str = "zh",
) -> pd.DataFrame:
    """Return summary.csv: one row per rule in pack order, rules without pieces included.

    With land yield, ``value_yuan`` is the land value at stake summed over the
    rule's pieces.
    """
    n = len(conflicts)
    geoms = (
        np.asarray(conflicts.geometry.array, dtype=object)
        if n
        else np.zeros(0, dtype=object)
    )
    rid = (
        conflicts["rule_id"].to_numpy(dtype=object) if n else np.zeros(0, dtype=object)
    )
    has_value = "value_yuan" in conflicts.columns
    values = conflicts["value_yuan"].to_numpy(dtype=float) if has_value else np.zeros(0)
    rows = []
    for r in rules:
        mine = rid == r.id
        area = _union_area(geoms[mine], project)
        row = {
            "rule_id": r.id,
            "title": r.label(lang),
            "severity": r.severity,
            "pieces": int(mine.sum()),
            "area_m2": area,
            "area_mu": area * 15.0 / 10000.0,
        }
        if has_value:
            row["value_yuan"] = float(np.nansum(values[mine]))
        rows.append(row)
    out = pd.DataFrame(
        rows, columns=[*SUMMARY_COLUMNS, *(["value_yuan"] if has_value else [])]
    )
    out["pieces"] = out["pieces"].astype(int)
    return out


def build_by_unit(
    conflicts: pd.DataFrame, rules: Sequence[Rule], project: Project
) -> pd.DataFrame:
    """Return by_unit.csv: per unit (nulls first, then by name) and rule (pack order) with pieces."""
    order = {r.id: i for i, r in enumerate(rules)}
    rows = []
    if len(conflicts):
        geoms = np.asarray(conflicts.geometry.array, dtype=object)
        units = conflicts["unit"].to_numpy(dtype=object)
        rids = conflicts["rule_id"].to_numpy(dtype=object)
        keys = sorted(
            {(u, r) for u, r in zip(units, rids, strict=True)},
            key=lambda k: (
                k[0] is not None,
                "" if k[0] is None else str(k[0]),
                order.get(k[1], 0),
            ),
        )
        for u, r in keys:
            sel = (rids == r) & np.array(
                [x == u if u is not None else x is None for x in units]
            )
            area = _union_area(geoms[sel], project)
            rows.append(
                {
                    "unit": u,
                    "rule_id": r,
                    "pieces": int(sel.sum()),
                    "area_m2": area,
                    "area_mu": area * 15.0 / 10000.0,
                }
            )
    out = pd.DataFrame(rows, columns=list(BY_UNIT_COLUMNS))
    # keep text as objects: pandas 3 would infer a string dtype with NaN for a null unit
    out["unit"] = pd.Series([r["unit"] for r in rows], dtype=object)
    out["rule_id"] = pd.Series([r["rule_id"] for r in rows], dtype=object)
    return out


# --------------------------------------------------------------------------- run.json


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_files(
    project: Project, layer_names: Iterable[str] | None = None
) -> list[Path]:
    """Return every input file of a project: manifest, rule packs, crosswalks, layer files with sidecars."""
    files: dict[Path, None] = {project.path.resolve(): None}
    for p in project.rules:
        files[p.resolve()] = None
    names = list(project.layers) if layer_names is None else list(layer_names)
    for name in names:
        spec = project.layers[name]
        if spec.crosswalk_path is not None:
            files[spec.crosswalk_path.resolve()] = None
        if isinstance(spec.path, Path):
            for f in _with_sidecars(spec.path):
                files[f.resolve()] = None
    return list(files)


def _with_sidecars(path: Path) -> list[Path]:
    text = str(path)
    if ".zip/" in text:
        return [Path(text.split(".zip/", 1)[0] + ".zip")]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.suffix.lower() == ".shp":
        return sorted(p for p in path.parent.glob(path.stem + ".*") if p.is_file())
    return [path] if path.exists() else []


def check_outputs_are_not_inputs(project: Project, out_dir: Path) -> None:
    """Refuse an output folder whose outputs would overwrite an input file.

    Raises
    ------
    InputError
        Naming the input that would be overwritten.
    """
    inputs = set(input_files(project))
    target = out_dir.resolve()
    if target in inputs or (target.exists() and not target.is_dir()):
        raise InputError(
            "the output folder is a file",
            path=out_dir,
            key="--out",
            hint="Give a folder for the outputs, e.g. outputs/<project name>",
        )
    for name in OUTPUT_FILES:
        if (target / name).resolve() in inputs:
            raise InputError(
                f"writing {name} there would overwrite an input of the project",
                path=target / name,
                key="--out",
                hint="Choose another output folder; no input is ever written",
            )


def software_versions() -> dict[str, str]:
    """Return the versions of multiplan and the libraries that decide its results."""
    import geopandas
    import pyogrio
    import pyproj
    import rasterio

    return {
        "multiplan": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "shapely": shapely.__version__,
        "geos": shapely.geos_version_string,
        "geopandas": geopandas.__version__,
        "pyogrio": pyogrio.__version__,
        "gdal": pyogrio.__gdal_version_string__,
        "pyproj": pyproj.__version__,
        "proj": pyproj.proj_version_str,
        "rasterio": rasterio.__version__,
    }


def build_run_info(
    result: CheckResult,
    *,
    workers: int,
    timings: Mapping[str, float],
    rule_times: Mapping[str, float],
    allow_unmapped: bool,
    only: Iterable[str] | None,
) -> dict[str, Any]:
    """Return the contents of run.json: inputs with sizes and SHA-256, packs, versions, timings, counts."""
    project = result.project
    files = input_files(project, result.layers)
    inputs = [
        {"path": str(f), "bytes": f.stat().st_size, "sha256": _sha256(f)}
        for f in files
        if f.is_file()
    ]
    layers = {
        name: dataclasses.asdict(layer.stats) for name, layer in result.layers.items()
    }
    summary = result.summary
    rules = [
        {
            "id": r.id,
            "title": r.title,
            "title_en": r.title_en,
            "severity": r.severity,
            "relation": r.relation,
            "a": r.a.describe(),
            "b": r.b.describe(),
            "distance_m": r.distance,
            "min_area_m2": r.min_area,
            "pack": str(r.pack) if r.pack else None,
            "pieces": int(summary.loc[summary.rule_id == r.id, "pieces"].iloc[0]),
            "area_m2": float(summary.loc[summary.rule_id == r.id, "area_m2"].iloc[0]),
            "seconds": round(rule_times.get(r.id, 0.0), 4),
        }
        for r in result.rules
    ]
    return {
        "multiplan": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if sys.argv else None,
        "project": {
            "name": project.name,
            "title": project.title,
            "manifest": str(project.path),
            "crs": project.crs,
            "area": project.area,
            "boundary": project.boundary,
            "units": project.units,
        },
        "options": {
            "workers": workers,
            "only": list(only) if only else None,
            "allow_unmapped": allow_unmapped,
        },
        "inputs": inputs,
        "rule_packs": [str(p) for p in project.rules],
        "software": software_versions(),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "counts": {
            "rules": len(result.rules),
            "pieces": len(result.conflicts),
            "layers": layers,
        },
        "rules": rules,
    }


def write_check_outputs(
    result: CheckResult,
    out_dir: Path,
    extra: Mapping[str, Callable[[Path], None]] | None = None,
) -> list[Path]:
    """Write conflicts.gpkg, summary.csv, by_unit.csv (with units) and run.json as one step."""
    removed = remove_stale_temporaries(out_dir)
    if removed:
        logger.info(
            "removed %d temporary files of an interrupted run in %s", removed, out_dir
        )
    writers: dict[str, Callable[[Path], None]] = {
        "conflicts.gpkg": gpkg_writer(result.conflicts, layer="conflicts"),
        "summary.csv": bytes_writer(csv_bytes(result.summary)),
    }
    if result.by_unit is not None:
        writers["by_unit.csv"] = bytes_writer(csv_bytes(result.by_unit))
    writers.update(extra or {})
    run = dict(result.run)
    run["outputs"] = [*writers, "run.json"]
    writers["run.json"] = bytes_writer(json_bytes(run))
    return write_files(out_dir, writers)


def bytes_writer(data: bytes) -> Callable[[Path], None]:
    """Return a function that writes ``data`` to a path."""

    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def format_closing_table(result: CheckResult, *, lang: str = "zh") -> str:
    """Return the closing table for the terminal: rules with pieces, 亩 and hectares."""
    s = result.summary
    head = f"{'rule':<10} {'severity':<8} {'pieces':>7} {'亩':>13} {'ha':>11}  title"
    lines = [head]
    for _, r in s.iterrows():
        rule = next(x for x in result.rules if x.id == r["rule_id"])
        lines.append(
            f"{r['rule_id']:<10} {r['severity']:<8} {int(r['pieces']):>7,} {r['area_mu']:>13,.2f} {r['area_m2'] / 10000:>11,.2f}  {rule.label(lang)}"
        )
    total = len(result.conflicts)
    where = f" in {result.out}" if result.out is not None else ""
    lines.append(f"{len(s)} rules, {total:,} pieces{where}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- report.html


def _e(value: object) -> str:
    """HTML-escape any value for the report (also backtick, dollar and backslash, as the map)."""
    import html

    text = (
        ""
        if value is None or (isinstance(value, float) and np.isnan(value))
        else str(value)
    )
    out = html.escape(text, quote=True)
    for ch in "`$\\":
        out = out.replace(ch, f"&#{ord(ch)};")
    return out


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


def build_report_html(result: CheckResult, *, lang: str = "zh") -> str:
    """Return report.html: the run for people who do not open GIS, self-contained."""
    from multiplan.labels import label

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
        "th{background:#f0f0f0}td:first-child{white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}.high{color:#d7191c;font-weight:600}"
        ".medium{color:#e67e22}.low{color:#b7950b}h2{margin-top:28px;border-bottom:1px solid #ddd}</style></head><body>",
        f"<h1>{_e(p.title)} — {L('report')}</h1>",
        f"<p>{L('generated')}: {_e(run.get('created'))} · multiplan {_e(run.get('multiplan'))} · "
        f"{L('crs')}: {_e(p.crs)} · {_e(p.area)} · {L('pieces')}: {len(result.conflicts):,}</p>",
        f"<h2>{L('summary')}</h2><table><tr><th>{L('rule')}</th><th>{L('title')}</th><th>{L('severity')}</th>"
        f"<th>{L('pieces')}</th><th>{L('m2')}</th><th>{L('mu')}</th><th>{L('ha')}</th></tr>",
    ]
    has_value = "value_yuan" in s.columns
    if has_value:
        parts[-1] = parts[-1].replace(
            "</tr>", f"<th>{L('value')} ({L('yuan')})</th></tr>"
        )
    for _, r in s.iterrows():
        value = f"<td class='n'>{r['value_yuan']:,.0f}</td>" if has_value else ""
        parts.append(
            f"<tr><td>{_e(r['rule_id'])}</td><td>{_e(r['title'])}</td><td class='{_e(r['severity'])}'>{L(r['severity'])}</td>"
            f"<td class='n'>{int(r['pieces']):,}</td><td class='n'>{r['area_m2']:,.2f}</td>"
            f"<td class='n'>{r['area_mu']:,.2f}</td><td class='n'>{r['area_m2'] / 10000:,.2f}</td>{value}</tr>"
        )
    parts.append("</table>")
    parts.append(f"<h3>{L('area_by_rule')}</h3>")
    parts.append(
        _bars([(f"{r['rule_id']}", float(r["area_mu"])) for _, r in s.iterrows()])
    )
    if result.by_unit is not None and len(result.by_unit):
        bu = result.by_unit.copy()
        bu["unit"] = [
            u if u is not None else label("no_unit", "en" if lang == "en" else "zh")
            for u in bu["unit"]
        ]
        pivot = bu.pivot_table(
            index="unit",
            columns="rule_id",
            values="area_mu",
            aggfunc="sum",
            fill_value=0.0,
        )
        order = [r.id for r in result.rules if r.id in pivot.columns]
        pivot = pivot[order]
        parts.append(
            f"<h2>{L('by_unit')} ({L('mu')})</h2><table><tr><th>{L('unit')}</th>"
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
        per_unit = bu.groupby("unit")["area_mu"].sum().sort_values(ascending=False)
        parts.append(f"<h3>{L('area_by_unit')}</h3>")
        parts.append(
            _bars([(str(u), float(v)) for u, v in per_unit.items()], colour="#2e75b6")
        )
    if result.yields is not None:
        parts.append(_yield_section(result.yields, L))
    c = result.conflicts
    if len(c):
        top = c.sort_values(
            ["area_m2", "rule_id", "a_id"], ascending=[False, True, True], kind="stable"
        ).head(20)
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
        f"<p>{L('parcels')}: {len(y.parcels):,} · {L('grade')} {_e(counts)}</p>"
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
