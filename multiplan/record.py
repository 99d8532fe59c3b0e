"""The record of a run (``run.json``): inputs with sizes and SHA-256, software, timings, counts."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from multiplan.dburl import mask
from multiplan.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from multiplan.layers import Layers
    from multiplan.rules import Rule
    from multiplan.specs import Project

logger = logging.getLogger(__name__)


def sha256(path: Path) -> str:
    """Return the SHA-256 of a file, read in 1 MiB chunks (once per size and change time).

    A cluster run digests its inputs before the tiles (the workers compare their
    copies) and again for run.json; the second time costs a ``stat``.
    """
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, _size: int, _mtime_ns: int) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digests(files: Iterable[Path]) -> tuple[tuple[str, str], ...]:
    """Return ``(path, SHA-256)`` of each of ``files`` that is a file, in order."""
    return tuple((str(f), sha256(f)) for f in files if f.is_file())


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
    if project.yield_ is not None:
        tables = [project.yield_.table]
        if project.yield_.revenue is not None:
            tables.append(project.yield_.revenue.table)
        for table in tables:
            if table is not None:
                files[table.resolve()] = None
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


def software_versions() -> dict[str, str]:
    """Return the versions of multiplan and the libraries that decide its results.

    Read from the installed packages' metadata where a library may not be imported
    yet (importing rasterio to read its version costs 0.4 s).
    """
    import geopandas
    import pyogrio
    import pyproj

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
        "rasterio": metadata.version("rasterio"),
    }


def run_record(
    project: Project,
    rules: Sequence[Rule],
    layers: Layers,
    pieces: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    options: Mapping[str, Any],
    timings: Mapping[str, float],
    rule_times: Mapping[str, float],
    counts: Mapping[str, Any] | None = None,
    below_min_area: Mapping[str, tuple[int, float]] | None = None,
    selected: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Return the contents of run.json: inputs with sizes and SHA-256, packs, versions, timings, counts.

    ``below_min_area`` gives, per rule, the pieces its ``min_area`` dropped and
    their m² (each rule's entry says so, even when none); ``selected`` how many
    features its A and B sides select (``a_features``, ``b_features``).
    """
    below = below_min_area or {}
    files = input_files(project, layers)
    inputs = [
        {"path": str(f), "bytes": f.stat().st_size, "sha256": sha256(f)}
        for f in files
        if f.is_file()
    ]
    pieces_of = summary.set_index("rule_id")["pieces"].to_dict()
    area_of = summary.set_index("rule_id")["area_m2"].to_dict()
    rule_rows = [
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
            **(
                {
                    "a_features": int(selected[r.id][0]),
                    "b_features": int(selected[r.id][1]),
                }
                if selected and r.id in selected
                else {}
            ),
            "pack": str(r.pack) if r.pack else None,
            "pieces": int(pieces_of[r.id]),
            "area_m2": float(area_of[r.id]),
            "below_min_area": {
                "pieces": int(below.get(r.id, (0, 0.0))[0]),
                "area_m2": float(below.get(r.id, (0, 0.0))[1]),
            },
            "seconds": round(rule_times.get(r.id, 0.0), 4),
        }
        for r in rules
    ]
    return {
        "multiplan": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": mask(
            os.environ.get("MULTIPLAN_COMMAND") or " ".join(sys.argv or [])
        ),
        "project": {
            "name": project.name,
            "title": project.title,
            "manifest": str(project.path),
            "crs": project.crs,
            "area": project.area,
            "boundary": project.boundary,
            "units": project.unit_layer,
        },
        "options": dict(options),
        "inputs": inputs,
        "rule_packs": [str(p) for p in project.rules],
        "software": software_versions(),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "counts": {
            "rules": len(rules),
            "pieces": len(pieces),
            **dict(counts or {}),
            "layers": {name: dataclasses.asdict(layers.stats(name)) for name in layers},
        },
        "rules": rule_rows,
    }
