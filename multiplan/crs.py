"""Coordinate reference systems: checks, diagnosis, transforms, areas, GCJ-02.

The working CRS is projected and in metres (default EPSG:4549, CGCS2000 / 3-degree
Gauss-Kruger CM 120E). WGS 84 and CGCS2000 are taken as identical, as PROJ's null
transformation does. Xian 1980 and Beijing 1954 sources are refused unless the
manifest gives a transformation, because PROJ only has a "ballpark" no-op for
them, tens of metres off.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING, Literal

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from pyproj.enums import TransformDirection
from pyproj.exceptions import CRSError, ProjError

from multiplan.errors import LayerError

if TYPE_CHECKING:
    from multiplan.specs import LayerSpec

logger = logging.getLogger(__name__)

_OLD_DATUMS = {
    "xian 1980": "Xian 1980 (1980西安坐标系)",
    "beijing 1954": "Beijing 1954 (1954北京坐标系)",
    "new beijing": "New Beijing (新1954北京坐标系)",
}


@functools.lru_cache(maxsize=128)
def parse_crs(value: str) -> CRS:
    """Parse a CRS string (``EPSG:4549``, WKT, PROJ).

    Raises
    ------
    ValueError
        If pyproj does not know it.
    """
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise ValueError(f"unknown CRS {value!r}") from exc


def check_working_crs(value: str) -> CRS:
    """Return the working CRS, checked to be projected with metre axes.

    Raises
    ------
    ValueError
        If it is unknown, geographic, or not in metres.

    Examples
    --------
    >>> check_working_crs("EPSG:4549").to_epsg()
    4549
    >>> check_working_crs("EPSG:4490")
    Traceback (most recent call last):
    ...
    ValueError: EPSG:4490 (China Geodetic Coordinate System 2000) is not projected; areas and distances need metres
    """
    crs = parse_crs(value)
    if not crs.is_projected:
        raise ValueError(
            f"{value} ({crs.name}) is not projected; areas and distances need metres"
        )
    units = {(a.unit_name or "").lower() for a in crs.axis_info}
    if not units <= {"metre", "meter", "m"}:
        raise ValueError(
            f"{value} ({crs.name}) is in {', '.join(sorted(units))}, not metres"
        )
    return crs


def check_pipeline(pipeline: str) -> None:
    """Check that a PROJ pipeline string can be instantiated.

    Raises
    ------
    ValueError
        If PROJ rejects it.
    """
    try:
        Transformer.from_pipeline(pipeline)
    except (ProjError, CRSError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from exc


def old_datum(crs: CRS) -> str | None:
    """Return the name of a Xian 1980 / Beijing 1954 datum the CRS uses, else ``None``.

    Examples
    --------
    >>> old_datum(CRS.from_epsg(2385))
    'Xian 1980 (1980西安坐标系)'
    >>> old_datum(CRS.from_epsg(4549)) is None
    True
    """
    geod = crs.geodetic_crs
    names = [
        crs.name,
        geod.name if geod else "",
        geod.datum.name if geod and geod.datum else "",
    ]
    text = " ".join(names).lower().replace("_", " ")
    for key, label in _OLD_DATUMS.items():
        if key in text:
            return label
    return None


def make_transformer(src: CRS, dst: CRS, pipeline: str | None = None) -> Transformer:
    """Return an ``always_xy`` transformer from ``src`` to ``dst`` (built once per pair).

    ``pipeline`` (a PROJ pipeline string) replaces PROJ's own choice.
    """
    if pipeline is not None and pipeline != "ballpark":
        return _pipeline(pipeline)
    return transformer(src, dst)


def transformer(src: CRS, dst: CRS) -> Transformer:
    """Return the ``always_xy`` transformer from ``src`` to ``dst``, built once per pair.

    Building a transformer costs PROJ a database search (tens of milliseconds);
    a run takes many layers between the same few CRSs.
    """
    return _transformer(src.to_wkt(), dst.to_wkt())


@functools.lru_cache(maxsize=64)
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(
        CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True
    )


@functools.lru_cache(maxsize=16)
def _pipeline(pipeline: str) -> Transformer:
    return Transformer.from_pipeline(pipeline)


def transform_geometries(
    geoms: np.ndarray, transformer: Transformer, *, inverse: bool = False
) -> np.ndarray:
    """Apply a transformer to an array of geometries (vectorised, 2-D); backwards if ``inverse``.

    Running a transformer backwards costs nothing more, where building the one
    of the other direction costs PROJ a second search (about 0.1 s for a datum
    change such as WGS 84 to CGCS2000).
    """
    direction = TransformDirection.INVERSE if inverse else TransformDirection.FORWARD

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1], direction=direction)
        return np.column_stack([x, y])

    return shapely.transform(geoms, fn)


def window(
    near: tuple[float, float, float, float],
    working: CRS,
    source: CRS,
    *,
    pad: float = 0.0,
    pipeline: str | None = None,
) -> tuple[float, float, float, float] | None:
    """Return the box ``near`` (in ``working``, grown by ``pad``) as a box in ``source``.

    The box's edges are densified before they are transformed, so that the
    result holds the whole box even where the transformation bends lines. The
    box is taken back through the transformer that brings the data forward —
    the layer's own ``pipeline`` when it has one — so that the window and the
    data agree. ``None`` when that transformer cannot be run backwards: the
    caller then reads the whole layer.

    Examples
    --------
    >>> w = window((0, 0, 10, 10), CRS("EPSG:4549"), CRS("EPSG:4549"), pad=1)
    >>> tuple(float(v) for v in w)
    (-1.0, -1.0, 11.0, 11.0)
    """
    x0, y0, x1, y1 = near
    box = shapely.box(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    if source != working:  # as the data: a pipeline applies between two CRSs
        edges = shapely.segmentize(box, max(x1 - x0, y1 - y0, 1.0) / 8)
        try:  # the data's transformer, backwards
            box = transform_geometries(
                np.array([edges], dtype=object),
                make_transformer(source, working, pipeline),
                inverse=True,
            )[0]
        except ProjError:  # a pipeline with a step PROJ cannot invert
            return None
    b = shapely.bounds(box)
    if not np.isfinite(b).all():
        return None
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


# --------------------------------------------------------------------------
# Diagnosis of coordinates that cannot belong to the declared CRS
# --------------------------------------------------------------------------


def _tm_params(crs: CRS) -> tuple[float, float] | None:
    """Return (central meridian, false easting) of a Transverse Mercator CRS."""
    op = crs.coordinate_operation
    if op is None or "transverse mercator" not in (op.method_name or "").lower():
        return None
    cm = fe = None
    for p in op.params:
        n = p.name.lower()
        if "longitude of natural origin" in n:
            cm = p.value
        elif n == "false easting":
            fe = p.value
    if cm is None or fe is None:
        return None
    return float(cm), float(fe)


def _family_codes(crs: CRS, *, cm: float, zone: int | None) -> list[int]:
    """Guess EPSG codes of the CGCS2000/Xian80/BJ54 GK family with this CM or zone."""
    datum = old_datum(crs) or "cgcs2000"
    key = datum.split(" (")[0].lower()
    out: list[int] = []
    if zone is not None:
        if 25 <= zone <= 45:
            base = {"cgcs2000": 4513, "xian 1980": 2349, "beijing 1954": 2401}.get(key)
            if base:
                out.append(base + zone - 25)
        if 13 <= zone <= 23 and key == "cgcs2000":
            out.append(4478 + zone)
    else:
        if cm % 3 == 0 and 75 <= cm <= 135:
            base = {"cgcs2000": 4534, "xian 1980": 2370, "beijing 1954": 2422}.get(key)
            if base:
                out.append(base + int((cm - 75) // 3))
    return out


DEGREE_TOLERANCE = 1e-6
"""Degrees a longitude may pass ±180 (or a latitude ±90) by: data cut at the antimeridian
often carries 180.00000000000006."""


def sample_points(geoms: np.ndarray, limit: int = 20_000) -> np.ndarray:
    """Return up to ``limit`` vertices of the geometries, spread evenly, and the extreme ones.

    Examples
    --------
    >>> sample_points(np.array([shapely.box(0, 0, 2, 1)]), limit=2).tolist()
    [[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [2.0, 0.0], [2.0, 0.0], [2.0, 1.0]]
    """
    coords = shapely.get_coordinates(np.asarray(geoms, dtype=object))
    if len(coords) <= limit:
        return coords
    step = int(np.ceil(len(coords) / limit))
    extremes = coords[
        [
            coords[:, 0].argmin(),
            coords[:, 0].argmax(),
            coords[:, 1].argmin(),
            coords[:, 1].argmax(),
        ]
    ]
    return np.vstack([coords[::step], extremes])


def diagnose_coordinates(
    bounds: tuple[float, float, float, float],
    crs: CRS,
    points: np.ndarray | None = None,
) -> str | None:
    """Explain why coordinates with these bounds cannot be in ``crs``, or return ``None``.

    The message names the likely CRS: a zone-prefixed easting declared without
    the prefix (or the reverse), latitude and longitude swapped, northing and
    easting swapped, or degrees declared as metres.

    ``points`` (an ``(n, 2)`` sample of the features' vertices) decide whether the
    data lies in the CRS's area of use; without them the corners of ``bounds``
    do. An area of use across the antimeridian is understood, and longitudes a
    few ULPs past ±180 count as ±180.

    Examples
    --------
    >>> diagnose_coordinates((40480000, 3520000, 40500000, 3540000), CRS.from_epsg(4549))
    'eastings of about 40 480 000 m carry the zone prefix 40 and cannot be EPSG:4549 (CGCS2000 / 3-degree Gauss-Kruger CM 120E); the likely CRS is EPSG:4528'
    >>> diagnose_coordinates((31.8, 119.9, 31.9, 120.0), CRS.from_epsg(4490))
    'latitude and longitude are swapped (x holds values 31.8–31.9, y 119.9–120); swap the axes or declare the layer in lon/lat order'
    >>> diagnose_coordinates((480000, 3520000, 500000, 3540000), CRS.from_epsg(4549)) is None
    True
    """
    xmin, ymin, xmax, ymax = bounds
    if not all(math.isfinite(v) for v in bounds):
        return None
    label = f"EPSG:{crs.to_epsg()} ({crs.name})" if crs.to_epsg() else crs.name
    tol = DEGREE_TOLERANCE
    if points is None:
        points = np.array(
            [
                [xmin, ymin],
                [xmax, ymin],
                [xmin, ymax],
                [xmax, ymax],
                [(xmin + xmax) / 2, (ymin + ymax) / 2],
            ]
        )
    if crs.is_geographic:
        if (
            xmin >= -180 - tol
            and xmax <= 180 + tol
            and ymin >= -90 - tol
            and ymax <= 90 + tol
        ):
            if _swapped_fits(bounds, crs):
                return (
                    f"latitude and longitude are swapped (x holds values {xmin:g}–{xmax:g}, "
                    f"y {ymin:g}–{ymax:g}); swap the axes or declare the layer in lon/lat order"
                )
            return None
        if xmin >= -90 and xmax <= 90 and ymin >= -180 and ymax <= 180:
            return (
                f"latitude and longitude are swapped (x holds values {xmin:g}–{xmax:g}, "
                f"y {ymin:g}–{ymax:g}); swap the axes or declare the layer in lon/lat order"
            )
        return (
            f"values up to {max(abs(xmin), abs(xmax), abs(ymin), abs(ymax)):,.0f} are not degrees, "
            f"so the layer cannot be in {label}; it is projected (in metres): declare its projected CRS, e.g. EPSG:4549"
        )
    # projected
    if _fits(points, crs):
        return None
    if xmin >= -180 and xmax <= 180 and ymin >= -90 and ymax <= 90:
        return (
            f"values {xmin:g}–{xmax:g}, {ymin:g}–{ymax:g} look like degrees, not metres of {label}; "
            "the likely CRS is EPSG:4490 (CGCS2000 lon/lat) or EPSG:4326 (WGS 84)"
        )
    tm = _tm_params(crs)
    if tm is not None:
        cm, fe = tm
        if fe < 1e6 and xmin >= 1e7:
            zone = int(xmin // 1e6)
            codes = _family_codes(crs, cm=cm, zone=zone)
            likely = (
                f"; the likely CRS is EPSG:{codes[0]}"
                if codes
                else f"; remove {zone} 000 000 or declare the zone-prefixed CRS"
            )
            return (
                f"eastings of about {_spaced(xmin)} m carry the zone prefix {zone} "
                f"and cannot be {label}{likely}"
            )
        if fe >= 1e7 and xmin >= 1e5 and xmax < 1e6:
            codes = _family_codes(crs, cm=cm, zone=None)
            likely = f"; the likely CRS is EPSG:{codes[0]}" if codes else ""
            return f"eastings of about {_spaced(xmin)} m lack the zone prefix of {label}{likely}"
        if ymin < 1e6 <= xmin and _fits(points[:, ::-1], crs):
            return (
                f"northing and easting are swapped (x holds values {xmin:,.0f}–{xmax:,.0f}); "
                "the surveying order X=north, Y=east was written as x, y: swap the columns"
            )
    lon = _area_text(crs)
    return f"coordinates {xmin:,.0f}–{xmax:,.0f}, {ymin:,.0f}–{ymax:,.0f} lie outside the area of {label}{lon}; check the declared CRS"


def _spaced(v: float) -> str:
    return f"{round(v, -4):,.0f}".replace(",", " ")


def _area_text(crs: CRS) -> str:
    a = crs.area_of_use
    if a is None:
        return ""
    return f" (lon {a.west:g}–{a.east:g}, lat {a.south:g}–{a.north:g})"


def _fits(points: np.ndarray, crs: CRS, margin_deg: float = 2.0) -> bool:
    """Return whether every point, taken into lon/lat, falls near the CRS's area of use.

    The area of use may cross the antimeridian (west > east).
    """
    geog = crs.geodetic_crs
    if geog is None or not len(points):
        return True
    xs, ys = (
        np.asarray(points[:, 0], dtype=float),
        np.asarray(points[:, 1], dtype=float),
    )
    t = transformer(crs, geog)
    try:
        lon, lat = t.transform(xs, ys, errcheck=False)
    except ProjError:
        return False
    lon, lat = np.asarray(lon), np.asarray(lat)
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        return False
    if np.any(np.abs(lat) > 90 + DEGREE_TOLERANCE) or np.any(
        np.abs(lon) > 180 + DEGREE_TOLERANCE
    ):
        return False
    # a round trip must come back: far outside a TM zone PROJ returns nonsense
    bx, by = transformer(geog, crs).transform(lon, lat, errcheck=False)
    if not np.allclose(bx, xs, atol=1.0) or not np.allclose(by, ys, atol=1.0):
        return False
    a = crs.area_of_use
    if a is None:
        return True
    lat_ok = (lat >= a.south - margin_deg) & (lat <= a.north + margin_deg)
    if a.west <= a.east:
        lon_ok = (lon >= a.west - margin_deg) & (lon <= a.east + margin_deg)
    else:  # across the antimeridian: east of west, or west of east
        lon_ok = (lon >= a.west - margin_deg) | (lon <= a.east + margin_deg)
    return bool(np.all(lat_ok & lon_ok))


def _swapped_fits(bounds: tuple[float, float, float, float], crs: CRS) -> bool:
    """Return whether swapped axes fit a small geographic area of use and the given ones do not."""
    a = crs.area_of_use
    if a is None or (a.east - a.west) > 300:
        return False
    xmin, ymin, xmax, ymax = bounds
    m = 1.0
    inside = (
        a.west - m <= xmin
        and xmax <= a.east + m
        and a.south - m <= ymin
        and ymax <= a.north + m
    )
    swapped = (
        a.west - m <= ymin
        and ymax <= a.east + m
        and a.south - m <= xmin
        and xmax <= a.north + m
    )
    return swapped and not inside


# --------------------------------------------------------------------------
# Areas
# --------------------------------------------------------------------------


def ellipsoidal_area(geoms: np.ndarray, crs: CRS) -> np.ndarray:
    """Return the area in m² of each geometry on the ellipsoid of ``crs``.

    This is the 椭球面积 of 国土调查: the geodesic area of the polygon on the
    CRS's ellipsoid (CGCS2000 for EPSG:4549), as PostGIS ``ST_Area(geography)``
    computes it.
    """
    geog = crs.geodetic_crs
    ell = crs.ellipsoid
    if geog is None or ell is None:
        raise ValueError(f"{crs.name} has no ellipsoid")
    geod = Geod(a=ell.semi_major_metre, rf=ell.inverse_flattening)
    to_geog = transformer(crs, geog)
    lonlat = transform_geometries(np.asarray(geoms, dtype=object), to_geog)
    out = np.zeros(len(lonlat))
    for i, g in enumerate(lonlat):
        if g is not None and not g.is_empty:
            area, _ = geod.geometry_area_perimeter(g)
            out[i] = abs(area)
    return out


def area_m2(geoms: np.ndarray, crs: CRS, mode: str = "planar") -> np.ndarray:
    """Return the planar (default) or ellipsoidal area in m² of each geometry."""
    if mode == "ellipsoidal":
        return ellipsoidal_area(geoms, crs)
    return np.asarray(shapely.area(geoms), dtype=float)


# --------------------------------------------------------------------------
# GCJ-02 (the public formula; REFERENCE §2.2)
# --------------------------------------------------------------------------

_GCJ_A = 6378245.0
_GCJ_EE = 0.00669342162296594323


def _gcj_delta(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = lon - 105.0
    y = lat - 35.0
    pi = math.pi
    dlat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * np.sqrt(np.abs(x))
        + (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
        + (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
        + (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0
    )
    dlon = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * x * y
        + 0.1 * np.sqrt(np.abs(x))
        + (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
        + (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
        + (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0
    )
    rad = lat / 180.0 * pi
    magic = 1.0 - _GCJ_EE * np.sin(rad) ** 2
    sm = np.sqrt(magic)
    dlat = dlat * 180.0 / ((_GCJ_A * (1.0 - _GCJ_EE)) / (magic * sm) * pi)
    dlon = dlon * 180.0 / (_GCJ_A / sm * np.cos(rad) * pi)
    inside = (lon >= 72.004) & (lon <= 137.8347) & (lat >= 0.8293) & (lat <= 55.8271)
    return np.where(inside, dlon, 0.0), np.where(inside, dlat, 0.0)


def wgs84_to_gcj02(xy: np.ndarray) -> np.ndarray:
    """Shift an ``(N, 2)`` array of WGS 84 lon/lat to GCJ-02 (outside China: unchanged).

    Examples
    --------
    >>> wgs84_to_gcj02(np.array([[119.97, 31.83]])).round(6).tolist()
    [[119.974743, 31.827945]]
    """
    xy = np.asarray(xy, dtype=float)
    dlon, dlat = _gcj_delta(xy[:, 0], xy[:, 1])
    return np.column_stack([xy[:, 0] + dlon, xy[:, 1] + dlat])


def gcj02_to_wgs84(
    xy: np.ndarray, *, tol_deg: float = 1e-10, max_iter: int = 30
) -> np.ndarray:
    """Invert :func:`wgs84_to_gcj02` by fixed-point iteration (to ~1e-5 m).

    Examples
    --------
    >>> p = np.array([[119.97, 31.83], [120.1, 32.0]])
    >>> bool(np.allclose(gcj02_to_wgs84(wgs84_to_gcj02(p)), p, atol=1e-9))
    True
    """
    target = np.asarray(xy, dtype=float)
    w = target.copy()
    for _ in range(max_iter):
        err = wgs84_to_gcj02(w) - target
        w = w - err
        if np.max(np.abs(err), initial=0.0) < tol_deg:
            break
    return w


# --------------------------------------------------------------------------
# A layer's source CRS
# --------------------------------------------------------------------------


def source_crs(
    spec: LayerSpec, declared: CRS | None
) -> tuple[CRS, Literal["source", "manifest"]]:
    """Return a layer's source CRS and where it came from: the source's own, else the manifest's.

    Raises
    ------
    LayerError
        When neither gives one.
    """
    if declared is not None:
        if spec.crs is not None and parse_crs(spec.crs) != declared:
            logger.info(
                "layer %s: the source declares %s; the manifest's crs %s is not used",
                spec.name,
                declared.name,
                spec.crs,
            )
        return declared, "source"
    if spec.crs is not None:
        return parse_crs(spec.crs), "manifest"
    raise LayerError(
        "the source declares no CRS and the manifest gives none",
        key=f"layers.{spec.name}.crs",
        path=spec.source,
        layer=spec.name,
        hint='Add crs = "EPSG:4549" (or the CRS the data is in) to the layer',
    )


def check_source_crs(
    spec: LayerSpec,
    src: CRS,
    bounds: tuple[float, float, float, float] | None,
    origin: str,
    points: np.ndarray | None = None,
) -> None:
    """Refuse an old datum without a transformation, and coordinates that cannot be in ``src``.

    Raises
    ------
    LayerError
        Naming the likely CRS, or asking for ``transformation``.
    """
    label = f"EPSG:{src.to_epsg()}" if src.to_epsg() else src.name
    datum = old_datum(src)
    if datum is not None and spec.transformation is None:
        raise LayerError(
            f"the source is in {label} on the {datum} datum, for which PROJ has only a 'ballpark' transformation tens of metres off",
            path=spec.source,
            layer=spec.name,
            key=f"layers.{spec.name}.transformation",
            hint='Give transformation = "<PROJ pipeline to the working CRS>" with the locally published parameters, or "ballpark" to accept the error',
        )
    if bounds is not None:
        problem = diagnose_coordinates(bounds, src, points)
        if problem is not None:
            key = f"layers.{spec.name}.crs"
            where = (
                "declared by the source"
                if origin == "source"
                else "given in the manifest"
            )
            raise LayerError(
                f"{problem} (CRS {where})",
                path=spec.source,
                layer=spec.name,
                key=key,
                hint="Fix the .prj or set the layer's crs to the CRS the coordinates are really in",
            )
