"""A check of many tiles in bounded memory (SPEC §12): pieces staged on disk, summaries by tile.

With more than one tile, a check keeps no tile's geometries once the tile is
done. Each tile's pieces are sorted, valued, written to a
:class:`~multiplan.piecestore.PieceStore` and summarised; only their attributes
(about a hundred bytes a piece) stay in memory.

Union areas by tile: a piece lies inside its A feature, so it can overlap a
piece of another tile only when its A feature's bounding box meets that of an
A feature of another tile (a *border* feature). In each tile the clusters of
overlapping pieces that hold no piece of a border feature are unioned there and
then; the others are kept and unioned with their neighbours across tiles at the
end. Each piece's contribution (:meth:`~multiplan.areas.UnionAreas.contributions`)
is then the same as in one tile, and so is every sum, bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from multiplan.areas import UnionAreas, add_up, components, own_values
from multiplan.geometry import boxes_meet
from multiplan.levels import level_names
from multiplan.memory import release
from multiplan.pieces import concat_pieces, sort_pieces, sorted_parts
from multiplan.piecestore import PieceStore
from multiplan.summary import (
    VALUED,
    Summaries,
    layer_cleans,
    piece_unions,
    resolve,
    rule_layers,
    summary_key,
    summary_key_names,
    summary_keys,
    summary_tables,
    unit_columns,
)
from multiplan.tileinputs import tile_boxes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    import geopandas as gpd

    from multiplan.layers import Layers
    from multiplan.levels import Levels
    from multiplan.rules import Rule
    from multiplan.specs import Project
    from multiplan.summary import Cleans
    from multiplan.tiles import TileGrid

logger = logging.getLogger(__name__)

_QUERY_ROWS = 100_000
"""Features whose neighbours are looked up at a time (bounds the candidate pairs held)."""


@dataclass(frozen=True)
class StagedPieces:
    """The pieces of a tiled check: attributes in memory, geometries on disk, summaries."""

    attributes: pd.DataFrame
    store: PieceStore
    summaries: Summaries
    tiles: int


def border_features(
    layers: Layers,
    a_layers: Sequence[str],
    grid: TileGrid,
    keys: Callable[[str, TileGrid], np.ndarray],
) -> dict[str, np.ndarray]:
    """Return, per A layer, which features' boxes meet the box of an A feature of another tile.

    A feature's tile is that of its representative point, as the tiles assign it
    (``keys(layer, grid)``, :func:`multiplan.tiles.tile_keys`).
    Only a feature whose box meets the box around all of another tile's features
    can meet one of them, and the feature it meets is then such a feature too: the
    boxes are compared among those candidates alone (a band along the tiles'
    edges), so that no index of every feature is built (GEOS's tree of 4 million
    parcels took about 530 MB).
    """
    names = [n for n in dict.fromkeys(a_layers) if n in layers and len(layers[n])]
    if not names:
        return {}
    geoms = [np.asarray(layers[n].geometry.array, dtype=object) for n in names]
    every = np.concatenate(geoms)
    tile = np.concatenate([keys(n, grid) for n in names])
    near = _near_other_tiles(shapely.bounds(every), tile)
    release()  # the boxes' pages
    candidates = np.flatnonzero(near)
    tree = shapely.STRtree(every[candidates])  # no predicate: boxes only
    border = np.zeros(len(every), dtype=bool)
    for start in range(0, len(candidates), _QUERY_ROWS):  # pairs a chunk at a time
        i, j = tree.query(every[candidates[start : start + _QUERY_ROWS]])
        i, j = candidates[i + start], candidates[j]
        np.logical_or.at(border, i, tile[i] != tile[j])
    del tree
    release()  # the tree's and the pairs' pages, before the staging
    splits = np.cumsum([len(g) for g in geoms])[:-1]
    return dict(zip(names, np.split(border, splits), strict=True))


def _near_other_tiles(bounds: np.ndarray, tile: np.ndarray) -> np.ndarray:
    """Return which boxes meet the box around the features of another tile (edges included).

    Each tile's boxes are compared with the boxes of the tiles whose boxes meet
    its own, a tile at a time: no index of every feature, only its bounds and an
    order (about 40 bytes a feature). Empty features (NaN bounds) meet nothing.
    """
    near = np.zeros(len(bounds), dtype=bool)
    live = ~np.isnan(bounds).any(axis=1)
    if not live.any():
        return near
    by_tile = np.flatnonzero(live)
    by_tile = by_tile[np.argsort(tile[by_tile], kind="stable")]
    cuts = np.flatnonzero(np.diff(tile[by_tile])) + 1
    keys = tile[by_tile[np.r_[0, cuts]]].tolist()  # the tiles, in the slices' order
    found = tile_boxes(bounds, tile, keys)
    boxes = np.array([found[key] for key in keys])
    for k, (start, stop) in enumerate(
        zip(np.r_[0, cuts], np.r_[cuts, len(by_tile)], strict=True)
    ):
        others = np.flatnonzero(boxes_meet(boxes, boxes[k]))
        mine = by_tile[start:stop]
        b = bounds[mine]
        hit = np.zeros(len(mine), dtype=bool)
        for o in others[others != k]:
            hit |= boxes_meet(b, boxes[o])
        near[mine[hit]] = True
    return near


class TileSummaries:
    """The union areas of the summary tables, accumulated tile by tile."""

    def __init__(
        self,
        project: Project,
        rules: Sequence[Rule],
        layers: Layers,
        levels: Levels | None,
        border: Mapping[str, np.ndarray],
        *,
        workers: int = 1,
        cleans: Cleans | None = None,
    ) -> None:
        self.project = project
        self.rules = rules
        self.layers = layers
        self.levels = levels
        self.border = border
        self.workers = workers
        self.unit_cols = unit_columns(levels, level_names(project))
        self._cleans = cleans
        # per grouping and tile, the pieces (positions in the tiles one after
        # the other) that do not add their own area or value, and what they add
        self._contrib: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._kept: list[np.ndarray] = []
        self._kept_at: list[np.ndarray] = []
        self._count = 0
        self.snapped = 0

    def add(self, tile: gpd.GeoDataFrame) -> None:
        """Union the clusters of a tile that no other tile can touch; keep the others."""
        n = len(tile)
        geoms = np.asarray(tile.geometry.array, dtype=object)
        unions = self._unions(tile, geoms)
        i, j = unions.pairs
        cluster = components(n, i, j)
        reach = np.zeros(n, dtype=bool)
        reach[cluster[self._on_border(tile)]] = True
        kept = reach[cluster]
        groups = summary_keys(tile, self.unit_cols)
        for name, keys, measure in self._measured(groups, unions):
            got = unions.contributions(keys, mask=~kept, measure=measure)
            # most pieces add their own area (or value): keep only the others
            own = unions.own(measure)
            at = np.flatnonzero(got != own)
            self._contrib.setdefault(name, []).append((self._count + at, got[at]))
        self._kept.append(geoms[kept])
        self._kept_at.append(self._count + np.flatnonzero(kept))
        self._count += n
        self.snapped += unions.snapped

    def _unions(self, pieces: pd.DataFrame, geoms: np.ndarray) -> UnionAreas:
        return piece_unions(
            pieces,
            self.project,
            workers=self.workers,
            layers=self.layers,
            rules=self.rules,
            geoms=geoms,
            cleans=self.cleans(),
        )

    @staticmethod
    def _measured(
        groups: Mapping[str, np.ndarray], unions: UnionAreas
    ) -> list[tuple[str, np.ndarray, str]]:
        """Return ``(name, keys, measure)`` to add up: the values of :data:`VALUED` first (their unions' areas are kept), then every area."""
        out = []
        if unions.valuer is not None:
            out += [(f"value:{name}", groups[name], "value") for name in VALUED]
        return out + [(name, keys, "area") for name, keys in groups.items()]

    def cleans(self) -> Mapping[str, np.ndarray]:
        """Return the rule layers' clean features (found once, or waited for once)."""
        if self._cleans is None:
            self._cleans = layer_cleans(
                self.layers, rule_layers(self.rules), self.workers
            )
        found = resolve(self._cleans)
        assert found is not None
        self._cleans = found
        return found

    def _on_border(self, tile: pd.DataFrame) -> np.ndarray:
        out = np.zeros(len(tile), dtype=bool)
        layer_col = tile["a_layer"].to_numpy(dtype=object)
        ids = tile["a_id"].to_numpy(dtype=object)
        for name in pd.unique(layer_col):
            mine = layer_col == name
            if name not in self.border:  # not a tiled layer: no promise, keep them
                out[mine] = True
                continue
            pos = self.layers.index(name).get_indexer(ids[mine])
            out[mine] = np.where(pos >= 0, self.border[name][np.maximum(pos, 0)], True)
        return out

    def finish(self, attributes: pd.DataFrame, order: np.ndarray) -> Summaries:
        """Union the kept clusters across tiles and return the tables.

        ``attributes`` are every piece's, sorted; ``order`` maps each sorted
        position to the piece's position in the tiles one after the other.
        """
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        at = rank[np.concatenate(self._kept_at)] if self._kept_at else np.zeros(0, int)
        geoms = np.concatenate(self._kept) if self._kept else np.zeros(0, dtype=object)
        self._kept = []
        by_rank = np.argsort(at, kind="stable")
        at, geoms = at[by_rank], geoms[by_rank]
        across: dict[str, np.ndarray] = {}
        if len(at):
            kept = attributes.iloc[at].reset_index(drop=True)
            unions = self._unions(kept, geoms)
            groups = summary_keys(kept, self.unit_cols)
            for name, keys, measure in self._measured(groups, unions):
                across[name] = unions.contributions(keys, measure=measure)
            self.snapped += unions.snapped
            logger.info(
                "%d of %d pieces lie near a tile's edge and were unioned across tiles",
                len(at),
                len(attributes),
            )
            del unions, kept
        del geoms
        own = {"area": attributes["area_m2"].to_numpy(dtype=float)}
        if "value_yuan" in attributes.columns:
            own["value"] = own_values(attributes["value_yuan"].to_numpy(dtype=float))

        def contributions(name: str) -> np.ndarray:
            # one grouping at a time: a big check's contributions (a float a
            # piece and grouping) and keys need not all be in memory at once
            out = own["value" if name.startswith("value:") else "area"].copy()
            parts = self._contrib.pop(name, [])
            if parts:
                out[rank[np.concatenate([p[0] for p in parts])]] = np.concatenate(
                    [p[1] for p in parts]
                )
            if name in across:
                out[at] = across.pop(name)
            return out

        areas: dict[str, dict[Any, float]] = {}
        values: dict[str, dict[Any, float]] = {}
        valued = "value_yuan" in attributes.columns
        for name in summary_key_names(self.unit_cols):
            keys = summary_key(attributes, name)
            areas[name] = add_up(keys, contributions(name))
            if valued and name in VALUED:
                values[name] = add_up(keys, contributions(f"value:{name}"))
            del keys
        if valued:
            for name in VALUED:
                areas[f"value:{name}"] = values[name]
        return summary_tables(
            attributes, self.rules, self.project, areas, self.levels, self.snapped
        )


def staged_check(
    project: Project,
    rules: Sequence[Rule],
    layers: Layers,
    tiles: Iterable[list[pd.DataFrame]],
    *,
    columns: Sequence[str],
    border: Mapping[str, np.ndarray],
    levels: Levels | None,
    workers: int = 1,
    values: Callable[[gpd.GeoDataFrame], gpd.GeoDataFrame] | None = None,
    sealed: Callable[[pd.DataFrame, PieceStore], object] | None = None,
    cleans: Cleans | None = None,
) -> StagedPieces:
    """Run the tiles one after another, staging each tile's geometries and summarising it.

    Parameters
    ----------
    tiles
        Per tile, the pieces of each rule (:meth:`RuleContext.rule_pieces`).
    columns
        The pieces' columns (:func:`multiplan.levels.piece_columns`).
    border
        Per A layer, its features near another tile (:func:`border_features`).
    values
        Adds ``value_yuan`` to a tile's pieces (land yield), or ``None``.
    sealed
        Called with every piece's attributes and the store once they are in
        their final order, before the clusters across tiles are unioned (the
        check writes conflicts.gpkg meanwhile).
    cleans
        The rule layers' clean features, or a future of them
        (:func:`~multiplan.summary.cleans_ahead`).
    """
    store = PieceStore()
    sums = TileSummaries(
        project, rules, layers, levels, border, workers=workers, cleans=cleans
    )
    parts: list[dict[str, pd.Series]] = []
    corners: list[np.ndarray] = []
    count = 0
    for frames in tiles:
        tile = sort_pieces(concat_pieces(frames, project.crs, columns), columns)
        del frames
        if values is not None:
            tile = values(tile)
        geoms = np.asarray(tile.geometry.array, dtype=object)
        store.add(geoms)
        corners.append(shapely.bounds(geoms)[:, :2])
        sums.add(tile)
        # each column a copy of its own, so that sorted_parts can let it go alone
        parts.append(
            {
                c: tile[c].copy(deep=True)
                for c in tile.columns
                if c != tile.geometry.name
            }
        )
        count += 1
        del tile, geoms
        release()  # the tile's freed pages, before the next tile's threads allocate
    corner = np.concatenate(corners) if corners else np.zeros((0, 2))
    del corners
    if parts:
        attributes, order = sorted_parts(parts, corner, columns)
    else:
        attributes = pd.DataFrame(concat_pieces([], project.crs, columns)).drop(
            columns="geometry"
        )
        order = np.zeros(0, dtype=np.int64)
    del corner
    release()  # the parts' and the sort keys' pages
    store.seal(order)
    if sealed is not None:
        sealed(attributes, store)
    return StagedPieces(attributes, store, sums.finish(attributes, order), count)
