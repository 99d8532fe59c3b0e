"""The conflict check: read → classify → select → overlay → clip/split → summarise → value.

:func:`check` composes the stages and returns a frozen :class:`CheckResult`;
writing the output set, drawing the map and valuing the pieces are stages of
their own (:meth:`CheckResult.write`, :meth:`CheckResult.explore`). Work is
shared across rules: each layer is read once, each selection and each buffered
selection is made once, and per-feature facts (inside the boundary, inside one
unit) are computed once per layer.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from multiplan import overlay, tiles
from multiplan.errors import InputError
from multiplan.layers import (
    LayerInput,
    Layers,
    ensure_layers,
)
from multiplan.levels import Levels, build_levels, piece_columns
from multiplan.memory import release
from multiplan.outputs import OutputFolder, write_set
from multiplan.pieces import concat_pieces, sort_pieces
from multiplan.piecestore import (
    Geometries,
    MemoryGeometries,
    conflicts_layer,
    pieces_frame,
    write_pieces_gpkg,
)
from multiplan.progress import Progress, no_progress
from multiplan.record import digests, input_files, run_record
from multiplan.ruleinputs import (
    check_layers_for_rules,
    context_layers,
    layers_needed,
)
from multiplan.rules import SEVERITY_RANK, Rule, read_rules
from multiplan.rulestages import (
    RuleContext,
    counting,
    tile_layers,
    warn_empty_sides,
)
from multiplan.summary import cleans_ahead, rule_layers, summarise
from multiplan.tilecheck import border_features, staged_check
from multiplan.tileinputs import (
    TileInputs,
    local_frames,
    released,
    staged_frames,
    staged_names,
)
from multiplan.values import piece_values
from multiplan.writeahead import WriteAhead
from multiplan.yields import YieldResult, land_yield, yield_layers_needed

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from pathlib import Path

    import folium
    import geopandas as gpd

    from multiplan.io import Writer
    from multiplan.labels import Lang
    from multiplan.maps import Tiles
    from multiplan.pgwrite import Table
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
        land yield), in the working CRS, sorted as SPEC §6 orders. A check of
        many tiles keeps the geometries on disk; this reads them all into memory.
    attributes
        The pieces without their geometries (always in memory).
    geometries
        The pieces' geometries, in memory or staged on disk
        (:mod:`multiplan.piecestore`), read a batch at a time when written.
    summary, by_unit, units
        ``summary.csv``, ``by_unit.csv`` and ``units.csv`` as DataFrames (the
        last two ``None`` without units); every area is the area of a union.
    run
        What ``run.json`` holds: inputs with SHA-256, software, timings, counts.
    """

    project: Project
    rules: tuple[Rule, ...]
    attributes: pd.DataFrame
    geometries: Geometries = field(repr=False)
    summary: pd.DataFrame
    by_unit: pd.DataFrame | None
    units: pd.DataFrame | None
    run: Mapping[str, Any]
    layers: Layers = field(repr=False)
    yields: YieldResult | None = field(default=None, repr=False)
    totals: Mapping[str, float] = field(default_factory=dict)
    """District totals in m², areas of unions: ``all`` and per severity."""
    ahead: WriteAhead | None = field(default=None, repr=False, compare=False)
    """conflicts.gpkg, written while the check summarised (:meth:`write` moves it into place)."""

    @functools.cached_property
    def pieces(self) -> gpd.GeoDataFrame:
        """Return the pieces with their geometries (SPEC §6 columns, sorted)."""
        return pieces_frame(self.attributes, self.geometries, self.project.crs)

    def worst_severity(self) -> str | None:
        """Return the highest severity that has at least one piece, or ``None``."""
        found = set(self.attributes["severity"]) if len(self.attributes) else set()
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
        from multiplan.io import csv_writer, json_writer
        from multiplan.ledger import check_ledger
        from multiplan.report import report_writer
        from multiplan.workbook import workbook_writer

        files: dict[str, Writer] = {
            "conflicts.gpkg": functools.partial(
                write_pieces_gpkg if self.ahead is None else self.ahead.place,
                attributes=self.attributes,
                geometries=self.geometries,
                **conflicts_layer(self.project.working_crs),
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
                pieces=self.attributes,
                summary=self.summary,
                units=self.units,
                totals=self.totals,
                taxonomy=self.project.taxonomy,
                lang=lang,
                levels=self._level_titles(lang),
            )
        )
        if self.yields is not None:
            files.update(self.yields.files())
        if with_map:  # folium is imported only for a map (0.5 s)
            from multiplan.maps import map_writer

            files["map.html"] = map_writer(self.explore(lang=lang, tiles=tiles))
        files["report.html"] = report_writer(self, lang=lang)
        run = dict(self.run)
        run["outputs"] = [*files, "run.json"]
        files["run.json"] = json_writer(run)
        return files

    def _level_titles(self, lang: Lang) -> dict[str, str]:
        """Return each level of units (several, SPEC §14) with its title; empty for one."""
        from multiplan.levels import level_title

        if self.units is None or "level" not in self.units.columns:
            return {}
        return {
            str(v): level_title(self.project, str(v), lang)
            for v in pd.unique(self.units["level"])
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        """Return the tables of SPEC §13 (``--db``): conflicts, summary, by_unit, units.

        Figures are as in the files: the pieces as in conflicts.gpkg, the
        summaries rounded as in the CSV files.
        """
        return {"conflicts": self.pieces, **self._summary_tables()}

    def _summary_tables(self) -> dict[str, pd.DataFrame]:
        from multiplan.io import round_figures

        tables = {"summary": round_figures(self.summary)}
        if self.by_unit is not None:
            tables["by_unit"] = round_figures(self.by_unit)
        if self.units is not None:
            tables["units"] = round_figures(self.units)
        return tables

    def _db_tables(self) -> dict[str, Table]:
        """Return the tables of :meth:`tables`, the pieces' geometries read a batch at a time."""
        from multiplan.pgwrite import StagedTable

        pieces = StagedTable(self.attributes, self.geometries, self.project.working_crs)
        return {"conflicts": pieces, **self._summary_tables()}

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
        with maybe_staged(db or self.project.db, self._db_tables, run, command="check"):
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
    tile_size: float | None = None,
    cluster: str | None = None,
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
        Threads for the overlay; default all cores. Same results for any value.
    allow_unmapped
        Accept source codes the crosswalk does not map (their class is null and
        no class selector matches them); otherwise they are an error.
    progress
        Called as ``progress(stage, done, total, item)`` as each layer or rule
        starts.
    tile_size
        Cut the work into square tiles of this many metres by where each A
        feature lies (``None``: chosen from the data; ``0``: one tile). The
        results are identical for every value.
    cluster
        ``"local"`` (a dask LocalCluster of ``workers`` processes) or a dask
        scheduler's address ``tcp://HOST:PORT``: the tiles run there, each
        worker reading the inputs from the manifest's paths. Needs the
        ``multiplan[dask]`` extra; results are identical to a run without.

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
    if cluster is not None:
        tiles.check_address(cluster)
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
    if cluster is not None and layers is not None:
        raise InputError(
            "--cluster reads the layers on its workers from the manifest's paths: pass no layers",
            path=project.path,
            hint="Run check(project, cluster=...) without layers=, or without cluster=",
        )
    cleans = cleans_ahead(lay, rule_layers(rules), workers) if rules else None
    t = time.perf_counter()  # the clean features are found beside the overlay
    tiling = start_tiles(
        project,
        rules,
        lay,
        workers=workers,
        levels=levels,
        tile_size=tile_size,
        cluster=cluster,
        progress=progress,
        border=True,
        release=layers is None,
    )
    lay = tiling.layers  # with many tiles, their geometries may have been let go of
    revenue = project.yield_ is not None and project.yield_.revenue is not None
    columns = piece_columns(levels)
    pieces: gpd.GeoDataFrame | None = None
    geometries: Geometries
    gpkg = conflicts_layer(project.working_crs)  # written while the summaries run
    aheads: list[WriteAhead] = []
    if len(tiling.keys) > 1:  # many tiles: geometries on disk, summaries tile by tile
        release()  # the pages of the reading and of the geometries let go of
        staged = staged_check(
            project,
            rules,
            lay,
            tiling.frames,
            columns=columns,
            border=tiling.border,
            levels=levels,
            workers=workers,
            values=(lambda tile: with_values(tile, project, lay)) if revenue else None,
            sealed=lambda attributes, store: aheads.append(
                WriteAhead(attributes, store, **gpkg)
            ),
            cleans=cleans,
        )
        attributes, geometries = staged.attributes, staged.store
        sums = staged.summaries
        timings["overlay"] = sum(tiling.rule_times.values())
        timings["summarise"] = time.perf_counter() - t - timings["overlay"]
    else:
        pieces = gather_pieces(tiling.frames, project.crs, columns)
        timings["overlay"] = time.perf_counter() - t
        if revenue:
            t = time.perf_counter()
            pieces = with_values(pieces, project, lay)
            timings["yield"] = time.perf_counter() - t
        attributes = pd.DataFrame(pieces.drop(columns=pieces.geometry.name))
        geometries = MemoryGeometries(np.asarray(pieces.geometry.array, dtype=object))
        aheads.append(WriteAhead(attributes, geometries, **gpkg))
        t = time.perf_counter()
        progress("summary", 0, 1, "summary")
        sums = summarise(
            pieces, rules, project, lay, workers=workers, levels=levels, cleans=cleans
        )
        timings["summarise"] = time.perf_counter() - t
    yields = None
    if project.yield_ is not None:
        t = time.perf_counter()
        progress("yield", 0, 1, "yield")
        yields = land_yield(project, layers=lay)
        timings["yield"] = timings.get("yield", 0.0) + time.perf_counter() - t
    run = run_record(
        project,
        rules,
        lay,
        attributes,
        sums.summary,
        options={
            "workers": workers,
            "only": list(only) if only else None,
            "allow_unmapped": allow_unmapped,
            "tile_size": tile_size,
            "cluster": cluster,
        },
        timings=timings,
        rule_times=tiling.rule_times,
        counts={"tiles": len(tiling.keys), "snapped_unions": sums.snapped},
        below_min_area=tiling.below_min_area,
        selected=tiling.selected,
    )
    for r in rules:
        n, area = tiling.below_min_area.get(r.id, (0, 0.0))
        if n:
            msg = "%s: %d pieces under min_area %g m² dropped (%.2f m² in all)"
            logger.info(msg, r.id, n, r.min_area, area)
    logger.info(
        "check done: %d rules, %d pieces in %.2f s",
        len(rules),
        len(attributes),
        time.perf_counter() - t0,
    )
    result = CheckResult(
        project=project,
        rules=rules,
        attributes=attributes,
        geometries=geometries,
        summary=sums.summary,
        by_unit=sums.by_unit,
        units=sums.units,
        run=run,
        layers=lay,
        yields=yields,
        totals=sums.totals,
        ahead=aheads[0] if aheads else None,
    )
    if pieces is not None:
        result.__dict__["pieces"] = pieces  # the frame at hand, not a second one
    return result


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


def find_pieces(
    project: Project,
    rules: Sequence[Rule],
    layers: Layers,
    *,
    workers: int | None = None,
    progress: Progress = no_progress,
    levels: Levels | None = None,
    tile_size: float | None = 0.0,
    cluster: str | None = None,
) -> tuple[gpd.GeoDataFrame, dict[str, float]]:
    """Return every rule's pieces (SPEC §6 columns, sorted) and the seconds each rule took.

    Pieces are split at the cells of the levels of units (built from the
    project when ``levels`` is not given), with a column per level when there
    are several (SPEC §14). The work is cut into tiles of ``tile_size`` metres
    by where each A feature lies (``None``: chosen from the data; ``0``: one
    tile), and with ``cluster`` runs as dask tasks (:mod:`multiplan.tiles`);
    the pieces are the same whatever the tiling. All of them are kept in
    memory; :func:`check` stages the pieces of many tiles on disk instead.
    """
    workers = overlay.default_workers() if workers is None else max(1, int(workers))
    if levels is None and rules:
        levels = build_levels(project, layers)
    tiling = start_tiles(
        project,
        rules,
        layers,
        workers=workers,
        levels=levels,
        tile_size=tile_size,
        cluster=cluster,
        progress=progress,
    )
    pieces = gather_pieces(tiling.frames, project.crs, piece_columns(levels))
    return pieces, tiling.rule_times


@dataclass(frozen=True)
class Tiling:
    """The tiles of a check, and their pieces as they are made.

    ``frames`` yields, tile by tile, each rule's pieces (made here, or as dask
    tasks); ``rule_times`` fills up with each rule's seconds as it runs.
    """

    grid: tiles.TileGrid
    keys: list[int]
    layers: Layers
    """The layers, or with ``release``, the layers whose geometries were let go of."""
    border: dict[str, np.ndarray]
    """With ``border`` and many tiles, per A layer, its features near another tile."""
    frames: Iterator[list[pd.DataFrame]]
    rule_times: dict[str, float]
    below_min_area: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per rule, the pieces ``min_area`` dropped and their m², filled up as the tiles run."""
    selected: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per rule, how many features its A and its B side select in the whole layers."""


def start_tiles(
    project: Project,
    rules: Sequence[Rule],
    layers: Layers,
    *,
    workers: int,
    levels: Levels | None,
    tile_size: float | None,
    cluster: str | None,
    progress: Progress,
    border: bool = False,
    release: bool = False,
) -> Tiling:
    """Plan the tiles of a check (:func:`multiplan.tiles.plan`) and start their work.

    The work runs as :attr:`Tiling.frames` is read: here, with the rules'
    shared context, or with ``cluster`` as dask tasks. With many tiles,
    ``border`` finds the features near another tile
    (:func:`~multiplan.tilecheck.border_features`); ``release`` (for layers read
    from the manifest, without a cluster) stages each tile's features on disk
    and lets the layers' geometries go (:mod:`multiplan.tileinputs`).
    """
    a_layers = [r.a.layer for r in rules]
    ctx = RuleContext(project, layers, workers, levels)
    grid, keys = tiles.plan(layers, a_layers, tile_size, ctx.tile_keys)
    if len(keys) > 1:
        logger.info("checking %d tiles of %g m", len(keys), grid.size)
    near = (
        border_features(layers, a_layers, grid, ctx.tile_keys)
        if border and len(keys) > 1
        else {}
    )
    rule_times = dict.fromkeys((r.id for r in rules), 0.0)
    sides = {r.id: ctx.side(r) for r in rules}
    if cluster is not None:  # the workers read what they need themselves
        frames = _cluster_pieces(
            project, rules, grid, keys, cluster, workers, progress, sides
        )
        if release and len(keys) > 1:
            layers = released(project, layers, staged_names(project, rules, layers))
    elif release and len(keys) > 1:
        inputs = TileInputs(project, rules, ctx, grid, keys)
        layers = released(project, layers, inputs.names, inputs.parts)
        frames = staged_frames(
            inputs, project, rules, grid, workers, levels, sides, progress, rule_times
        )
    else:
        frames = local_frames(lambda key: ctx, rules, grid, keys, progress, rule_times)
    below = dict.fromkeys((r.id for r in rules), (0, 0.0))
    selected = {
        r.id: (len(ctx.selection(r.a, r, "a")), len(ctx.selection(r.b, r, "b")))
        for r in rules
    }
    warn_empty_sides(rules, selected)
    return Tiling(
        grid,
        keys,
        layers,
        near,
        counting(frames, rules, below),
        rule_times,
        below,
        selected,
    )


def gather_pieces(
    frames: Iterable[list[pd.DataFrame]], crs: str, columns: Sequence[str]
) -> gpd.GeoDataFrame:
    """Return the pieces of every tile as one frame, sorted as SPEC §6 orders them."""
    every = [f for tile in frames for f in tile]
    return sort_pieces(concat_pieces(every, crs, columns), columns)


def _cluster_pieces(
    project: Project,
    rules: Sequence[Rule],
    grid: tiles.TileGrid,
    keys: list[int],
    address: str,
    workers: int,
    progress: Progress,
    sides: Mapping[str, Literal["a", "b"]],
) -> Iterator[list[pd.DataFrame]]:
    """Run the tiles as dask tasks and yield their pieces in order.

    Each worker reads what its tile needs itself; ``sides`` are the rules'
    prepared sides, chosen from the whole layers.
    """
    only = [r.id for r in rules]
    # the workers compare their copies of the inputs with these before any tile
    ours = digests(input_files(project, layers_needed(project, rules)))
    with tiles.dask_client(address, workers) as client:
        futures = [
            client.submit(
                tile_task, str(project.path), only, grid, key, sides, ours, pure=False
            )
            for key in keys
        ]
        for k, future in enumerate(futures):
            progress("checking", k, len(keys), f"tile {k + 1} of {len(keys)}")
            try:
                frames = future.result()
            except InputError as exc:
                raise tiles.ClusterError(
                    f"a dask worker cannot use the inputs: {exc}",
                    hint="The workers read the inputs from the manifest's paths: give them the data at the same paths",
                ) from exc
            future.release()
            yield frames


def tile_task(
    manifest: str,
    only: list[str],
    grid: tiles.TileGrid,
    key: int,
    sides: Mapping[str, Literal["a", "b"]] | None = None,
    expected: tuple[tuple[str, str], ...] = (),
) -> list[pd.DataFrame]:
    """Compute one tile's pieces on a dask worker, reading the inputs from their paths.

    The worker reads only what the tile needs (:func:`multiplan.rulestages.tile_layers`):
    its A features and the B features near them. The layers read whole — the
    boundary and the units — and the rules stay in the worker process for the
    next tile of the same check. ``sides`` gives each rule's prepared side, chosen
    from the whole layers (:meth:`RuleContext.side`). ``expected`` holds the
    client's ``(path, SHA-256)`` of the inputs: a worker whose copy differs
    refuses the tile rather than answer for other data.

    Raises
    ------
    InputError
        When an input is missing or unreadable here, or is not the client's.
    """
    from multiplan.project import read_project

    cache = tiles.worker_cache()
    project = read_project(manifest)
    stamp = tuple(
        (str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in input_files(project)
    )
    ck = (*tiles.cache_key(manifest), tuple(only), stamp, expected)
    if ck not in cache:
        cache.clear()
        tiles.same_inputs(expected)
        rules = read_rules(project, only=only)
        fixed = ensure_layers(project, context_layers(project) if rules else [], None)
        levels = build_levels(project, fixed) if rules else None
        cache[ck] = (rules, fixed, levels)
    rules, fixed, levels = cache[ck]
    lay = tile_layers(project, rules, fixed, grid, key)
    ctx = RuleContext(project, lay, 1, levels, sides)
    return [ctx.rule_pieces(rule, grid, key) for rule in rules]
