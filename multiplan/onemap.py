"""The one map (一张图): the faces of the overlay of every fused layer, and 两规差异.

:func:`fuse` reads what it needs, runs the conflict check's overlay stage and
calls :func:`fuse_layers`, which nodes the boundaries of every fused polygon (and the study
boundary) once, polygonizes the noded linework into faces, and attributes each
face by an interior point: per layer the features that cover it, the resolved
class and source by ``[fusion] priority``, and the rules whose conflict pieces
cover it. Faces never overlap and together cover the union of the layers (inside
the boundary): one noding pass and vectorised spatial-index queries, not a chain
of pairwise overlays.

With ``[fusion] compare = [first, second]`` each face covered by both plans gets
``diff_class``: ``01`` construction in both, ``02`` only in the first, ``03``
only in the second, ``04`` in neither. Adjacent ``02``/``03`` faces with the same
pair of source classes are dissolved into difference patches (差异图斑), each with
a ``patch_no`` such as ``02-00017`` that comes from its position (the cell of a
fixed grid anchored on the study boundary), so an unchanged patch keeps its
number when the plans change elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan import tiles
from multiplan.areas import area_m2, to_mu, unique_ints
from multiplan.facetiles import FaceNoding, start_noding
from multiplan.io import csv_writer, gpkg_writer
from multiplan.layers import LayerInput, ensure_layers
from multiplan.levels import build_levels
from multiplan.noding import (
    Faces,
    cover,
    covering_pairs,
    face_lines,
    node_faces,
    reading_order,
    report_mixed,
    runs,
    study_boundary,
)
from multiplan.outputs import OutputFolder, write_set
from multiplan.overlay import default_workers
from multiplan.patches import difference_patches, difference_table
from multiplan.progress import Progress, no_progress
from multiplan.record import input_files
from multiplan.rulecheck import find_pieces
from multiplan.ruleinputs import layers_needed
from multiplan.rules import class_mask, read_rules

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import folium

    from multiplan.io import Writer
    from multiplan.labels import Lang
    from multiplan.layers import Layers
    from multiplan.specs import FusionSpec, Project

logger = logging.getLogger(__name__)

DIFF_CLASSES = {
    "01": ("两规均为建设用地", "construction in both plans"),
    "02": ("仅第一规划为建设用地", "construction only in the first plan"),
    "03": ("仅第二规划为建设用地", "construction only in the second plan"),
    "04": ("两规均为非建设用地", "construction in neither plan"),
}


@dataclass(frozen=True)
class FuseResult:
    """The faces of the one map and, with ``compare``, the difference patches."""

    project: Project
    faces: gpd.GeoDataFrame
    patches: gpd.GeoDataFrame | None
    differences: pd.DataFrame | None
    spec: FusionSpec
    notes: Mapping[str, int] = field(default_factory=dict)
    layers: Layers | None = field(default=None, repr=False)
    workers: int = 1
    """Threads that draw the map (the faces of each class merged and simplified)."""

    def explore(self, *, lang: Lang = "zh") -> folium.Map:
        """Return the one map's page: faces by resolved class and the difference patches."""
        return build_onemap_map(self, lang=lang)

    def files(self, *, lang: Lang = "zh") -> dict[str, Writer]:
        """Return onemap.gpkg, onemap.html (and the differences with compare) as writers."""
        from multiplan.ledger import differences_ledger
        from multiplan.maps import map_writer
        from multiplan.workbook import workbook_writer

        files: dict[str, Writer] = {
            "onemap.gpkg": gpkg_writer(self.faces, layer="onemap")
        }
        if self.patches is not None and self.differences is not None:
            files["differences.gpkg"] = gpkg_writer(self.patches, layer="differences")
            files["differences.csv"] = csv_writer(self.differences)
            assert self.spec.compare is not None
            titles = {n: self.project.layers[n].label for n in self.spec.compare}
            files["differences.xlsx"] = workbook_writer(
                differences_ledger(
                    self.patches,
                    self.differences,
                    self.spec.compare,
                    self.project.taxonomy,
                    titles=titles,
                    lang=lang,
                )
            )
        files["onemap.html"] = map_writer(self.explore(lang=lang))
        return files

    def tables(self) -> dict[str, pd.DataFrame]:
        """Return the tables of SPEC §13 (``--db``): onemap and, with compare, differences."""
        tables: dict[str, pd.DataFrame] = {"onemap": self.faces}
        if self.patches is not None:
            tables["differences"] = self.patches
        return tables

    def record(self) -> dict[str, Any]:
        """Return what the ``runs`` table keeps of this run: when, what, how many."""
        import os
        import sys
        from datetime import UTC, datetime

        from multiplan.dburl import mask
        from multiplan.version import __version__

        return {
            "multiplan": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": mask(
                os.environ.get("MULTIPLAN_COMMAND") or " ".join(sys.argv or [])
            ),
            "project": {"name": self.project.name, "manifest": str(self.project.path)},
            "fusion": {
                "layers": list(self.spec.layers),
                "compare": list(self.spec.compare or ()),
            },
            "counts": {
                "faces": len(self.faces),
                "patches": 0 if self.patches is None else len(self.patches),
                **{str(k): int(v) for k, v in self.notes.items()},
            },
        }

    def write(
        self,
        out: str | Path | OutputFolder,
        *,
        lang: Lang = "zh",
        db: str | None = None,
    ) -> list[Path]:
        """Write the one map's files into ``out`` as one set; return the files.

        ``db`` (default: the manifest's ``[project] db``) also writes the tables
        of :meth:`tables`, committed once the files are in place.

        Raises
        ------
        OutputError
            When the folder is busy, not writable, or holds something else.
        DatabaseError
            When the database cannot be reached or refuses the tables.
        """
        from multiplan.pgwrite import maybe_staged

        files = self.files(lang=lang)
        run = dict(self.record(), outputs=[*files])
        with maybe_staged(db or self.project.db, self.tables, run, command="fuse"):
            return write_set(
                out,
                files,
                command="fuse",
                inputs=input_files(self.project),
            )


def fuse(
    project: Project,
    *,
    layers: LayerInput | None = None,
    workers: int | None = None,
    progress: Progress = no_progress,
    tile_size: float | None = None,
    cluster: str | None = None,
) -> FuseResult:
    """Build the one map (一张图): the faces of the overlay of the ``[fusion]`` layers.

    Faces never overlap and together cover the union of the fused layers inside
    the boundary. Each face carries every layer's ids and class, the resolved
    ``class`` and ``source`` by ``[fusion] priority``, and ``conflicts``: the
    rules whose pieces cover it (the project's rules are run for this). With
    ``compare`` the two-plan classes and the numbered difference patches follow.

    Parameters
    ----------
    project
        A manifest from :func:`multiplan.read_project`.
    layers
        Layers already read (or GeoDataFrames to use); what is missing is read.
    workers
        Threads for the conflict check and the faces' attribution (default
        all cores); the faces are the same for any number.
    progress
        Called as ``progress(stage, done, total, item)``.
    tile_size, cluster
        How the conflict check behind ``conflicts`` is cut and where it runs (see
        :func:`multiplan.check`). The faces are noded in tiles chosen from the
        data, on ``workers`` processes or as tasks of the ``cluster``, while the
        check runs; they are the same for any tiling, workers or cluster.

    Returns
    -------
    FuseResult
        ``.faces`` (onemap), ``.patches`` and ``.differences`` (with compare).

    Raises
    ------
    InputError
        For anything the user must fix in the layers or rules.
    """
    spec = project.fusion
    rules = read_rules(project)
    names = [
        *layers_needed(project, rules),
        *spec.layers,
        project.boundary,
        *project.units,
    ]
    lay = ensure_layers(project, [n for n in names if n], layers, progress=progress)
    if cluster is not None:
        tiles.check_address(cluster)
    workers = default_workers() if workers is None else max(1, int(workers))
    with contextlib.ExitStack() as stack:
        client = None
        if cluster is not None:
            client = stack.enter_context(tiles.dask_client(cluster, workers))
        # the faces are noded on other processes while the rules run here
        _, polygons, boundary = fusion_inputs(project, lay)
        started = stack.enter_context(
            start_noding(
                face_lines(polygons, boundary)[1], workers=workers, client=client
            )
        )
        pieces = None
        if rules:
            pieces, _ = find_pieces(
                project,
                rules,
                lay,
                workers=workers,
                progress=progress,
                tile_size=tile_size,
                cluster=cluster,
            )
        progress("noding", 0, 1, f"{len(spec.layers)} layers")
        return fuse_layers(
            project,
            lay,
            conflicts=pieces,
            progress=progress,
            workers=workers,
            started=started,
        )


def fusion_inputs(
    project: Project, layers: Layers
) -> tuple[list[str], list[np.ndarray], shapely.Geometry | None]:
    """Return the fused polygon layers' names and geometries, and the boundary (or ``None``)."""
    fused = [n for n in project.fusion.layers if layers.layer(n).family == "polygon"]
    polygons = [np.asarray(layers[n].geometry.array, dtype=object) for n in fused]
    return fused, polygons, study_boundary(project, layers)


def fuse_layers(
    project: Project,
    layers: Layers,
    *,
    conflicts: pd.DataFrame | None = None,
    progress: Progress = no_progress,
    workers: int | None = None,
    started: FaceNoding | None = None,
) -> FuseResult:
    """Build the one-map faces (and the difference patches with ``compare``) from loaded layers.

    ``workers`` processes node the faces and threads attribute them (default all
    cores), unless their noding was ``started`` already; the faces are the same
    for any number.
    """
    spec = project.fusion
    workers = default_workers() if workers is None else max(1, int(workers))
    fused, polygons, boundary = fusion_inputs(project, layers)
    nodes = node_faces(polygons, boundary, workers=workers, started=started)
    faces, pts = nodes.geoms, nodes.points
    area = area_m2(faces, project.working_crs, project.area)
    data: dict[str, Any] = {}
    per_class: dict[str, np.ndarray] = {}
    mixed = 0
    for i, n in enumerate(fused):
        progress("attributing", i, len(fused), n)
        found = cover(nodes, layers[n], workers=workers)
        data[f"{n}_id"] = found.ids
        data[f"{n}_class"] = found.classes
        per_class[n] = found.classes
        mixed += report_mixed(n, found, area)
    resolved = np.full(len(faces), None, dtype=object)
    source = np.full(len(faces), None, dtype=object)
    for n in reversed([p for p in spec.priority if p in fused]):
        has = np.array([v is not None for v in data[f"{n}_id"]], dtype=bool)
        resolved[has] = per_class[n][has]
        source[has] = n
    data["class"] = resolved
    data["source"] = source
    data["conflicts"] = _conflict_ids(nodes, conflicts, workers)
    if spec.compare is not None:
        data["diff_class"] = _diff_classes(
            per_class[spec.compare[0]],
            per_class[spec.compare[1]],
            data,
            spec.compare,
            project,
        )
    data["area_m2"] = area
    data["area_mu"] = to_mu(area)
    frame = gpd.GeoDataFrame(
        {
            k: pd.Series(v, dtype=object) if not k.startswith("area") else v
            for k, v in data.items()
        },
        geometry=gpd.array.from_shapely(faces, crs=project.crs),
        crs=project.crs,
    )
    frame = frame.iloc[reading_order(pts)].reset_index(drop=True)
    patches = differences = None
    if spec.compare is not None:
        progress("patches", 0, 1, "差异图斑")
        levels = build_levels(project, layers)
        patches = difference_patches(frame, spec.compare, project, layers, levels)
        differences = difference_table(patches, levels, project)
    return FuseResult(
        project=project,
        faces=frame,
        patches=patches,
        differences=differences,
        spec=spec,
        notes={
            "faces": len(faces),
            "faces_attributed_by_area": int(nodes.doubtful.sum()),
            "faces_of_mixed_class": mixed,
        },
        layers=layers,
        workers=workers,
    )


def _conflict_ids(
    faces: Faces, conflicts: pd.DataFrame | None, workers: int
) -> np.ndarray:
    out = np.full(len(faces.geoms), None, dtype=object)
    if conflicts is None or not len(conflicts) or not len(faces.geoms):
        return out
    pi, ci = covering_pairs(
        faces, np.asarray(conflicts.geometry.array, dtype=object), workers=workers
    )
    if not len(pi):
        return out
    rules, code = np.unique(
        conflicts["rule_id"].to_numpy(dtype=object)[ci].astype(str), return_inverse=True
    )
    pair = unique_ints(pi.astype(np.int64) * len(rules) + code)  # by face, then rule
    face, rule = pair // len(rules), pair % len(rules)
    names = rules.astype(object)
    single = np.bincount(face, minlength=len(out))[face] == 1
    out[face[single]] = names[rule[single]]
    if not single.all():
        starts, groups = runs(face[~single], names[rule[~single]])
        out[starts] = [",".join(g) for g in groups]
    return out


def _diff_classes(
    first: np.ndarray,
    second: np.ndarray,
    data: Mapping[str, np.ndarray],
    compare: tuple[str, str],
    project: Project,
) -> np.ndarray:
    taxonomy = project.taxonomy
    both = np.array([a is not None for a in data[f"{compare[0]}_id"]]) & np.array(
        [b is not None for b in data[f"{compare[1]}_id"]]
    )
    c1 = class_mask(first, ["construction"], taxonomy)
    c2 = class_mask(second, ["construction"], taxonomy)
    out = np.full(len(first), None, dtype=object)
    out[both & c1 & c2] = "01"
    out[both & c1 & ~c2] = "02"
    out[both & ~c1 & c2] = "03"
    out[both & ~c1 & ~c2] = "04"
    return out


def build_onemap_map(result: FuseResult, *, lang: Lang = "zh") -> folium.Map:
    """Build the one map's page: faces by resolved class (one click away) and the difference patches."""
    from multiplan.labels import label
    from multiplan.mapdata import (
        build_map_data,
        display_geoms,
        empty_pieces,
        encode_polygons,
    )
    from multiplan.maps import MultiplanLayers, OneMap

    project = result.project
    lay = result.layers
    base = (
        {n: lay.layer(n) for n in (project.boundary, *project.units) if n and n in lay}
        if lay is not None
        else {}
    )

    def onemap_groups(classes: Any, gcj: bool) -> list[dict[str, Any]]:
        faces = result.faces
        groups = []
        if len(faces):
            cls = faces["class"].to_numpy(dtype=object)
            classes.add(cls)
            key = np.array(["" if c is None else str(c) for c in cls], dtype=object)
            codes = sorted(set(key.tolist()))
            geoms = np.asarray(faces.geometry.array, dtype=object)

            def merged(c: str) -> shapely.Geometry:
                # faces of one noding form a coverage: merged without a general union
                one = shapely.coverage_union_all(geoms[key == c])
                return shapely.simplify(one, 1.0, preserve_topology=True)

            with ThreadPoolExecutor(max_workers=result.workers) as pool:
                shapes = np.array(list(pool.map(merged, codes)), dtype=object)
            enc = encode_polygons(display_geoms(shapes, project, 0.0, gcj02=gcj))
            groups.append(
                {
                    "name": "faces",
                    "title": label("faces", lang),
                    "count": len(faces),
                    "kind": "faces",
                    "section": "onemap",
                    "on": True,
                    "features": [
                        [e, [c or None]] for c, e in zip(codes, enc, strict=True) if e
                    ],
                }
            )
        patches = result.patches
        if patches is not None and len(patches) and result.spec.compare is not None:
            first, second = result.spec.compare
            classes.add(patches[f"{first}_class"])
            classes.add(patches[f"{second}_class"])
            enc = encode_polygons(
                display_geoms(
                    np.asarray(patches.geometry.array, dtype=object),
                    project,
                    0.5,
                    gcj02=gcj,
                )
            )
            feats = [
                [
                    e,
                    [
                        r.patch_no,
                        r.diff_class,
                        getattr(r, f"{first}_class"),
                        getattr(r, f"{second}_class"),
                        r.unit,
                        round(float(r.area_m2), 2),
                    ],
                ]
                for e, r in zip(enc, patches.itertuples(index=False), strict=True)
                if e
            ]
            groups.append(
                {
                    "name": "patches",
                    "title": label("patches", lang),
                    "kind": "patches",
                    "section": "onemap",
                    "on": True,
                    "features": feats,
                }
            )
        return groups

    counts = (
        result.patches["diff_class"].value_counts().to_dict()
        if result.patches is not None
        else {}
    )
    lines = [f"{label('faces', lang)}: {len(result.faces):,}"]
    if result.spec.compare is not None:
        first, second = (project.layers[n].label for n in result.spec.compare)
        lines.append(f"{label('patches', lang)}: {first} / {second}")
        lines += [
            f"{c} {label('diff_' + c, lang)}: {counts.get(c, 0):,}"
            for c in ("02", "03")
        ]
    data = build_map_data(
        project,
        base,
        empty_pieces(project.crs),
        (),
        lang=lang,
        extra_groups=onemap_groups,
        banner={"text": label("group_onemap", lang), "lines": lines},
    )
    if result.spec.compare is not None:
        data["compare"] = [project.layers[n].label for n in result.spec.compare]
    m = OneMap()
    m.add_child(
        MultiplanLayers(data, title=f"{project.title} · {label('group_onemap', lang)}")
    )
    return m
