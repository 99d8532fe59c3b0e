"""Land yield: indicators, grades, aggregates, scenarios and land value, against hand calculations."""

import math
import re

import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from helpers import DEMO, X0, Y0, pixel_weighted_means, toml_dumps

import multiplan
from multiplan.cli import main
from multiplan.errors import InputError, ManifestError
from multiplan.io import RasterSource
from multiplan.project import read_project
from multiplan.specs import Scenario
from multiplan.values import raster_means
from multiplan.yields import compute_scenarios

MU = 10000 / 15  # m² per 亩


def sq(i, side=100.0):
    return shapely.box(
        X0 + i * 200, Y0, X0 + i * 200 + side, Y0 + side
    )  # 100 m × 100 m = 15 亩


@pytest.fixture
def project(tmp_path):
    """Five parcels of 15 亩 (one of 30), a table with zero and missing denominators, two units."""

    def build(yield_table: str, *, table_rows=None, extra_layers=""):
        parcels = gpd.GeoDataFrame(
            {
                "pid": ["P1", "P2", "P3", "P4", "P5"],
                "park": ["甲园", "甲园", "乙园", "乙园", "乙园"],
            },
            geometry=[
                sq(0),
                sq(1),
                sq(2),
                sq(3),
                shapely.box(X0 + 800, Y0, X0 + 1000, Y0 + 100),
            ],
            crs="EPSG:4549",
        )
        parcels.to_file(tmp_path / "parcels.gpkg")
        gpd.GeoDataFrame(
            {"name": ["西", "东"]},
            geometry=[
                shapely.box(X0 - 10, Y0 - 10, X0 + 550, Y0 + 200),
                shapely.box(X0 + 550, Y0 - 10, X0 + 1100, Y0 + 200),
            ],
            crs="EPSG:4549",
        ).to_file(tmp_path / "towns.gpkg")
        rows = table_rows or [
            "parcel_id,tax_wan,sales_wan,energy_tce,founded",
            "P1,300,3000,100,2010",  # 20 万元/亩, 3 万元/吨标煤
            "P2,225,1500,0,2012",  # 15 万元/亩 exactly at the B threshold; zero energy
            "P3,75,900,,2015",  # 5 万元/亩 exactly at C; energy missing
            "P4,30,300,10,2025",  # 2 万元/亩; founded 2025: exempt
            "P5,900,6000,300,2001",  # 30 亩: 30 万元/亩 exactly at A
            "P9,1,1,1,2020",  # no such parcel
        ]
        (tmp_path / "firms.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (tmp_path / "project.toml").write_text(
            f"""[project]
name = "y"
units = "towns"
out = "out"

[layers.parcels]
path = "parcels.gpkg"
id_field = "pid"
class = "1001"

[layers.towns]
path = "towns.gpkg"
{extra_layers}
{yield_table}
""",
            encoding="utf-8",
        )
        return read_project(tmp_path / "project.toml")

    return build


BASE = """[yield]
parcels = "parcels"
table = "firms.csv"
join = "parcel_id"
park_field = "park"
indicators = [
  { id = "tax_per_mu", title = "亩均税收", numerator = "tax_wan", unit = "万元/亩" },
  { id = "tax_per_energy", title = "单位能耗税收", numerator = "tax_wan", denominator = "energy_tce" },
]
"""


def yield_of(project):
    return multiplan.land_yield(project), project.yield_


def test_indicators_by_hand(project):
    y, _ = yield_of(
        project(BASE + 'grades = { by = "tax_per_mu", A = 30, B = 15, C = 5 }\n')
    )
    p = y.parcels.set_index("id")
    assert p.loc["P1", "area_mu"] == pytest.approx(15.0)
    assert p.loc["P5", "area_mu"] == pytest.approx(30.0)
    assert p["tax_per_mu"].to_dict() == pytest.approx(
        {"P1": 20.0, "P2": 15.0, "P3": 5.0, "P4": 2.0, "P5": 30.0}
    )
    assert p.loc["P1", "tax_per_energy"] == pytest.approx(3.0)
    assert math.isnan(
        p.loc["P2", "tax_per_energy"]
    )  # zero denominator: no value, no error
    assert math.isnan(p.loc["P3", "tax_per_energy"])  # missing denominator
    assert y.notes["indicators"]["tax_per_energy"]["zero_or_missing_denominator"] == 2
    assert y.notes["table_ids_without_parcel"] == ["P9"]
    assert y.notes["parcels_without_table_row"] == []
    # thresholds: a value exactly at a threshold takes that grade
    assert p["grade"].to_dict() == {
        "P1": "B",
        "P2": "B",
        "P3": "C",
        "P4": "D",
        "P5": "A",
    }
    assert p.loc["P1", "unit"] == "西"
    assert p.loc["P5", "unit"] == "东"


def test_a_figure_at_a_threshold_takes_its_grade_whatever_the_float_division_says(
    project,
):
    # 0.7 / 0.1 is 6.999999999999999 in floating point: 7 万元/吨标煤 is grade A here
    rows = [
        "parcel_id,tax_wan,sales_wan,energy_tce,founded",
        "P1,0.7,1,0.1,2010",
        "P2,0.3,1,0.1,2010",
        "P3,0.1,1,0.1,2010",
        "P4,0.7,1,0.1,2010",
        "P5,0.7,1,0.1,2010",
    ]
    y, _ = yield_of(
        project(
            BASE + 'grades = { by = "tax_per_energy", A = 7, B = 3, C = 1 }\n',
            table_rows=rows,
        )
    )
    p = y.parcels.set_index("id")
    assert p.loc["P1", "tax_per_energy"] == 7.0
    assert p["grade"].to_dict() == {
        "P1": "A",
        "P2": "B",
        "P3": "C",
        "P4": "A",
        "P5": "A",
    }


def test_aggregates_are_area_weighted(project):
    y, _ = yield_of(
        project(BASE + 'grades = { by = "tax_per_mu", A = 30, B = 15, C = 5 }\n')
    )
    park = y.by_park.set_index("park")
    # 乙园: (75 + 30 + 900) 万元 over (15 + 15 + 30) 亩
    assert park.loc["乙园", "tax_per_mu"] == pytest.approx(1005 / 60)
    assert park.loc["乙园", "tax_wan_total"] == pytest.approx(1005)
    assert park.loc["甲园", "tax_per_energy"] == pytest.approx(
        300 / 100
    )  # P2 has no energy: left out
    assert (park.loc["乙园", "A"], park.loc["乙园", "C"], park.loc["乙园", "D"]) == (
        1,
        1,
        1,
    )
    unit = y.by_unit.set_index("unit")
    assert (
        unit.loc["西", "parcels"] == 3
    )  # P1, P2 and P3 (its point is at x 450–500? no: 400–500)
    assert unit["parcels"].sum() == 5


def test_rank_grades_with_ties_and_exempt_parcels(project):
    rows = [
        "parcel_id,tax_wan,sales_wan,energy_tce,founded",
        "P1,150,1,1,2000",
        "P2,150,1,1,2000",
        "P3,75,1,1,2000",
        "P4,999,1,1,2025",
        "P5,30,1,1,2000",
    ]
    cfg = (
        BASE
        + 'grades = { by = "tax_per_mu", top = { A = 0.25, B = 0.5, C = 0.75 } }\nexempt = { field = "founded", ge = 2024 }\n'
    )
    y, _ = yield_of(project(cfg, table_rows=rows))
    g = y.parcels.set_index("id")["grade"].to_dict()
    # P4 is exempt; of the four graded, P1 and P2 tie for first (10 万元/亩): both A
    assert g == {"P1": "A", "P2": "A", "P3": "C", "P4": None, "P5": "D"}
    assert y.notes["exempt"] == 1


def test_score_is_weighted_sum_over_medians(project):
    cfg = (
        BASE
        + 'score = { tax_per_mu = 0.5, tax_per_energy = 0.5 }\ngrades = { by = "score", top = { A = 0.2, B = 0.6, C = 0.95 } }\n'
    )
    y, _ = yield_of(project(cfg))
    p = y.parcels.set_index("id")
    med_tax = np.median([20, 15, 5, 2, 30])
    med_energy = np.median(
        [3.0, 2.5 / 1, 3.0]
    )  # P1 3, P4 3, P5 3 → median of the parcels with a value
    med_energy = np.median([300 / 100, 30 / 10, 900 / 300])
    assert p.loc["P1", "score"] == pytest.approx(
        0.5 * 20 / med_tax + 0.5 * 3 / med_energy
    )
    assert math.isnan(p.loc["P2", "score"])  # no energy value: no score
    assert p.loc["P2", "grade"] is None


def test_duplicate_ids_in_the_table_are_named(project):
    rows = [
        "parcel_id,tax_wan,sales_wan,energy_tce,founded",
        "P1,1,1,1,2000",
        "P1,2,1,1,2000",
    ]
    with pytest.raises(
        InputError, match=r"1 parcel ids appear more than once in the table \(P1\)"
    ):
        yield_of(project(BASE, table_rows=rows))


def test_hunnan_scenario_is_exact():
    s = Scenario(
        "hunnan",
        "综合管廊节约用地收益",
        net_revenue_per_mu=700_000,
        cost=680_000_000,
        area_mu=2400,
    )
    row = compute_scenarios([s], None, {}).iloc[0]
    assert row["gross_yuan"] == 1_680_000_000
    assert row["net_yuan"] == 1_000_000_000
    assert isinstance(row["gross_yuan"], int)


def test_scenario_area_measured_from_a_layer(project, tmp_path):
    cfg = (
        BASE
        + '\n[[yield.scenario]]\nid = "s"\nlayer = "parcels"\nnet_revenue_per_mu = 1000\ncost = 5000\n'
    )
    y, _ = yield_of(project(cfg))
    row = y.scenarios.iloc[0]
    assert row["area_mu"] == pytest.approx(90.0)  # 4 × 15 + 30 亩
    assert row["gross_yuan"] == pytest.approx(90_000.0)
    assert row["net_yuan"] == pytest.approx(85_000.0)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('grades = { by = "nope", A = 1, B = 1, C = 1 }', "yield.grades.by"),
        ('grades = { by = "tax_per_mu", A = 1, B = 2, C = 3 }', "A ≥ B ≥ C"),
        (
            'grades = { by = "tax_per_mu", top = { A = 0.5, B = 0.2, C = 0.9 } }',
            "shares must rise",
        ),
        ("score = { nope = 1 }", "yield.score.nope"),
        ('revenue = { raster = "parcels" }', "names no raster layer"),
        ('exempt = "young"', "yield.exempt"),
    ],
)
def test_yield_manifest_errors(project, extra, words):
    with pytest.raises(
        ManifestError, match=words.replace("(", r"\(").replace(".", r"\.")
    ):
        project(BASE + extra + "\n")


# ------------------------------------------------------------------ land value from a raster


def raster(values, *, x0=0.0, y1=20.0, res=10.0, nodata=None):
    v = np.ma.masked_array(
        np.asarray(values, dtype=float),
        mask=np.zeros_like(values, dtype=bool)
        if nodata is None
        else np.asarray(values) == nodata,
    )
    h, w = v.shape
    return RasterSource(
        v,
        Affine(res, 0, x0, 0, -res, y1),
        None,
        "MEM",
        (h, w),
        (res, res),
        (x0, y1 - h * res, x0 + w * res, y1),
        nodata,
        "float64",
    )


def test_raster_mean_pixel_aligned():
    r = raster([[1, 3], [5, 7]])
    assert raster_means(np.array([shapely.box(0, 10, 20, 20)]), r, None)[
        0
    ] == pytest.approx(2.0)  # top row
    assert raster_means(np.array([shapely.box(0, 0, 20, 20)]), r, None)[
        0
    ] == pytest.approx(4.0)


def test_raster_mean_misaligned_by_hand():
    r = raster([[1, 3], [5, 7]])
    # x 5–15, y 5–15: a quarter of each pixel → (1 + 3 + 5 + 7) / 4
    assert raster_means(np.array([shapely.box(5, 5, 15, 15)]), r, None)[
        0
    ] == pytest.approx(4.0)
    # x 2–12, y 12–20: 8×8 of pixel 1 (64 m²) and 2×8 of pixel 3 (16 m²)
    assert raster_means(np.array([shapely.box(2, 12, 12, 20)]), r, None)[
        0
    ] == pytest.approx((64 * 1 + 16 * 3) / 80)
    # a triangle over two pixels: half of pixel 1 and nothing else
    tri = shapely.Polygon([(0, 10), (10, 20), (0, 20)])
    assert raster_means(np.array([tri]), r, None)[0] == pytest.approx(1.0)
    # nodata pixels are left out of the weights
    r2 = raster([[1, -9], [5, 7]], nodata=-9)
    assert raster_means(np.array([shapely.box(5, 15, 15, 20)]), r2, None)[
        0
    ] == pytest.approx(1.0)
    # outside the raster: no value
    assert math.isnan(
        raster_means(np.array([shapely.box(100, 100, 110, 110)]), r, None)[0]
    )


def test_demo_values_agree_with_exactextract(tmp_path):
    exactextract = pytest.importorskip("exactextract")
    result = multiplan.check(read_project(DEMO))
    c = result.pieces
    assert "value_yuan" in c.columns
    # pieces at the district's edge that touch no valid pixel have no value
    assert c["value_yuan"].isna().sum() < 0.005 * len(c)
    sample = pd.concat([c.iloc[:: max(1, len(c) // 400)], c[c["value_yuan"].isna()]])
    geoms = gpd.GeoDataFrame(
        {"k": range(len(sample))}, geometry=sample.geometry.values, crs=c.crs
    )
    with rasterio.open(DEMO.parent / "landvalue.tif") as ds:
        ref = exactextract.exact_extract(ds, geoms, ["mean"], output="pandas")
    ours = sample["value_yuan"].to_numpy() / sample["area_m2"].to_numpy()
    assert np.allclose(
        ours, ref["mean"].to_numpy(dtype=float), rtol=1e-6, atol=0, equal_nan=True
    )
    # and against an independent method: exact weights pixel by pixel
    raster = result.layers.layer("landvalue").raster
    second = pixel_weighted_means(np.asarray(sample.geometry.array), raster, None)
    assert np.allclose(ours, second, rtol=1e-6, atol=0, equal_nan=True)


def test_value_from_a_revenue_table(tmp_path):
    plan = gpd.GeoDataFrame(
        {"code": ["R21", "M1"], "pid": ["a", "b"]},
        geometry=[sq(0), sq(1)],
        crs="EPSG:4549",
    )
    zone = gpd.GeoDataFrame(
        {"z": [1]}, geometry=[shapely.box(X0, Y0, X0 + 400, Y0 + 50)], crs="EPSG:4549"
    )
    plan.to_file(tmp_path / "plan.gpkg")
    zone.to_file(tmp_path / "zone.gpkg")
    (tmp_path / "rev.csv").write_text(
        "code,yuan_per_mu\n07,2000000\n0701,3000000\n10,500000\n", encoding="utf-8"
    )
    (tmp_path / "pack.toml").write_text(
        toml_dumps(
            {
                "rule": [
                    {
                        "id": "R",
                        "title": "t",
                        "a": {"layer": "plan"},
                        "b": {"layer": "zone"},
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    (tmp_path / "p.toml").write_text(
        """[project]
name = "v"
rules = ["pack.toml"]
[layers.plan]
path = "plan.gpkg"
class_field = "code"
classification = "gb50137"
id_field = "pid"
[layers.zone]
path = "zone.gpkg"
class = "eco_redline"
[yield]
revenue = { table = "rev.csv" }
""",
        encoding="utf-8",
    )
    result = multiplan.check(read_project(tmp_path / "p.toml"))
    v = dict(zip(result.pieces["a_id"], result.pieces["value_yuan"], strict=True))
    # 100 × 50 m = 7.5 亩; R21 → 070102, longest prefix 0701 → 3 000 000 元/亩; M1 → 100101 → 10
    assert v == pytest.approx({"a": 7.5 * 3_000_000, "b": 7.5 * 500_000})
    s = result.summary.set_index("rule_id")
    assert s.loc["R", "value_yuan"] == pytest.approx(7.5 * 3_500_000)


def _overlapping_value_project(tmp_path, revenue):
    """Two plots drawn over each other, a zone over both, two rules hitting the same land."""
    plan = gpd.GeoDataFrame(
        {"code": ["R21", "M1"], "pid": ["a", "b"]},
        geometry=[
            shapely.box(X0, Y0, X0 + 120, Y0 + 100),
            shapely.box(X0 + 60, Y0 + 10, X0 + 230, Y0 + 90),  # over a for 60 × 80 m
        ],
        crs="EPSG:4549",
    )
    zone = gpd.GeoDataFrame(
        {"z": ["z1", "z2"]},
        geometry=[
            shapely.box(X0 - 10, Y0 - 10, X0 + 150, Y0 + 110),
            shapely.box(
                X0 + 100, Y0 - 10, X0 + 300, Y0 + 110
            ),  # over z1: pieces overlap
        ],
        crs="EPSG:4549",
    )
    plan.to_file(tmp_path / "plan.gpkg")
    zone.to_file(tmp_path / "zone.gpkg")
    values = np.arange(8 * 6, dtype="float32").reshape(6, 8) * 3.0 + 100.0
    with rasterio.open(
        tmp_path / "lv.tif",
        "w",
        driver="GTiff",
        width=8,
        height=6,
        count=1,
        dtype="float32",
        crs="EPSG:4549",
        transform=Affine(50.0, 0, X0 - 40, 0, -50.0, Y0 + 170),
    ) as ds:
        ds.write(values, 1)
    (tmp_path / "rev.csv").write_text(
        "code,yuan_per_mu\n0701,3000000\n10,500000\n", encoding="utf-8"
    )
    rule = {"title": "t", "a": {"layer": "plan"}, "b": {"layer": "zone"}}
    (tmp_path / "pack.toml").write_text(
        toml_dumps({"rule": [{"id": "R", **rule}, {"id": "S", **rule}]}),
        encoding="utf-8",
    )
    (tmp_path / "p.toml").write_text(
        f"""[project]
name = "v"
rules = ["pack.toml"]
[layers.plan]
path = "plan.gpkg"
class_field = "code"
classification = "gb50137"
id_field = "pid"
[layers.zone]
path = "zone.gpkg"
class = "eco_redline"
id_field = "z"
[layers.lv]
path = "lv.tif"
kind = "raster"
[yield]
revenue = {revenue}
""",
        encoding="utf-8",
    )
    return read_project(tmp_path / "p.toml")


@pytest.mark.parametrize("tile_size", [None, 0.0, 60.0])
def test_land_value_of_overlapping_pieces_counts_the_land_once(tmp_path, tile_size):
    """A rule's value and the district's are the value of the union, not a sum over pieces."""
    project = _overlapping_value_project(
        tmp_path, '{ raster = "lv", unit = "yuan_per_m2" }'
    )
    layers = multiplan.read_layers(project)
    result = multiplan.check(project, layers=layers, tile_size=tile_size)
    pieces = result.pieces
    assert len(pieces) == 8  # 2 plots × 2 zones × 2 rules
    land = shapely.union_all(pieces.geometry.values)
    raster = layers.layer("lv").raster
    # an independent reference: pixel by pixel over the union, times its area
    want = float(pixel_weighted_means(np.array([land]), raster, project.working_crs)[0])
    want *= land.area
    s = result.summary.set_index("rule_id")
    assert s.loc["R", "value_yuan"] == pytest.approx(want, rel=1e-9)
    assert s.loc["S", "value_yuan"] == s.loc["R", "value_yuan"]
    assert result.totals["value"] == pytest.approx(want, rel=1e-9)
    # the old figure, a sum over pieces, counted every bit of land two to four times
    assert pieces["value_yuan"].sum() > 2.5 * want


def test_land_value_by_rate_takes_the_highest_rate_where_plans_overlap(tmp_path):
    project = _overlapping_value_project(tmp_path, '{ table = "rev.csv" }')
    result = multiplan.check(project)
    # a (0701, 3 000 000 元/亩) is 120 × 100 m; b (10, 500 000) adds 110 × 80 m of its own
    want = 12_000 / (2000 / 3) * 3_000_000 + 8_800 / (2000 / 3) * 500_000
    s = result.summary.set_index("rule_id")
    assert s.loc["R", "value_yuan"] == pytest.approx(want, rel=1e-12)
    assert s.loc["S", "value_yuan"] == pytest.approx(want, rel=1e-12)
    assert result.totals["value"] == pytest.approx(want, rel=1e-12)
    out = tmp_path / "out"
    result.write(out, with_map=False)
    report = (out / "report.html").read_text(encoding="utf-8")
    assert f"{want:,.0f}" in report  # the district total row, valued once
    book = openpyxl.load_workbook(out / "ledger.xlsx", read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    [total] = [r for r in rows if r and r[0] == "全区合计（去重）"]
    assert total[-1] == pytest.approx(want, rel=1e-12)


def test_yield_command(tmp_path):
    r = CliRunner().invoke(main, ["yield", str(DEMO), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (
        "scenario hunnan-tunnel: gross 1,680,000,000 元, net 1,000,000,000 元"
        in r.output
    )
    assert {
        "yield.gpkg",
        "yield.csv",
        "yield_by_unit.csv",
        "yield_by_park.csv",
        "scenarios.csv",
    } <= {p.name for p in tmp_path.iterdir()}
    table = pd.read_csv(tmp_path / "yield.csv", encoding="utf-8-sig")
    # the unit at the smallest level, then a column per level (SPEC §14)
    assert list(table.columns[:6]) == [
        "id",
        "unit",
        "towns",
        "communities",
        "area_m2",
        "area_mu",
    ]
    assert list(table.columns[-4:]) == ["score", "grade", "exempt", "reason"]
    # totals of figures given to 0.1 万元 read as such, not 261624.00000000003
    for name in ("yield_by_park.csv", "yield_by_unit.csv"):
        text = (tmp_path / name).read_text(encoding="utf-8-sig")
        head, *rows = text.splitlines()
        totals = [i for i, c in enumerate(head.split(",")) if c.endswith("_total")]
        assert totals
        for row in rows:
            cells = row.split(",")
            for i in totals:
                assert not re.search(r"\.\d{7,}", cells[i]), (name, cells[i])
    assert (table["reason"] == "exempt").sum() == 177  # founded 2024 or later
    assert (
        table["reason"].str.startswith("score").sum()
        + table["reason"].str.contains(":").sum()
        >= 46
    )
    assert set(table["grade"].dropna()) == {"A", "B", "C", "D"}
    scen = pd.read_csv(tmp_path / "scenarios.csv", encoding="utf-8-sig")
    assert scen.loc[0, "gross_yuan"] == 1_680_000_000
    assert scen.loc[0, "net_yuan"] == 1_000_000_000
    assert "1680000000," in (tmp_path / "scenarios.csv").read_text(encoding="utf-8-sig")


def test_yield_command_without_yield_table(write_manifest, parcels):
    r = CliRunner().invoke(
        main, ["yield", str(write_manifest({"p": {"path": str(parcels)}}))]
    )
    assert r.exit_code == 2
    assert "the manifest has no [yield] table" in r.output


def test_run_yield_writes_nothing_on_bad_input(project, tmp_path):
    rows = [
        "parcel_id,tax_wan,sales_wan,energy_tce,founded",
        "P1,1,1,1,2000",
        "P1,2,1,1,2000",
    ]
    p = project(BASE, table_rows=rows)
    with pytest.raises(InputError):
        multiplan.land_yield(p)
    assert not (tmp_path / "out").exists()


def test_parcels_that_overlap_count_their_land_once_in_a_units_area(tmp_path, caplog):
    """Two enterprises drawn over the same land: a unit's and a park's area is the
    union, and the run says how many parcels overlap."""
    parcels = gpd.GeoDataFrame(
        {"pid": ["P1", "P2", "P3"], "park": ["甲园", "甲园", "甲园"]},
        geometry=[
            sq(0),  # 15 亩
            shapely.box(X0 + 50, Y0, X0 + 150, Y0 + 100),  # half over P1
            sq(2),
        ],
        crs="EPSG:4549",
    )
    parcels.to_file(tmp_path / "parcels.gpkg")
    gpd.GeoDataFrame(
        {"name": ["全区"]},
        geometry=[shapely.box(X0 - 10, Y0 - 10, X0 + 600, Y0 + 200)],
        crs="EPSG:4549",
    ).to_file(tmp_path / "towns.gpkg")
    (tmp_path / "firms.csv").write_text(
        "parcel_id,tax_wan\nP1,150\nP2,150\nP3,150\n", encoding="utf-8"
    )
    (tmp_path / "project.toml").write_text(
        '[project]\nname = "y"\nunits = "towns"\nout = "out"\n'
        '[layers.parcels]\npath = "parcels.gpkg"\nid_field = "pid"\nclass = "1001"\n'
        '[layers.towns]\npath = "towns.gpkg"\n'
        '[yield]\nparcels = "parcels"\ntable = "firms.csv"\njoin = "parcel_id"\n'
        'park_field = "park"\nindicators = [{ id = "tax_per_mu", title = "亩均税收", '
        'numerator = "tax_wan", unit = "万元/亩" }]\n',
        encoding="utf-8",
    )
    project = read_project(tmp_path / "project.toml")
    y = multiplan.land_yield(project)
    assert y.notes["overlapping_parcels"] == 2
    assert "P1, P2" in caplog.text
    land = shapely.union_all(parcels.geometry.to_numpy()).area  # 25 000 m², not 30 000
    unit = y.by_unit.set_index("unit")
    assert unit.loc["全区", "area_m2"] == pytest.approx(land)
    assert unit.loc["全区", "area_mu"] == pytest.approx(land / MU)
    assert y.by_park.set_index("park").loc["甲园", "area_m2"] == pytest.approx(land)
    # each parcel keeps its own land in its own indicator
    assert y.parcels.set_index("id")["tax_per_mu"].to_dict() == pytest.approx(
        {"P1": 10.0, "P2": 10.0, "P3": 10.0}
    )
    r = CliRunner().invoke(main, ["yield", str(tmp_path / "project.toml")])
    assert r.exit_code == 0, r.output
    assert "2 parcels overlap another" in r.output
