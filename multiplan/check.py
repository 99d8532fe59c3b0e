"""The conflict check: load → classify → select → overlay → summarise → write.

:func:`run_check` is the entry point behind ``multiplan check``. Work is shared
across rules: each layer is read once, each selection and each buffered
selection is made once, and per-feature facts (inside the boundary, inside one
unit) are computed once per layer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan import crs as crs_mod
from multiplan import overlay
from multiplan.classify import Taxonomy, load_taxonomy
from multiplan.errors import LayerError, RulePackError
from multiplan.layers import (
    BUFFER_QUAD_SEGS,
    CLASS_COL,
    Layer,
    load_layer,
    public_fields,
)
from multiplan.rules import SEVERITY_RANK, Rule, Selector, load_rules, select
from multiplan.yields import (
    YieldResult,
    compute_yield,
    load_yield_spec,
    piece_values,
    yield_layers_needed,
    yield_writers,
)

if TYPE_CHECKING:
    from multiplan.labels import Lang
    from multiplan.maps import Tiles
    from multiplan.project import Project

logger = logging.getLogger(__name__)

#: Columns of ``conflicts.gpkg`` (SPEC §6), in order; the geometry comes last.
CONFLICT_COLUMNS = (
    "rule_id",
    "severity",
    "a_layer",
    "a_id",
    "a_class",
    "b_layer",
    "b_id",
    "b_class",
    "unit",
    "area_m2",
    "area_mu",
)
SORT_COLUMNS = ("rule_id", "a_layer", "a_id", "b_layer", "b_id", "unit")
FailOn = str  # "high" | "medium" | "low" | "never"
Progress = Callable[[str, int, int, str], None]
"""A progress callable: ``progress(stage, done, total, item)``, called as each item starts."""


def _no_progress(stage: str, done: int, total: int, item: str) -> None:
    return None


@dataclass(frozen=True)
class CheckResult:
    """What a check found, and where it wrote it."""

    project: Project
    rules: tuple[Rule, ...]
    conflicts: gpd.GeoDataFrame
    summary: pd.DataFrame
    by_unit: pd.DataFrame | None
    run: Mapping[str, Any]
    out: Path | None = None
    files: tuple[Path, ...] = ()
    layers: Mapping[str, Layer] = field(default_factory=dict)
    yields: YieldResult | None = None

    def worst_severity(self) -> str | None:
        """Return the highest severity that has at least one piece, or ``None``."""
        found = set(self.conflicts["severity"]) if len(self.conflicts) else set()
        for sev in ("high", "medium", "low"):
            if sev in found:
                return sev
        return None

    def fails(self, fail_on: FailOn) -> bool:
        """Return whether conflicts at or above ``fail_on`` were found."""
        if fail_on == "never":
            return False
        worst = self.worst_severity()
        return worst is not None and SEVERITY_RANK[worst] >= SEVERITY_RANK[fail_on]


def default_workers() -> int:
    """Return the default number of worker threads: all cores."""
    return max(1, os.cpu_count() or 1)


def run_check(
    project: Project,
    *,
    out: str | Path | None = None,
    only: Iterable[str] | None = None,
    workers: int | None = None,
    allow_unmapped: bool = False,
    write: bool = True,
    make_map: bool = True,
    with_yield: bool = True,
    lang: Lang = "zh",
    tiles: Tiles = "none",
    progress: Progress | None = None,
) -> CheckResult:
    """Run every rule of a project and write the outputs of SPEC §6.

    Parameters
    ----------
    project
        A loaded manifest (:func:`multiplan.project.load_project`).
    out
        The output folder; default the manifest's ``out``.
    only
        Rule ids to run (``--only``); default all.
    workers
        Threads for the overlay; default all cores. Results are identical for
        every value.
    allow_unmapped
        Accept source codes the crosswalk does not map (their class is null and
        no class selector matches them); otherwise they are an error.
    write
        Write the output files (``False`` computes only).
    with_yield
        Run the land-yield stage when the manifest has ``[yield]`` (``fuse``,
        which needs only the pieces, turns it off).
    make_map, lang, tiles
        Write map.html (SPEC §7) in Chinese or English, with an optional base map
        (``none``, ``osm``, ``tianditu``, ``gaode``), and report.html.
    progress
        Called as ``progress(stage, done, total, item)`` as each layer, rule or
        output step starts (no-op by default; the CLI draws a bar).

    Raises
    ------
    InputError
        For anything the user must fix, before any output is written.
    """
    progress = progress or _no_progress
    workers = default_workers() if workers is None else max(1, int(workers))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rules = load_rules(project, only=only)
    yield_spec = load_yield_spec(project) if with_yield else None
    out_dir = Path(out) if out is not None else project.out
    if write:
        from multiplan.report import check_outputs_are_not_inputs

        check_outputs_are_not_inputs(project, out_dir)
        if make_map:
            from multiplan.maps import check_tiles

            check_tiles(tiles)
    timings["validate"] = time.perf_counter() - t0

    t = time.perf_counter()
    needed = list(
        dict.fromkeys(
            [*_layers_needed(project, rules), *yield_layers_needed(project, yield_spec)]
        )
    )
    layers: dict[str, Layer] = {}
    for i, name in enumerate(needed):
        progress("reading", i, len(needed), name)
        layers[name] = load_layer(project.layers[name], project)
    timings["read"] = time.perf_counter() - t
    _check_layers_for_rules(project, rules, layers, allow_unmapped=allow_unmapped)

    t = time.perf_counter()
    ws = _Workspace(project, layers, load_taxonomy(project.search_dirs), workers)
    frames = []
    rule_times: dict[str, float] = {}
    for i, rule in enumerate(rules):
        progress("checking", i, len(rules), rule.id)
        tr = time.perf_counter()
        frames.append(ws.rule_pieces(rule))
        rule_times[rule.id] = time.perf_counter() - tr
        logger.debug(
            "rule %s: %d pieces in %.3f s",
            rule.id,
            len(frames[-1]),
            rule_times[rule.id],
        )
    conflicts = _sort(_concat(frames, project.crs))
    timings["overlay"] = time.perf_counter() - t
    yield_result = None
    if yield_spec is not None:
        t = time.perf_counter()
        progress("yield", 0, 1, "yield")
        if yield_spec.revenue is not None:
            conflicts.insert(
                conflicts.columns.get_loc("area_mu") + 1,
                "value_yuan",
                piece_values(conflicts, project, yield_spec, layers),
            )
        yield_result = compute_yield(project, yield_spec, layers)
        timings["yield"] = time.perf_counter() - t

    from multiplan import report

    t = time.perf_counter()
    summary = report.build_summary(conflicts, rules, project)
    by_unit = report.build_by_unit(conflicts, rules, project) if project.units else None
    timings["summarise"] = time.perf_counter() - t
    result = CheckResult(
        project=project,
        rules=rules,
        conflicts=conflicts,
        summary=summary,
        by_unit=by_unit,
        run={},
        out=out_dir if write else None,
        layers=layers,
        yields=yield_result,
    )
    run_info = report.build_run_info(
        result,
        workers=workers,
        timings=timings,
        rule_times=rule_times,
        allow_unmapped=allow_unmapped,
        only=only,
    )
    result = dataclasses.replace(result, run=run_info)
    if write:
        t = time.perf_counter()
        extra: dict[str, Callable[[Path], None]] = {}
        if make_map:
            from multiplan import maps

            progress("drawing", 0, 1, "map.html")
            map_layers = maps.display_layers(project, layers)
            html = maps.map_html(
                maps.build_map(
                    project,
                    map_layers,
                    conflicts,
                    rules,
                    lang=lang,
                    tiles=tiles,
                    yields=yield_result.parcels if yield_result is not None else None,
                    indicators=yield_spec.indicators if yield_spec is not None else (),
                )
            )
            extra["map.html"] = report.bytes_writer(html.encode("utf-8"))
            timings["map"] = time.perf_counter() - t
        if yield_result is not None and yield_spec is not None:
            extra.update(yield_writers(yield_result, yield_spec))
        extra["report.html"] = report.bytes_writer(
            report.build_report_html(result, lang=lang).encode("utf-8")
        )
        t = time.perf_counter()
        progress("writing", 0, 1, str(out_dir))
        files = report.write_check_outputs(result, out_dir, extra)
        timings["write"] = time.perf_counter() - t
        result = dataclasses.replace(result, files=tuple(files))
    logger.info(
        "check done: %d rules, %d pieces in %.2f s",
        len(rules),
        len(conflicts),
        time.perf_counter() - t0,
    )
    return result


def _layers_needed(project: Project, rules: Sequence[Rule]) -> list[str]:
    names: dict[str, None] = {}
    for r in rules:
        names[r.a.layer] = None
        names[r.b.layer] = None
    if rules:
        for extra in (project.boundary, project.units):
            if extra:
                names[extra] = None
    return [n for n in project.layers if n in names]


def _check_layers_for_rules(
    project: Project,
    rules: Sequence[Rule],
    layers: Mapping[str, Layer],
    *,
    allow_unmapped: bool,
) -> None:
    """Check what needs the data: geometry families, filter fields, unmapped codes."""
    for name in (project.boundary, project.units):
        if name and name in layers and layers[name].family != "polygon":
            raise LayerError(
                f"the {'boundary' if name == project.boundary else 'units'} layer must be polygons, not {layers[name].family}s",
                path=project.path,
                key=f"project.{'boundary' if name == project.boundary else 'units'}",
                layer=name,
            )
    if project.units and project.units in layers:
        cols = layers[project.units].frame.columns
        if project.unit_name_field not in cols:
            raise LayerError(
                f"the units layer has no field {project.unit_name_field!r}",
                path=project.path,
                key="project.unit_name_field",
                layer=project.units,
                hint=f"Fields are: {', '.join(public_fields(layers[project.units].frame))}",
            )
    for rule in rules:
        for side, sel in (("a", rule.a), ("b", rule.b)):
            layer = layers[sel.layer]
            for fld in sel.where.fields:
                if fld not in layer.frame.columns:
                    raise RulePackError(
                        f"the filter reads a field {fld!r} that layer {sel.layer!r} does not have",
                        path=rule.pack,
                        key=f"rule {rule.id}.{side}.where",
                        hint=f"Fields are: {', '.join(public_fields(layer.frame))}",
                    )
        fam_a = layers[rule.a.layer].family
        if fam_a != "polygon":
            raise RulePackError(
                f"layer {rule.a.layer!r} holds {fam_a}s, which cannot be the A side of a rule",
                path=rule.pack,
                key=f"rule {rule.id}.a.layer",
                hint=f"Give layers.{rule.a.layer} a buffer or width_field, or use it as B with distance > 0",
            )
        fam_b = layers[rule.b.layer].family
        if fam_b != "polygon" and rule.distance <= 0:
            raise RulePackError(
                f"layer {rule.b.layer!r} holds {fam_b}s, which need distance > 0 on the B side",
                path=rule.pack,
                key=f"rule {rule.id}.distance",
                hint=f"Set distance = <metres>, or give layers.{rule.b.layer} a buffer or width_field",
            )
    if not allow_unmapped:
        for name, layer in layers.items():
            if layer.stats.unmapped:
                codes = ", ".join(
                    f"{k} ({v})" for k, v in list(layer.stats.unmapped.items())[:8]
                )
                raise LayerError(
                    f"{sum(layer.stats.unmapped.values())} features carry source codes that the crosswalk "
                    f"{layer.spec.classification!r} does not map: {codes}",
                    path=layer.spec.source,
                    layer=name,
                    key=f"layers.{name}.classification",
                    hint="Add rows for them to the crosswalk, or run with --allow-unmapped (their class is then null)",
                )


class _Workspace:
    """Caches shared by the rules of one run (private; not a public value)."""

    def __init__(
        self,
        project: Project,
        layers: Mapping[str, Layer],
        taxonomy: Taxonomy,
        workers: int,
    ) -> None:
        self.project = project
        self.layers = layers
        self.taxonomy = taxonomy
        self.workers = workers
        self.crs = crs_mod.parse_crs(project.crs)
        self._selections: dict[tuple[Any, ...], np.ndarray] = {}
        self._buffered: dict[tuple[Any, ...], np.ndarray] = {}
        self._inside: dict[str, np.ndarray] = {}
        self._unit_hint: dict[str, np.ndarray] = {}
        self.boundary: shapely.Geometry | None = None
        if project.boundary and project.boundary in layers:
            geoms = np.asarray(
                layers[project.boundary].frame.geometry.array, dtype=object
            )
            self.boundary = shapely.union_all(geoms)
            shapely.prepare(self.boundary)
        self.unit_geoms: np.ndarray | None = None
        self.unit_names: np.ndarray | None = None
        if project.units and project.units in layers:
            uf = layers[project.units].frame
            self.unit_geoms = np.asarray(uf.geometry.array, dtype=object)
            self.unit_names = np.array(
                [None if pd.isna(v) else str(v) for v in uf[project.unit_name_field]],
                dtype=object,
            )

    # ---------------------------------------------------------------- caches
    def selection(self, sel: Selector) -> np.ndarray:
        key = (sel.layer, sel.classes, sel.where)
        if key not in self._selections:
            frame = self.layers[sel.layer].frame
            self._selections[key] = np.flatnonzero(
                select(frame, sel, self.taxonomy, class_col=CLASS_COL)
            )
        return self._selections[key]

    def geoms(self, sel: Selector, distance: float = 0.0) -> np.ndarray:
        key = (sel.layer, sel.classes, sel.where, distance)
        if key not in self._buffered:
            idx = self.selection(sel)
            g = np.asarray(self.layers[sel.layer].frame.geometry.array, dtype=object)[
                idx
            ]
            if distance > 0:
                radius = np.full(len(g), distance)
                g = overlay.parallel_map(
                    _buffer, g, radius, workers=self.workers, min_chunk=1
                )
            self._buffered[key] = g
        return self._buffered[key]

    def inside_boundary(self, layer: str) -> np.ndarray:
        if layer not in self._inside:
            geoms = np.asarray(self.layers[layer].frame.geometry.array, dtype=object)
            if self.boundary is None:
                self._inside[layer] = np.ones(len(geoms), dtype=bool)
            else:
                self._inside[layer] = shapely.covers(self.boundary, geoms)
        return self._inside[layer]

    def unit_hint(self, layer: str) -> np.ndarray:
        if layer not in self._unit_hint:
            geoms = np.asarray(self.layers[layer].frame.geometry.array, dtype=object)
            assert self.unit_geoms is not None
            self._unit_hint[layer] = overlay.covering_index(geoms, self.unit_geoms)
        return self._unit_hint[layer]

    # ---------------------------------------------------------------- one rule
    def rule_pieces(self, rule: Rule) -> pd.DataFrame:
        a_idx = self.selection(rule.a)
        b_idx = self.selection(rule.b)
        a = self.geoms(rule.a)
        b = self.geoms(rule.b, rule.distance)
        same = rule.a.layer == rule.b.layer
        a_ids = np.asarray(self.layers[rule.a.layer].frame.index, dtype=object)
        pairs = overlay.classify_pairs(a, b, workers=self.workers)
        if same:
            fa, fb = a_idx[pairs.ia], b_idx[pairs.ib]
            keep = fa != fb
            if rule.relation == "intersect":
                # a pair whose features both match both selectors is reported once
                mirrored = np.isin(fa, b_idx) & np.isin(fb, a_idx)
                keep &= ~mirrored | (a_ids[fa] < a_ids[fb])
            pairs = pairs.take(keep)
        if rule.relation == "intersect":
            ia, ib, geoms = overlay.intersect_pieces(
                a, b, pairs=pairs, workers=self.workers
            )
            b_pos: np.ndarray | None = b_idx[ib]
        else:
            ia, geoms = overlay.difference_pieces(
                a, b, pairs=pairs, workers=self.workers
            )
            b_pos = None
        a_pos = a_idx[ia]
        if self.boundary is not None and len(geoms):
            geoms = overlay.clip_pieces(
                geoms,
                self.boundary,
                inside=self.inside_boundary(rule.a.layer)[a_pos],
                workers=self.workers,
            )
            keep = shapely.area(geoms) > 0
            geoms, a_pos = geoms[keep], a_pos[keep]
            b_pos = None if b_pos is None else b_pos[keep]
        unit_idx = np.full(len(geoms), -1, dtype=np.intp)
        if self.unit_geoms is not None and len(geoms):
            pi, unit_idx, geoms = overlay.split_pieces(
                geoms,
                self.unit_geoms,
                hint=self.unit_hint(rule.a.layer)[a_pos],
                workers=self.workers,
            )
            a_pos = a_pos[pi]
            b_pos = None if b_pos is None else b_pos[pi]
        area = (
            crs_mod.area_m2(geoms, self.crs, self.project.area)
            if len(geoms)
            else np.zeros(0)
        )
        keep = area >= rule.min_area
        geoms, a_pos, area, unit_idx = (
            geoms[keep],
            a_pos[keep],
            area[keep],
            unit_idx[keep],
        )
        b_pos = None if b_pos is None else b_pos[keep]
        return self._frame(rule, a_pos, b_pos, unit_idx, area, geoms)

    def _frame(
        self,
        rule: Rule,
        a_pos: np.ndarray,
        b_pos: np.ndarray | None,
        unit_idx: np.ndarray,
        area: np.ndarray,
        geoms: np.ndarray,
    ) -> pd.DataFrame:
        n = len(geoms)
        fa = self.layers[rule.a.layer].frame
        none = np.full(n, None, dtype=object)
        data: dict[str, Any] = {
            "rule_id": np.full(n, rule.id, dtype=object),
            "severity": np.full(n, rule.severity, dtype=object),
            "a_layer": np.full(n, rule.a.layer, dtype=object),
            "a_id": np.asarray(fa.index, dtype=object)[a_pos],
            "a_class": fa[CLASS_COL].to_numpy(dtype=object)[a_pos],
        }
        if b_pos is None:
            data.update(b_layer=none, b_id=none.copy(), b_class=none.copy())
        else:
            fb = self.layers[rule.b.layer].frame
            data.update(
                b_layer=np.full(n, rule.b.layer, dtype=object),
                b_id=np.asarray(fb.index, dtype=object)[b_pos],
                b_class=fb[CLASS_COL].to_numpy(dtype=object)[b_pos],
            )
        if self.unit_names is not None:
            names = np.concatenate(
                [self.unit_names, np.array([None], dtype=object)]
            )  # -1 → None
            data["unit"] = names[unit_idx]
        else:
            data["unit"] = none.copy()
        data["area_m2"] = area.astype(float)
        data["area_mu"] = area.astype(float) * 15.0 / 10000.0
        data["geometry"] = geoms
        return pd.DataFrame(data)


def _buffer(geoms: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Buffer as GeoSeries.buffer does: round caps and joins, 16 segments a quarter circle."""
    return np.asarray(shapely.buffer(geoms, radius, quad_segs=BUFFER_QUAD_SEGS))


def _concat(frames: Sequence[pd.DataFrame], crs: str) -> gpd.GeoDataFrame:
    cols = [*CONFLICT_COLUMNS, "geometry"]
    frames = [f for f in frames if len(f)]
    df = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
    )
    for c in CONFLICT_COLUMNS:
        if c in ("area_m2", "area_mu"):
            df[c] = df[c].astype(float)
        else:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return gpd.GeoDataFrame(
        df[list(cols)],
        geometry=gpd.array.from_shapely(
            np.asarray(df["geometry"], dtype=object), crs=crs
        ),
        crs=crs,
    )


def _sort(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Sort rows by SORT_COLUMNS compared as text, nulls first (SPEC §6)."""
    if not len(frame):
        return frame
    keys = pd.DataFrame(index=frame.index)
    names = []
    for c in SORT_COLUMNS:
        col = frame[c]
        keys[f"{c}.set"] = col.notna().to_numpy()
        keys[f"{c}.text"] = [
            ("" if v is None else str(v)) for v in col.to_numpy(dtype=object)
        ]
        names += [f"{c}.set", f"{c}.text"]
    order = keys.sort_values(names, kind="stable").index
    return frame.loc[order].reset_index(drop=True)
