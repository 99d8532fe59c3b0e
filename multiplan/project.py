"""Load and validate a project manifest (TOML) into frozen values.

Every check that can be made without reading layer data is made here, before any
work starts, and each failure is one :class:`~multiplan.errors.ManifestError`
naming the file, the key and what would be valid.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from multiplan import crs as crs_mod
from multiplan.classify import (
    TAG_RE,
    builtin_rule_dirs,
    find_classification,
    known_classifications,
    load_taxonomy,
)
from multiplan.errors import CrosswalkError, ManifestError, valid_keys_hint
from multiplan.filters import Where, parse_where
from multiplan.sections import parse_fusion, parse_site, parse_yield
from multiplan.specs import LayerSpec, Project, RasterClass

logger = logging.getLogger(__name__)

DEFAULT_CRS = "EPSG:4549"
NAME_RE = re.compile(r"^[a-z0-9_-]+$")
LAYER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

_TOP_KEYS = ("project", "layers", "yield", "fusion", "site")
_PROJECT_KEYS = (
    "name",
    "title",
    "crs",
    "area",
    "boundary",
    "units",
    "unit_name_field",
    "grid",
    "rules",
    "out",
    "db",
)
_VECTOR_KEYS = (
    "title",
    "path",
    "layer",
    "class_field",
    "classification",
    "class",
    "id_field",
    "encoding",
    "crs",
    "where",
    "buffer",
    "width_field",
    "kind",
    "transformation",
)
_RASTER_KEYS = (
    "title",
    "path",
    "kind",
    "classes",
    "band",
    "crs",
    "class",
    "transformation",
)


def read_project(path: str | Path) -> Project:
    """Read a project manifest and validate all of it.

    Parameters
    ----------
    path
        The manifest's TOML file. Relative paths inside it are relative to it.

    Returns
    -------
    Project
        Frozen and fully checked: every referenced file exists, every
        classification resolves to a crosswalk, the working CRS is projected in
        metres, and the ``[yield]``, ``[fusion]`` and ``[site]`` tables are valid.

    Raises
    ------
    ManifestError
        At the first problem, naming the file, the key and what would be valid.

    Examples
    --------
    >>> project = read_project("layers/xinbei/project.toml")
    >>> project.name, project.crs, project.units, project.fusion.compare
    ('xinbei', 'EPSG:4549', ('towns', 'communities'), ('chenggui', 'tugui'))
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            "the project manifest does not exist",
            path=path,
            hint="Give the path of a project TOML file, e.g. layers/xinbei/project.toml",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(
            "the manifest is not UTF-8 text", path=path, hint="Save it as UTF-8"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"not valid TOML ({exc})", path=path) from exc
    return _parse(data, path)


def _err(path: Path, key: str, message: str, hint: str | None = None) -> ManifestError:
    return ManifestError(message, path=path, key=key, hint=hint)


def _check_keys(
    table: Any, allowed: tuple[str, ...], *, path: Path, key: str
) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise _err(path, key, "must be a table")
    for k in table:
        if k not in allowed:
            raise _err(
                path,
                f"{key}.{k}" if key else str(k),
                "unknown key",
                valid_keys_hint(k, allowed),
            )
    return table


def _opt_str(table: Mapping[str, Any], k: str, *, path: Path, key: str) -> str | None:
    v = table.get(k)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise _err(path, f"{key}.{k}", f"must be a non-empty string, not {v!r}")
    return v


def _resolve(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else Path(os.path.normpath(base / q))


def _parse(data: Mapping[str, Any], path: Path) -> Project:
    _check_keys(data, _TOP_KEYS, path=path, key="")
    base = path.parent
    proj = data.get("project")
    if proj is None:
        raise _err(
            path,
            "project",
            "the manifest has no [project] table",
            'Add [project] with at least name = "..."',
        )
    proj = _check_keys(proj, _PROJECT_KEYS, path=path, key="project")
    name = proj.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _err(
            path,
            "project.name",
            f"invalid project name {name!r}",
            "Use lower-case letters, digits, '_' and '-' only, e.g. \"xinbei\"",
        )
    title = _opt_str(proj, "title", path=path, key="project") or name
    working = _opt_str(proj, "crs", path=path, key="project") or DEFAULT_CRS
    try:
        working_crs = crs_mod.check_working_crs(working)
    except ValueError as exc:
        raise _err(
            path,
            "project.crs",
            str(exc),
            "Use a projected CRS in metres, e.g. EPSG:4549 (CGCS2000 / 3-degree GK CM 120E)",
        ) from exc
    area = proj.get("area", "planar")
    if area not in ("planar", "ellipsoidal"):
        raise _err(
            path,
            "project.area",
            f"invalid value {area!r}",
            'Valid values are "planar" and "ellipsoidal"',
        )
    rules_raw = proj.get("rules", [])
    if isinstance(rules_raw, str):
        rules_raw = [rules_raw]
    if not isinstance(rules_raw, list) or not all(
        isinstance(r, str) for r in rules_raw
    ):
        raise _err(path, "project.rules", "must be a list of rule-pack paths")
    rules = tuple(
        _find_pack(r, base, path=path, index=i) for i, r in enumerate(rules_raw)
    )
    out_raw = _opt_str(proj, "out", path=path, key="project")
    out = _resolve(base, out_raw) if out_raw else base / "outputs" / name

    layers_raw = data.get("layers")
    if not isinstance(layers_raw, Mapping) or not layers_raw:
        raise _err(
            path,
            "layers",
            "the manifest declares no layers",
            "Add at least one [layers.<name>] table with a path",
        )
    search = _search_dirs(path, rules)
    layers: dict[str, LayerSpec] = {}
    for lname, table in layers_raw.items():
        layers[lname] = _parse_layer(lname, table, base=base, path=path, search=search)

    boundary = _opt_str(proj, "boundary", path=path, key="project")
    if boundary is not None and boundary not in layers:
        raise _err(
            path,
            "project.boundary",
            f"names no layer: {boundary!r}",
            f"Valid layers are: {', '.join(layers)}",
        )
    units = _unit_levels(proj.get("units"), path=path, layers=layers)
    unit_name_field = (
        _opt_str(proj, "unit_name_field", path=path, key="project") or "name"
    )
    grid = proj.get("grid")
    if grid is not None and (not _number(grid) or not 1 <= grid <= 100_000):
        raise _err(
            path,
            "project.grid",
            f"must be a cell size in metres between 1 and 100 000, not {grid!r}",
            "e.g. grid = 1000 for a management grid of 1 km cells",
        )
    db = _opt_str(proj, "db", path=path, key="project")
    if db is not None and not db.startswith(("postgresql://", "postgres://")):
        raise _err(
            path,
            "project.db",
            "must be a postgresql:// URL",
            'e.g. db = "postgresql://planner@localhost:5432/onemap?schema=multiplan"',
        )
    taxonomy = load_taxonomy(search)
    project = Project(
        path=path,
        name=name,
        title=title,
        crs=working,
        working_crs=working_crs,
        search_dirs=search,
        area=area,
        layers=MappingProxyType(layers),
        rules=rules,
        boundary=boundary,
        units=units,
        unit_name_field=unit_name_field,
        grid=float(grid) if grid is not None else None,
        out=out,
        db=db,
        yield_=parse_yield(data.get("yield"), path=path, layers=layers),
        fusion=parse_fusion(
            data.get("fusion"), path=path, layers=layers, boundary=boundary, units=units
        ),
        site=parse_site(data.get("site"), path=path, layers=layers, taxonomy=taxonomy),
    )
    logger.debug(
        "read manifest %s: %d layers, %d rule packs", path, len(layers), len(rules)
    )
    return project


def _unit_levels(
    raw: Any, *, path: Path, layers: Mapping[str, LayerSpec]
) -> tuple[str, ...]:
    """Return ``units`` as levels from the largest down: one layer name, or a list of them."""
    if raw is None:
        return ()
    levels = [raw] if isinstance(raw, str) else raw
    if (
        not isinstance(levels, list)
        or not levels
        or not all(isinstance(v, str) and v for v in levels)
    ):
        raise _err(
            path,
            "project.units",
            "must be a layer name or a list of them, from the largest level down",
            'e.g. units = "towns" or units = ["towns", "communities"]',
        )
    for v in levels:
        if v not in layers:
            raise _err(
                path,
                "project.units",
                f"names no layer: {v!r}",
                f"Valid layers are: {', '.join(layers)}",
            )
    if len(set(levels)) != len(levels):
        raise _err(path, "project.units", "names a layer twice")
    return tuple(levels)


def _find_pack(ref: str, base: Path, *, path: Path, index: int) -> Path:
    candidate = _resolve(base, ref)
    if candidate.is_file():
        return candidate
    if "/" not in ref and "\\" not in ref:
        stem = ref if ref.endswith(".toml") else f"{ref}.toml"
        for d in builtin_rule_dirs():
            if (d / stem).is_file():
                return d / stem
    raise _err(
        path,
        f"project.rules[{index}]",
        f"rule pack not found: {ref!r} (looked at {candidate})",
        'Give a path relative to the manifest, or the name of a built-in pack such as "multiplan-default"',
    )


def _search_dirs(manifest: Path, rules: tuple[Path, ...]) -> tuple[Path, ...]:
    dirs = [r.parent / "classes" for r in rules]
    dirs.append(manifest.parent / "classes")
    dirs.extend(d / "classes" for d in builtin_rule_dirs())
    return tuple(dict.fromkeys(d.resolve() for d in dirs))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _parse_layer(
    name: str, table: Any, *, base: Path, path: Path, search: tuple[Path, ...]
) -> LayerSpec:
    key = f"layers.{name}"
    if not LAYER_NAME_RE.match(name):
        raise _err(
            path,
            key,
            f"invalid layer name {name!r}",
            "Use letters, digits, '_' and '-', starting with a letter",
        )
    if not isinstance(table, Mapping):
        raise _err(path, key, "must be a table")
    kind = table.get("kind", "vector")
    if kind not in ("vector", "raster"):
        raise _err(
            path,
            f"{key}.kind",
            f"invalid value {kind!r}",
            'Valid values are "vector" and "raster"',
        )
    _check_keys(
        table, _VECTOR_KEYS if kind == "vector" else _RASTER_KEYS, path=path, key=key
    )
    src = table.get("path")
    if not isinstance(src, str) or not src:
        raise _err(
            path, f"{key}.path", "every layer needs a path", 'Add path = "<file>"'
        )
    source: Path | str
    if src.startswith(("postgresql://", "postgres://", "PG:")):
        source = src
    else:
        source = _resolve(base, src)
        zip_inner = str(source).split(".zip/", 1)
        exists = source.exists() or (
            len(zip_inner) == 2 and Path(zip_inner[0] + ".zip").is_file()
        )
        if not exists:
            raise _err(
                path,
                f"{key}.path",
                f"file not found: {source}",
                "Check the path; it is relative to the manifest's folder",
            )
    title = _opt_str(table, "title", path=path, key=key)
    crs = _opt_str(table, "crs", path=path, key=key)
    if crs is not None:
        try:
            crs_mod.parse_crs(crs)
        except ValueError as exc:
            raise _err(
                path,
                f"{key}.crs",
                f"unknown CRS {crs!r}",
                'Use an EPSG code such as "EPSG:4528", or WKT/PROJ text',
            ) from exc
    transformation = _opt_str(table, "transformation", path=path, key=key)
    if transformation is not None and transformation != "ballpark":
        try:
            crs_mod.check_pipeline(transformation)
        except ValueError as exc:
            raise _err(
                path,
                f"{key}.transformation",
                f"not a valid PROJ pipeline ({exc})",
                'Give a PROJ pipeline from the source CRS to the working CRS, or "ballpark" to accept PROJ\'s null transformation',
            ) from exc
    cls = _opt_str(table, "class", path=path, key=key)
    if cls is not None:
        _check_class_value(cls, path=path, key=f"{key}.class", search=search)
    if kind == "raster":
        band = table.get("band", 1)
        if not isinstance(band, int) or isinstance(band, bool) or band < 1:
            raise _err(
                path,
                f"{key}.band",
                f"invalid band {band!r}",
                "Bands are numbered from 1",
            )
        classes = _parse_raster_classes(
            table.get("classes"), path=path, key=f"{key}.classes", search=search
        )
        return LayerSpec(
            name=name,
            path=source,
            kind="raster",
            title=title,
            crs=crs,
            classes=classes,
            band=band,
            cls=cls,
            transformation=transformation,
        )

    class_field = _opt_str(table, "class_field", path=path, key=key)
    classification = _opt_str(table, "classification", path=path, key=key)
    if class_field and cls:
        raise _err(
            path,
            f"{key}.class",
            "a layer has either class_field (a class per feature) or class (one class for all), not both",
        )
    if classification and not class_field:
        raise _err(
            path,
            f"{key}.classification",
            "a classification needs a class_field to read codes from",
            'Add class_field = "<field with the source codes>"',
        )
    crosswalk_path = None
    if class_field:
        classification = classification or "ydyh2023"
        try:
            crosswalk_path = find_classification(classification, search, base=base)
        except CrosswalkError as exc:
            valid = ", ".join(known_classifications(search)) or "none found"
            raise _err(
                path,
                f"{key}.classification",
                f"unknown classification {classification!r}",
                f"Valid classifications are: {valid}; or give the path of a crosswalk CSV",
            ) from exc
    encoding = _opt_str(table, "encoding", path=path, key=key)
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise _err(
                path,
                f"{key}.encoding",
                f"unknown text encoding {encoding!r}",
                'Chinese agency data is usually "GBK" or "GB18030"; else "UTF-8"',
            ) from exc
    buffer = table.get("buffer")
    if buffer is not None and (not _number(buffer) or buffer <= 0):
        raise _err(
            path,
            f"{key}.buffer",
            f"must be a positive number of metres, not {buffer!r}",
        )
    width_field = _opt_str(table, "width_field", path=path, key=key)
    if buffer is not None and width_field:
        raise _err(
            path,
            f"{key}.buffer",
            "give either buffer (one radius) or width_field (a width per feature), not both",
        )
    where = (
        parse_where(table["where"], path=path, key=f"{key}.where", error=ManifestError)
        if "where" in table
        else Where()
    )
    return LayerSpec(
        name=name,
        path=source,
        title=title,
        layer=_opt_str(table, "layer", path=path, key=key),
        class_field=class_field,
        classification=classification,
        crosswalk_path=crosswalk_path,
        cls=cls,
        id_field=_opt_str(table, "id_field", path=path, key=key),
        encoding=encoding,
        crs=crs,
        where=where,
        buffer=float(buffer) if buffer is not None else None,
        width_field=width_field,
        transformation=transformation,
    )


def _check_class_value(
    value: str, *, path: Path, key: str, search: tuple[Path, ...]
) -> None:
    """Check that a ``class`` value is a taxonomy code or a zone tag (``[a-z][a-z0-9_]*``)."""
    if TAG_RE.match(value):
        return
    taxonomy = load_taxonomy(search)
    if value not in taxonomy.codes:
        raise _err(
            path,
            key,
            f"{value!r} is neither a code of the 用地用海 taxonomy nor a zone tag",
            'Use a code such as "0101" or a tag such as "eco_redline" (lower-case letters, digits, \'_\')',
        )


def _parse_raster_classes(
    raw: Any, *, path: Path, key: str, search: tuple[Path, ...]
) -> tuple[RasterClass, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise _err(
            path,
            key,
            "must be a non-empty list of tables",
            'e.g. classes = [ { below = 25, class = "slope_ok" }, { from = 25, class = "slope_steep" } ]',
        )
    out = []
    for i, item in enumerate(raw):
        k = f"{key}[{i}]"
        _check_keys(item, ("class", "from", "below", "value"), path=path, key=k)
        cls = item.get("class")
        if not isinstance(cls, str):
            raise _err(
                path, f"{k}.class", "each raster class needs a class (a code or a tag)"
            )
        _check_class_value(cls, path=path, key=f"{k}.class", search=search)
        nums = {b: item.get(b) for b in ("from", "below", "value")}
        for b, v in nums.items():
            if v is not None and not _number(v):
                raise _err(path, f"{k}.{b}", f"must be a number, not {v!r}")
        if all(v is None for v in nums.values()):
            raise _err(path, k, "a raster class needs 'from', 'below' or 'value'")
        if nums["value"] is not None and (
            nums["from"] is not None or nums["below"] is not None
        ):
            raise _err(
                path, k, "give either 'value' or a range ('from'/'below'), not both"
            )
        if (
            nums["from"] is not None
            and nums["below"] is not None
            and nums["from"] >= nums["below"]
        ):
            raise _err(path, k, "'from' must be less than 'below'")
        out.append(
            RasterClass(cls, _f(nums["from"]), _f(nums["below"]), _f(nums["value"]))
        )
    return tuple(out)


def _f(v: Any) -> float | None:
    return None if v is None else float(v)
