"""Plan editions compared (SPEC §14): changes, the transfer matrix, per unit, the files."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from helpers import X0, Y0

import multiplan
from multiplan.cli import main
from multiplan.editions import class_at
from multiplan.project import read_project


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def frame(rows, crs="EPSG:4549"):
    return gpd.GeoDataFrame(
        {"BSM": [r[0] for r in rows], "DLBM": [r[1] for r in rows]},
        geometry=[r[2] for r in rows],
        crs=crs,
    )


def write_project(tmp_path, old, new, *, units=True, extra=""):
    frame(old).to_file(tmp_path / "old.gpkg")
    frame(new).to_file(tmp_path / "new.gpkg")
    gpd.GeoDataFrame(
        {"n": [1]}, geometry=[box(-10, -10, 310, 110)], crs="EPSG:4549"
    ).to_file(tmp_path / "d.gpkg")
    gpd.GeoDataFrame(
        {"name": ["西", "东"]},
        geometry=[box(-10, -10, 120, 110), box(120, -10, 310, 110)],
        crs="EPSG:4549",
    ).to_file(tmp_path / "u.gpkg")
    (tmp_path / "p.toml").write_text(
        f"""[project]
name = "e"
boundary = "district"
{'units = "towns"' if units else ""}
out = "out"
{extra}
[layers.district]
path = "d.gpkg"
[layers.towns]
path = "u.gpkg"
[layers.tg2020]
path = "old.gpkg"
class_field = "DLBM"
classification = "gbt21010"
id_field = "BSM"
[layers.tg2024]
path = "new.gpkg"
class_field = "DLBM"
classification = "gbt21010"
id_field = "BSM"
""",
        encoding="utf-8",
    )
    return read_project(tmp_path / "p.toml")


OLD = [
    ("a", "0101", box(0, 0, 100, 100)),  # 水田
    ("b", "0701", box(100, 0, 200, 100)),  # 城镇住宅
]
NEW = [
    ("a", "0601", box(0, 0, 100, 100)),  # to industry (1001)
    ("b", "0701", box(100, 0, 150, 100)),  # half kept
    ("c", "1101", box(200, 0, 300, 100)),  # new river land (1701)
]


def rows(table, *keys):
    return {
        tuple(r[k] for k in keys): round(r["area_m2"], 6)
        for r in table.to_dict("records")
    }


def test_hand_built_editions_give_the_known_transitions(tmp_path):
    project = write_project(tmp_path, OLD, NEW)
    d = multiplan.diff(project, "tg2020", "tg2024")
    assert rows(d.transitions, "old_class", "new_class") == {
        ("01", "10"): 10_000.0,
        ("07", None): 5_000.0,
        ("07", "07"): 5_000.0,
        (None, "17"): 10_000.0,
    }
    # the class columns keep the full codes; change compares at the level
    c = d.changes
    reclassified = c[c["change"] == "reclassified"]
    assert set(reclassified["old_class"]) == {"0101"}
    assert set(reclassified["new_class"]) == {"1001"}
    area = c.groupby("change")["area_m2"].sum().round(6).to_dict()
    assert area == {
        "added": 10_000.0,
        "removed": 5_000.0,
        "reclassified": 10_000.0,
        "same": 5_000.0,
    }
    # faces are split at the unit border (x = 120): b's kept half lies in both towns
    by_unit = rows(d.transitions_by_unit, "unit", "old_class", "new_class")
    assert by_unit == {
        ("东", "07", None): 5_000.0,
        ("东", "07", "07"): 3_000.0,
        ("东", None, "17"): 10_000.0,
        ("西", "01", "10"): 10_000.0,
        ("西", "07", "07"): 2_000.0,
    }
    assert list(d.transitions.columns) == [
        "old_class",
        "new_class",
        "area_m2",
        "area_mu",
    ]
    assert d.transitions_by_unit.columns[0] == "unit"


def test_an_edition_drawn_over_itself_with_two_classes_is_reported(tmp_path, caplog):
    """Land in two features of one edition with different classes is named in a warning."""
    new = [
        *NEW,
        ("d", "0101", box(120, 0, 160, 100)),
    ]  # over b (0701) from x = 120 to 150
    project = write_project(tmp_path, OLD, new)
    with caplog.at_level("WARNING", logger="multiplan.noding"):
        d = multiplan.diff(project, "tg2020", "tg2024")
    mixed = d.changes[d.changes["new_id"] == "b,d"]
    assert mixed["area_m2"].sum() == pytest.approx(30 * 100)
    assert set(mixed["new_class"]) == {"0701"}  # b's, first by id
    [message] = [m for m in caplog.messages if "different classes" in m]
    assert "of tg2024" in message
    assert "b,d" in message
    assert "4.50 亩" in message
    assert "of tg2020" not in " ".join(caplog.messages)


def test_level_two_tells_paddy_from_dry_land(tmp_path):
    new = [("a", "0102", box(0, 0, 100, 100)), ("b", "0701", box(100, 0, 200, 100))]
    project = write_project(tmp_path, OLD, new, units=False)
    one = multiplan.diff(project, "tg2020", "tg2024", level=1)
    two = multiplan.diff(project, "tg2020", "tg2024", level=2)
    assert set(one.changes["change"]) == {"same"}
    assert rows(two.transitions, "old_class", "new_class") == {
        ("0101", "0102"): 10_000.0,
        ("0701", "0701"): 10_000.0,
    }
    assert (two.changes["change"] == "reclassified").sum() == 1
    assert one.transitions_by_unit is None  # no units


def test_class_at_levels():
    codes = np.array(["0101", "1001", "eco_redline", None, "07"], dtype=object)
    assert class_at(codes, 1).tolist() == ["01", "10", "eco_redline", None, "07"]
    assert class_at(codes, 2).tolist() == ["0101", "1001", "eco_redline", None, "07"]


def _editions(seed, n=120):
    """Two editions of a plan over one district: Voronoi parcels, the second redrawn in part."""
    rng = np.random.default_rng(seed)
    extent = box(0, 0, 2000, 1500)

    def cells(k):
        pts = rng.uniform([X0, Y0], [X0 + 2000, Y0 + 1500], size=(k, 2))
        parts = shapely.get_parts(
            shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent)
        )
        return shapely.intersection(parts, extent)

    codes = ["0101", "0102", "0201", "0301", "0601", "0701", "1004", "1101"]
    a = cells(n)
    b = cells(n)
    b = b[rng.uniform(size=len(b)) > 0.1]  # some land left out of the new edition
    old = [(f"o{i}", rng.choice(codes), g) for i, g in enumerate(a)]
    new = [(f"n{i}", rng.choice(codes), g) for i, g in enumerate(b)]
    return old, new


@pytest.mark.parametrize("seed", [1, 2])
def test_matrix_equals_an_independent_overlay(tmp_path, seed):
    """The transfer matrix against geopandas.overlay(how="union") of the two editions."""
    old, new = _editions(seed)
    project = write_project(tmp_path, old, new, units=False)
    d = multiplan.diff(project, "tg2020", "tg2024", level=1)
    layers = d.layers
    a = layers["tg2020"][["_class", "geometry"]].rename(columns={"_class": "old"})
    b = layers["tg2024"][["_class", "geometry"]].rename(columns={"_class": "new"})
    union = gpd.overlay(a, b, how="union", keep_geom_type=True)
    boundary = layers["district"].geometry.union_all()
    union["geometry"] = union.geometry.intersection(boundary)
    union["area"] = union.geometry.area
    union["old"] = class_at(union["old"].to_numpy(dtype=object), 1)
    union["new"] = class_at(union["new"].to_numpy(dtype=object), 1)
    union = union.astype({"old": object, "new": object})
    truth = (
        union.assign(
            old=union["old"].where(union["old"].notna(), ""),
            new=union["new"].where(union["new"].notna(), ""),
        )
        .groupby(["old", "new"])["area"]
        .sum()
    )
    ours = {
        (o or "", n or ""): v
        for o, n, v in zip(
            d.transitions["old_class"],
            d.transitions["new_class"],
            d.transitions["area_m2"],
            strict=True,
        )
    }
    total = float(truth.sum())
    for key, value in truth.items():
        if value < 0.005:
            continue
        assert abs(ours.get(key, 0.0) - value) <= 1e-6 * total, key
    # the matrix sums to the union of both editions within the boundary
    both = shapely.union_all(
        np.concatenate([a.geometry.to_numpy(), b.geometry.to_numpy()])
    ).intersection(boundary)
    assert d.transitions["area_m2"].sum() == pytest.approx(both.area, rel=1e-9)
    # faces never overlap and cover that union
    faces = d.changes.geometry.to_numpy()
    assert shapely.coverage_is_valid(shapely.GeometryCollection(list(faces)))
    assert shapely.union_all(faces).symmetric_difference(both).area < 1e-6 * both.area


def test_diff_command_writes_the_set(tmp_path):
    project = write_project(tmp_path, OLD, NEW)
    r = CliRunner().invoke(main, ["diff", str(project.path), "tg2020", "tg2024"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {
        "changes.gpkg",
        "transitions.csv",
        "transitions_by_unit.csv",
        "changes.xlsx",
        "changes.html",
        "transitions.html",
    } <= names
    changes = pyogrio.read_dataframe(out / "changes.gpkg", layer="changes")
    assert list(changes.columns[:6]) == [
        "old_id",
        "old_class",
        "new_id",
        "new_class",
        "change",
        "unit",
    ]
    t = pd.read_csv(out / "transitions.csv", encoding="utf-8-sig", dtype=str)
    assert ("01", "10") in set(zip(t["old_class"], t["new_class"], strict=True))
    book = openpyxl.load_workbook(out / "changes.xlsx")
    matrix = book.worksheets[0]
    assert matrix.title.startswith("转移矩阵")
    cells = [[c.value for c in r] for r in matrix.iter_rows()]
    first = next(r for r in cells if r[0] and str(r[0]).startswith("01"))
    assert pytest.approx(15.0) in first  # 10 000 m² = 15 亩, 01 耕地 → 10 工矿用地
    report = (out / "transitions.html").read_text(encoding="utf-8")
    assert "转移矩阵" in report
    assert "01 耕地" in report


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["tg2020", "nope"], "NEW names no layer"),
        (["tg2020", "tg2020"], "the same layer"),
        (["tg2020", "district"], "has no classes"),
        (["tg2020", "tg2024", "--level", "3"], "--level"),
    ],
)
def test_diff_refuses_what_it_cannot_compare(tmp_path, args, text):
    project = write_project(tmp_path, OLD, NEW)
    r = CliRunner().invoke(main, ["diff", str(project.path), *args])
    assert r.exit_code == 2, r.output
    assert text in r.output
    assert not (tmp_path / "out").exists()


def test_demo_revision(tmp_path):
    """The demo's 2024 revision: farmland to industry near the parks, a corridor, dropped parcels."""
    from helpers import DEMO

    project = read_project(DEMO)
    d = multiplan.diff(project, "tugui", "tugui_2024")
    t = d.transitions.set_index(["old_class", "new_class"])["area_m2"]
    assert t[("01", "10")] > 1e6  # farmland to industry around the parks
    assert t[("01", "12")] > 1e5  # the new road corridor
    removed = d.changes[d.changes["change"] == "removed"]["area_m2"].sum()
    assert removed > 1e6  # the dropped parcels
    # per level: the communities nest in the towns, so their blocks add up alike
    by = d.transitions_by_unit
    assert set(by["level"]) == {"towns", "communities"}
    for level in ("towns", "communities"):
        total = by[by["level"] == level]["area_m2"].sum()
        assert total == pytest.approx(d.transitions["area_m2"].sum(), rel=1e-9)
