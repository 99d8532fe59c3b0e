"""Plan editions compared (修编对比, SPEC §14): what changed between two editions of a plan.

``multiplan diff PROJECT.toml OLD NEW`` nodes the two editions (and the cells of
the levels of units) once, as ``fuse`` does: the faces never overlap and cover
both editions' union within the boundary. Each face carries both editions' ids
and classes and whether its land was ``added``, ``removed``, ``reclassified`` or
stayed the ``same`` at the chosen taxonomy level. The transfer matrix (转移矩阵)
sums the faces by (old class, new class); faces never overlap, so its sums are
areas of unions.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd

from multiplan import tiles
from multiplan.areas import area_m2, to_mu
from multiplan.errors import InputError
from multiplan.io import csv_writer, gpkg_writer
from multiplan.layers import LayerInput, ensure_layers
from multiplan.levels import Levels, build_levels, per_level
from multiplan.noding import (
    Faces,
    cover,
    covering_pairs,
    node_faces,
    reading_order,
    report_mixed,
    study_boundary,
)
from multiplan.outputs import OutputFolder, write_set
from multiplan.overlay import default_workers, first_of_each
from multiplan.progress import Progress, no_progress
from multiplan.record import input_files

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import folium

    from multiplan.io import Writer
    from multiplan.labels import Lang
    from multiplan.layers import Layers
    from multiplan.specs import Project

logger = logging.getLogger(__name__)

CHANGES = ("added", "removed", "reclassified", "same")
"""The values of ``change``, in the order tables list them."""
TRANSITION_COLUMNS = ("old_class", "new_class", "area_m2", "area_mu")
MIN_ROW_M2 = 0.005
"""Transition rows smaller than this (0.00 m² as the CSV shows areas) are left out.

Two editions digitised apart meet in slivers of a few mm² along shared edges;
those faces stay in changes.gpkg, but a row of 0.00 m² tells a planner nothing."""


@dataclass(frozen=True)
class DiffResult:
    """Two editions of a plan compared: faces, transfer matrix, per unit.

    Attributes
    ----------
    changes
        ``changes.gpkg``: one row per face with ``old_id, old_class, new_id,
        new_class, change, unit`` (a column per level with several), ``area_m2``,
        ``area_mu``.
    transitions, transitions_by_unit
        ``transitions.csv`` and ``transitions_by_unit.csv`` (``None`` without units).
    """

    project: Project
    old: str
    new: str
    level: int
    changes: gpd.GeoDataFrame
    transitions: pd.DataFrame
    transitions_by_unit: pd.DataFrame | None
    notes: Mapping[str, int] = field(default_factory=dict)
    layers: Layers | None = field(default=None, repr=False)

    def matrix(self) -> pd.DataFrame:
        """Return the transfer matrix in 亩: rows the old classes, columns the new ones.

        The row and column ``""`` hold land one edition does not have.
        """
        t = self.transitions
        if not len(t):
            return pd.DataFrame()
        frame = pd.DataFrame(
            {
                "old": [c if c is not None else "" for c in t["old_class"]],
                "new": [c if c is not None else "" for c in t["new_class"]],
                "mu": t["area_mu"].to_numpy(dtype=float),
            }
        )
        return frame.pivot_table(
            index="old", columns="new", values="mu", aggfunc="sum", fill_value=0.0
        )

    def explore(self, *, lang: Lang = "zh") -> folium.Map:
        """Return a map of the changes: added, removed and reclassified land, both editions."""
        from multiplan.editions_out import build_changes_map

        return build_changes_map(self, lang=lang)

    def files(self, *, lang: Lang = "zh") -> dict[str, Writer]:
        """Return changes.gpkg, the transition tables, changes.xlsx and the map and report."""
        from multiplan.editions_out import changes_ledger, report_writer
        from multiplan.maps import map_writer
        from multiplan.styles import CHANGES_STYLE
        from multiplan.workbook import workbook_writer

        files: dict[str, Writer] = {
            "changes.gpkg": gpkg_writer(
                self.changes, layer="changes", style=CHANGES_STYLE
            ),
            "transitions.csv": csv_writer(self.transitions),
        }
        if self.transitions_by_unit is not None:
            files["transitions_by_unit.csv"] = csv_writer(self.transitions_by_unit)
        files["changes.xlsx"] = workbook_writer(changes_ledger(self, lang=lang))
        files["changes.html"] = map_writer(self.explore(lang=lang))
        files["transitions.html"] = report_writer(self, lang=lang)
        return files

    def write(self, out: str | Path | OutputFolder, *, lang: Lang = "zh") -> list[Path]:
        """Write the comparison's files into ``out`` as one set; return the files.

        Raises
        ------
        OutputError
            When the folder is busy, not writable, or holds something else.
        """
        return write_set(
            out,
            self.files(lang=lang),
            command="diff",
            inputs=input_files(self.project),
        )


def check_editions(project: Project, old: str, new: str, level: int) -> None:
    """Check that ``old`` and ``new`` name two classified layers, and the level.

    Raises
    ------
    InputError
        For a name that is no layer, the same layer twice, a layer without
        classes, or a level other than 1 or 2.
    """
    for role, name in (("OLD", old), ("NEW", new)):
        if name not in project.layers:
            raise InputError(
                f"{role} names no layer: {name!r}",
                path=project.path,
                key="layers",
                hint=f"Layers are: {', '.join(project.layers)}",
            )
        spec = project.layers[name]
        if spec.kind != "vector" or (spec.class_field is None and spec.cls is None):
            raise InputError(
                f"{role} ({name}) has no classes to compare",
                path=project.path,
                key=f"layers.{name}",
                hint="Give the layer a class_field (and classification) or a class",
            )
    if old == new:
        raise InputError(
            "OLD and NEW name the same layer",
            path=project.path,
            hint="Name two editions, e.g. multiplan diff project.toml tugui_2020 tugui_2024",
        )
    if level not in (1, 2):
        raise InputError(
            f"--level must be 1 or 2, not {level}",
            hint="1 compares first-level classes (e.g. 01 耕地), 2 second-level (0101 水田)",
        )


def diff(
    project: Project,
    old: str,
    new: str,
    *,
    level: int = 1,
    layers: LayerInput | None = None,
    progress: Progress = no_progress,
    workers: int | None = None,
    cluster: str | None = None,
) -> DiffResult:
    """Compare two editions of a plan (two layers of the manifest), SPEC §14.

    Parameters
    ----------
    project
        A manifest from :func:`multiplan.read_project`.
    old, new
        The layers of the two editions, e.g. ``"tugui_2020"``, ``"tugui_2024"``.
    level
        The taxonomy level at which classes are compared: 1 (``01`` 耕地) or 2
        (``0101`` 水田). The class columns keep the full codes.
    layers
        Layers already read (or GeoDataFrames to use); what is missing is read.
    progress
        Called as ``progress(stage, done, total, item)``.
    workers
        Processes that node the faces in tiles chosen from the data, and threads
        that find what covers each face (default all cores); the faces are the
        same for any number.
    cluster
        ``"local"`` or a dask scheduler's ``tcp://HOST:PORT``: node the tiles as
        tasks there (SPEC §12); the faces are the same.

    Returns
    -------
    DiffResult
        ``.changes`` (faces), ``.transitions`` (转移矩阵), ``.transitions_by_unit``.

    Raises
    ------
    InputError
        For anything the user must fix.

    Examples
    --------
    >>> import multiplan
    >>> project = multiplan.read_project("layers/xinbei/project.toml")
    >>> d = multiplan.diff(project, "tugui", "tugui_2024")
    >>> sorted(d.changes["change"].unique())  # the revision adds no land to the plan
    ['reclassified', 'removed', 'same']
    """
    check_editions(project, old, new, level)
    if cluster is not None:
        tiles.check_address(cluster)
    names = [old, new, project.boundary, *project.units]
    lay = ensure_layers(project, [n for n in names if n], layers, progress=progress)
    for name in (old, new):
        if lay.layer(name).family != "polygon":
            raise InputError(
                f"{name} holds {lay.layer(name).family}s, not polygons",
                path=project.path,
                key=f"layers.{name}",
                hint="Editions are compared by area: name two polygon layers",
            )
    levels = build_levels(project, lay)
    progress("noding", 0, 1, f"{old} / {new}")
    with contextlib.ExitStack() as stack:
        client = None
        if cluster is not None:
            workers = default_workers() if workers is None else max(1, int(workers))
            client = stack.enter_context(tiles.dask_client(cluster, workers))
        changes = edition_faces(
            project,
            lay,
            old,
            new,
            level=level,
            levels=levels,
            workers=workers,
            client=client,
        )
    transitions = transition_table(changes, level)
    by_unit = None
    if levels is not None:
        by_unit = per_level(
            levels, lambda key: transition_table(changes, level, by=key)
        )
    return DiffResult(
        project=project,
        old=old,
        new=new,
        level=level,
        changes=changes,
        transitions=transitions,
        transitions_by_unit=by_unit,
        notes={"faces": len(changes)},
        layers=lay,
    )


def class_at(codes: np.ndarray, level: int) -> np.ndarray:
    """Return each class code at a taxonomy level: ``0101`` → ``01`` at level 1.

    A zone tag (``eco_redline``) or a code shorter than the level stays as it is.

    Examples
    --------
    >>> class_at(np.array(["0101", "1001", "eco_redline", None], dtype=object), 1).tolist()
    ['01', '10', 'eco_redline', None]
    """
    width = 2 * level
    return np.array(
        [c[:width] if isinstance(c, str) and c[:width].isdigit() else c for c in codes],
        dtype=object,
    )


def edition_faces(
    project: Project,
    layers: Layers,
    old: str,
    new: str,
    *,
    level: int = 1,
    levels: Levels | None = None,
    workers: int | None = None,
    client: Any = None,
) -> gpd.GeoDataFrame:
    """Return the faces of the overlay of two editions (inside the boundary), split at units.

    The faces are noded on ``workers`` processes, or as tasks of a dask ``client``.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    boundary = study_boundary(project, layers)
    a = np.asarray(layers[old].geometry.array, dtype=object)
    b = np.asarray(layers[new].geometry.array, dtype=object)
    sets = [a, b]
    if levels is not None:
        sets.append(levels.cells)
    nodes = node_faces(sets, boundary, workers=workers, client=client)
    if levels is not None:  # keep the faces of the editions, not those of units alone
        keep = np.zeros(len(nodes.geoms), dtype=bool)
        keep[covering_pairs(nodes, a)[0]] = True
        keep[covering_pairs(nodes, b)[0]] = True
        nodes = nodes.take(keep)
    area = area_m2(nodes.geoms, project.working_crs, project.area)
    was, now = (cover(nodes, layers[n], workers=workers) for n in (old, new))
    report_mixed(old, was, area)
    report_mixed(new, now, area)
    old_id, old_cls, new_id, new_cls = was.ids, was.classes, now.ids, now.classes
    lo, ln = class_at(old_cls, level), class_at(new_cls, level)
    has_old = np.array([v is not None for v in old_id], dtype=bool)
    has_new = np.array([v is not None for v in new_id], dtype=bool)
    change = np.full(len(nodes.geoms), "same", dtype=object)
    change[~has_old & has_new] = "added"
    change[has_old & ~has_new] = "removed"
    both = has_old & has_new
    change[both & (lo != ln)] = "reclassified"
    data: dict[str, Any] = {
        "old_id": old_id,
        "old_class": old_cls,
        "new_id": new_id,
        "new_class": new_cls,
        "change": change,
    }
    data.update(units_in(levels, nodes))
    frame = gpd.GeoDataFrame(
        {k: pd.Series(v, dtype=object) for k, v in data.items()},
        geometry=gpd.array.from_shapely(nodes.geoms, crs=project.crs),
        crs=project.crs,
    )
    frame.insert(len(data), "area_m2", area)
    frame.insert(len(data) + 1, "area_mu", to_mu(area))
    return frame.iloc[reading_order(nodes.points)].reset_index(drop=True)


def units_in(levels: Levels | None, nodes: Faces) -> dict[str, np.ndarray]:
    """Return the unit (and the unit at each level) of faces noded at the cells' borders.

    A face lies in one cell: the cell that holds its interior point, or for a
    doubtful face the one that shares most of its area (:func:`covering_pairs`).
    """
    n = len(nodes.geoms)
    if levels is None:
        return {"unit": np.full(n, None, dtype=object)}
    fi, ci = covering_pairs(nodes, levels.cells)
    first = first_of_each(fi)
    cell = np.full(n, -1, dtype=np.intp)
    cell[first[0]] = ci[first[1]]
    return levels.units_of(cell)


def transition_table(
    changes: pd.DataFrame, level: int, *, by: str | None = None
) -> pd.DataFrame:
    """Return the transfer matrix as rows ``[by,] old_class, new_class, area_m2, area_mu``.

    Classes are taken to ``level``; a class is ``None`` where that edition has no
    land. Rows are sorted with nulls first, then by code; rows of less than
    :data:`MIN_ROW_M2` are left out.
    """
    cols = [*([by] if by else []), *TRANSITION_COLUMNS]
    if not len(changes):
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
    old = class_at(changes["old_class"].to_numpy(dtype=object), level)
    new = class_at(changes["new_class"].to_numpy(dtype=object), level)
    old[changes["old_id"].isna().to_numpy()] = None
    new[changes["new_id"].isna().to_numpy()] = None
    keys = {"old_class": old, "new_class": new}
    if by:
        keys = {by: changes[by].to_numpy(dtype=object), **keys}
    frame = pd.DataFrame(
        {
            **{
                k: [("" if v is None else str(v)) for v in vals]
                for k, vals in keys.items()
            },
            "area_m2": changes["area_m2"].to_numpy(dtype=float),
        }
    )
    grouped = frame.groupby(list(keys), sort=True)["area_m2"].sum().reset_index()
    grouped = grouped[grouped["area_m2"] >= MIN_ROW_M2].reset_index(drop=True)
    for k in keys:
        grouped[k] = pd.Series(
            [None if v == "" else v for v in grouped[k]], dtype=object
        )
    grouped["area_mu"] = to_mu(grouped["area_m2"].to_numpy(dtype=float))
    return grouped[cols]
