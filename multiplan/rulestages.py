"""The stages of one rule: select → overlay → clip → split → area.

:class:`RuleContext` holds what the rules of one run share (each selection and
buffered selection made once; per-feature facts — inside the boundary, inside one
unit cell — computed once per layer; the representative points and B indexes the
tiles use) and composes the stages of one rule, for the whole district or for
the A features of one tile. :mod:`multiplan.rulecheck` runs it rule by rule,
here or as dask tasks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import shapely

from multiplan import overlay, tiles
from multiplan.areas import area_m2, to_mu, unique_ints
from multiplan.layers import CLASS_COL, ensure_layers, read_layer
from multiplan.noding import study_boundary
from multiplan.rules import select

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    import geopandas as gpd

    from multiplan.layers import Layers
    from multiplan.levels import Levels
    from multiplan.rules import Rule, Selector
    from multiplan.specs import Project


logger = logging.getLogger(__name__)

BELOW_MIN_AREA = "below_min_area"
"""The key of a rule's pieces' ``attrs`` that holds ``(pieces, m²)`` dropped under ``min_area``."""


class RuleContext:
    """The stages of one rule, with the caches shared by the rules of one run.

    Internal to the check (:func:`multiplan.rulecheck.find_pieces` and its dask
    tasks); not a public value. ``keys`` gives layers' tile keys made already
    (:meth:`tile_keys`, by layer and grid), one per feature of ``layers``.
    """

    def __init__(
        self,
        project: Project,
        layers: Layers,
        workers: int,
        levels: Levels | None,
        sides: Mapping[str, Literal["a", "b"]] | None = None,
        keys: Mapping[tuple[str, tiles.TileGrid], np.ndarray] | None = None,
    ) -> None:
        self.project = project
        self.sides = dict(sides or {})
        self.layers = layers
        self.taxonomy = project.taxonomy
        self.workers = workers
        self._selections: dict[tuple[Any, ...], np.ndarray] = {}
        self._buffered: dict[tuple[Any, ...], np.ndarray] = {}
        self._inside: dict[str, np.ndarray] = {}
        self._unit_hint: dict[str, np.ndarray] = {}
        self._keys: dict[tuple[str, tiles.TileGrid], np.ndarray] = dict(keys or {})
        self._tiles: dict[tuple[Any, ...], np.ndarray] = {}
        self._trees: dict[tuple[Any, ...], shapely.STRtree] = {}
        self._ids: dict[str, np.ndarray] = {}
        self._classes: dict[str, np.ndarray] = {}
        self.boundary = study_boundary(project, layers)
        if self.boundary is not None:
            shapely.prepare(self.boundary)
        self.levels = levels
        self.unit_geoms: np.ndarray | None = None
        if levels is not None:
            self.unit_geoms = levels.cells

    # ---------------------------------------------------------------- select
    def selection(
        self, sel: Selector, rule: Rule | None = None, side: str = "a"
    ) -> np.ndarray:
        """Return the positions of the features a selector keeps (made once per run)."""
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
        """Return the selected geometries, buffered by ``distance`` (made once per run)."""
        key = (sel.layer, sel.classes, sel.where, distance)
        if key not in self._buffered:
            g = _geoms(self.layers[sel.layer])[self.selection(sel)]
            if distance > 0:
                g = overlay.buffer(g, distance, workers=self.workers)
            self._buffered[key] = g
        return self._buffered[key]

    def inside_boundary(self, layer: str) -> np.ndarray:
        """Return whether each feature of a layer lies inside the boundary (no clip needed)."""
        if layer not in self._inside:
            geoms = _geoms(self.layers[layer])
            self._inside[layer] = (
                np.ones(len(geoms), dtype=bool)
                if self.boundary is None
                else shapely.covers(self.boundary, geoms)
            )
        return self._inside[layer]

    def unit_hint(self, layer: str) -> np.ndarray:
        """Return the unit cell covering each feature of a layer, or -1 (no split needed)."""
        if layer not in self._unit_hint:
            assert self.unit_geoms is not None
            self._unit_hint[layer] = overlay.covering_index(
                _geoms(self.layers[layer]), self.unit_geoms
            )
        return self._unit_hint[layer]

    def ids(self, layer: str) -> np.ndarray:
        """Return a layer's feature ids as one object array (made once per run).

        Pieces refer to these objects: text held as Arrow strings would otherwise
        become new Python strings for every piece of every tile.
        """
        if layer not in self._ids:
            self._ids[layer] = np.asarray(self.layers[layer].index, dtype=object)
        return self._ids[layer]

    def classes(self, layer: str) -> np.ndarray:
        """Return a layer's classes as one object array (made once per run)."""
        if layer not in self._classes:
            self._classes[layer] = self.layers[layer][CLASS_COL].to_numpy(dtype=object)
        return self._classes[layer]

    # ---------------------------------------------------------------- one rule
    def tile_keys(self, layer: str, grid: tiles.TileGrid) -> np.ndarray:
        """Return the tile of each feature's representative point (made once per run)."""
        if (layer, grid) not in self._keys:
            self._keys[layer, grid] = tiles.tile_keys(_geoms(self.layers[layer]), grid)
        return self._keys[layer, grid]

    def tile_of(self, sel: Selector, grid: tiles.TileGrid) -> np.ndarray:
        """Return the tile key of each selected A feature (by its representative point)."""
        key = (sel.layer, sel.classes, sel.where, grid)
        if key not in self._tiles:
            self._tiles[key] = self.tile_keys(sel.layer, grid)[self.selection(sel)]
        return self._tiles[key]

    def near(self, sel: Selector, distance: float, query: np.ndarray) -> np.ndarray:
        """Return the positions (sorted) of the selected B geometries whose boxes meet ``query``'s."""
        key = (sel.layer, sel.classes, sel.where, distance)
        if key not in self._trees:
            self._trees[key] = shapely.STRtree(self.geoms(sel, distance))
        hit = self._trees[key].query(query)[1]
        return unique_ints(hit).astype(np.intp)

    def rule_pieces(
        self, rule: Rule, grid: tiles.TileGrid | None = None, key: int = 0
    ) -> pd.DataFrame:
        """Compose the stages for one rule: select → overlay → clip → split → area.

        With a tile grid, only the A features whose representative point lies in
        tile ``key`` (against the B features near them).
        """
        a_keep = None
        if grid is not None and grid.size > 0:
            a_keep = self.tile_of(rule.a, grid) == key
        a_pos, b_pos, geoms = self.overlay(rule, a_keep)
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
        frame = self._frame(
            rule, a_pos[keep], b_pos, unit_idx[keep], area[keep], geoms[keep]
        )
        # what min_area dropped, for run.json (attrs travel with a dask task's frames)
        frame.attrs[BELOW_MIN_AREA] = (int((~keep).sum()), float(area[~keep].sum()))
        return frame

    def side(self, rule: Rule) -> Literal["a", "b"]:
        """Return the side of a rule whose geometries are prepared: the one with fewer features.

        Chosen from the whole selections, so that a pair is tested the same way in
        every tile; a tile that read only the features near it is given the sides
        (``sides=``) by the run that read the layers whole.
        """
        n_a = len(self.selection(rule.a, rule, "a"))
        n_b = len(self.selection(rule.b, rule, "b"))
        return "b" if n_b <= n_a else "a"

    def overlay(
        self, rule: Rule, a_keep: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Return (A row, B row or None, piece) of a rule before clipping and splitting.

        ``a_keep`` (over the selected A features) restricts the work to those A
        features and the B features near them.
        """
        a_idx = self.selection(rule.a, rule, "a")
        b_idx = self.selection(rule.b, rule, "b")
        a = self.geoms(rule.a)
        b = self.geoms(rule.b, rule.distance)
        # the side the whole rule would prepare, in every tile alike
        side = self.sides.get(rule.id) or self.side(rule)
        if a_keep is not None:
            a_sel = np.flatnonzero(a_keep)
            b_sel = self.near(rule.b, rule.distance, a[a_sel])
            a, b = a[a_sel], b[b_sel]
            a_idx, b_idx = a_idx[a_sel], b_idx[b_sel]
        pairs = overlay.classify_pairs(a, b, workers=self.workers, prepare=side)
        if rule.a.layer == rule.b.layer:
            a_ids = self.ids(rule.a.layer)
            all_a = self.selection(rule.a, rule, "a")
            all_b = self.selection(rule.b, rule, "b")
            fa, fb = a_idx[pairs.ia], b_idx[pairs.ib]
            keep = fa != fb
            if rule.relation == "intersect":
                # a pair whose features both match both selectors is reported once
                mirrored = np.isin(fa, all_b) & np.isin(fb, all_a)
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
        none = np.full(n, None, dtype=object)
        data: dict[str, Any] = {
            "rule_id": _repeat(rule.id, n),
            "severity": _repeat(rule.severity, n),
            "a_layer": _repeat(rule.a.layer, n),
            "a_id": self.ids(rule.a.layer)[a_pos],
            "a_class": self.classes(rule.a.layer)[a_pos],
        }
        if b_pos is None:
            data.update(b_layer=none, b_id=none.copy(), b_class=none.copy())
        else:
            data.update(
                b_layer=_repeat(rule.b.layer, n),
                b_id=self.ids(rule.b.layer)[b_pos],
                b_class=self.classes(rule.b.layer)[b_pos],
            )
        if self.levels is not None:  # -1 → None: outside every cell
            data.update(self.levels.units_of(unit_idx))
        else:
            data["unit"] = none.copy()
        data["area_m2"] = area.astype(float)
        data["area_mu"] = to_mu(area.astype(float))
        data["geometry"] = geoms
        # keep text as the layer's own objects: pandas 3 would copy it into Arrow
        # strings, and every piece would get a new Python string when concatenated
        return pd.DataFrame(
            {
                k: pd.Series(v, dtype=object)
                if isinstance(v, np.ndarray) and v.dtype.kind == "O"
                else v
                for k, v in data.items()
            }
        )


def _repeat(value: object, n: int) -> np.ndarray:
    """Return an object array of ``n`` references to one ``value`` (``np.full`` copies text)."""
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def _geoms(frame: gpd.GeoDataFrame) -> np.ndarray:
    return np.asarray(frame.geometry.array, dtype=object)


_TILE_PAD = 1.0
"""Metres added around a tile and around the boxes read near it (a point on a tile's edge)."""


def tile_layers(
    project: Project,
    rules: Sequence[Rule],
    fixed: Layers,
    grid: tiles.TileGrid,
    key: int,
) -> Layers:
    """Read what one tile of a check needs: its A features, and the B features near them.

    The A layers are read near the tile's square; each rule's B layer near the box
    of the tile's A features grown by the rule's distance (a layer's own buffer is
    added by :func:`multiplan.layers.read_layer`), through the source's spatial
    index where it has one. ``fixed`` holds layers read whole (the boundary, the
    units), used as they are. Every A feature whose representative point lies in
    the tile, and every B feature whose box meets one of theirs, is read, with the
    ids of the whole layer, so the tile's pieces are those it has when the layers
    are read whole. With one tile (``grid.size == 0``) every layer is read whole.
    """
    names = list(dict.fromkeys(n for r in rules for n in (r.a.layer, r.b.layer)))
    if grid.size <= 0:
        return ensure_layers(project, names, fixed)
    square = grid.box(key, pad=_TILE_PAD)
    a_names = [n for n in dict.fromkeys(r.a.layer for r in rules) if n not in fixed]
    first = ensure_layers(project, a_names, fixed, near=square)
    ctx = RuleContext(project, first, 1, None)
    boxes: dict[str, list[tuple[float, float, float, float]]] = {
        n: [square] for n in a_names
    }
    for rule in rules:
        if rule.b.layer in fixed:
            continue
        found = boxes.setdefault(rule.b.layer, [])
        mine = ctx.tile_of(rule.a, grid) == key
        if not mine.any():
            continue
        b = shapely.total_bounds(ctx.geoms(rule.a)[mine])
        if not np.isnan(b).any():
            d = rule.distance + _TILE_PAD
            found.append((b[0] - d, b[1] - d, b[2] + d, b[3] + d))
    out = {}
    for name, found in boxes.items():
        box = _box_union(found or [square])
        out[name] = (
            first.layer(name)
            if name in a_names and box == square
            else read_layer(project.layers[name], project, near=box)
        )
    return fixed.with_layers(out)


def _box_union(
    boxes: Sequence[tuple[float, float, float, float]],
) -> tuple[float, float, float, float]:
    b = np.asarray(boxes, dtype=float)
    return (
        float(b[:, 0].min()),
        float(b[:, 1].min()),
        float(b[:, 2].max()),
        float(b[:, 3].max()),
    )


def counting(
    frames: Iterator[list[pd.DataFrame]],
    rules: Sequence[Rule],
    below: dict[str, tuple[int, float]],
) -> Iterator[list[pd.DataFrame]]:
    """Yield the tiles' frames, adding up what ``min_area`` dropped in each rule."""
    for tile in frames:
        for rule, frame in zip(rules, tile, strict=True):
            n, area = frame.attrs.get(BELOW_MIN_AREA, (0, 0.0))
            had_n, had_area = below[rule.id]
            below[rule.id] = (had_n + int(n), had_area + float(area))
        yield tile


def warn_empty_sides(
    rules: Sequence[Rule], selected: Mapping[str, tuple[int, int]]
) -> None:
    """Log a warning for each rule whose A or B side selects no feature.

    Such a rule finds nothing (or, for a ``difference`` without B, all of A)
    whatever the plans say: a class or filter that matches nothing is a
    mistake to see, not a clean result.
    """
    for r in rules:
        n_a, n_b = selected.get(r.id, (1, 1))
        if not n_a:
            logger.warning(
                "rule %s: its A side, %s, selects no feature: the rule cannot find anything",
                r.id,
                r.a.describe(),
            )
        elif not n_b:
            logger.warning(
                "rule %s: its B side, %s, selects no feature: %s",
                r.id,
                r.b.describe(),
                "every piece of its A side is in conflict"
                if r.relation == "difference"
                else "the rule cannot find anything",
            )
