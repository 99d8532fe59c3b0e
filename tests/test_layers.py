import zipfile

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from helpers import X0, Y0, squares
from pyproj import Transformer
from rasterio.transform import from_origin

from multiplan.describe import class_areas
from multiplan.errors import LayerError
from multiplan.layers import CLASS_COL, SOURCE_CODE_COL, read_layer
from multiplan.project import read_project

CHINESE = ["水田", "城镇住宅用地", "商业服务业设施用地", "可调整果园"]


def load(write_manifest, name="p", **spec):
    project = read_project(write_manifest({name: spec}))
    return read_layer(project.layers[name], project), project


def layer_error(write_manifest, *words, name="p", **spec):
    with pytest.raises(LayerError) as info:
        load(write_manifest, name=name, **spec)
    msg = str(info.value)
    assert f"layer {name}" in msg
    for w in words:
        assert w in msg, msg
    return msg


def write_shp(gdf, path, *, encoding, cpg=True):
    pyogrio.write_dataframe(gdf, path, encoding=encoding)
    if not cpg:
        path.with_suffix(".cpg").unlink()
    return path


@pytest.fixture
def gdf():
    return gpd.GeoDataFrame(
        {
            "BSM": ["a1", "a2", "a3", "a4"],
            "DLBM": ["0101", "0701", "05H1", "0201K"],
            "DLMC": CHINESE,
        },
        geometry=squares(4),
        crs="EPSG:4549",
    )


# ------------------------------------------------------------------ encodings


def test_gbk_shapefile_without_cpg_is_detected(write_manifest, gdf, tmp_path):
    write_shp(gdf, tmp_path / "tg.shp", encoding="GBK", cpg=False)
    layer, _ = load(
        write_manifest, path="tg.shp", class_field="DLBM", classification="gbt21010"
    )
    assert layer.frame["DLMC"].tolist() == CHINESE
    assert "GBK" in layer.stats.encoding_note
    assert 'encoding = "GBK"' in layer.stats.encoding_note
    assert layer.frame[CLASS_COL].tolist() == ["0101", "0701", "09", "0201"]


def test_gbk_shapefile_with_declared_encoding(write_manifest, gdf, tmp_path):
    write_shp(gdf, tmp_path / "tg.shp", encoding="GBK", cpg=False)
    layer, _ = load(write_manifest, path="tg.shp", encoding="GBK")
    assert layer.frame["DLMC"].tolist() == CHINESE
    assert layer.stats.encoding_note is None


def test_gbk_shapefile_with_cpg(write_manifest, gdf, tmp_path):
    write_shp(gdf, tmp_path / "tg.shp", encoding="GBK")
    layer, _ = load(write_manifest, path="tg.shp")
    assert layer.frame["DLMC"].tolist() == CHINESE
    assert layer.stats.encoding_note is None


def test_utf8_shapefile_without_cpg_is_detected(write_manifest, gdf, tmp_path):
    write_shp(gdf, tmp_path / "u.shp", encoding="UTF-8", cpg=False)
    layer, _ = load(write_manifest, path="u.shp")
    assert layer.frame["DLMC"].tolist() == CHINESE
    assert "UTF-8" in layer.stats.encoding_note


def test_undecodable_text_asks_for_an_encoding(write_manifest, gdf, tmp_path):
    gdf["DLMC"] = ["café noir", "naïve", "x", "y"]
    write_shp(gdf, tmp_path / "l1.shp", encoding="latin1", cpg=False)
    layer_error(
        write_manifest,
        "neither UTF-8 nor GBK",
        "key layers.p.encoding",
        'Set encoding = "..."',
        path="l1.shp",
    )


def test_text_that_does_not_decode_is_reported_at_its_first_row(tmp_path):
    """Each distinct value is judged once; the row reported is still the first bad one."""
    from multiplan.shapefiles import dbf_text, judge_encoding

    names = ["SHTN", "SHTN", "HNDI", "café", "SHTN", "café", "naïve"]
    g = gpd.GeoDataFrame({"DLMC": names}, geometry=squares(len(names)), crs="EPSG:4549")
    write_shp(g, tmp_path / "m.shp", encoding="latin1", cpg=False)
    # the placeholders become GBK text of the same length: mostly GBK, two bad values
    dbf = tmp_path / "m.dbf"
    raw = dbf.read_bytes()
    for key, word in ((b"SHTN", "水田"), (b"HNDI", "旱地")):
        raw = raw.replace(key, word.encode("gbk"))
    dbf.write_bytes(raw)
    text = dbf_text(tmp_path / "m.shp")
    assert [row for row, _ in text["DLMC"]] == [0, 2, 3, 6]  # first rows, in order
    verdict = judge_encoding(tmp_path / "m.shp", "GBK")
    assert (verdict.problem, verdict.field, verdict.row) == (
        "the text is not GBK",
        "DLMC",
        3,
    )


def test_gbk_field_names_are_decoded(write_manifest, tmp_path):
    g = gpd.GeoDataFrame({"地类": ["水田"]}, geometry=squares(1), crs="EPSG:4549")
    write_shp(g, tmp_path / "f.shp", encoding="GBK", cpg=False)
    layer, _ = load(write_manifest, path="f.shp")
    assert "地类" in layer.frame.columns
    assert layer.frame["地类"].iloc[0] == "水田"


# ------------------------------------------------------------------ CRS


def test_zone_prefixed_shapefile_declared_4549_is_refused(
    write_manifest, gdf, tmp_path
):
    shifted = gdf.copy()
    shifted["geometry"] = shapely.transform(
        gdf.geometry.values, lambda c: c + np.array([40_000_000.0, 0.0])
    )
    write_shp(
        shifted.set_crs("EPSG:4549", allow_override=True),
        tmp_path / "z.shp",
        encoding="UTF-8",
    )
    layer_error(
        write_manifest,
        "zone prefix 40",
        "the likely CRS is EPSG:4528",
        "key layers.p.crs",
        "declared by the source",
        path="z.shp",
    )


def test_zone_prefixed_shapefile_declared_4528_is_reprojected(
    write_manifest, gdf, tmp_path
):
    shifted = gdf.copy()
    shifted["geometry"] = shapely.transform(
        gdf.geometry.values, lambda c: c + np.array([40_000_000.0, 0.0])
    )
    write_shp(
        shifted.set_crs("EPSG:4528", allow_override=True),
        tmp_path / "z.shp",
        encoding="UTF-8",
    )
    layer, _ = load(write_manifest, path="z.shp")
    assert (
        shapely.hausdorff_distance(layer.frame.geometry.values, gdf.geometry.values)
        < 1e-4
    ).all()
    assert layer.stats.source_crs.startswith("EPSG:4528")


def test_manifest_crs_is_used_only_without_a_declaration(write_manifest, gdf, tmp_path):
    write_shp(gdf, tmp_path / "n.shp", encoding="UTF-8")
    tmp_path.joinpath("n.prj").unlink()
    layer_error(
        write_manifest, "declares no CRS", 'Add crs = "EPSG:4549"', path="n.shp"
    )
    layer, _ = load(write_manifest, path="n.shp", crs="EPSG:4549")
    assert layer.stats.crs_from == "manifest"
    # a manifest crs that the coordinates cannot be in is named as the culprit
    layer_error(
        write_manifest,
        "lack the zone prefix",
        "EPSG:4549",
        "given in the manifest",
        path="n.shp",
        crs="EPSG:4528",
    )


def test_declared_crs_wins_over_the_manifest(write_manifest, gdf, tmp_path):
    write_shp(gdf, tmp_path / "d.shp", encoding="UTF-8")
    layer, _ = load(write_manifest, path="d.shp", crs="EPSG:4528")
    assert layer.stats.crs_from == "source"
    assert shapely.total_bounds(layer.frame.geometry.values)[0] == pytest.approx(X0)


def test_geojson_lonlat_is_reprojected(write_manifest, tmp_path):
    t = Transformer.from_crs(4549, 4326, always_xy=True)
    lon, lat = t.transform(X0, Y0)
    g = gpd.GeoDataFrame(
        {"n": [1]},
        geometry=[shapely.box(lon, lat, lon + 0.01, lat + 0.01)],
        crs="EPSG:4326",
    )
    path = tmp_path / "g.geojson"
    g.to_file(path, driver="GeoJSON")
    layer, _ = load(write_manifest, path="g.geojson")
    assert shapely.total_bounds(layer.frame.geometry.values)[0] == pytest.approx(
        X0, abs=0.01
    )
    area = layer.frame.geometry.area.iloc[0]
    assert 900_000 < area < 1_100_000  # 0.01° × 0.01° at 32°N ≈ 0.94 km²


def test_swapped_lat_lon_is_refused(write_manifest, tmp_path):
    g = gpd.GeoDataFrame(
        {"n": [1]}, geometry=[shapely.box(31.8, 119.9, 31.81, 119.91)], crs="EPSG:4490"
    )
    g.to_file(tmp_path / "s.gpkg")
    layer_error(write_manifest, "latitude and longitude are swapped", path="s.gpkg")


def test_degrees_declared_as_metres_are_refused(write_manifest, tmp_path):
    g = gpd.GeoDataFrame(
        {"n": [1]}, geometry=[shapely.box(119.9, 31.8, 119.91, 31.81)], crs="EPSG:4549"
    )
    g.to_file(tmp_path / "d.gpkg")
    layer_error(write_manifest, "look like degrees", "EPSG:4490", path="d.gpkg")


def test_old_datum_needs_a_transformation(write_manifest, gdf, tmp_path):
    gdf.set_crs("EPSG:2385", allow_override=True).to_file(tmp_path / "x80.gpkg")
    layer_error(
        write_manifest,
        "Xian 1980",
        "ballpark",
        "key layers.p.transformation",
        path="x80.gpkg",
    )
    layer, _ = load(write_manifest, path="x80.gpkg", transformation="ballpark")
    assert len(layer) == 4
    # a user-supplied pipeline is applied as given
    layer, _ = load(
        write_manifest,
        path="x80.gpkg",
        transformation="+proj=pipeline +step +proj=affine +xoff=-12.5 +yoff=31",
    )
    moved = shapely.transform(
        gdf.geometry.values, lambda c: c + np.array([-12.5, 31.0])
    )
    assert (shapely.hausdorff_distance(layer.frame.geometry.values, moved) < 1e-4).all()


def test_read_near_a_box_goes_back_through_the_layers_pipeline(
    write_manifest, gdf, tmp_path
):
    # the box is taken into the source's CRS through the layer's own pipeline: PROJ's
    # default (ballpark) transformer would put it 250 m off, and a site beside these
    # features would find nothing near it
    gdf.set_crs("EPSG:2385", allow_override=True).to_file(tmp_path / "x80.gpkg")
    pipeline = "+proj=pipeline +step +proj=affine +xoff=250 +yoff=-31"
    project = read_project(
        write_manifest({"p": {"path": "x80.gpkg", "transformation": pipeline}})
    )
    whole = read_layer(project.layers["p"], project).frame
    x0, y0, x1, y1 = shapely.bounds(whole.geometry.values[3])  # where a4 lands
    near = read_layer(project.layers["p"], project, near=(x0 + 10, y0, x1, y1)).frame
    assert near["BSM"].tolist() == ["a4"]
    assert near.index.tolist() == ["3"]  # the whole layer's row number
    assert near.geometry.values[0].equals_exact(whole.geometry.values[3], 0)


# ------------------------------------------------------------------ geometry, ids, filters


def test_zoo_counts_and_ids(write_manifest, zoo_file):
    layer, _ = load(write_manifest, path=zoo_file.name)
    s = layer.stats
    assert (s.rows, s.null, s.empty, s.had_z, s.dropped_parts) == (10, 1, 1, 1, 1)
    assert s.repaired == 1  # the bow-tie
    # ids are row numbers of the source; skipped rows' numbers are not reused
    assert layer.frame.index.tolist() == ["0", "1", "2", "3", "4", "5", "6", "9"]
    assert layer.frame.loc["9", "kind"] == "collection"
    g = layer.frame.geometry
    assert g.is_valid.all()
    assert not g.has_z.any()
    assert set(g.geom_type) <= {"Polygon", "MultiPolygon"}
    assert g.loc["3"].area == pytest.approx(5000.0)  # the bow-tie's two triangles
    assert g.loc["1"].area == pytest.approx(10_000 - 2_500)  # the hole is kept


def test_id_field_duplicates_and_nulls(write_manifest, tmp_path):
    g = gpd.GeoDataFrame(
        {"id": ["a", "b", "a", None]}, geometry=squares(4), crs="EPSG:4549"
    )
    g.to_file(tmp_path / "i.gpkg")
    layer_error(
        write_manifest, "1 features have no id", "row 3", path="i.gpkg", id_field="id"
    )
    g.loc[3, "id"] = "c"
    g.to_file(tmp_path / "i.gpkg")
    layer_error(
        write_manifest,
        "not unique (a)",
        "feature a",
        "key layers.p.id_field",
        path="i.gpkg",
        id_field="id",
    )


def test_numeric_ids_are_text(write_manifest, tmp_path):
    g = gpd.GeoDataFrame({"id": [10, 20]}, geometry=squares(2), crs="EPSG:4549")
    g.to_file(tmp_path / "n.gpkg")
    layer, _ = load(write_manifest, path="n.gpkg", id_field="id")
    assert layer.frame.index.tolist() == ["10", "20"]


def test_where_filter_and_missing_fields(write_manifest, parcels):
    layer, _ = load(
        write_manifest,
        path=str(parcels),
        where={"field": "status", "in": ["planned", "approved"]},
        id_field="BSM",
    )
    assert layer.frame.index.tolist() == ["a1", "a2", "a4"]
    assert layer.stats.filtered_out == 1
    layer_error(
        write_manifest,
        "reads a field 'stat'",
        "Fields are",
        path=str(parcels),
        where={"field": "stat", "eq": "x"},
    )
    layer_error(
        write_manifest,
        "no field 'DLBMX'",
        "key layers.p.class_field",
        path=str(parcels),
        class_field="DLBMX",
    )


def test_unmapped_codes_are_counted(write_manifest, parcels):
    layer, _ = load(
        write_manifest, path=str(parcels), class_field="DLBM", classification="gb50137"
    )
    assert layer.stats.unmapped == {"0101": 1, "0201K": 1, "05H1": 1, "0701": 1}
    assert layer.frame[CLASS_COL].isna().all()
    assert layer.frame[SOURCE_CODE_COL].tolist() == ["0101", "0701", "05H1", "0201K"]


def test_lines_buffered_by_width_field(write_manifest, tmp_path):
    lines = [
        shapely.LineString([(X0, Y0), (X0 + 1000, Y0)]),
        shapely.LineString([(X0, Y0 + 500), (X0, Y0 + 1500)]),
    ]
    g = gpd.GeoDataFrame({"width": [40.0, 20.0]}, geometry=lines, crs="EPSG:4549")
    g.to_file(tmp_path / "r.gpkg")
    layer, _ = load(
        write_manifest,
        path="r.gpkg",
        width_field="width",
        **{"class": "transport_corridor"},
    )
    assert layer.family == "polygon"
    assert layer.stats.buffered
    # round caps and joins, 16 segments a quarter circle: GeoSeries.buffer's default
    expected = [
        shapely.buffer(lines[0], 20, quad_segs=16).area,
        shapely.buffer(lines[1], 10, quad_segs=16).area,
    ]
    assert layer.frame.geometry.area.tolist() == pytest.approx(expected)
    assert expected[0] == pytest.approx(1000 * 40 + np.pi * 20**2, rel=1e-3)
    g.loc[1, "width"] = None
    g.to_file(tmp_path / "r.gpkg")
    layer_error(
        write_manifest,
        "no positive width",
        "feature 1",
        "set buffer",
        path="r.gpkg",
        width_field="width",
    )


def test_points_keep_their_geometry_without_buffer(write_manifest, tmp_path):
    g = gpd.GeoDataFrame(
        {"n": [1, 2]},
        geometry=shapely.points([(X0, Y0), (X0 + 10, Y0)]),
        crs="EPSG:4549",
    )
    g.to_file(tmp_path / "pt.gpkg")
    layer, _ = load(write_manifest, path="pt.gpkg")
    assert layer.family == "point"
    layer, _ = load(write_manifest, path="pt.gpkg", buffer=100.0)
    assert layer.family == "polygon"
    assert layer.frame.geometry.area.iloc[0] == pytest.approx(
        shapely.Point(0, 0).buffer(100).area
    )


# ------------------------------------------------------------------ formats


def test_multi_layer_geopackage_needs_a_layer(write_manifest, gdf, tmp_path):
    gdf.to_file(tmp_path / "m.gpkg", layer="one")
    gdf.to_file(tmp_path / "m.gpkg", layer="two")
    layer_error(
        write_manifest, "holds 2 layers (one, two)", 'Add layer = "one"', path="m.gpkg"
    )
    layer_error(
        write_manifest,
        "no layer 'three'",
        "Valid layers are: one, two",
        path="m.gpkg",
        layer="three",
    )
    layer, _ = load(write_manifest, path="m.gpkg", layer="two")
    assert len(layer) == 4


def test_zipped_shapefile(write_manifest, gdf, tmp_path):
    write_shp(gdf, tmp_path / "z.shp", encoding="GBK", cpg=False)
    with zipfile.ZipFile(tmp_path / "delivery.zip", "w") as z:
        for ext in ("shp", "shx", "dbf", "prj"):
            z.write(tmp_path / f"z.{ext}", f"z.{ext}")
    layer, _ = load(write_manifest, path="delivery.zip", encoding="GBK")
    assert layer.frame["DLMC"].tolist() == CHINESE


@pytest.mark.parametrize(
    ("driver", "name"),
    [
        ("FlatGeobuf", "f.fgb"),
        ("OpenFileGDB", "f.gdb"),
        ("GeoJSON", "f.geojson"),
        ("GPKG", "f.gpkg"),
    ],
)
def test_other_formats(write_manifest, gdf, tmp_path, driver, name):
    out = gdf if driver != "GeoJSON" else gdf.to_crs(4326)
    pyogrio.write_dataframe(out, tmp_path / name, driver=driver)
    layer, _ = load(
        write_manifest,
        path=name,
        id_field="BSM",
        class_field="DLBM",
        classification="gbt21010",
    )
    assert sorted(layer.frame.index) == ["a1", "a2", "a3", "a4"]
    assert layer.frame.loc["a3", CLASS_COL] == "09"
    assert layer.frame.geometry.area.sum() == pytest.approx(40_000, rel=1e-6)


def test_unreadable_file(write_manifest, tmp_path):
    (tmp_path / "broken.shp").write_bytes(b"not a shapefile")
    layer_error(write_manifest, "GDAL cannot open", path="broken.shp")


# ------------------------------------------------------------------ rasters


def write_raster(
    path, values, *, crs="EPSG:4549", x0=X0, y0=Y0 + 1000, res=10.0, nodata=-1
):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=values.shape[1],
        height=values.shape[0],
        count=1,
        dtype="float32",
        crs=crs,
        transform=from_origin(x0, y0, res, res),
        nodata=nodata,
    ) as ds:
        ds.write(values.astype("float32"), 1)


def test_classified_raster_becomes_polygons(write_manifest, tmp_path):
    v = np.zeros((10, 10))
    v[:, :4] = 10  # 40 px
    v[:, 4:] = 30  # 60 px
    v[0, 0] = -1  # nodata
    write_raster(tmp_path / "slope.tif", v)
    classes = [{"below": 25, "class": "slope_ok"}, {"from": 25, "class": "slope_steep"}]
    layer, project = load(
        write_manifest, path="slope.tif", kind="raster", classes=classes
    )
    areas = class_areas(layer, project).set_index("class")["area_m2"]
    assert areas["slope_ok"] == pytest.approx(39 * 100)
    assert areas["slope_steep"] == pytest.approx(60 * 100)
    assert layer.family == "polygon"


def test_classified_raster_in_another_crs(write_manifest, tmp_path):
    v = np.full((10, 10), 80.0)
    write_raster(tmp_path / "n.tif", v, crs="EPSG:4528", x0=X0 + 40_000_000)
    layer, _ = load(
        write_manifest,
        path="n.tif",
        kind="raster",
        classes=[{"from": 70, "class": "noise_70"}],
    )
    assert shapely.total_bounds(layer.frame.geometry.values)[0] == pytest.approx(X0)
    assert layer.frame.geometry.area.sum() == pytest.approx(10_000)


def test_value_raster(write_manifest, tmp_path):
    v = np.arange(100.0).reshape(10, 10)
    v[9, 9] = -1  # nodata; the value 0 is data
    write_raster(tmp_path / "v.tif", v)
    layer, _ = load(write_manifest, path="v.tif", kind="raster")
    assert layer.family == "raster"
    assert len(layer) == 0
    assert layer.raster.values.count() == 99
    assert layer.raster.values[0, 0] == 0


def test_raster_without_crs_and_in_old_datum(write_manifest, tmp_path):
    write_raster(tmp_path / "nocrs.tif", np.ones((3, 3)), crs=None)
    layer_error(write_manifest, "declares no CRS", path="nocrs.tif", kind="raster")
    write_raster(tmp_path / "x80.tif", np.ones((3, 3)), crs="EPSG:2385")
    layer_error(write_manifest, "Xian 1980", path="x80.tif", kind="raster")


def test_class_areas_count_land_drawn_twice_once(write_manifest, tmp_path):
    """A class's area is the union of its features; overlaps are counted and named,
    and edges that touch along a sliver are not overlaps."""
    from multiplan.describe import describe_layer

    g = gpd.GeoDataFrame(
        {
            "BSM": ["a", "b", "c", "d"],
            "DLBM": ["0101", "0101", "0101", "0701"],
        },
        geometry=[
            shapely.box(X0, Y0, X0 + 100, Y0 + 100),
            shapely.box(X0 + 50, Y0, X0 + 150, Y0 + 100),  # half over a
            shapely.box(X0 + 150 - 1e-7, Y0, X0 + 250, Y0 + 100),  # a sliver over b
            shapely.box(X0 + 300, Y0, X0 + 400, Y0 + 100),
        ],
        crs="EPSG:4549",
    )
    g.to_file(tmp_path / "o.gpkg")
    layer, project = load(
        write_manifest,
        path="o.gpkg",
        class_field="DLBM",
        classification="gbt21010",
        id_field="BSM",
    )
    areas = class_areas(layer, project).set_index("class")
    land = shapely.union_all(g.geometry[:3].to_numpy()).area
    assert areas.loc["0101", "area_m2"] == pytest.approx(land, rel=1e-12)
    assert land == pytest.approx(25_000)
    assert areas.loc["0101", "features"] == 3
    assert areas.loc["0701", "area_m2"] == pytest.approx(10_000)
    d = describe_layer(layer, project)
    assert d["area_m2"] == pytest.approx(35_000, abs=0.01)
    assert d["overlaps"]["features"] == 2
    assert d["overlaps"]["ids"] == ["a", "b"]
    assert d["overlaps"]["area_m2"] == pytest.approx(5_000, abs=0.01)
