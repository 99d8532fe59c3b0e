"""The one map: faces, their attributes, the two-plan differences and stable patch numbers."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from helpers import DEMO, X0, Y0

import multiplan
from multiplan.cli import main
from multiplan.layers import CLASS_COL, read_layers
from multiplan.noding import build_faces
from multiplan.onemap import fuse_layers
from multiplan.patches import number_patches
from multiplan.project import read_project


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


@pytest.fixture
def plans(tmp_path):
    """Two plans on a 300 m × 100 m strip, with a red-line zone, a boundary and two units."""

    def build(chenggui=None, tugui=None):
        cg = chenggui or [
            ("c1", "R21", box(0, 0, 150, 100)),
            ("c2", "E2", box(150, 0, 300, 100)),
        ]
        tg = tugui or [
            ("t1", "0701", box(0, 0, 100, 100)),
            ("t2", "0101", box(100, 0, 200, 100)),
            ("t3", "0601", box(200, 0, 300, 100)),
        ]
        gpd.GeoDataFrame(
            {"DKBH": [c[0] for c in cg], "YDDM": [c[1] for c in cg]},
            geometry=[c[2] for c in cg],
            crs="EPSG:4549",
        ).to_file(tmp_path / "cg.gpkg")
        gpd.GeoDataFrame(
            {"BSM": [t[0] for t in tg], "DLBM": [t[1] for t in tg]},
            geometry=[t[2] for t in tg],
            crs="EPSG:4549",
        ).to_file(tmp_path / "tg.gpkg")
        gpd.GeoDataFrame(
            {"HX": ["z1"]}, geometry=[box(250, -50, 400, 150)], crs="EPSG:4549"
        ).to_file(tmp_path / "eco.gpkg")
        gpd.GeoDataFrame(
            {"n": [1]}, geometry=[box(-10, -10, 350, 110)], crs="EPSG:4549"
        ).to_file(tmp_path / "d.gpkg")
        gpd.GeoDataFrame(
            {"name": ["西", "东"]},
            geometry=[box(-10, -10, 120, 110), box(120, -10, 350, 110)],
            crs="EPSG:4549",
        ).to_file(tmp_path / "u.gpkg")
        (tmp_path / "p.toml").write_text(
            """[project]
name = "f"
boundary = "district"
units = "towns"
out = "out"
[layers.district]
path = "d.gpkg"
[layers.towns]
path = "u.gpkg"
[layers.eco]
path = "eco.gpkg"
class = "eco_redline"
id_field = "HX"
[layers.chenggui]
path = "cg.gpkg"
class_field = "YDDM"
classification = "gb50137"
id_field = "DKBH"
[layers.tugui]
path = "tg.gpkg"
class_field = "DLBM"
classification = "gbt21010"
id_field = "BSM"
[fusion]
priority = ["eco", "chenggui", "tugui"]
compare = ["chenggui", "tugui"]
""",
            encoding="utf-8",
        )
        project = read_project(tmp_path / "p.toml")
        return project, read_layers(project)

    return build


def test_faces_by_hand(plans):
    project, layers = plans()
    r = fuse_layers(project, layers)
    f = r.faces.copy()
    f["x"] = f.geometry.representative_point().x - X0
    f = f.sort_values("x").reset_index(drop=True)
    # cuts at x = 100 (tugui), 150 (chenggui), 200 (tugui), 250 (eco); the zone's part
    # outside the plans (a U around x 250–300, and x 300–350 inside the boundary) is one face
    assert f["area_m2"].round(6).tolist() == [
        10000.0,
        5000.0,
        5000.0,
        5000.0,
        5000.0,
        7000.0,
    ]
    assert f["chenggui_id"].tolist() == ["c1", "c1", "c2", "c2", "c2", None]
    assert f["tugui_id"].tolist() == ["t1", "t2", "t2", "t3", "t3", None]
    assert f["eco_id"].tolist() == [None, None, None, None, "z1", "z1"]
    row = f.iloc[0]
    assert (row["chenggui_class"], row["tugui_class"]) == ("070102", "0701")
    assert (row["class"], row["source"], row["diff_class"]) == (
        "070102",
        "chenggui",
        "01",
    )
    assert f["diff_class"].tolist()[:5] == [
        "01",
        "02",
        "04",
        "03",
        "03",
    ]  # R21/0101 → 02; E2/0101 → 04; E2/0601 → 03
    assert f["diff_class"].iloc[5] is None  # only the zone covers it
    assert f["source"].tolist() == [
        "chenggui",
        "chenggui",
        "chenggui",
        "chenggui",
        "eco",
        "eco",
    ]  # the red line wins by priority
    assert f["class"].iloc[4] == "eco_redline"
    assert f["area_m2"].sum() == pytest.approx(
        300 * 100 + 7000
    )  # the union inside the boundary


def test_a_plan_drawn_over_itself_with_two_classes_is_reported(plans, caplog):
    """A face inside two 城规 plots of different classes takes the first's, and says so."""
    project, layers = plans(
        chenggui=[
            ("c1", "R21", box(0, 0, 150, 100)),
            ("c2", "E2", box(100, 0, 300, 100)),  # over c1 from x = 100 to 150
            ("c3", "E2", box(250, 0, 300, 100)),  # over c2, the same class
        ]
    )
    with caplog.at_level("WARNING", logger="multiplan.noding"):
        r = fuse_layers(project, layers)
    both = r.faces[r.faces["chenggui_id"] == "c1,c2"]
    assert both["area_m2"].sum() == pytest.approx(50 * 100)
    assert set(both["chenggui_class"]) == {"070102"}  # c1's, first by id
    assert r.notes["faces_of_mixed_class"] == len(both)
    assert (r.faces["chenggui_id"] == "c2,c3").any()  # one class: not reported
    [message] = [m for m in caplog.messages if "different classes" in m]
    assert "of chenggui" in message
    assert "c1,c2" in message
    assert "c2,c3" not in message
    assert "7.50 亩" in message  # 5 000 m²


def test_patches_dissolve_and_are_numbered(plans):
    project, layers = plans()
    r = fuse_layers(project, layers)
    p = r.patches
    assert sorted(p["diff_class"]) == ["02", "03"]
    assert all(p["patch_no"].str.match(r"^0[23]-\d{5}$"))
    assert p.set_index("diff_class").loc["03", "unit"] == "东"
    assert list(p.columns[-3:]) == ["adjust_plan", "opinion", "status"]
    assert p[["adjust_plan", "opinion", "status"]].isna().all().all()
    # the 02 patch (x 100–150) crosses the border of the towns at x = 120: it is
    # listed under 东, where its point lies, and each town gets the land on its side
    assert p.set_index("diff_class").loc["02", "unit"] == "东"
    assert p.set_index("diff_class").loc["02", "area_m2"] == pytest.approx(5000.0)
    d = r.differences.set_index(["diff_class", "unit"])
    assert d.loc[("02", "东"), "area_m2"] == pytest.approx(3000.0)
    assert d.loc[("02", "西"), "area_m2"] == pytest.approx(2000.0)
    assert d.loc[("02", "东"), "patches"] == d.loc[("02", "西"), "patches"] == 1


def test_adjacent_faces_of_one_pair_dissolve_into_one_patch(plans):
    # two tugui parcels of the same class under one chenggui plot: one patch, not two
    tg = [
        ("t1", "0101", box(0, 0, 100, 100)),
        ("t2", "0101", box(100, 0, 200, 100)),
        ("t3", "0101", box(200, 0, 300, 100)),
    ]
    cg = [("c1", "R21", box(0, 0, 300, 100))]
    project, layers = plans(chenggui=cg, tugui=tg)
    p = fuse_layers(project, layers).patches
    assert len(p) == 1
    assert p["area_m2"].iloc[0] == pytest.approx(30_000.0)


def test_patch_numbers_survive_a_change_elsewhere():
    grid = (0.0, 10_000.0, 100.0, 100)
    pts = shapely.points([(150, 9950), (5050, 5050), (9950, 50)])
    before = number_patches(pts, np.array(["02", "02", "03"]), grid)
    # a new patch far away, and one of the old ones gone
    pts2 = shapely.points([(150, 9950), (9950, 50), (3000, 3000)])
    after = number_patches(pts2, np.array(["02", "03", "02"]), grid)
    assert after[0] == before[0]
    assert after[1] == before[2]
    assert before[0] == "02-00002"


def test_number_collisions_take_the_next_free_number():
    grid = (0.0, 1000.0, 100.0, 10)
    pts = shapely.points([(20, 980), (60, 960), (150, 950)])
    assert number_patches(pts, np.array(["02"] * 3), grid).tolist() == [
        "02-00001",
        "02-00003",
        "02-00002",
    ]


def test_demo_faces_never_overlap_and_cover_the_union(tmp_path):
    project = read_project(DEMO)
    result = multiplan.fuse(project)
    files = result.write(tmp_path)
    assert {f.name for f in files} == {
        "onemap.gpkg",
        "onemap.html",
        "differences.gpkg",
        "differences.csv",
        "differences.xlsx",
    }
    faces = result.faces
    g = np.asarray(faces.geometry.array, dtype=object)
    layers = read_layers(project, [*result.spec.layers, "district"])
    district = shapely.union_all(
        np.asarray(layers["district"].geometry.array, dtype=object)
    )
    union = shapely.union_all(
        np.concatenate(
            [
                np.asarray(layers[n].geometry.array, dtype=object)
                for n in result.spec.layers
            ]
        )
    ).intersection(district)
    total = shapely.area(g).sum()
    assert total == pytest.approx(union.area, rel=1e-6)
    # no overlap: the union of the faces has their summed area
    assert shapely.union_all(g).area == pytest.approx(total, rel=1e-6)
    # at sample points the face's classes are the classes of the features that cover it
    rng = np.random.default_rng(3)
    for i in rng.choice(len(faces), 200, replace=False):
        pt = shapely.point_on_surface(g[i])
        for name in ("chenggui", "tugui", "eco_redline"):
            frame = layers[name]
            hit = frame[frame.geometry.contains(pt)]
            want = None if hit.empty else sorted(hit.index.astype(str))
            got = faces[f"{name}_id"].iloc[i]
            assert (got.split(",") if got else None) == want, (name, i)
            if want:
                assert (
                    faces[f"{name}_class"].iloc[i]
                    == hit.sort_index().iloc[0][CLASS_COL]
                    or faces[f"{name}_class"].iloc[i] == frame.loc[want[0], CLASS_COL]
                )
    # faces whose interior point is near their edge are attributed by area: check them all
    doubtful = [
        i
        for i in range(len(faces))
        if shapely.distance(shapely.point_on_surface(g[i]), shapely.boundary(g[i]))
        < 0.05
    ]
    assert result.notes["faces_attributed_by_area"] == len(doubtful)
    for i in doubtful:
        for name in ("chenggui", "tugui", "eco_redline"):
            got = faces[f"{name}_id"].iloc[i]
            assert (got.split(",") if got else []) == _area_truth(g[i], layers[name]), (
                name,
                i,
            )
    assert set(faces["diff_class"].dropna()) == {"01", "02", "03", "04"}
    written = gpd.read_file(tmp_path / "onemap.gpkg", layer="onemap")
    assert len(written) == len(faces)
    d = pd.read_csv(tmp_path / "differences.csv", encoding="utf-8-sig", dtype=str)
    assert list(d.columns) == [
        "level",
        "diff_class",
        "unit",
        "patches",
        "area_m2",
        "area_mu",
    ]
    # each unit's land against an overlay made here: patches cut by the units
    d["area_m2"] = d["area_m2"].astype(float)
    patches = result.patches
    units = read_layers(project, ["towns", "communities"])
    for level in ("towns", "communities"):
        for cls in ("02", "03"):
            mine = d[(d["level"] == level) & (d["diff_class"] == cls)]
            land = shapely.union_all(
                np.asarray(patches[patches["diff_class"] == cls].geometry.array)
            )
            assert mine["area_m2"].sum() == pytest.approx(land.area, abs=1.0)
            got = dict(zip(mine["unit"], mine["area_m2"], strict=True))
            frame = units[level]
            for name, unit in zip(frame["name"], frame.geometry.array, strict=True):
                want = shapely.intersection(land, unit).area
                # the check's cells are the units snapped to 0.1 mm
                assert got.get(name, 0.0) == pytest.approx(want, abs=0.2), (level, name)


def test_unchanged_demo_keeps_every_patch_number(tmp_path):
    project = read_project(DEMO)
    r1 = multiplan.fuse(project)
    r2 = multiplan.fuse(project, workers=1)
    assert r1.patches["patch_no"].tolist() == r2.patches["patch_no"].tolist()
    assert len(set(r1.patches["patch_no"])) == len(r1.patches)


def test_fuse_command(tmp_path):
    r = CliRunner().invoke(main, ["fuse", str(DEMO), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "faces" in r.output
    assert "02 仅第一规划为建设用地, construction only in" in r.output
    assert "03 仅第二规划为建设用地" in r.output


def test_build_faces_without_polygons():
    assert len(build_faces([], None)) == 0


def test_a_change_elsewhere_keeps_the_untouched_patch_numbers(plans):
    cg = [("c1", "R21", box(0, 0, 150, 100)), ("c2", "E2", box(150, 0, 300, 100))]
    tg = [
        ("t1", "0701", box(0, 0, 100, 100)),
        ("t2", "0101", box(100, 0, 200, 100)),
        ("t3", "0601", box(200, 0, 300, 100)),
    ]
    project, layers = plans(chenggui=cg, tugui=tg)
    before = fuse_layers(project, layers).patches.set_index(
        ["diff_class", "chenggui_class", "tugui_class"]
    )["patch_no"]
    # the land-use plan changes at the other end of the strip: t1 becomes farmland, a new 02 patch
    tg2 = [("t1", "0101", box(0, 0, 100, 100)), *tg[1:]]
    project, layers = plans(chenggui=cg, tugui=tg2)
    after = fuse_layers(project, layers).patches
    assert len(before) == 2
    assert (
        len(after) == 2
    )  # the 02 patch grew west (x 0–150); the 03 patch is untouched
    untouched = after[after["tugui_class"] == "0601"].set_index(
        ["diff_class", "chenggui_class", "tugui_class"]
    )["patch_no"]
    assert (
        untouched.to_dict()
        == before[before.index.get_level_values("tugui_class") == "0601"].to_dict()
    )
    assert set(after["diff_class"]) == {"02", "03"}


def _area_truth(face, frame):
    """The ids of the features sharing more than half of a face's area (an independent check)."""
    hit = frame[frame.geometry.intersects(face)]
    share = hit.geometry.intersection(face).area / face.area
    return sorted(hit.index[share.to_numpy() > 0.5].astype(str))


def test_every_face_lies_in_the_features_it_names():
    """Near-coincident edges (a few ulps to a few cm apart) make slivers; none is mislabelled."""
    rng = np.random.default_rng(11)
    polys, jitter = [], [0.0, 1e-9, 1e-6, 0.01, 0.03]
    for k in range(40):
        x, y = rng.integers(0, 400, 2) * 1.0
        w, h = rng.integers(20, 120, 2) * 1.0
        d = jitter[k % len(jitter)]
        polys.append(shapely.box(X0 + x + d, Y0 + y - d, X0 + x + w, Y0 + y + h + d))
    a = gpd.GeoDataFrame({"k": range(20)}, geometry=polys[:20], crs=4549)
    b = gpd.GeoDataFrame({"k": range(20)}, geometry=polys[20:], crs=4549)
    a.index = pd.Index([f"a{i}" for i in range(20)], name="id")
    b.index = pd.Index([f"b{i}" for i in range(20)], name="id")
    from multiplan.noding import cover as _cover
    from multiplan.noding import node_faces

    faces = node_faces([a.geometry.values, b.geometry.values], None)
    for frame in (a, b):
        frame["_class"] = "01"
        ids = _cover(faces, frame).ids
        for i, face in enumerate(faces.geoms):
            want = _area_truth(face, frame)
            assert (ids[i].split(",") if ids[i] else []) == want, (i, face.area)


def test_attribution_by_threads_equals_one_thread_and_a_brute_force():
    """Faces covered by several features of a layer: ids as text, first class; any workers."""
    from multiplan.noding import cover as _cover
    from multiplan.noding import covering_pairs, node_faces

    rng = np.random.default_rng(5)
    n = 2000
    x, y = rng.uniform(0, 3000, n), rng.uniform(0, 3000, n)
    w, h = rng.uniform(20, 250, n), rng.uniform(20, 250, n)
    boxes = shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)
    frame = gpd.GeoDataFrame(
        geometry=boxes, crs=4549, index=pd.Index([f"f{i}" for i in range(n)], name="id")
    )
    # some features without a class: the first one that has one wins
    frame["_class"] = pd.Series(
        [None if i % 3 == 0 else f"{i % 7:02d}" for i in range(n)],
        index=frame.index,
        dtype=object,
    )
    one = node_faces([boxes], None, workers=1)
    two = node_faces([boxes], None, workers=2)
    assert len(one.geoms) > 20_000  # enough faces for the threads to share them
    assert shapely.equals_exact(one.geoms, two.geoms, tolerance=0).all()
    assert shapely.equals_exact(one.points, two.points, tolerance=0).all()
    assert (one.doubtful == two.doubtful).all()
    p1, g1 = covering_pairs(one, boxes, workers=1)
    p2, g2 = covering_pairs(one, boxes, workers=2)
    assert p1.tolist() == p2.tolist()
    assert g1.tolist() == g2.tolist()
    ids1, cls1, mixed1 = _cover(one, frame, workers=1)
    ids2, cls2, mixed2 = _cover(one, frame, workers=2)
    assert ids1.tolist() == ids2.tolist()
    assert cls1.tolist() == cls2.tolist()
    assert mixed1.tolist() == mixed2.tolist()
    assert sum("," in i for i in ids1) > 1000  # many faces lie in several features
    tree = shapely.STRtree(boxes)
    sure = np.flatnonzero(~one.doubtful)
    for i in rng.choice(sure, 300, replace=False):
        hit = tree.query(one.points[i], predicate="within")
        names = sorted(frame.index[hit])  # as text: f10 before f9
        assert ids1[i] == ",".join(names)
        classes = [frame.loc[k, "_class"] for k in names]
        assert cls1[i] == next((c for c in classes if c is not None), None)
        assert mixed1[i] == (len({c for c in classes if c is not None}) > 1)
