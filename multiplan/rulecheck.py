"""The conflict check: read → classify → select → overlay → clip/split → summarise → value.

:func:`check` composes the stages and returns a frozen :class:`CheckResult`;
writing the output set, drawing the map and valuing the pieces are stages of
their own (:meth:`CheckResult.write`, :meth:`CheckResult.explore`). Work is
shared across rules: each layer is read once, each selection and each buffered
selection is made once, and per-feature facts (inside the boundary, inside one
unit) are computed once per layer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan import overlay
from multiplan.areas import area_m2, to_mu
from multiplan.errors import LayerError, RulePackError
from multiplan.layers import (
    CLASS_COL,
    LayerInput,
    Layers,
    ensure_layers,
    public_fields,
    unit_names,
)
from multiplan.levels import Levels, build_levels, piece_columns
from multiplan.outputs import OutputFolder, write_set
from multiplan.progress import Progress, no_progress
from multiplan.record import input_files, run_record
from multiplan.rules import SEVERITY_RANK, Rule, Selector, read_rules, select
from multiplan.schema import PIECE_COLUMNS, SORT_COLUMNS
from multiplan.summary import summarise
from multiplan.values import piece_values
from multiplan.yields import YieldResult, land_yield, yield_layers_needed

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

    import folium

    from multiplan.io import Writer
    from multiplan.labels import Lang
    from multiplan.maps import Tiles
    from multiplan.specs import Project

logger = logging.getLogger(__name__)

FailOn = str  # "high" | "medium" | "low" | "never"


@dataclass(frozen=True)
class CheckResult:
    """What a check found: the pieces, their summaries, the run's record.

    Attributes
    ----------
    pieces
        One row per conflict piece, SPEC §6 columns (plus ``value_yuan`` with
        land yield), in the working CRS, sorted as SPEC §6 orders.
    summary, by_unit, units
        ``summary.csv``, ``by_unit.csv`` and ``units.csv`` as DataFrames (the
        last two ``None`` without units); every area is the area of a union.
    run
        What ``run.json`` holds: inputs with SHA-256, software, timings, counts.
    """

    project: Project
    rules: tuple[Rule, ...]
    pieces: gpd.GeoDataFrame
    summary: pd.DataFrame
    by_unit: pd.DataFrame | None
    units: pd.DataFrame | None
    run: Mapping[str, Any]
    layers: Layers = field(repr=False)
    yields: YieldResult | None = field(default=None, repr=False)
    totals: Mapping[str, float] = field(default_factory=dict)
    """District totals in m², areas of unions: ``all`` and per severity."""

    def worst_severity(self) -> str | None:
        """Return the highest severity that has at least one piece, or ``None``."""
        found = set(self.pieces["severity"]) if len(self.pieces) else set()
        return next((s for s in ("high", "medium", "low") if s in found), None)

    def fails(self, fail_on: FailOn) -> bool:
        """Return whether conflicts at or above ``fail_on`` were found (``never``: no)."""
        if fail_on == "never":
            return False
        worst = self.worst_severity()
        return worst is not None and SEVERITY_RANK[worst] >= SEVERITY_RANK[fail_on]

    def explore(self, *, lang: Lang = "zh", tiles: Tiles = "none") -> folium.Map:
        """Return the shared map as a ``folium.Map``; it renders in Jupyter and offline."""
        from multiplan.maps import build_map

        return build_map(
            self.project,
            self.layers,
            self.pieces,
            self.rules,
            lang=lang,
            tiles=tiles,
            yields=self.yields,
            units=self.units,
        )

    def files(
        self, *, lang: Lang = "zh", tiles: Tiles = "none", with_map: bool = True
    ) -> dict[str, Writer]:
        """Return the output set of SPEC §6 as file name → writer, without writing it."""
        from multiplan.io import csv_writer, gpkg_writer, json_writer
        from multiplan.ledger import check_ledger, workbook_writer
        from multiplan.maps import map_writer
        from multiplan.report import report_writer
        from multiplan.styles import CONFLICT_STYLE

        files: dict[str, Writer] = {
            "conflicts.gpkg": gpkg_writer(
                self.pieces, layer="conflicts", style=CONFLICT_STYLE
            ),
            "summary.csv": csv_writer(self.summary),
        }
        if self.by_unit is not None:
            files["by_unit.csv"] = csv_writer(self.by_unit)
        if self.units is not None:
            files["units.csv"] = csv_writer(self.units)
        files["ledger.xlsx"] = workbook_writer(
            check_ledger(
                rules=self.rules,
                pieces=self.pieces,
                summary=self.summary,
                units=self.units,
                totals=self.totals,
                taxonomy=self.project.taxonomy,
                lang=lang,
            )
        )
        if self.yields is not None:
            files.update(self.yields.files())
        if with_map:
            files["map.html"] = map_writer(self.explore(lang=lang, tiles=tiles))
        files["report.html"] = report_writer(self, lang=lang)
        run = dict(self.run)
        run["outputs"] = [*files, "run.json"]
        files["run.json"] = json_writer(run)
        return files

    def tables(self) -> dict[str, pd.DataFrame]:
        """Return the tables of SPEC §13 (``--db``): conflicts, summary, by_unit, units.

        Figures are as in the files: the pieces as in conflicts.gpkg, the
        summaries rounded as in the CSV files.
        """
        from multiplan.io import round_figures

        tables: dict[str, pd.DataFrame] = {
            "conflicts": self.pieces,
            "summary": round_figures(self.summary),
        }
        if self.by_unit is not None:
            tables["by_unit"] = round_figures(self.by_unit)
        if self.units is not None:
            tables["units"] = round_figures(self.units)
        return tables

    def write(
        self,
        out: str | Path | OutputFolder,
        *,
        lang: Lang = "zh",
        tiles: Tiles = "none",
        with_map: bool = True,
        db: str | None = None,
    ) -> list[Path]:
        """Write the output set of SPEC §6 into ``out`` as one set; return the files.

        Parameters
        ----------
        out
            The output folder (or an :class:`~multiplan.outputs.OutputFolder` open on it).
        lang, tiles, with_map
            The language of titles, the map's base tiles, whether to draw map.html.
        db
            A ``postgresql://…/DB?schema=NAME`` URL (default: the manifest's
            ``[project] db``): the tables of :meth:`tables` are written there too,
            in one transaction committed once the files are in place.

        Raises
        ------
        OutputError
            When the folder is busy, not writable, or holds something else.
        DatabaseError
            When the database cannot be reached or refuses the tables; the
            files are then left as they were.
        """
        from multiplan.pgwrite import maybe_staged

        files = self.files(lang=lang, tiles=tiles, with_map=with_map)
        run = dict(self.run, outputs=[*files])
        with maybe_staged(db or self.project.db, self.tables, run, command="check"):
            return write_set(
                out, files, command="check", inputs=input_files(self.project)
            )


def check(
    project: Project,
    *,
    layers: LayerInput | None = None,
    only: Iterable[str] | None = None,
    workers: int | None = None,
    allow_unmapped: bool = False,
    progress: Progress = no_progress,
) -> CheckResult:
    """Run every rule of a project and return the pieces and their summaries.

    Parameters
    ----------
    project
        A manifest from :func:`multiplan.read_project`.
    layers
        Layers already read (:func:`multiplan.read_layers`), or GeoDataFrames to
        use instead of a layer's source; what is missing is read.
    only
        Rule ids to run (``--only``); default all.
    workers
        Threads for the overlay; default all cores. Results are identical for
        every value.
    allow_unmapped
        Accept source codes the crosswalk does not map (their class is null and
        no class selector matches them); otherwise they are an error.
    progress
        Called as ``progress(stage, done, total, item)`` as each layer or rule
        starts.

    Returns
    -------
    CheckResult
        With ``.pieces``, ``.summary``, ``.by_unit``, ``.units``, ``.run``;
        ``.write(out)`` writes the files of SPEC §6.

    Raises
    ------
    InputError
        For anything the user must fix, before any output is written.

    Examples
    --------
    >>> import multiplan
    >>> project = multiplan.read_project("layers/xinbei/project.toml")
    >>> result = multiplan.check(project, only=["ECO-01"])
    >>> result.summary[["rule_id", "pieces"]].values.tolist()
    [['ECO-01', 926]]
    """
    workers = overlay.default_workers() if workers is None else max(1, int(workers))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rules = read_rules(project, only=only)
    timings["validate"] = time.perf_counter() - t0
    t = time.perf_counter()
    needed = [*layers_needed(project, rules), *yield_layers_needed(project)]
    lay = ensure_layers(project, needed, layers, progress=progress)
    timings["read"] = time.perf_counter() - t
    check_layers_for_rules(project, rules, lay, allow_unmapped=allow_unmapped)
    levels = build_levels(project, lay) if rules else None

    t = time.perf_counter()
    pieces, rule_times = find_pieces(
        project, rules, lay, workers=workers, progress=progress, levels=levels
    )
    timings["overlay"] = time.perf_counter() - t
    yields = None
    if project.yield_ is not None:
        t = time.perf_counter()
        progress("yield", 0, 1, "yield")
        if project.yield_.revenue is not None:
            pieces = with_values(pieces, project, lay)
        yields = land_yield(project, layers=lay)
        timings["yield"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("summary", 0, 1, "summary")
    sums = summarise(pieces, rules, project, lay, workers=workers, levels=levels)
    timings["summarise"] = time.perf_counter() - t
    run = run_record(
        project,
        rules,
        lay,
        pieces,
        sums.summary,
        options={
            "workers": workers,
            "only": list(only) if only else None,
            "allow_unmapped": allow_unmapped,
        },
        timings=timings,
        rule_times=rule_times,
    )
    logger.info(
        "check done: %d rules, %d pieces in %.2f s",
        len(rules),
        len(pieces),
        time.perf_counter() - t0,
    )
    return CheckResult(
        project=project,
        rules=rules,
        pieces=pieces,
        summary=sums.summary,
        by_unit=sums.by_unit,
        units=sums.units,
        run=run,
        layers=lay,
        yields=yields,
        totals=sums.totals,
    )


def with_values(
    pieces: gpd.GeoDataFrame, project: Project, layers: Layers
) -> gpd.GeoDataFrame:
    """Return the pieces with ``value_yuan``, the land value at stake (SPEC §8), after ``area_mu``."""
    assert project.yield_ is not None
    assert project.yield_.revenue is not None
    out = pieces.copy()
    out.insert(
        out.columns.get_loc("area_mu") + 1,
        "value_yuan",
        piece_values(pieces, project, project.yield_.revenue, layers),
    )
    return out


def layers_needed(project: Project, rules: Sequence[Rule]) -> list[str]:
    """Return the layers the rules read, in manifest order, with the boundary and units."""
    names: dict[str, None] = {}
    for r in rules:
        names[r.a.layer] = None
        names[r.b.layer] = None
    if rules:
        for extra in (project.boundary, *project.units):
            if extra:
                names[extra] = None
    return [n for n in project.layers if n in names]


def check_layers_for_rules(
    project: Project,
    rules: Sequence[Rule],
    layers: Layers,
    *,
    allow_unmapped: bool,
) -> None:
    """Check what needs the data: geometry families, filter fields, unmapped codes.

    Raises
    ------
    LayerError, RulePackError
        Naming the layer or rule and the fix.
    """
    for key, name in (("boundary", project.boundary), ("units", project.unit_layer)):
        if name and name in layers and layers.layer(name).family != "polygon":
            raise LayerError(
                f"the {key} layer must be polygons, not {layers.layer(name).family}s",
                path=project.path,
                key=f"project.{key}",
                layer=name,
            )
    for name in project.units:
        if name in layers:
            unit_names(project, layers, name)
    for rule in rules:
        for side, sel in (("a", rule.a), ("b", rule.b)):
            frame = layers[sel.layer]
            for fld in sel.where.fields:
                if fld not in frame.columns:
                    raise RulePackError(
                        f"the filter reads a field {fld!r} that layer {sel.layer!r} does not have",
                        path=rule.pack,
                        key=f"rule {rule.id}.{side}.where",
                        hint=f"Fields are: {', '.join(public_fields(frame))}",
                    )
        fam_a = layers.layer(rule.a.layer).family
        if fam_a != "polygon":
            raise RulePackError(
                f"layer {rule.a.layer!r} holds {fam_a}s, which cannot be the A side of a rule",
                path=rule.pack,
                key=f"rule {rule.id}.a.layer",
                hint=f"Give layers.{rule.a.layer} a buffer or width_field, or use it as B with distance > 0",
            )
        fam_b = layers.layer(rule.b.layer).family
        if fam_b != "polygon" and rule.distance <= 0:
            raise RulePackError(
                f"layer {rule.b.layer!r} holds {fam_b}s, which need distance > 0 on the B side",
                path=rule.pack,
                key=f"rule {rule.id}.distance",
                hint=f"Set distance = <metres>, or give layers.{rule.b.layer} a buffer or width_field",
            )
    if not allow_unmapped:
        for name in layers:
            layer = layers.layer(name)
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


def find_pieces(
    project: Project,
    rules: Sequence[Rule],
    layers: Layers,
    *,
    workers: int | None = None,
    progress: Progress = no_progress,
    levels: Levels | None = None,
) -> tuple[gpd.GeoDataFrame, dict[str, float]]:
    """Return every rule's pieces (SPEC §6 columns, sorted) and the seconds each rule took.

    Pieces are split at the cells of the levels of units (built from the
    project when ``levels`` is not given), with a column per level when there
    are several (SPEC §14).
    """
    workers = overlay.default_workers() if workers is None else max(1, int(workers))
    if levels is None and rules:
        levels = build_levels(project, layers)
    ctx = _Context(project, layers, workers, levels)
    frames = []
    rule_times: dict[str, float] = {}
    for i, rule in enumerate(rules):
        progress("checking", i, len(rules), rule.id)
        t = time.perf_counter()
        frames.append(ctx.rule_pieces(rule))
        rule_times[rule.id] = time.perf_counter() - t
        logger.debug(
            "rule %s: %d pieces in %.3f s",
            rule.id,
            len(frames[-1]),
            rule_times[rule.id],
        )
    columns = piece_columns(levels)
    return sort_pieces(_concat(frames, project.crs, columns), columns), rule_times


class _Context:
    """Caches shared by the rules of one run (private; not a public value)."""

    def __init__(
        self, project: Project, layers: Layers, workers: int, levels: Levels | None
    ) -> None:
        self.project = project
        self.layers = layers
        self.taxonomy = project.taxonomy
        self.workers = workers
        self._selections: dict[tuple[Any, ...], np.ndarray] = {}
        self._buffered: dict[tuple[Any, ...], np.ndarray] = {}
        self._inside: dict[str, np.ndarray] = {}
        self._unit_hint: dict[str, np.ndarray] = {}
        self.boundary: shapely.Geometry | None = None
        if project.boundary and project.boundary in layers:
            self.boundary = shapely.union_all(_geoms(layers[project.boundary]))
            shapely.prepare(self.boundary)
        self.levels = levels
        self.unit_geoms: np.ndarray | None = None
        if levels is not None:
            self.unit_geoms = levels.cells

    # ---------------------------------------------------------------- select
    def selection(
        self, sel: Selector, rule: Rule | None = None, side: str = "a"
    ) -> np.ndarray:
        key = (sel.layer, sel.classes, sel.where)
        if key not in self._selections:
            frame = self.layers[sel.layer]
            self._selections[key] = np.flatnonzero(
                select(
                    frame,
                    sel,
                    self.taxonomy,
                    class_col=CLASS_COL,
                    path=rule.pack if rule else None,
                    key=f"rule {rule.id}.{side}.where" if rule else None,
                )
            )
        return self._selections[key]

    def geoms(self, sel: Selector, distance: float = 0.0) -> np.ndarray:
        key = (sel.layer, sel.classes, sel.where, distance)
        if key not in self._buffered:
            g = _geoms(self.layers[sel.layer])[self.selection(sel)]
            if distance > 0:
                g = overlay.buffer(g, distance, workers=self.workers)
            self._buffered[key] = g
        return self._buffered[key]

    def inside_boundary(self, layer: str) -> np.ndarray:
        if layer not in self._inside:
            geoms = _geoms(self.layers[layer])
            self._inside[layer] = (
                np.ones(len(geoms), dtype=bool)
                if self.boundary is None
                else shapely.covers(self.boundary, geoms)
            )
        return self._inside[layer]

    def unit_hint(self, layer: str) -> np.ndarray:
        if layer not in self._unit_hint:
            assert self.unit_geoms is not None
            self._unit_hint[layer] = overlay.covering_index(
                _geoms(self.layers[layer]), self.unit_geoms
            )
        return self._unit_hint[layer]

    # ---------------------------------------------------------------- one rule
    def rule_pieces(self, rule: Rule) -> pd.DataFrame:
        """Compose the stages for one rule: select → overlay → clip → split → area."""
        a_pos, b_pos, geoms = self.overlay(rule)
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
            area_m2(geoms, self.project.working_crs, self.project.area)
            if len(geoms)
            else np.zeros(0)
        )
        keep = area >= rule.min_area
        b_pos = None if b_pos is None else b_pos[keep]
        return self._frame(
            rule, a_pos[keep], b_pos, unit_idx[keep], area[keep], geoms[keep]
        )

    def overlay(self, rule: Rule) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Return (A row, B row or None, piece) of a rule before clipping and splitting."""
        a_idx = self.selection(rule.a, rule, "a")
        b_idx = self.selection(rule.b, rule, "b")
        a = self.geoms(rule.a)
        b = self.geoms(rule.b, rule.distance)
        pairs = overlay.classify_pairs(a, b, workers=self.workers)
        if rule.a.layer == rule.b.layer:
            a_ids = np.asarray(self.layers[rule.a.layer].index, dtype=object)
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
            return a_idx[ia], b_idx[ib], geoms
        ia, geoms = overlay.difference_pieces(a, b, pairs=pairs, workers=self.workers)
        return a_idx[ia], None, geoms

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
        fa = self.layers[rule.a.layer]
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
            fb = self.layers[rule.b.layer]
            data.update(
                b_layer=np.full(n, rule.b.layer, dtype=object),
                b_id=np.asarray(fb.index, dtype=object)[b_pos],
                b_class=fb[CLASS_COL].to_numpy(dtype=object)[b_pos],
            )
        if self.levels is not None:
            tail = np.array([None], dtype=object)
            data["unit"] = np.concatenate([self.levels.smallest, tail])[unit_idx]
            if self.levels.multi:  # -1 → None: outside every cell
                for name in self.levels.names:
                    labels = self.levels.labels[name]
                    data[name] = np.concatenate([labels, tail])[unit_idx]
        else:
            data["unit"] = none.copy()
        data["area_m2"] = area.astype(float)
        data["area_mu"] = to_mu(area.astype(float))
        data["geometry"] = geoms
        return pd.DataFrame(data)


def _geoms(frame: gpd.GeoDataFrame) -> np.ndarray:
    return np.asarray(frame.geometry.array, dtype=object)


def _concat(
    frames: Sequence[pd.DataFrame], crs: str, columns: Sequence[str] = PIECE_COLUMNS
) -> gpd.GeoDataFrame:
    cols = [*columns, "geometry"]
    frames = [f for f in frames if len(f)]
    df = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
    )
    for c in columns:
        if c in ("area_m2", "area_mu"):
            df[c] = df[c].astype(float)
        else:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return gpd.GeoDataFrame(
        df[list(columns)],
        geometry=gpd.array.from_shapely(
            np.asarray(df["geometry"], dtype=object), crs=crs
        ),
        crs=crs,
    )


def sort_pieces(
    frame: gpd.GeoDataFrame, columns: Sequence[str] = PIECE_COLUMNS
) -> gpd.GeoDataFrame:
    """Sort pieces by SPEC §6's keys compared as text, nulls first.

    With levels of units, the level columns (``columns`` between ``unit`` and
    ``area_m2``) follow as keys: a unit split between two units above it gives
    a piece in each.
    """
    if not len(frame):
        return frame
    keys = pd.DataFrame(index=frame.index)
    names = []
    extra = list(columns[columns.index("unit") + 1 : columns.index("area_m2")])
    for c in [*SORT_COLUMNS, *extra]:
        col = frame[c]
        keys[f"{c}.set"] = col.notna().to_numpy()
        keys[f"{c}.text"] = [
            ("" if v is None else str(v)) for v in col.to_numpy(dtype=object)
        ]
        names += [f"{c}.set", f"{c}.text"]
    order = keys.sort_values(names, kind="stable").index
    return frame.loc[order].reset_index(drop=True)
