"""Faces noded by tiles on several processes: the same faces as one pass, for any tiling."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import shapely
from helpers import DEMO

import multiplan
from multiplan import facetiles
from multiplan.facetiles import Workers, node_in_tiles, serve, tile_faces_wkb
from multiplan.noding import face_lines, node_faces, reading_order
from multiplan.onemap import fusion_inputs


def _messy(seed: int, n: int = 1500) -> np.ndarray:
    """Overlapping discs, copies moved by 10 µm and turned a little, grid squares."""
    rng = np.random.default_rng(seed)
    centres = rng.random((n, 2)) * 3000
    discs = shapely.buffer(
        shapely.points(centres),
        rng.random(n) * 60 + 5,
        quad_segs=int(rng.integers(1, 6)),
    )
    copies = np.array(
        [
            shapely.affinity.rotate(
                shapely.affinity.translate(d, *rng.normal(0, 1e-5, 2)),
                rng.normal(0, 1e-6),
            )
            for d in discs[: n // 5]
        ],
        dtype=object,
    )
    corner = np.floor(centres[: n // 3] / 50) * 50
    squares = shapely.box(
        corner[:, 0], corner[:, 1], corner[:, 0] + 50, corner[:, 1] + 50
    )
    return np.concatenate([discs, copies, squares])


def _keys(faces: np.ndarray) -> list[bytes]:
    return sorted(shapely.to_wkb(faces))


@pytest.mark.parametrize("seed", [1, 2])
def test_tiles_give_the_faces_of_one_pass_coordinate_for_coordinate(seed):
    lines = shapely.boundary(_messy(seed))
    one = node_in_tiles(lines, tiles=1)
    for tiles in (2, 5, 12):
        assert _keys(node_in_tiles(lines, tiles=tiles)) == _keys(one), tiles
    assert _keys(node_in_tiles(lines, tiles=5, workers=2)) == _keys(one)


def test_tiled_faces_are_a_coverage_of_the_union():
    polys = _messy(3)
    faces = node_in_tiles(shapely.boundary(polys), tiles=7, workers=2)
    assert shapely.coverage_is_valid(faces)
    inside = np.zeros(len(faces), dtype=bool)
    inside[
        shapely.STRtree(polys).query(shapely.point_on_surface(faces), "within")[0]
    ] = True
    union = shapely.union_all(polys).area
    assert abs(shapely.area(faces[inside]).sum() - union) < 1e-6 * union
    # faces never overlap: their areas add up to the area of their union
    assert abs(shapely.area(faces).sum() - shapely.union_all(faces).area) < 1e-6 * union


def test_a_face_enclosed_by_polygons_beyond_the_tile_is_found():
    """A gap enclosed by a ring of discs, none of which covers it, split by a tile edge."""
    ring = [
        shapely.Point(np.cos(a) * 100, np.sin(a) * 100).buffer(30)
        for a in np.linspace(0, 2 * np.pi, 13)[:-1]
    ]
    lines = shapely.boundary(np.array(ring, dtype=object))
    one = node_in_tiles(lines, tiles=1)
    assert shapely.area(one).max() > 10_000  # the gap in the middle is a face
    for tiles in (2, 4, 9):
        assert _keys(node_in_tiles(lines, tiles=tiles)) == _keys(one), tiles


def test_demo_faces_are_the_same_for_every_tiling():
    project = multiplan.read_project(DEMO)
    layers = multiplan.read_layers(project, [*project.fusion.layers, project.boundary])
    _, polygons, boundary = fusion_inputs(project, layers)
    one = node_faces(polygons, boundary, tiles=1)
    many = node_faces(polygons, boundary, tiles=6, workers=2)
    # in reading order, as fuse and diff write them
    a, b = reading_order(one.points), reading_order(many.points)
    assert (
        shapely.to_wkb(one.geoms[a]).tolist() == shapely.to_wkb(many.geoms[b]).tolist()
    )
    assert (
        shapely.to_wkb(one.points[a]).tolist()
        == shapely.to_wkb(many.points[b]).tolist()
    )
    assert (one.doubtful[a] == many.doubtful[b]).all()
    lines = face_lines(polygons, boundary)[1]
    assert len(facetiles.tile_boxes(tuple(shapely.total_bounds(lines)), len(lines))) > 1


def test_tiles_come_from_the_data_not_the_workers():
    bounds = (0.0, 0.0, 3000.0, 1000.0)
    assert facetiles.tile_boxes(bounds, 1000) == [bounds]
    boxes = facetiles.tile_boxes(bounds, 40_000)
    assert len(boxes) >= 5
    # the boxes tile the bounds
    assert shapely.union_all(shapely.box(*np.array(boxes).T)).equals(
        shapely.box(*bounds)
    )


def test_a_script_without_a_main_guard_can_use_the_workers(tmp_path):
    """Workers never import the caller's script (multiprocessing's spawn would)."""
    script = tmp_path / "plain.py"
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np, shapely
            from multiplan.facetiles import node_in_tiles
            boxes = [shapely.box(x, y, x + 1.5, y + 1.5) for x in range(20) for y in range(20)]
            faces = node_in_tiles(shapely.boundary(np.array(boxes)), tiles=4, workers=2)
            print("faces", len(faces))
            """
        )
    )
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("faces") == 1


def test_a_worker_raises_errors_and_warnings_in_the_caller():
    pool = Workers(1)
    try:
        bad = pool.submit(
            tile_faces_wkb, np.array([b"not wkb"], dtype=object), (0, 0, 1, 1)
        )
        with pytest.raises(shapely.errors.GEOSException):
            bad.result()
        good = pool.submit(
            tile_faces_wkb,
            shapely.to_wkb(shapely.boundary(np.array([shapely.box(0, 0, 1, 1)]))),
            (-1.0, -1.0, 2.0, 2.0),
        )
        faces, near = good.result()
        assert shapely.area(shapely.from_wkb(faces)).tolist() == [1.0]
    finally:
        pool.shutdown()


def test_a_worker_that_dies_is_an_error_not_a_hang():
    pool = Workers(1)
    try:
        pool.procs[0].kill()
        pool.procs[0].wait()
        future = pool.submit(tile_faces_wkb, np.zeros(0, dtype=object), (0, 0, 1, 1))
        with pytest.raises(RuntimeError, match="ended unexpectedly"):
            future.result(timeout=60)
    finally:
        pool.shutdown()


def test_serve_answers_each_call_and_names_unknown_ones():
    calls = io.BytesIO()
    for name, args in [
        (
            "tile_faces_wkb",
            (
                shapely.to_wkb(shapely.boundary(np.array([shapely.box(0, 0, 2, 1)]))),
                (-1.0, -1.0, 3.0, 2.0),
            ),
        ),
        ("os.system", ("true",)),
    ]:
        data = pickle.dumps((name, args))
        calls.write(len(data).to_bytes(8, "little") + data)
    calls.seek(0)
    out = io.BytesIO()
    serve(calls, out)
    out.seek(0)
    first = pickle.loads(facetiles._receive(out))
    second = pickle.loads(facetiles._receive(out))
    assert first[0] == "ok"
    assert shapely.area(shapely.from_wkb(first[1][0])).tolist() == [2.0]
    assert second[0] == "error"
    assert isinstance(second[1], KeyError)


def test_stopping_workers_cancels_queued_tiles_and_ends_every_process():
    """As when the conflict check fails while fuse's tiles are noding: nothing is left running."""
    pool = Workers(1)
    lines = shapely.to_wkb(shapely.boundary(_messy(4, n=3000)))
    first = pool.submit(tile_faces_wkb, lines, (0.0, 0.0, 3000.0, 3000.0))
    second = pool.submit(tile_faces_wkb, lines, (0.0, 0.0, 3000.0, 3000.0))
    pool.shutdown()
    assert second.cancelled()
    assert first.done()
    assert all(p.poll() is not None for p in pool.procs)
    assert not any(t.is_alive() for t in pool.threads)


def test_a_worker_sends_its_warnings_back_and_the_caller_raises_them(monkeypatch):
    def warns(x):
        import warnings

        warnings.warn("invalid value encountered", RuntimeWarning, stacklevel=1)
        return x + 1

    monkeypatch.setitem(facetiles._TASKS, "warns", warns)
    data = pickle.dumps(("warns", (41,)))
    out = io.BytesIO()
    serve(io.BytesIO(len(data).to_bytes(8, "little") + data), out)
    out.seek(0)
    status, value, caught = pickle.loads(facetiles._receive(out))
    assert (status, value) == ("ok", 42)
    assert caught == [("invalid value encountered", RuntimeWarning)]
    # what a worker sent is raised in the thread that collects the results
    pool = Workers(1)
    try:
        pool.caught.extend(caught)
        with pytest.warns(RuntimeWarning, match="invalid value"):
            pool.rewarn()
        assert pool.caught == []
    finally:
        pool.shutdown()
