import numpy as np
import pytest
import shapely
from pyproj import CRS, Geod, Transformer

from multiplan import crs as C


def test_mu_is_exact():
    from multiplan.areas import M2_PER_MU, to_ha, to_mu

    assert to_mu(10000 / 15) == pytest.approx(1.0, abs=1e-15)
    assert to_mu(1_000_000.0) == 1500.0  # 1 km² = 1500 亩
    assert to_mu(M2_PER_MU) == pytest.approx(1.0, abs=1e-15)
    assert to_ha(15 * M2_PER_MU) == pytest.approx(1.0)  # 1 公顷 = 15 亩


@pytest.mark.parametrize("code", ["EPSG:4549", "EPSG:4528", "EPSG:3857", "EPSG:32650"])
def test_projected_metre_crs_are_valid_working_crs(code):
    assert C.check_working_crs(code).is_projected


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("EPSG:4490", "not projected"),
        ("EPSG:4326", "not projected"),
        ("EPSG:2232", "not metres"),
        ("EPSG:999999", "unknown CRS"),
    ],
)
def test_bad_working_crs(code, words):
    with pytest.raises(ValueError, match=words.split()[-1]):
        C.check_working_crs(code)


@pytest.mark.parametrize(
    ("bounds", "declared", "words"),
    [
        # zone-prefixed easting declared without the prefix
        (
            (40_480_000, 3_520_000, 40_500_000, 3_540_000),
            4549,
            "the likely CRS is EPSG:4528",
        ),
        # prefix missing under a zone-prefixed CRS
        ((480_000, 3_520_000, 500_000, 3_540_000), 4528, "the likely CRS is EPSG:4549"),
        # northing first (surveying X=north)
        (
            (3_520_000, 480_000, 3_540_000, 500_000),
            4549,
            "northing and easting are swapped",
        ),
        # degrees declared as metres
        ((119.8, 31.8, 120.0, 32.0), 4549, "look like degrees"),
        # lat/lon swapped under a geographic CRS
        ((31.8, 119.8, 32.0, 120.0), 4490, "latitude and longitude are swapped"),
        ((31.8, 119.8, 32.0, 120.0), 4326, "latitude and longitude are swapped"),
        # metres declared as degrees
        ((480_000, 3_520_000, 500_000, 3_540_000), 4326, "are not degrees"),
        # Xian 1980 with a prefix: the same family is proposed
        (
            (40_480_000, 3_520_000, 40_500_000, 3_540_000),
            2385,
            "the likely CRS is EPSG:2364",
        ),
        # 6-degree zone 20 prefix under a 6-degree CRS without prefix
        (
            (20_780_000, 3_520_000, 20_790_000, 3_530_000),
            4509,
            "the likely CRS is EPSG:4498",
        ),
    ],
)
def test_impossible_coordinates_name_the_likely_crs(bounds, declared, words):
    msg = C.diagnose_coordinates(bounds, CRS.from_epsg(declared))
    assert msg is not None
    assert words in msg


@pytest.mark.parametrize(
    ("bounds", "declared"),
    [
        ((476_000, 3_519_000, 510_000, 3_550_000), 4549),
        ((40_476_000, 3_519_000, 40_510_000, 3_550_000), 4528),
        ((119.75, 31.8, 120.1, 32.07), 4490),
        ((119.75, 31.8, 120.1, 32.07), 4326),
        ((13.26e6, 3.65e6, 13.38e6, 3.77e6), 3857),
        ((-74.1, 40.6, -73.9, 40.8), 4326),  # New York in WGS 84 is fine too
    ],
)
def test_plausible_coordinates_pass(bounds, declared):
    assert C.diagnose_coordinates(bounds, CRS.from_epsg(declared)) is None


@pytest.mark.parametrize(
    ("code", "datum"),
    [
        (2385, "Xian 1980"),
        (2364, "Xian 1980"),
        (2437, "Beijing 1954"),
        (4214, "Beijing 1954"),
        (4610, "Xian 1980"),
    ],
)
def test_old_datums_are_recognised(code, datum):
    assert datum in C.old_datum(CRS.from_epsg(code))


def test_old_datum_from_esri_wkt():
    esri = CRS.from_epsg(2385).to_wkt("WKT1_ESRI")
    assert "Xian 1980" in C.old_datum(CRS.from_wkt(esri))


@pytest.mark.parametrize("code", [4549, 4528, 4490, 4326, 3857])
def test_modern_datums_pass(code):
    assert C.old_datum(CRS.from_epsg(code)) is None


def test_check_pipeline():
    C.check_pipeline("+proj=pipeline +step +proj=affine +xoff=10")
    with pytest.raises(ValueError, match=r"nonsense|Unknown|unrecognized|Invalid"):
        C.check_pipeline("+proj=nonsense")


def test_transform_geometries_matches_pyproj():
    t = Transformer.from_crs(4326, 4549, always_xy=True)
    g = shapely.Polygon([(119.9, 31.8), (120.0, 31.8), (120.0, 31.9)])
    out = C.transform_geometries(np.array([g]), t)[0]
    x, y = t.transform(119.9, 31.8)
    assert shapely.get_coordinates(out)[0] == pytest.approx([x, y])


def test_ellipsoidal_area_matches_geod_and_planar_near_the_cm():
    crs = CRS.from_epsg(4549)
    box = shapely.box(497_000, 3_523_000, 498_000, 3_524_000)  # ~3 km from CM 120E
    ell = C.ellipsoidal_area(np.array([box]), crs)[0]
    assert ell == pytest.approx(1_000_000, rel=1e-4)  # GK scale is ~1 near the CM
    lonlat = C.transform_geometries(
        np.array([box.segmentize(10)]),
        Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True),
    )[0]
    geod_area = abs(Geod(ellps="GRS80").geometry_area_perimeter(lonlat)[0])
    assert ell == pytest.approx(geod_area, rel=1e-6)
    assert C.area_m2(np.array([box]), crs, "planar")[0] == pytest.approx(1_000_000)


def test_gcj02_magnitude_over_xinbei():
    # REFERENCE §2.2: at (119.97E, 31.83N) WGS→GCJ moves about +449 m east, −229 m north
    t = Transformer.from_crs(4326, 4549, always_xy=True)
    p = np.array([[119.97, 31.83]])
    g = C.wgs84_to_gcj02(p)
    x0, y0 = t.transform(*p[0])
    x1, y1 = t.transform(*g[0])
    assert x1 - x0 == pytest.approx(449, abs=3)
    assert y1 - y0 == pytest.approx(-229, abs=3)


def test_gcj02_is_identity_outside_china():
    p = np.array([[2.35, 48.85], [-74.0, 40.7]])
    assert np.array_equal(C.wgs84_to_gcj02(p), p)


def test_gcj02_round_trip_to_a_millimetre():
    rng = np.random.default_rng(1)
    p = np.column_stack([rng.uniform(119.1, 120.3, 200), rng.uniform(31.1, 32.1, 200)])
    back = C.gcj02_to_wgs84(C.wgs84_to_gcj02(p))
    assert np.abs(back - p).max() < 1e-8  # ~1 mm


def test_window_runs_the_datas_transformer_backwards():
    # a window in a lon/lat source and the data read from it share one transformer:
    # PROJ's search for the WGS 84 -> CGCS2000 operation costs about 0.1 s a direction
    crs_mod = C
    working, source = CRS.from_epsg(4549), CRS.from_epsg(4326)
    crs_mod._transformer.cache_clear()
    near = (495568.0, 3531178.0, 495768.0, 3531378.0)
    got = crs_mod.window(near, working, source, pad=10.0)
    crs_mod.transformer(source, working)  # what reading the layer asks for
    assert crs_mod._transformer.cache_info().currsize == 1
    back = Transformer.from_crs(working, source, always_xy=True)
    xs, ys = back.transform([near[0] - 10, near[2] + 10], [near[1] - 10, near[3] + 10])
    assert np.allclose(got, (xs[0], ys[0], xs[1], ys[1]), atol=1e-6)


def test_window_through_a_pipeline_and_one_that_cannot_be_inverted():
    working, source = CRS.from_epsg(4549), CRS.from_epsg(2385)
    near = (495568.0, 3531178.0, 495768.0, 3531378.0)
    shifted = C.window(
        near, working, source, pipeline="+proj=pipeline +step +proj=affine +xoff=800"
    )
    assert shifted == pytest.approx((494768.0, 3531178.0, 494968.0, 3531378.0))
    # August's epicycloidal projection has no inverse: the caller reads the layer whole
    assert C.window(near, working, source, pipeline="+proj=august") is None
