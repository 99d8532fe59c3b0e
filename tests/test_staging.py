"""A check of many tiles keeps its pieces' geometries on disk and its sums exact (SPEC §12)."""

from __future__ import annotations

import gc
import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import CRS
from test_tiles import _random_project

import multiplan
from multiplan import tilecheck, tileinputs
from multiplan.piecestore import (
    MemoryGeometries,
    PieceStore,
    multi_wkb,
    write_pieces_gpkg,
)
from multiplan.tilecheck import border_features
from multiplan.tileinputs import BoxIndex
from multiplan.tiles import TileGrid, representative_points, tile_keys

CRS_4549 = CRS.from_epsg(4549)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mixed_id(k):
    """An id that is a number or text, or missing as None or as pandas' NA."""
    if k in (5, 7):
        return None if k == 5 else pd.NA
    return int(k) if k % 3 else f"P{k}"


def _attributes(n, rng):
    return pd.DataFrame(
        {
            "rule_id": pd.Series(rng.choice(["R1", "R2"], size=n), dtype=object),
            # ids that are numbers in one layer and text in another: written as text
            "a_id": pd.Series([_mixed_id(k) for k in range(n)], dtype=object),
            "b_id": pd.Series([None] * n, dtype=object),
            "area_m2": rng.uniform(1, 100, size=n),
            "value_yuan": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
        }
    )


def _shapes(n, rng):
    x = rng.uniform(500_000, 510_000, size=n)
    y = rng.uniform(3_500_000, 3_510_000, size=n)
    g = np.asarray(shapely.box(x, y, x + 10, y + 10), dtype=object)
    two = rng.random(n) < 0.3  # some pieces in two parts
    g[two] = [
        shapely.MultiPolygon([p, shapely.box(*(np.array(p.bounds) + 20))])
        for p in g[two]
    ]
    return g


def test_staged_and_in_memory_pieces_write_the_same_file(tmp_path):
    rng = np.random.default_rng(1)
    n = 70_000  # more than one batch of 65,536
    attrs, geoms = _attributes(n, rng), _shapes(n, rng)
    write_pieces_gpkg(
        tmp_path / "mem.gpkg",
        attrs,
        MemoryGeometries(geoms),
        layer="conflicts",
        crs=CRS_4549,
    )
    # staged in three tiles that arrive in another order than the output's
    perm = rng.permutation(n)
    tiles = np.array_split(perm, 3)
    store = PieceStore()
    for t in tiles:
        store.add(geoms[t])
    staged_pos = np.concatenate(tiles)  # staged position -> piece
    order = np.argsort(staged_pos)  # output position -> staged position
    store.seal(order)
    assert shapely.equals_exact(store.shapes(), geoms, tolerance=0).all()
    write_pieces_gpkg(
        tmp_path / "staged.gpkg", attrs, store, layer="conflicts", crs=CRS_4549
    )
    assert _digest(tmp_path / "mem.gpkg") == _digest(tmp_path / "staged.gpkg")

    back = pyogrio.read_dataframe(tmp_path / "staged.gpkg")
    assert pyogrio.read_info(tmp_path / "staged.gpkg")["geometry_type"] == (
        "MultiPolygon"
    )
    assert back["a_id"].tolist()[:4] == ["P0", "1", "2", "P3"]
    assert pd.isna(back["a_id"][5])  # a missing id is NULL, not the text "None"
    assert pd.isna(back["a_id"][7])  # nor "<NA>" (pandas' NA, from Arrow columns)
    assert back["value_yuan"].isna().sum() == np.isnan(attrs["value_yuan"]).sum()
    assert np.allclose(back.area.to_numpy(), shapely.area(geoms), rtol=0, atol=0)
    folder = store.folder
    assert folder.is_dir()
    del store
    gc.collect()
    assert not folder.exists()


def test_the_pieces_schema_is_the_one_arrow_infers():
    import pyarrow as pa

    from multiplan.piecestore import _arrow_schema

    columns = {
        "texts": ["a", None, float("nan"), pd.NA, "土地"],
        "empty": [None, None, float("nan"), pd.NA, None],
        "numbers_and_texts": ["P1", 2, 3, None, "P5"],
        "numbers": [1, 2, 3, 4, 5],
        "bytes": [b"x", b"y", None, b"z", b"w"],
    }
    frame = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})
    frame["area_m2"] = np.arange(5, dtype=float)
    schema, as_text = _arrow_schema(frame)
    for name in frame.columns:
        try:
            inferred = pa.Schema.from_pandas(frame[[name]], preserve_index=False)
            expected = inferred.field(name).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            expected = pa.string()
            assert name in as_text
        if pa.types.is_null(expected):
            expected = pa.string()
        assert schema.field(name).type == expected, name
    assert as_text == ["numbers_and_texts"]
    assert schema.field("texts").type == pa.string()


def test_a_store_reads_scattered_pieces_in_order_from_buckets(tmp_path):
    """Pieces whose output order is unrelated to their tiles come back in that order."""
    rng = np.random.default_rng(7)
    n = 20_000  # tiles of several staged batches; buckets of 1 000 output rows
    geoms = _shapes(n, rng)
    tiles = np.array_split(rng.permutation(n), 5)
    store = PieceStore(bucket_rows=1_000)
    for t in tiles:
        store.add(geoms[t])
    store.seal(np.argsort(np.concatenate(tiles)))
    # read as the GeoPackage writer does (batches that straddle buckets), then again
    parts = [store.wkb(a, min(a + 3_000, n)) for a in range(0, n, 3_000)]
    assert list(np.concatenate(parts)) == list(shapely.to_wkb(geoms))
    assert list(store.wkb(19_500, 20_000)) == list(shapely.to_wkb(geoms[19_500:]))
    assert list(store.wkb(5, 5)) == []
    assert sorted(p.name for p in store.folder.iterdir())[:2] == [
        "bucket-000000.arrow",
        "bucket-000001.arrow",
    ]  # the tiles' files are gone once the pieces are in buckets
    assert len(list(store.folder.iterdir())) == 20
    with pytest.raises(RuntimeError, match="read in its sealed order"):
        store.seal(np.arange(n))
    store.close()


def test_multi_wkb_makes_one_part_multipolygons_and_leaves_the_rest():
    geoms = np.array(
        [
            shapely.box(0, 0, 1, 1),
            shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)]),
            shapely.Polygon(
                [(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (2, 1), (2, 2), (1, 2)]]
            ),
        ],
        dtype=object,
    )
    out = shapely.from_wkb(multi_wkb(np.asarray(shapely.to_wkb(geoms), dtype=object)))
    assert [g.geom_type for g in out] == ["MultiPolygon"] * 3
    assert shapely.equals(out, geoms).all()
    assert shapely.area(out).tolist() == shapely.area(geoms).tolist()


@pytest.mark.parametrize("chunk", [100_000, 3])
def test_border_features_are_those_a_feature_of_another_tile_can_reach(
    monkeypatch, chunk
):
    monkeypatch.setattr(tilecheck, "_QUERY_ROWS", chunk)
    grid = TileGrid(0.0, 0.0, 100.0)
    frame = gpd.GeoDataFrame(
        geometry=[
            shapely.box(10, 10, 40, 40),  # tile (0, 0), far from the others
            shapely.box(60, 10, 99, 40),  # tile (0, 0), short of x = 100 but met by 3
            shapely.box(101, 10, 140, 20),  # tile (1, 0), met only by 3 of its own tile
            shapely.box(90, 30, 130, 60),  # point in tile (1, 0), reaches into (0, 0)
        ],
        crs="EPSG:4549",
    )
    layers = {"a": frame}
    border = border_features(
        layers,  # type: ignore[arg-type]
        ["a"],
        grid,
        lambda n, g: tile_keys(layers[n].geometry.array, g),
    )
    assert border["a"].tolist() == [False, True, False, True]


def _random_boxes(seed: int, n: int) -> np.ndarray:
    """Boxes of many sizes over 0..1000, a few as wide as the district, a few empty."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 1000, n), rng.uniform(0, 1000, n)
    odds = [0.05, 0.6, 0.3, 0.05] if seed % 2 else [0.7, 0.2, 0.05, 0.05]  # or points
    w = rng.choice([0.0, 5.0, 40.0, 150.0], n, p=odds)
    w[rng.random(n) < 0.02] = 1200.0  # wider than the district
    h = rng.uniform(0, 60, n)
    geoms = shapely.box(x, y, x + w, y + h)
    geoms[rng.random(n) < 0.03] = shapely.Polygon()
    return geoms


@pytest.mark.parametrize("seed", range(6))
def test_box_index_answers_as_an_strtree(seed):
    geoms = _random_boxes(seed, 500)
    tree = shapely.STRtree(geoms)
    index = BoxIndex(shapely.bounds(geoms))
    rng = np.random.default_rng(100 + seed)
    for _ in range(60):
        x0, y0 = rng.uniform(-100, 1100, 2)
        box = (x0, y0, x0 + rng.choice([0.0, 3.0, 90.0, 700.0]), y0 + 50.0)
        expected = np.sort(tree.query(shapely.box(*box)))
        assert index.query(box).tolist() == expected.tolist()
    # a box on another's edge meets it, as in GEOS
    edge = shapely.bounds(geoms[~shapely.is_empty(geoms)][0])
    assert len(index.query((edge[2], edge[1], edge[2] + 1, edge[3])))


@pytest.mark.parametrize("block", [50_000, 7, 1])
def test_tile_boxes_are_those_of_each_tile_in_any_block_size(monkeypatch, block):
    monkeypatch.setattr(tileinputs, "COPY_BLOCK", block)
    geoms = _random_boxes(3, 300)
    geoms = geoms[~shapely.is_empty(geoms)]
    bounds = shapely.bounds(geoms)
    tile = TileGrid(0.0, 0.0, 170.0).keys(representative_points(geoms))
    # the first tile left out, a tile with no features asked for
    keys = [*(int(k) for k in np.unique(tile)[1:]), 999_999]
    got = tileinputs.tile_boxes(bounds, tile, keys)
    assert sorted(got) == sorted(keys[:-1])
    for key, box in got.items():
        b = bounds[tile == key]
        assert box.tolist() == [
            b[:, 0].min(),
            b[:, 1].min(),
            b[:, 2].max(),
            b[:, 3].max(),
        ]


@pytest.mark.parametrize("seed", range(4))
def test_border_features_equal_every_pair_of_boxes_compared(seed):
    geoms = _random_boxes(seed, 400)
    geoms = geoms[~shapely.is_empty(geoms)]  # the layers drop empty features
    frame = gpd.GeoDataFrame(geometry=geoms, crs="EPSG:4549")
    grid = TileGrid(0.0, 0.0, 170.0)
    layers = {"a": frame}
    tile = tile_keys(frame.geometry.array, grid)
    border = border_features(layers, ["a"], grid, lambda n, g: tile)["a"]  # type: ignore[arg-type]
    b = shapely.bounds(geoms)
    meet = (
        (b[:, None, 0] <= b[None, :, 2])
        & (b[:, None, 2] >= b[None, :, 0])
        & (b[:, None, 1] <= b[None, :, 3])
        & (b[:, None, 3] >= b[None, :, 1])
    )
    expected = (meet & (tile[:, None] != tile[None, :])).any(axis=1)
    assert border.tolist() == expected.tolist()
    assert 0 < border.sum() < len(border)


@pytest.fixture(scope="module")
def random_checks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("staging")
    project = _random_project(tmp, 7)
    layers = multiplan.read_layers(project)
    one = multiplan.check(project, layers=layers, tile_size=0, workers=1)
    many = multiplan.check(project, layers=layers, tile_size=700, workers=2)
    return project, one, many


def test_a_tiled_check_keeps_geometries_on_disk(random_checks):
    _, one, many = random_checks
    assert isinstance(one.geometries, MemoryGeometries)
    assert isinstance(many.geometries, PieceStore)
    assert many.run["counts"]["tiles"] > 4
    assert many.run["counts"]["pieces"] == len(one.pieces)
    # read back on demand: the same pieces in the same order
    assert many.attributes.equals(one.attributes)
    assert shapely.equals_exact(
        many.pieces.geometry.to_numpy(), one.pieces.geometry.to_numpy(), tolerance=0
    ).all()


def test_tiled_sums_are_unions_across_tile_edges(random_checks):
    """Every figure equals a union made independently of the tiles, and the untiled one bit for bit."""
    project, one, many = random_checks
    pieces = one.pieces
    assert many.summary.equals(one.summary)
    assert many.units.equals(one.units)
    assert many.by_unit.equals(one.by_unit)
    assert many.totals == one.totals
    for rid, area in zip(many.summary["rule_id"], many.summary["area_m2"], strict=True):
        mine = pieces.geometry[pieces["rule_id"] == rid].to_numpy()
        assert area == pytest.approx(
            shapely.union_all(mine).area if len(mine) else 0.0, rel=1e-9, abs=1e-6
        )
    total = shapely.union_all(pieces.geometry.to_numpy()).area
    assert many.totals["all"] == pytest.approx(total, rel=1e-9)
    # the rule whose plan overlaps itself crosses tile edges: its sum is not a sum
    s = pieces[pieces["rule_id"] == "S"]
    assert s["area_m2"].sum() > many.summary.set_index("rule_id").loc["S", "area_m2"]


def test_a_tiled_run_writes_the_same_files(random_checks, tmp_path):
    _, one, many = random_checks
    one.write(tmp_path / "one", with_map=False)
    many.write(tmp_path / "many", with_map=False)
    for name in ("conflicts.gpkg", "summary.csv", "by_unit.csv", "units.csv"):
        assert _digest(tmp_path / "one" / name) == _digest(tmp_path / "many" / name)


@pytest.mark.parametrize(
    ("given", "what"),
    [(False, "the features of the tiles"), (True, "the pieces of a tile")],
)
def test_a_staging_folder_that_cannot_take_the_pieces_is_an_output_error(
    tmp_path, monkeypatch, given, what
):
    """No room for the staged features or pieces: an OutputError (exit 2) naming the folder and TMPDIR.

    Layers read by the check stage each tile's features first; layers given in
    memory stay there, and the pieces are the first thing staged.
    """
    import tempfile

    from helpers import DEMO

    from multiplan.errors import OutputError
    from multiplan.project import read_project

    project = read_project(DEMO)
    layers = multiplan.read_layers(project) if given else None
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("", encoding="utf-8")
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))
    with pytest.raises(OutputError) as err:
        multiplan.check(project, layers=layers, only=["ECO-01"], tile_size=3000)
    assert f"cannot stage {what}" in str(err.value)
    assert str(blocked) in str(err.value)
    assert "TMPDIR" in str(err.value)


def test_a_full_disk_while_a_tile_is_staged_stops_the_check_with_an_output_error(
    random_checks, monkeypatch
):
    """The third tile's file cannot be made: the check raises an OutputError (exit 2).

    No tile is staged after it, and the error is not lost among the tiles.
    """
    import errno

    import pyarrow as pa

    from multiplan.errors import OutputError

    project, _, _ = random_checks
    layers = multiplan.read_layers(project)
    real = pa.ipc.new_file
    made = []

    def full(sink, schema):
        made.append(1)
        if len(made) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(sink, schema)

    monkeypatch.setattr(pa.ipc, "new_file", full)
    with pytest.raises(OutputError, match="no space left on device"):
        multiplan.check(project, layers=layers, tile_size=700, workers=2)
    assert len(made) == 3


def test_a_full_disk_while_the_pieces_are_put_in_buckets_is_an_output_error(
    tmp_path, monkeypatch
):
    """The staged pieces stay as they were; once there is room, they read back whole."""
    import errno

    import pyarrow as pa

    from multiplan.errors import OutputError

    rng = np.random.default_rng(3)
    geoms = _shapes(3_000, rng)
    store = PieceStore(bucket_rows=500)
    store.add(geoms[:1_000])
    store.add(geoms[1_000:])
    store.seal(np.arange(3_000))
    real = pa.ipc.new_file
    made = []

    def full(sink, schema):
        if made:  # the second bucket finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        made.append(1)
        return real(sink, schema)

    monkeypatch.setattr(pa.ipc, "new_file", full)
    with pytest.raises(OutputError, match="no space left on device"):
        store.wkb(0, 10)
    assert sorted(p.name for p in store.folder.glob("tile-*")) == [
        "tile-000000.arrow",
        "tile-000001.arrow",
    ]
    monkeypatch.setattr(pa.ipc, "new_file", real)
    assert list(store.wkb(0, 3_000)) == list(shapely.to_wkb(geoms))
    store.close()


def test_the_folders_of_killed_runs_are_swept_and_no_others(tmp_path):
    """A folder of this host whose process is gone goes; live, foreign and other ones stay."""
    from multiplan.scratch import _host, sweep

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = _host()
        names = {
            "dead": f"multiplan-pieces-{host}-{gone.stdout.strip()}-k2j_x9",
            "live": f"multiplan-pieces-{host}-{live.pid}-ab12cd",
            "mine": f"multiplan-pieces-{host}-{os.getpid()}-zz",
            "other host": f"multiplan-pieces-{host}x-{gone.stdout.strip()}-k2j_x9",
            "other kind": f"multiplan-ahead-{host}-{gone.stdout.strip()}-k2j_x9",
            "old name": "multiplan-pieces-k2j_x9",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "tile-000000.arrow").write_bytes(b"staged")
        assert sweep("pieces", tmp_path) == 1
        left = {k for k, n in names.items() if (tmp_path / n).exists()}
        assert left == {"live", "mine", "other host", "other kind", "old name"}
    finally:
        live.kill()
        live.wait()


def test_without_the_border_pieces_tiles_would_count_land_twice(
    random_checks, monkeypatch
):
    """The border features matter: claiming no piece can reach another tile breaks the sums."""
    project, one, _ = random_checks
    real = tilecheck.border_features

    def nowhere(*args, **kwargs):
        return {k: np.zeros_like(v) for k, v in real(*args, **kwargs).items()}

    monkeypatch.setattr("multiplan.rulecheck.border_features", nowhere)
    wrong = multiplan.check(
        project, layers=multiplan.read_layers(project), tile_size=700, workers=2
    )
    assert wrong.attributes.equals(one.attributes)  # the pieces are right...
    assert wrong.totals["all"] > one.totals["all"] + 1.0  # ...their union is not


def _glibc() -> bool:
    import platform

    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's")
def test_release_gives_freed_pages_back_on_glibc():
    from multiplan.memory import release

    # 200 MB of chunks too big for Python's own allocator, freed under a chunk
    # still in use: glibc keeps those pages until they are trimmed
    chunks = [bytes(1000) + bytes([k % 256]) for k in range(200_000)]
    pin = bytes(1000) + b"pin"
    del chunks
    before = _rss_mb()
    assert release() is True
    assert _rss_mb() < before - 100
    assert pin.endswith(b"pin")


def test_large_districts_get_tiles_of_about_fifty_thousand_features():
    from multiplan.tiles import ONE_TILE_FEATURES, default_tile_size

    assert default_tile_size(ONE_TILE_FEATURES, (0, 0, 40_000, 40_000)) == 0.0
    # 400 000 parcels over 44.8 km: 3 × 3 tiles of about 44 000 (not 2 × 2 of 100 000)
    size = default_tile_size(400_000, (0, 0, 44_800, 44_800))
    assert math.ceil(44_800 / size) == 3
