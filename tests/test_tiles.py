"""Tiles and dask (SPEC §12): the same outputs whatever the tiling, the workers or the cluster."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from helpers import DEMO, X0, Y0

import multiplan
from multiplan.cli import main
from multiplan.errors import InputError
from multiplan.project import read_project
from multiplan.record import digests, input_files
from multiplan.rulecheck import tile_task
from multiplan.ruleinputs import layers_needed
from multiplan.rules import read_rules
from multiplan.tiles import (
    TileGrid,
    default_tile_size,
    plan,
    representative_points,
    tile_keys,
    worker_cache,
)

DATA_FILES = ("conflicts.gpkg", "summary.csv", "by_unit.csv", "units.csv")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo_untiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles") / "untiled"
    r = run("check", DEMO, "--out", out, "--no-map", "--tile-size", 0, "-q")
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize(("tile_size", "workers"), [(1500, 1), (4000, 2), (9000, 1)])
def test_demo_outputs_are_byte_identical_for_every_tile_size(
    demo_untiled, tmp_path, tile_size, workers
):
    out = tmp_path / "tiled"
    r = run(
        "check", DEMO, "--out", out, "--no-map", "-q",
        "--tile-size", tile_size, "--workers", workers,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (demo_untiled / name).read_bytes(), name


def _random_project(tmp_path, seed):
    """Plans the demo has not seen: overlapping zones, a plan overlapping itself, units."""
    rng = np.random.default_rng(seed)
    extent = shapely.box(X0, Y0, X0 + 6000, Y0 + 4000)

    def cells(n):
        pts = rng.uniform([X0, Y0], [X0 + 6000, Y0 + 4000], size=(n, 2))
        parts = shapely.get_parts(
            shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent)
        )
        return shapely.intersection(parts, extent)

    a = cells(900)
    codes = rng.choice(["0101", "0701", "0601", "1101"], size=len(a))
    gpd.GeoDataFrame({"code": codes}, geometry=a, crs="EPSG:4549").to_file(
        tmp_path / "a.gpkg"
    )
    b = cells(300)
    b = shapely.buffer(b, rng.uniform(-5, 40, size=len(b)))  # overlapping plots
    gpd.GeoDataFrame(
        {"code": rng.choice(["R2", "M1", "G1"], size=len(b))},
        geometry=b,
        crs="EPSG:4549",
    ).to_file(tmp_path / "b.gpkg")
    zones = [
        shapely.Point(X0 + x, Y0 + y).buffer(r, quad_segs=32)
        for x, y, r in rng.uniform([0, 0, 200], [6000, 4000, 900], size=(12, 3))
    ]
    gpd.GeoDataFrame({"z": range(len(zones))}, geometry=zones, crs="EPSG:4549").to_file(
        tmp_path / "z.gpkg"
    )
    gpd.GeoDataFrame(
        {"name": ["W", "E"]},
        geometry=[
            shapely.box(X0 - 10, Y0 - 10, X0 + 3100, Y0 + 4010),
            shapely.box(X0 + 3100, Y0 - 10, X0 + 6010, Y0 + 4010),
        ],
        crs="EPSG:4549",
    ).to_file(tmp_path / "u.gpkg")
    (tmp_path / "rules.toml").write_text(
        """[[rule]]
id = "I"
title = "耕地上的居住"
severity = "high"
relation = "intersect"
a = { layer = "a", class = "01" }
b = { layer = "b", class = "07" }
[[rule]]
id = "D"
title = "城规建设用地以外的居住"
severity = "low"
relation = "difference"
a = { layer = "a", class = "07" }
b = { layer = "b", class = ["construction"] }
[[rule]]
id = "Z"
title = "红线内的工业"
severity = "medium"
relation = "intersect"
a = { layer = "a", class = "10" }
b = { layer = "z", class = "eco_redline" }
distance = 50
[[rule]]
id = "S"
title = "城规地块相互重叠"
severity = "low"
relation = "intersect"
a = { layer = "b" }
b = { layer = "b" }
""",
        encoding="utf-8",
    )
    (tmp_path / "p.toml").write_text(
        """[project]
name = "t"
units = "u"
grid = 700
rules = ["rules.toml"]
out = "out"
[layers.a]
path = "a.gpkg"
class_field = "code"
classification = "gbt21010"
[layers.b]
path = "b.gpkg"
class_field = "code"
classification = "gb50137"
[layers.z]
path = "z.gpkg"
class = "eco_redline"
id_field = "z"
[layers.u]
path = "u.gpkg"
""",
        encoding="utf-8",
    )
    return read_project(tmp_path / "p.toml")


@pytest.mark.parametrize("seed", [3, 4])
def test_unseen_data_gives_the_same_pieces_for_every_tiling(tmp_path, seed):
    project = _random_project(tmp_path, seed)
    layers = multiplan.read_layers(project)
    base = multiplan.check(project, layers=layers, tile_size=0, workers=1)
    assert set(base.pieces["rule_id"]) == {"I", "D", "Z", "S"}
    for tile_size, workers in ((500, 2), (1300, 1), (2900, 2)):
        other = multiplan.check(
            project, layers=layers, tile_size=tile_size, workers=workers
        )
        a, b = base.pieces, other.pieces
        assert len(a) == len(b)
        cols = [c for c in a.columns if c != "geometry"]
        assert a[cols].equals(b[cols]), tile_size
        assert shapely.equals_exact(
            a.geometry.to_numpy(), b.geometry.to_numpy(), tolerance=0
        ).all()
        assert base.summary.equals(other.summary)
        assert base.by_unit.equals(other.by_unit)
        assert base.units.equals(other.units)


def test_tiles_cover_every_a_feature_once():
    points = np.array([[0.5, 0.5], [1.5, 0.2], [0.2, 2.5], [2.0, 2.0]])
    grid = TileGrid(0.0, 0.0, 1.0)
    keys = grid.keys(points)
    assert len(set(keys.tolist())) == 4
    assert TileGrid().keys(points).tolist() == [0, 0, 0, 0]
    # an empty geometry's point has no coordinates: it is in no tile
    geoms = np.array([shapely.box(0.1, 0.1, 0.9, 0.9), shapely.Polygon()])
    xy = representative_points(geoms)
    assert np.isnan(xy[1]).all()
    assert grid.keys(xy).tolist() == [0, -1]
    assert default_tile_size(10, (0, 0, 1, 1)) == 0.0


def test_representative_points_are_the_same_made_a_block_at_a_time(monkeypatch):
    from multiplan import geometry

    rng = np.random.default_rng(3)
    geoms = np.array(
        [
            shapely.box(x, y, x + 1 + x % 3, y + 2)
            for x, y in rng.integers(0, 99, (20, 2))
        ]
        + [shapely.Polygon(), None, shapely.Point(4, 5)],
        dtype=object,
    )[rng.permutation(23)]
    want = np.full((len(geoms), 2), np.nan)
    for k, g in enumerate(geoms):
        if g is not None and not g.is_empty:
            want[k] = shapely.get_coordinates(shapely.point_on_surface(g))[0]
    for block in (50_000, 4, 1):
        monkeypatch.setattr(geometry, "COPY_BLOCK", block)
        got = representative_points(geoms)
        np.testing.assert_array_equal(got, want)  # NaN where there is no point


@pytest.mark.parametrize("size", [7.0, 25.0, 0.0])
def test_tile_keys_are_those_of_the_representative_points(monkeypatch, size):
    from multiplan import tiles

    rng = np.random.default_rng(11)
    x, y = rng.integers(0, 95, (2, 300)).astype(float)
    w, h = rng.choice([0.5, 3.0, 12.0], (2, 300))
    boxes = list(shapely.box(x, y, x + w, y + h))
    # shapes whose point is far from their box's centre, boxes on tile lines, nothing
    l_shape = shapely.Polygon([(0, 0), (60, 0), (60, 2), (2, 2), (2, 60), (0, 60)])
    ring = shapely.box(1, 1, 80, 80).difference(shapely.box(3, 3, 78, 78))
    on_lines = [
        shapely.box(7, 7, 14, 14),
        shapely.box(0, 0, 7, 7),
        shapely.Point(14, 21),
    ]
    geoms = np.array(
        [*boxes, l_shape, ring, *on_lines, shapely.Polygon(), None], dtype=object
    )[rng.permutation(len(boxes) + 7)]
    grid = TileGrid(0.0, 0.0, size)
    made = []
    real = tiles.representative_points
    monkeypatch.setattr(
        tiles, "representative_points", lambda g: made.append(len(g)) or real(g)
    )
    got = tile_keys(geoms, grid)
    want = grid.keys(real(geoms))
    assert got.tolist() == want.tolist()
    if size:
        assert (got == -1).sum() == 2  # the empty polygon and the missing feature
        # points made only for the geometries whose boxes cross a tile's edge
        b = shapely.bounds(
            geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
        )
        cell = np.floor(b / size)
        crossing = ((cell[:, 0] != cell[:, 2]) | (cell[:, 1] != cell[:, 3])).sum()
        assert made == [crossing]
        assert 0 < crossing < len(geoms)
    else:  # one tile: no point made
        assert made == []
        assert not got.any()


def test_plan_chooses_one_tile_for_the_demo():
    project = read_project(DEMO)
    layers = multiplan.read_layers(project, ["tugui", "chenggui"])
    grid, keys = plan(layers, ["tugui", "chenggui"], None)
    assert grid.size == 0
    assert keys == [0]
    grid, keys = plan(layers, ["tugui"], 5000)
    assert len(keys) > 4


def test_local_cluster_gives_the_same_outputs(demo_untiled, tmp_path):
    out = tmp_path / "cluster"
    r = run(
        "check", DEMO, "--out", out, "--no-map", "-q",
        "--tile-size", 6000, "--cluster", "local", "--workers", 2,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (demo_untiled / name).read_bytes(), name


def test_an_unreachable_scheduler_is_exit_2(tmp_path):
    r = run("check", DEMO, "--out", tmp_path / "o", "--cluster", "tcp://127.0.0.1:9")
    assert r.exit_code == 2
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in r.output
    r = run("check", DEMO, "--out", tmp_path / "o", "--cluster", "nowhere")
    assert r.exit_code == 2
    assert "--cluster must be local" in r.output
    assert not (tmp_path / "o").exists()


def test_a_worker_without_the_inputs_says_which(tmp_path):
    """A worker reads the inputs from the manifest's paths; a missing one is named."""
    project = _random_project(tmp_path, 5)
    (tmp_path / "b.gpkg").unlink()
    with pytest.raises(InputError, match=r"b\.gpkg"):
        tile_task(str(project.path), ["I"], TileGrid(), 0)


def test_cluster_refuses_layers_given_in_memory(tmp_path):
    project = _random_project(tmp_path, 6)
    layers = multiplan.read_layers(project)
    with pytest.raises(multiplan.InputError, match="reads the layers on its workers"):
        multiplan.check(project, layers=layers, cluster="local")


FUSE_FILES = ("onemap.gpkg", "differences.gpkg", "differences.csv")


def test_fuse_faces_are_the_same_on_one_worker_two_and_a_local_cluster(tmp_path):
    """The demo's faces are noded in tiles (more than one): any workers, or dask, same files."""
    outs = {}
    for name, extra in [
        ("one", ["--workers", 1]),
        ("two", ["--workers", 2]),
        ("cluster", ["--workers", 2, "--cluster", "local", "--tile-size", 6000]),
    ]:
        outs[name] = tmp_path / name
        r = run("fuse", DEMO, "--out", outs[name], "-q", *extra)
        assert r.exit_code == 0, r.output
    for name in FUSE_FILES:
        first = (outs["one"] / name).read_bytes()
        assert (outs["two"] / name).read_bytes() == first, name
        assert (outs["cluster"] / name).read_bytes() == first, name


def test_diff_on_a_local_cluster_writes_the_same_changes(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    r = run("diff", DEMO, "tugui", "tugui_2024", "--out", here, "-q", "--workers", 1)
    assert r.exit_code == 0, r.output
    r = run(
        "diff", DEMO, "tugui", "tugui_2024", "--out", there, "-q",
        "--workers", 2, "--cluster", "local",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    for name in ("changes.gpkg", "transitions.csv", "transitions_by_unit.csv"):
        assert (there / name).read_bytes() == (here / name).read_bytes(), name


def test_diff_with_an_unreachable_scheduler_is_exit_2(tmp_path):
    r = run(
        "diff",
        DEMO,
        "tugui",
        "tugui_2024",
        "--out",
        tmp_path / "o",
        "--cluster",
        "tcp://127.0.0.1:9",
    )
    assert r.exit_code == 2, r.output
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("seed", "tile_size"), [(3, 1300), (4, 2900)])
def test_a_worker_reads_only_its_tile_and_makes_the_same_pieces(
    tmp_path, seed, tile_size
):
    """A dask task reads its A features and the B features near them, not whole layers."""
    from multiplan.levels import build_levels, piece_columns
    from multiplan.rulecheck import find_pieces, gather_pieces
    from multiplan.rulestages import RuleContext, tile_layers

    project = _random_project(tmp_path, seed)
    layers = multiplan.read_layers(project)
    rules = read_rules(project)
    levels = build_levels(project, layers)
    base, _ = find_pieces(project, rules, layers, workers=1, tile_size=0)
    whole = RuleContext(project, layers, 1, levels)
    sides = {r.id: whole.side(r) for r in rules}
    grid, keys = plan(layers, ["a", "b"], tile_size, whole.tile_keys)
    assert len(keys) > 2
    fixed = multiplan.read_layers(project, ["u"])
    own = 0
    for key in keys:
        lay = tile_layers(project, rules, fixed, grid, key)
        for name in ("a", "b"):  # a part of each plan, with the whole layer's ids
            assert len(lay[name]) < len(layers[name])
            assert set(lay[name].index) <= set(layers[name].index)
        own += int((whole.tile_keys("a", grid) == key).sum())
    assert own == len(layers["a"])
    worker_cache().clear()
    frames = [
        tile_task(str(project.path), [r.id for r in rules], grid, key, sides)
        for key in keys
    ]
    got = gather_pieces(frames, project.crs, piece_columns(levels))
    assert len(got) == len(base)
    cols = [c for c in base.columns if c != "geometry"]
    assert got[cols].equals(base[cols])
    assert shapely.equals_exact(
        got.geometry.to_numpy(), base.geometry.to_numpy(), tolerance=0
    ).all()


def test_a_worker_refuses_inputs_that_are_not_the_clients(tmp_path):
    """A worker whose copy of an input differs from the client's refuses the tile,
    naming the file, rather than answer for other data."""
    project = _random_project(tmp_path, 5)
    rules = read_rules(project)
    files = input_files(project, layers_needed(project, rules))
    ours = digests(files)
    assert {Path(p).name for p, _ in ours} >= {"a.gpkg", "b.gpkg", "p.toml"}
    worker_cache().clear()
    assert len(tile_task(str(project.path), ["I"], TileGrid(), 0, None, ours)) == 1
    # the same bytes under a new change time are the same input
    a = tmp_path / "a.gpkg"
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))
    assert len(tile_task(str(project.path), ["I"], TileGrid(), 0, None, ours)) == 1
    # another copy of plan B (one plot less)
    b = gpd.read_file(tmp_path / "b.gpkg").iloc[1:]
    b.to_file(tmp_path / "b.gpkg")
    with pytest.raises(InputError, match=r"b\.gpkg.*not the client's"):
        tile_task(str(project.path), ["I"], TileGrid(), 0, None, ours)


def test_a_tile_reads_the_b_features_within_the_rules_distance(tmp_path):
    # the zone lies 40 m from the first plot's box: only the rule's distance (50 m)
    # brings it into the box the tile reads near
    plots = [
        shapely.box(X0, Y0, X0 + 100, Y0 + 100),
        shapely.box(X0 + 5000, Y0, X0 + 5100, Y0 + 100),
    ]
    gpd.GeoDataFrame({"pid": ["P1", "P2"]}, geometry=plots, crs="EPSG:4549").to_file(
        tmp_path / "a.gpkg"
    )
    zone = shapely.box(X0 - 140, Y0, X0 - 40, Y0 + 100)
    gpd.GeoDataFrame({"zid": ["Z1"]}, geometry=[zone], crs="EPSG:4549").to_file(
        tmp_path / "z.gpkg"
    )
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\nid = "N"\ntitle = "近红线"\nrelation = "intersect"\n'
        'a = { layer = "a" }\nb = { layer = "z" }\ndistance = 50\n',
        encoding="utf-8",
    )
    (tmp_path / "p.toml").write_text(
        '[project]\nname = "t"\nrules = ["rules.toml"]\nout = "out"\n'
        '[layers.a]\npath = "a.gpkg"\nclass = "0701"\nid_field = "pid"\n'
        '[layers.z]\npath = "z.gpkg"\nclass = "eco_redline"\nid_field = "zid"\n',
        encoding="utf-8",
    )
    project = read_project(tmp_path / "p.toml")
    layers = multiplan.read_layers(project)
    grid, keys = plan(layers, ["a"], 1000)
    assert len(keys) == 2
    frames = [tile_task(str(project.path), ["N"], grid, key) for key in keys]
    pieces = [f for tile in frames for f in tile if len(f)]
    assert len(pieces) == 1
    assert pieces[0]["a_id"].tolist() == ["P1"]
    assert pieces[0]["area_m2"].round(6).tolist() == [1000.0]  # 10 m × 100 m


@pytest.mark.parametrize("driver", ["GPKG", "GeoJSON"])
def test_features_read_near_a_box_keep_the_sources_order(tmp_path, driver):
    """A tile's features come in the whole layer's order (a GeoPackage's R-tree answers
    in its own order; a GeoJSON file's FIDs are its "id" members, out of order here)."""
    import json

    from multiplan.layers import read_layer

    rng = np.random.default_rng(7)
    xy = rng.uniform([X0, Y0], [X0 + 3000, Y0 + 3000], size=(400, 2))
    geoms = shapely.buffer(shapely.points(xy), 20)
    frame = gpd.GeoDataFrame(
        {"pid": [f"P{i:03d}" for i in range(len(xy))]}, geometry=geoms, crs="EPSG:4549"
    )
    if driver == "GPKG":
        path = tmp_path / "p.gpkg"
        frame.to_file(path)
    else:
        path = tmp_path / "p.geojson"
        doc = json.loads(frame.to_json())
        for i, feat in enumerate(doc["features"]):
            feat["id"] = int((i * 7919) % 1009)  # integer ids, not in file order
        doc["crs"] = {"type": "name", "properties": {"name": "EPSG:4549"}}
        path.write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "p.toml").write_text(
        f'[project]\nname = "t"\nrules = []\nout = "out"\ncrs = "EPSG:4549"\n'
        f'[layers.p]\npath = "{path.name}"\nclass = "0701"\nid_field = "pid"\n'
        f'[layers.q]\npath = "{path.name}"\nclass = "0701"\n',
        encoding="utf-8",
    )
    project = read_project(tmp_path / "p.toml")
    for name in ("p", "q"):
        whole = read_layer(project.layers[name], project).frame.index.tolist()
        near = read_layer(
            project.layers[name],
            project,
            near=(X0 + 500, Y0 + 500, X0 + 2000, Y0 + 2000),
        ).frame.index.tolist()
        assert 0 < len(near) < len(whole)
        rank = {k: i for i, k in enumerate(whole)}
        assert [rank[k] for k in near] == sorted(rank[k] for k in near), name


@pytest.mark.parametrize(
    ("seed", "tile_size", "workers", "cluster"),
    [(6, 1300, 2, None), (7, 700, 1, None), (12, 1500, 2, "local")],
)
def test_a_check_that_lets_its_layers_go_gives_the_same_results(
    tmp_path, seed, tile_size, workers, cluster
):
    """Layers read by a tiled check are staged per tile (or read by the dask workers)
    and let go of; nothing changes."""
    from multiplan.tileinputs import ReleasedLayers

    project = _random_project(tmp_path, seed)
    layers = multiplan.read_layers(project)
    base = multiplan.check(project, layers=layers, tile_size=0, workers=1)
    tiled = multiplan.check(
        project, tile_size=tile_size, workers=workers, cluster=cluster
    )
    assert tiled.run["counts"]["tiles"] > 2
    assert isinstance(tiled.layers, ReleasedLayers)
    assert tiled.layers.pending == {"a", "b", "z"}  # nothing read them again
    a, b = base.pieces, tiled.pieces
    cols = [c for c in a.columns if c != "geometry"]
    assert a[cols].equals(b[cols])
    assert shapely.equals_exact(
        a.geometry.to_numpy(), b.geometry.to_numpy(), tolerance=0
    ).all()
    for name in ("summary", "by_unit", "units"):
        assert getattr(base, name).equals(getattr(tiled, name)), name
    assert tiled.run["counts"]["layers"] == base.run["counts"]["layers"]
    # asked for, a layer is read again whole: the frame of a whole read
    again = tiled.layers["a"]
    assert again.drop(columns="geometry").equals(layers["a"].drop(columns="geometry"))
    assert shapely.equals_exact(
        again.geometry.to_numpy(), layers["a"].geometry.to_numpy(), tolerance=0
    ).all()


@pytest.mark.parametrize("seed", [8, 9])
def test_each_tile_gets_its_a_features_and_the_b_features_near_them(tmp_path, seed):
    """A tile's staged features: its own A features (a partition of the layer), every B
    feature the whole layer's index finds near them, the prepared geometries exactly."""
    from multiplan.levels import build_levels
    from multiplan.rulestages import RuleContext
    from multiplan.tileinputs import TileInputs

    project = _random_project(tmp_path, seed)
    layers = multiplan.read_layers(project)
    rules = read_rules(project)
    whole = RuleContext(project, layers, 1, build_levels(project, layers))
    grid, keys = plan(layers, ["a", "b"], 1100, whole.tile_keys)
    inputs = TileInputs(project, rules, whole, grid, keys)
    assert inputs.names == ["a", "b", "z"]  # the units layer is given whole
    folder = inputs.folder
    own = []
    for key in keys:
        lay = inputs.layers(key)
        assert len(lay["u"]) == len(layers["u"])
        for name in inputs.names:
            part, full = lay[name], layers[name]
            pos = full.index.get_indexer(part.index)
            assert (pos >= 0).all()
            assert (np.diff(pos) > 0).all()
            assert part.drop(columns="geometry").equals(
                full.drop(columns="geometry").iloc[pos]
            )
            assert shapely.equals_exact(
                part.geometry.to_numpy(), full.geometry.to_numpy()[pos], tolerance=0
            ).all()
        mine = np.flatnonzero(whole.tile_keys("a", grid) == key)
        assert set(mine) <= set(layers["a"].index.get_indexer(lay["a"].index))
        # the tile's keys, taken from the whole layer's: those of its features
        tile = inputs.feature_keys(key)
        assert set(tile) == {(r.a.layer, grid) for r in rules}
        for (name, _), got in tile.items():
            xy = representative_points(lay[name].geometry.array)
            np.testing.assert_array_equal(got, grid.keys(xy))
        own.append(mine)
        for rule in rules:  # the B features the whole layer's index finds near them
            in_tile = whole.tile_of(rule.a, grid) == key
            if not in_tile.any():
                continue
            a = whole.geoms(rule.a)[in_tile]
            near = whole.selection(rule.b)[whole.near(rule.b, rule.distance, a)]
            got = layers[rule.b.layer].index.get_indexer(lay[rule.b.layer].index)
            assert set(near) <= set(got), rule.id
    every = np.concatenate(own)
    assert len(every) == len(layers["a"]) == len(np.unique(every))
    inputs.close()
    assert not folder.exists()


def test_a_released_layer_is_read_again_only_when_its_geometries_are_asked_for(
    tmp_path,
):
    from multiplan.tileinputs import release

    project = _random_project(tmp_path, 10)
    layers = multiplan.read_layers(project)
    reads = []

    def reread(name):
        reads.append(name)
        return layers.layer(name)

    kept = release(layers, ["a"], reread)
    assert kept["a"] is not None
    assert reads == ["a"]
    kept = release(layers, ["a"], reread)
    reads.clear()
    assert "a" in kept
    assert len(kept) == len(layers)
    assert kept.index("a").equals(layers["a"].index)
    assert kept.stats("a") == layers.stats("a")
    assert kept.layer("b") is layers.layer("b")
    assert reads == []
    assert kept["a"].geometry.isna().sum() == 0
    assert reads == ["a"]
    kept["a"]
    assert reads == ["a"]
    # a stage that needs one layer's geometries reads that one again, not the others
    from multiplan.layers import ensure_layers

    kept = release(layers, ["a", "b"], reread)
    reads.clear()
    got = ensure_layers(project, ["b"], kept)
    assert reads == ["b"]
    assert got.pending == {"a"}
    assert list(got) == ["b", *(n for n in layers if n != "b")]


def test_a_layer_that_changed_on_disk_before_it_is_read_again_is_refused(tmp_path):
    from multiplan.layers import read_layer
    from multiplan.tileinputs import release

    project = _random_project(tmp_path, 11)
    layers = multiplan.read_layers(project)
    kept = release(
        layers, ["a"], lambda name: read_layer(project.layers[name], project)
    )
    frame = layers["a"].iloc[:-3]
    frame.to_file(tmp_path / "a.gpkg")  # a bureau overwrote the file meanwhile
    with pytest.raises(InputError, match="changed on disk while the check ran"):
        kept["a"]


def test_the_tiles_staged_features_are_removed_when_the_check_is_done(
    tmp_path, monkeypatch
):
    import tempfile

    import multiplan.scratch

    project = _random_project(tmp_path, 13)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    made = []
    real = multiplan.scratch.scratch_folder

    def recording(kind):
        made.append(kind)
        return real(kind)

    monkeypatch.setattr(multiplan.scratch, "scratch_folder", recording)
    result = multiplan.check(project, tile_size=1000, workers=1)
    assert "inputs" in made
    assert len(result.attributes) > 0
    assert not list(scratch.glob("multiplan-inputs-*"))
