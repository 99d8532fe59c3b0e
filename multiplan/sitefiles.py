"""Reading a proposed site: WKT, any vector file, a 自然资源部 coordinate file, or a DXF drawing.

Sites reach a planning office as 界址点坐标 TXT files (the 建设用地报批 exchange
format), CAD drawings, or GIS files. Whatever the form, the site must be able to lie
in the working CRS: coordinates in degrees, a missing zone prefix or a site outside
the study area stop with exit 2 and the likely cause — never a silent pass.

The TXT format::

    [属性描述]
    坐标系=2000国家大地坐标系
    几度分带=3
    带号=40
    [地块坐标]
    5,0.3600,1,拟建项目,面,H50G001001,建设用地,,@
    J1,1,3512345.678,40512345.678      # 点号,圈号,X (north),Y (east)
    …

Several 地块 follow one another, each opened by its ``…,@`` line; ring 1 of a 地块 is
its outline, further rings are holes when inside it, else more parts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
from pyproj import CRS

from multiplan import crs as crs_mod
from multiplan.areas import area_m2, to_mu
from multiplan.errors import InputError
from multiplan.geometry import non_finite

if TYPE_CHECKING:
    from multiplan.specs import Project

logger = logging.getLogger(__name__)

_WKT_START = ("POLYGON", "MULTIPOLYGON")
OUTSIDE_MIN_M2 = 0.01
"""Land of a site outside the study area below this is a border digitised twice, not said."""


@dataclass(frozen=True)
class SiteInput:
    """A site read and checked: its polygon in the working CRS and what reading found."""

    geometry: shapely.Geometry
    source: str
    crs: str
    parcels: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    outside_m2: float = 0.0
    """The site's land outside the study area, where no plan is checked."""


def _fail(
    message: str, *, path: str | Path | None = None, hint: str | None = None
) -> InputError:
    return InputError(message, path=path, key="SITE", hint=hint)


def read_site(site: str | Path | shapely.Geometry, project: Project) -> SiteInput:
    """Read a proposed site and check that it can lie in the working CRS and the study area.

    Parameters
    ----------
    site
        WKT (``POLYGON ((x y, …))`` in the working CRS), a vector file (in the CRS
        it declares, else the working CRS), a 自然资源部 coordinate file (``.txt``)
        or a DXF drawing (closed polylines, in the working CRS).
    project
        For the working CRS and the study boundary.

    Raises
    ------
    InputError
        When the site cannot be read, has no area, is given in the wrong units or
        zone (the likely CRS named), or lies outside the study area.
    """
    notes: list[str] = []
    parcels: tuple[str, ...] = ()
    text = "" if isinstance(site, shapely.Geometry) else str(site).strip()
    if isinstance(site, shapely.Geometry):
        geom, source, src_crs = site, "geometry", project.working_crs
    elif text.upper().startswith(_WKT_START):
        try:
            geom = shapely.from_wkt(text)
        except shapely.errors.GEOSException as exc:
            raise _fail(f"the site is not valid WKT ({exc})") from exc
        source, src_crs = "WKT", project.working_crs
    else:
        path = Path(text)
        if not path.is_file():
            raise _fail(
                "the site is neither a file nor a WKT polygon",
                path=path,
                hint="Give a vector file, a 自然资源部 .txt, a .dxf, or WKT such as 'POLYGON ((x y, …))' in the working CRS",
            )
        source = str(path)
        if path.suffix.lower() == ".txt":
            geom, src_crs, parcels, found = read_mnr_txt(path, project)
            notes.extend(found)
        else:
            geom, src_crs = _read_vector_site(path, project)
    _check_place(geom, src_crs, source)
    if src_crs != project.working_crs:
        geom = crs_mod.transform_geometries(
            np.array([geom], dtype=object),
            crs_mod.transformer(src_crs, project.working_crs),
        )[0]
    geom = _polygonal(geom, source)
    if src_crs != project.working_crs:
        notes.append(f"taken from {src_crs.name} into {project.working_crs.name}")
    outside = _check_study_area(geom, project, source)
    if outside > 0:
        whole = float(
            area_m2(np.array([geom], dtype=object), project.working_crs, project.area)[
                0
            ]
        )
        note = (
            f"{to_mu(outside):,.2f} 亩 ({outside / whole:.1%}) of the site lies outside the study "
            f"area ({project.boundary}): no plan is checked there"
        )
        logger.warning("%s", note)
        notes.append(note)
    label = f"EPSG:{src_crs.to_epsg()}" if src_crs.to_epsg() else src_crs.name
    return SiteInput(geom, source, label, parcels, tuple(notes), outside)


def _where(source: str) -> str | None:
    return None if source in ("WKT", "geometry") else source


def _polygonal(geom: shapely.Geometry, source: str) -> shapely.Geometry:
    geom = shapely.make_valid(
        shapely.force_2d(geom), method="structure", keep_collapsed=False
    )
    polys = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon"]
    if not polys or sum(p.area for p in polys) <= 0:
        raise _fail("the site has no area", path=_where(source), hint="Give a polygon")
    return shapely.union_all(polys)


def _check_place(geom: shapely.Geometry, crs: CRS, source: str) -> None:
    """Refuse coordinates that cannot be in the site's CRS: degrees as metres, a zone prefix missing."""
    geoms = np.array([geom], dtype=object)
    if non_finite(geoms).any():
        raise _fail(
            "the site has a coordinate that is not a number", path=_where(source)
        )
    bounds = tuple(float(v) for v in shapely.total_bounds(geoms))
    problem = crs_mod.diagnose_coordinates(bounds, crs, crs_mod.sample_points(geoms))  # type: ignore[arg-type]
    if problem is not None:
        raise _fail(
            f"the site cannot be in its CRS: {problem}",
            path=_where(source),
            hint="WKT must be in the working CRS (metres); give a file that declares its CRS otherwise",
        )


def site_box(geom: shapely.Geometry) -> tuple[float, float, float, float]:
    """Return the site's box (xmin, ymin, xmax, ymax): what lies near it is read.

    Examples
    --------
    >>> site_box(shapely.box(1, 2, 3, 4))
    (1.0, 2.0, 3.0, 4.0)
    """
    x0, y0, x1, y1 = (float(v) for v in shapely.bounds(geom))
    return x0, y0, x1, y1


def _check_study_area(geom: shapely.Geometry, project: Project, source: str) -> float:
    """Refuse a site outside the study area; return its land outside it (m², at least 0.01)."""
    if not project.boundary:
        return 0.0
    from multiplan.layers import read_layer

    spec = project.layers[project.boundary]
    # only the features whose boxes meet the site's can meet the site
    boundary = read_layer(spec, project, near=site_box(geom)).frame
    area = shapely.union_all(np.asarray(boundary.geometry.array, dtype=object))
    if not shapely.intersects(area, geom):
        whole = read_layer(spec, project).frame  # how far: every feature
        area = shapely.union_all(np.asarray(whole.geometry.array, dtype=object))
        km = shapely.distance(area, geom) / 1000
        raise _fail(
            f"the site lies outside the study area ({km:,.1f} km from the boundary of {project.boundary})",
            path=_where(source),
            hint="Check the site's coordinates and CRS (a wrong zone or datum moves a site by kilometres)",
        )
    rest = shapely.difference(geom, area)
    if shapely.is_empty(rest):
        return 0.0
    out = float(
        area_m2(np.array([rest], dtype=object), project.working_crs, project.area)[0]
    )
    return out if out >= OUTSIDE_MIN_M2 else 0.0


def _read_vector_site(path: Path, project: Project) -> tuple[shapely.Geometry, CRS]:
    import pyogrio

    try:
        frame = pyogrio.read_dataframe(path)
    except Exception as exc:
        raise _fail(
            f"GDAL cannot open the site ({str(exc).splitlines()[0]})", path=path
        ) from exc
    geoms = np.asarray(frame.geometry.array, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    lines = geoms[np.isin(shapely.get_type_id(geoms), (1, 2, 5))]
    polys = geoms[np.isin(shapely.get_type_id(geoms), (3, 6))]
    if len(lines):  # a drawing's closed polylines
        closed = shapely.polygonize(shapely.get_parts(lines))
        polys = np.concatenate([polys, shapely.get_parts(closed)])
    if not len(polys):
        raise _fail(
            "the site holds no polygon (nor closed lines)",
            path=path,
            hint="Give a closed outline",
        )
    crs = (
        crs_mod.parse_crs(frame.crs.to_wkt())
        if frame.crs is not None
        else project.working_crs
    )
    return shapely.union_all(polys), crs


# --------------------------------------------------------------------------- 自然资源部 TXT

_DATUMS = {
    "2000": "cgcs2000",
    "80": "xian 1980",
    "西安": "xian 1980",
    "54": "beijing 1954",
    "北京": "beijing 1954",
}
_POINT = re.compile(r"^\s*([^,]+),\s*(\d+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*$")


def _decode(raw: bytes) -> str:
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise UnicodeDecodeError("gb18030", raw, 0, 1, "neither UTF-8 nor GBK")


def read_mnr_txt(
    path: Path, project: Project
) -> tuple[shapely.Geometry, CRS, tuple[str, ...], list[str]]:
    """Read a 自然资源部 界址点坐标 file: the site, its CRS, the 地块 numbers, and notes.

    X is the northing and Y the easting (with or without the zone prefix). The CRS
    comes from ``坐标系``, ``几度分带`` and ``带号`` (or the prefix of Y), else the
    working CRS. A declared 地块面积 (公顷) that differs from the computed area by more
    than 1 % is noted.

    Raises
    ------
    InputError
        For a file without ``[地块坐标]`` or points, a Xian 1980 / Beijing 1954 file,
        or a zone that cannot be told.
    """
    try:
        text = _decode(path.read_bytes())
    except UnicodeDecodeError as exc:
        raise _fail(
            "the coordinate file is neither UTF-8 nor GBK text", path=path
        ) from exc
    header: dict[str, str] = {}
    blocks: list[tuple[list[str], list[tuple[str, int, float, float]]]] = []
    section = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section == "属性描述" and "=" in line:
            k, v = line.split("=", 1)
            header[k.strip()] = v.strip()
        elif section == "地块坐标":
            if line.rstrip(",").endswith("@"):
                blocks.append(([f.strip() for f in line.split(",")], []))
                continue
            m = _POINT.match(line)
            if m is None:
                raise _fail(
                    f"cannot read the point line {line!r}",
                    path=path,
                    hint="Points are 点号,圈号,X,Y",
                )
            if not blocks:
                blocks.append(([], []))
            blocks[-1][1].append(
                (m.group(1), int(m.group(2)), float(m.group(3)), float(m.group(4)))
            )
    points = [p for _, pts in blocks for p in pts]
    if not points:
        raise _fail("the coordinate file has no [地块坐标] points", path=path)
    crs = _mnr_crs(header, [p[3] for p in points], project, path)
    parts, names, notes = [], [], []
    for head, pts in blocks:
        if not pts:
            continue
        poly = _mnr_polygon(pts, path)
        parts.append(poly)
        number = head[2] if len(head) > 2 and head[2] else str(len(parts))
        names.append(number)
        declared = _hectares(head[1]) if len(head) > 1 else None
        if declared:
            computed = float(shapely.area(poly)) / 10_000
            if abs(computed - declared) > 0.01 * declared:
                notes.append(
                    f"地块 {number}: declared {declared:g} ha, the coordinates give {computed:.4f} ha"
                )
    return shapely.union_all(parts), crs, tuple(names), notes


def _hectares(text: str) -> float | None:
    m = re.match(r"^\s*([\d.]+)", text.replace("公顷", ""))
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def _mnr_polygon(
    points: list[tuple[str, int, float, float]], path: Path
) -> shapely.Geometry:
    rings: dict[int, list[tuple[float, float]]] = {}
    for _, ring, x, y in points:
        rings.setdefault(ring, []).append((y, x))  # X north, Y east
    shells: list[shapely.Polygon] = []
    holes: list[shapely.Polygon] = []
    for n in sorted(rings):
        coords = rings[n]
        if len(coords) < 3:
            raise _fail(
                f"ring {n} has {len(coords)} points",
                path=path,
                hint="A ring needs at least three points",
            )
        poly = shapely.Polygon(coords)
        if shells and shapely.within(poly, shells[0]):
            holes.append(poly)
        else:
            shells.append(poly)
    out = shapely.union_all(shells)
    if holes:
        out = shapely.difference(out, shapely.union_all(holes))
    return out


def _mnr_crs(
    header: dict[str, str], eastings: list[float], project: Project, path: Path
) -> CRS:
    system = header.get("坐标系", "")
    datum = next(
        (v for k, v in _DATUMS.items() if k in system),
        "cgcs2000" if not system else None,
    )
    if datum is None:
        raise _fail(
            f"unknown 坐标系 {system!r}",
            path=path,
            hint="Use 2000国家大地坐标系 (CGCS2000)",
        )
    if datum != "cgcs2000":
        raise _fail(
            f"the site is in {system}, for which PROJ has only a 'ballpark' transformation tens of metres off",
            path=path,
            hint="Convert the coordinates to 2000国家大地坐标系 with the locally published parameters",
        )
    width_text = header.get("几度分带") or header.get("分带") or "3"
    width = 6 if "6" in width_text else 3
    zone_text = re.sub(r"\D", "", header.get("带号", ""))
    prefixed = all(e >= 1e7 for e in eastings)
    prefix_zone = int(eastings[0] // 1e6) if prefixed else None
    zone = int(zone_text) if zone_text else prefix_zone
    if prefixed and zone is not None and prefix_zone != zone:
        raise _fail(
            f"带号 says zone {zone} but the eastings carry the prefix {prefix_zone}",
            path=path,
            hint="Correct 带号 or the coordinates",
        )
    if zone is None:
        logger.info("%s names no zone; taking the working CRS %s", path, project.crs)
        return project.working_crs
    if width == 3:
        code = (4513 + zone - 25) if prefixed else (4534 + zone - 25)
        valid = 25 <= zone <= 45
    else:
        code = (4478 + zone) if prefixed else (4502 + zone - 13)
        valid = 13 <= zone <= 23
    if not valid:
        raise _fail(f"带号 {zone} is not a {width}-degree zone of China", path=path)
    return CRS.from_epsg(code)
