"""The inputs of each tile of a check, staged on disk, so that the layers' geometries need not stay in memory (SPEC §12).

A check of many tiles reads its rule layers whole once: to check them, count
them for run.json, find their clean features, place every A feature in its tile
and find the features near another tile. Kept to the end, those layers would
be the largest part of a big check's memory (about 0.9 KB a feature). Instead,
:class:`TileInputs` writes, for every tile, the prepared geometries that tile
needs — its A features (those whose representative point lies in it) and the B
features whose boxes meet the box of its A features grown by each rule's
distance — as WKB, and the check lets the whole geometries go
(:class:`ReleasedLayers`). Each tile then works on its own features, as a dask
worker that reads near its tile does, with the ids, classes and attributes of
the whole layers; the features are the prepared ones, coordinate for
coordinate, so its pieces are those of a whole-layer run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely

from multiplan.areas import unique_ints
from multiplan.errors import InputError, OutputError
from multiplan.geometry import COPY_BLOCK, boxes_meet
from multiplan.layers import Layer, Layers, read_layer
from multiplan.memory import release as free_pages
from multiplan.scratch import owned_folder

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
    from typing import Literal

    import pandas as pd

    from multiplan.levels import Levels
    from multiplan.progress import Progress
    from multiplan.rules import Rule
    from multiplan.rulestages import RuleContext
    from multiplan.specs import Project
    from multiplan.tiles import TileGrid

logger = logging.getLogger(__name__)

PAD_M = 1.0
"""Metres added around the box of a tile's A features (a box on a feature's edge)."""


class TileInputs:
    """Per tile, the features of the rule layers it needs, as WKB files in a temporary folder.

    Made from the whole layers of a check (through its :class:`RuleContext`,
    whose selections and representative points place the features); then
    :meth:`layers` gives one tile's layers. The layers that are not staged (the
    boundary, the units, value rasters) are given whole to every tile. The folder
    is removed by :meth:`close`, or when the object is collected.
    """

    def __init__(
        self,
        project: Project,
        rules: Sequence[Rule],
        ctx: RuleContext,
        grid: TileGrid,
        keys: Sequence[int],
    ) -> None:
        layers = ctx.layers
        self.names = staged_names(project, rules, layers)
        self.keys = list(keys)
        self._fixed = {
            n: ly for n, ly in layers.layers().items() if n not in self.names
        }
        self.parts = {n: attribute_layer(layers.layer(n)) for n in self.names}
        """The staged layers with their ids and attributes only, shared by every tile."""
        try:
            self.folder, self._cleanup = owned_folder(self, "inputs")
        except OSError as exc:
            raise _staging_error(exc, Path(tempfile.gettempdir())) from exc
        self._pos: dict[tuple[int, str], np.ndarray] = {}
        wanted = _positions(rules, ctx, grid, self.keys, self.names)
        self.grid = grid
        # the A layers' tile keys, made to plan the tiles: a tile's are a part of them
        self._keys = {
            n: ctx.tile_keys(n, grid) for n in dict.fromkeys(r.a.layer for r in rules)
        }
        free_pages()  # the boxes' and the queries' pages, before the WKB is made
        for name in self.names:
            geoms = np.asarray(layers[name].geometry.array, dtype=object)
            for key in self.keys:
                pos = wanted.get((key, name), np.zeros(0, dtype=np.intp))
                self._pos[key, name] = pos
                self._write(self._file(key, name), geoms[pos])
        staged = sum(len(p) for p in self._pos.values())
        logger.info("staged %d features for %d tiles", staged, len(self.keys))

    def _file(self, key: int, name: str) -> Path:
        return self.folder / f"{self.names.index(name)}-{key}.arrow"

    def _write(self, path: Path, geoms: np.ndarray) -> None:
        """Write geometries as one Arrow IPC file of WKB (as the staged pieces are)."""
        import pyarrow as pa

        schema = pa.schema([("wkb", pa.large_binary())])  # a tile may hold > 2 GB
        column = pa.array(shapely.to_wkb(geoms), type=pa.large_binary())
        try:
            with (
                pa.OSFile(str(path), "wb") as sink,
                pa.ipc.new_file(sink, schema) as out,
            ):
                out.write_batch(pa.record_batch([column], schema=schema))
        except OSError as exc:
            raise _staging_error(exc, self.folder) from exc

    def _read(self, key: int, name: str) -> np.ndarray:
        import pyarrow as pa

        with pa.OSFile(str(self._file(key, name)), "rb") as source:
            table = pa.ipc.open_file(source).read_all()
        wkb = table.column("wkb").to_numpy(zero_copy_only=False)
        return np.asarray(shapely.from_wkb(wkb), dtype=object)

    def layers(self, key: int) -> Layers:
        """Return what tile ``key`` needs: its features of the staged layers, the others whole.

        Each staged layer keeps the whole layer's ids (its index), attributes,
        classes and order; its geometries are the prepared ones, read back from WKB.
        """
        out = dict(self._fixed)
        for name in self.names:
            part = self.parts[name]
            pos = self._pos[key, name]
            frame = part.frame.iloc[pos]
            frame[frame.geometry.name] = gpd.GeoSeries(
                self._read(key, name), index=frame.index, crs=frame.crs
            )
            out[name] = replace(part, frame=frame)
        return Layers(out)

    def feature_keys(self, key: int) -> dict[tuple[str, TileGrid], np.ndarray]:
        """Return the tile keys of tile ``key``'s features of the A layers, by layer and grid."""
        return {
            (name, self.grid): tile[self._pos[key, name]]
            for name, tile in self._keys.items()
            if (key, name) in self._pos
        }

    def close(self) -> None:
        """Remove the staged files (and let the keys go)."""
        self._keys = {}
        self._cleanup()


def staged_names(project: Project, rules: Sequence[Rule], layers: Layers) -> list[str]:
    """Return the rule layers a tile reads in part: A and B layers, not the boundary or a units layer."""
    whole = {project.boundary, *project.units}
    names = dict.fromkeys(n for r in rules for n in (r.a.layer, r.b.layer))
    return [n for n in names if n and n in layers and n not in whole]


def attribute_layer(layer: Layer) -> Layer:
    """Return a layer whose frame holds its ids and attributes, with no geometries (all ``None``)."""
    frame = layer.frame
    empty = gpd.GeoSeries(
        np.full(len(frame), None, dtype=object), index=frame.index, crs=frame.crs
    )
    kept = gpd.GeoDataFrame(
        frame.drop(columns=frame.geometry.name), geometry=empty, crs=frame.crs
    )
    if frame.geometry.name != "geometry":
        kept = kept.rename_geometry(frame.geometry.name)
    return replace(layer, frame=kept[list(frame.columns)])


def _positions(
    rules: Sequence[Rule],
    ctx: RuleContext,
    grid: TileGrid,
    keys: Sequence[int],
    names: Sequence[str],
) -> dict[tuple[int, str], np.ndarray]:
    """Return, per tile and staged layer, the sorted positions of the features the tile needs.

    An A layer gives a tile the features whose representative point lies in it;
    a rule's B layer the features whose boxes meet the box of the tile's selected
    A features grown by the rule's distance (the prepared geometries are already
    buffered by the layer's own ``buffer``).
    """
    found: dict[tuple[int, str], list[np.ndarray]] = {}
    for name in dict.fromkeys(r.a.layer for r in rules):
        if name not in names:
            continue
        tile = ctx.tile_keys(name, grid)
        for key in keys:
            found.setdefault((key, name), []).append(np.flatnonzero(tile == key))
    indexes: dict[str, BoxIndex] = {}
    a_boxes: dict[tuple[object, ...], dict[int, np.ndarray]] = {}
    for rule in rules:
        if rule.b.layer not in names:
            continue
        sel = (rule.a.layer, rule.a.classes, rule.a.where)
        if sel not in a_boxes:  # rules on the same A features share their boxes
            a_boxes[sel] = tile_boxes(
                shapely.bounds(ctx.geoms(rule.a)), ctx.tile_of(rule.a, grid), keys
            )
        boxes = a_boxes[sel]
        grow = rule.distance + PAD_M
        if rule.b.layer not in indexes:
            b_geoms = np.asarray(ctx.layers[rule.b.layer].geometry.array, dtype=object)
            indexes[rule.b.layer] = BoxIndex(shapely.bounds(b_geoms))
        for key, box in boxes.items():
            found.setdefault((key, rule.b.layer), []).append(
                indexes[rule.b.layer].query(
                    (box[0] - grow, box[1] - grow, box[2] + grow, box[3] + grow)
                )
            )
    return {k: unique_ints(np.concatenate(v)).astype(np.intp) for k, v in found.items()}


class BoxIndex:
    """Boxes sorted by their left edge: which of them meet a box, without a tree.

    Answers what ``shapely.STRtree(geoms).query(shapely.box(*box))`` answers
    (the features whose bounding boxes meet the box, edges included; empty
    features never), as sorted positions. GEOS's tree takes about 130 bytes a
    feature (530 MB for 4 million parcels); this index takes the bounds and an
    order, 40 bytes. A query looks at the boxes whose left edge lies between the
    box's left edge less the width of the widest box and its right edge; the few
    boxes much wider than most (wider than 16 times the median and among the
    widest 0.1 %, say a zone across the district) are set apart and looked at by
    every query, so that one wide box does not make every query look at the
    whole layer.

    Parameters
    ----------
    bounds
        ``shapely.bounds`` of the features (NaN rows for empty ones).

    Examples
    --------
    >>> b = shapely.bounds(np.array([shapely.box(0, 0, 1, 1), shapely.box(2, 0, 3, 1),
    ...                              shapely.Polygon(), shapely.box(0, 5, 9, 6)]))
    >>> BoxIndex(b).query((1, 0, 2, 0.5)).tolist()
    [0, 1]
    >>> BoxIndex(b).query((4, 0, 5, 9)).tolist()
    [3]
    """

    def __init__(self, bounds: np.ndarray) -> None:
        live = np.flatnonzero(~np.isnan(bounds).any(axis=1))
        width = bounds[live, 2] - bounds[live, 0]
        # set apart: wider than 16 times the median, and among the widest 0.1 %
        limit = (
            max(16 * np.median(width), np.quantile(width, 0.999)) if len(live) else 0
        )
        wide = width > limit
        self._wide = live[wide]
        narrow = live[~wide]
        self._order = narrow[np.argsort(bounds[narrow, 0], kind="stable")]
        self._left = bounds[self._order, 0]
        self._bounds = bounds
        # a metre more than the widest narrow box: rounding in the subtraction
        # cannot leave a box out (the test of each box below is exact)
        self._reach = float(width[~wide].max()) + 1.0 if len(narrow) else 0.0

    def query(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """Return the sorted positions of the boxes that meet ``(xmin, ymin, xmax, ymax)``."""
        x0, x1 = box[0], box[2]
        lo = np.searchsorted(self._left, x0 - self._reach, side="left")
        hi = np.searchsorted(self._left, x1, side="right")
        near = np.concatenate([self._order[lo:hi], self._wide])
        return np.sort(near[boxes_meet(self._bounds[near], box)])


def tile_boxes(
    bounds: np.ndarray, tile: np.ndarray, keys: Sequence[int]
) -> dict[int, np.ndarray]:
    """Return the box of each tile's features (xmin, ymin, xmax, ymax), for the tiles that have some.

    Empty features (NaN bounds) are left out. The features are looked at
    :data:`~multiplan.geometry.COPY_BLOCK` at a time: the copies of a whole
    layer's bounds took about 300 MB at 4 million parcels.
    """
    known = np.asarray(keys, dtype=np.int64)
    if not len(known):
        return {}
    order = np.argsort(known, kind="stable")
    lo = np.full((len(known), 2), np.inf)
    hi = np.full((len(known), 2), -np.inf)
    for start in range(0, len(tile), COPY_BLOCK):
        t = tile[start : start + COPY_BLOCK]
        b = bounds[start : start + COPY_BLOCK]
        slot = order[np.clip(np.searchsorted(known[order], t), 0, len(known) - 1)]
        code = np.where(known[slot] == t, slot, -1)  # the tile's place in keys
        mine = code >= 0
        np.fmin.at(lo, code[mine], b[mine, :2])  # fmin, fmax: NaN left out
        np.fmax.at(hi, code[mine], b[mine, 2:])
    return {
        int(key): np.r_[lo[k], hi[k]]
        for k, key in enumerate(known.tolist())
        if np.isfinite(lo[k]).all()
    }


class ReleasedLayers(Layers):
    """Layers of which some were let go of: their geometries are read again only when asked for.

    ``layers`` holds, for the ``pending`` names, layers with their ids and
    attributes only (:func:`attribute_layer`). :meth:`index`, :meth:`stats`,
    ``in`` and ``len`` answer from those; asking for a pending layer's frame
    (``layers[name]``, :meth:`layer`) reads it whole again with ``reread``, once,
    and refuses a source that changed since the first read.
    """

    def __init__(
        self,
        layers: Mapping[str, Layer],
        pending: Iterable[str],
        reread: Callable[[str], Layer],
    ) -> None:
        super().__init__(layers)
        self._pending = set(pending)
        self._reread = reread

    @property
    def pending(self) -> frozenset[str]:
        """Return the layers whose geometries were let go of and not read again."""
        return frozenset(self._pending)

    def __getitem__(self, name: str) -> gpd.GeoDataFrame:
        return self.layer(name).frame

    def __contains__(self, name: object) -> bool:
        return name in self._layers

    def layer(self, name: str) -> Layer:
        """Return the loaded layer, reading a released one again first."""
        if name in self._pending:
            logger.info(
                "reading layer %s again: its geometries were let go for the tiles", name
            )
            again = self._reread(name)
            first = self._layers[name]
            if len(again) != len(first) or not again.frame.index.equals(
                first.frame.index
            ):
                raise InputError(
                    "the layer changed on disk while the check ran",
                    path=first.spec.source,
                    layer=name,
                    hint="Run the check again on inputs that stay as they are",
                )
            self._layers[name] = replace(again, stats=first.stats)
            self._pending.discard(name)
        return self._layers[name]

    def layers(self) -> dict[str, Layer]:
        """Return every layer by name, reading released ones again."""
        return {n: self.layer(n) for n in self._layers}

    def with_layers(
        self, more: Mapping[str, Layer], first: Iterable[str] = ()
    ) -> ReleasedLayers:
        """Return a new :class:`ReleasedLayers` with ``more`` added; released layers stay released."""
        merged = {**self._layers, **more}
        order = dict.fromkeys([*first, *merged])
        return ReleasedLayers(
            {n: merged[n] for n in order}, self._pending - set(more), self._reread
        )


def release(
    layers: Layers,
    names: Iterable[str],
    reread: Callable[[str], Layer],
    parts: Mapping[str, Layer] | None = None,
) -> ReleasedLayers:
    """Return ``layers`` with the geometries of ``names`` let go of, read again by ``reread`` when asked for.

    ``parts`` gives layers already stripped of their geometries
    (:attr:`TileInputs.parts`), so that the attributes are held once.
    """
    names = set(names)
    parts = parts or {}
    kept = {
        n: (parts[n] if n in parts else attribute_layer(ly)) if n in names else ly
        for n, ly in layers.layers().items()
    }
    return ReleasedLayers(kept, names, reread)


def released(
    project: Project,
    layers: Layers,
    names: Sequence[str],
    parts: Mapping[str, Layer] | None = None,
) -> ReleasedLayers:
    """Return ``layers`` with the geometries of ``names`` let go of, read again from the manifest when asked for.

    ``parts`` as in :func:`release` (:attr:`TileInputs.parts`).
    """
    return release(
        layers, names, lambda name: read_layer(project.layers[name], project), parts
    )


def _staging_error(exc: OSError, folder: Path) -> OutputError:
    """Return the error of a staging folder that cannot take the tiles' inputs."""
    return OutputError(
        f"cannot stage the features of the tiles in {folder}: {exc.strerror or exc}".rstrip(),
        path=folder,
        hint="A check of many tiles keeps each tile's features there while it runs "
        "(about the size of the rule layers): free some space, or set TMPDIR to a "
        "folder with room",
    )


def local_frames(
    context: Callable[[int], RuleContext],
    rules: Sequence[Rule],
    grid: TileGrid,
    keys: Sequence[int],
    progress: Progress,
    rule_times: dict[str, float],
) -> Iterator[list[pd.DataFrame]]:
    """Run the tiles here, one after another, and yield each one's pieces per rule.

    ``context(key)`` gives the :class:`RuleContext` tile ``key`` runs in: the
    whole layers' one, or one over the tile's staged features.
    """
    for k, key in enumerate(keys):
        ctx = context(key)
        frames = []
        for i, rule in enumerate(rules):
            progress("checking", k * len(rules) + i, len(keys) * len(rules), rule.id)
            t = time.perf_counter()
            frames.append(ctx.rule_pieces(rule, grid, key))
            rule_times[rule.id] += time.perf_counter() - t
        del ctx
        yield frames


def staged_frames(
    inputs: TileInputs,
    project: Project,
    rules: Sequence[Rule],
    grid: TileGrid,
    workers: int,
    levels: Levels | None,
    sides: Mapping[str, Literal["a", "b"]],
    progress: Progress,
    rule_times: dict[str, float],
) -> Iterator[list[pd.DataFrame]]:
    """Run the tiles here on their staged features, one after another, and yield each one's pieces per rule.

    Each tile has its own :class:`RuleContext` over :meth:`TileInputs.layers`,
    with the prepared sides the whole layers chose (``sides``); the staged files
    are removed when the last tile is done, or when the run stops.
    """
    from multiplan.rulestages import RuleContext

    def context(key: int) -> RuleContext:
        return RuleContext(
            project,
            inputs.layers(key),
            workers,
            levels,
            sides,
            inputs.feature_keys(key),
        )

    try:
        yield from local_frames(context, rules, grid, inputs.keys, progress, rule_times)
    finally:
        inputs.close()
