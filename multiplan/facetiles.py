"""The faces of many polygon boundaries, noded tile by tile on several processes.

One pass nodes every boundary in one GEOS call (``union_all``) and builds the faces
with ``polygonize``, which holds Python's lock: threads cannot share that work. Here
the boundaries are cut into tiles that run in worker processes or as dask tasks, and
the faces are the same as one pass gives, coordinate for coordinate:

1. A tile nodes every boundary near it, whole, with the tile's outline. A face
   that lies inside the tile, clear of its outline, is exact: every boundary that
   can shape it is there, and snap-rounding to a fixed grid (:data:`GRID_M`)
   moves a segment only by what lies within a grid cell of it, so GEOS computes
   the same edges as one pass does.
2. The other faces of the tile (cut by its outline, or close to it) show where to
   look: the boundaries near them, whole, are noded once more, and the faces of
   that pass that no tile has made exactly are the faces across tile edges.

Faces are normalised (exterior counter-clockwise, each ring from its smallest
vertex), so one pass and any tiling give the same coordinates in the same order.
The tiling is chosen from the number of boundaries, never from the number of
workers, so ``--workers`` and ``--cluster`` cannot change a face. This module
imports only numpy and shapely: it is what a worker process loads.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import pickle
import queue
import subprocess
import sys
import threading
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import shapely

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

LINES_PER_TILE = 8_000
"""Tiles hold about this many boundaries; fewer in all is one pass (at 60 000
boundaries, nine tiles take 10.6 s here and 6.1 s on two processes; one pass 12.0 s)."""

GRID_M = 1e-4
"""Boundaries are noded by snap-rounding to a grid of a tenth of a millimetre.

Floating-point noding falls back to snapping when boundaries nearly coincide,
and does so for the whole call: two calls over different boundaries would not
agree. Snap-rounding to a fixed grid is decided by what lies within a cell of
each segment, so every tile agrees with one pass (on the demo district, the
total area moves by 2e-10 of itself)."""

MARGIN_M = 10 * GRID_M
"""A tile nodes every boundary within this distance of it: all that can move its faces' edges."""

NEAR_M = 5 * GRID_M
"""How near a face of the second pass must be to a tile's exact face to be that face."""

Box = tuple[float, float, float, float]


def node_lines(lines: np.ndarray) -> np.ndarray:
    """Return the faces (with area) of the noded lines, normalised.

    Examples
    --------
    >>> faces = node_lines(shapely.boundary(np.array([shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3)])))
    >>> sorted(shapely.area(faces).tolist())
    [1.0, 3.0, 3.0]
    """
    if not len(lines):
        return np.zeros(0, dtype=object)
    noded = shapely.union_all(lines, grid_size=GRID_M)
    polys = np.asarray(
        shapely.get_parts(shapely.polygonize(shapely.get_parts(noded))), dtype=object
    )
    polys = polys[shapely.area(polys) > 0]
    return np.asarray(shapely.orient_polygons(shapely.normalize(polys)), dtype=object)


def tile_faces(lines: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Node one tile's boundaries; return its exact faces and the boundaries a second pass needs.

    ``lines`` are every boundary within :data:`MARGIN_M` of ``box``; the box's
    own outline is noded with them, so that every place in the tile lies in a
    face. The faces at least the margin inside the box are exact; the second
    result holds the positions (in ``lines``) of the boundaries near the
    other faces of the tile.
    """
    outline = np.array([shapely.boundary(shapely.box(*box))], dtype=object)
    polys = node_lines(np.concatenate([lines, outline]))
    b = shapely.bounds(polys).reshape(-1, 4)
    lo, hi = np.array(box[:2]), np.array(box[2:])
    exact = ((b[:, :2] >= lo + MARGIN_M) & (b[:, 2:] <= hi - MARGIN_M)).all(axis=1)
    inside = ((b[:, :2] >= lo - MARGIN_M) & (b[:, 2:] <= hi + MARGIN_M)).all(axis=1)
    rest = inside & ~exact
    if not rest.any():
        return polys[exact], np.zeros(0, dtype=np.intp)
    near = shapely.STRtree(lines).query(
        polys[rest], predicate="dwithin", distance=MARGIN_M
    )[1]
    return polys[exact], np.unique(near).astype(np.intp)


def tile_faces_wkb(lines: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tile_faces` on and to WKB, which crosses a pipe faster than geometries."""
    faces, near = tile_faces(shapely.from_wkb(lines), box)
    return shapely.to_wkb(faces), near


def tile_boxes(bounds: Box, n_lines: int, tiles: int | None = None) -> list[Box]:
    """Return the tiles' boxes: about :data:`LINES_PER_TILE` boundaries each, or ``tiles`` of them.

    Examples
    --------
    >>> len(tile_boxes((0, 0, 100, 100), 5_000)), len(tile_boxes((0, 0, 100, 100), 70_000))
    (1, 9)
    """
    want = math.ceil(n_lines / LINES_PER_TILE) if tiles is None else max(1, tiles)
    if want <= 1:
        return [bounds]
    w, h = max(bounds[2] - bounds[0], 1e-9), max(bounds[3] - bounds[1], 1e-9)
    nx = max(1, round(math.sqrt(want * w / h)))
    ny = max(1, math.ceil(want / nx))
    xs = np.linspace(bounds[0], bounds[2], nx + 1)
    ys = np.linspace(bounds[1], bounds[3], ny + 1)
    return [
        (float(xs[i]), float(ys[j]), float(xs[i + 1]), float(ys[j + 1]))
        for j in range(ny)
        for i in range(nx)
    ]


@dataclass
class FaceNoding:
    """Faces being noded: the tiles' work started, :meth:`faces` to wait for them.

    Use it as a context manager so that worker processes stop even if the caller
    fails before it asks for the faces.
    """

    lines: np.ndarray
    boxes: list[Box]
    picks: list[np.ndarray]
    futures: list[Any]
    pool: Workers | None = None

    def faces(self) -> np.ndarray:
        """Wait for the tiles and return every face once, normalised (see the module)."""
        try:
            done = [f.result() for f in self.futures]
            if self.pool is not None:
                self.pool.rewarn()
        finally:
            self.close()
        if len(self.boxes) == 1:
            return np.asarray(done[0], dtype=object)
        exact = np.concatenate([_geoms(d[0]) for d in done])
        near = np.unique(
            np.concatenate(
                [pick[d[1]] for pick, d in zip(self.picks, done, strict=True)]
            )
        )
        second = node_lines(self.lines[near])
        if not len(second):
            return exact
        pts = shapely.point_on_surface(second)
        clear = shapely.distance(pts, shapely.boundary(second))
        made = np.zeros(len(second), dtype=bool)
        sure = clear > 2 * NEAR_M
        tree = shapely.STRtree(exact)
        made[
            np.flatnonzero(sure)[
                tree.query(pts[sure], predicate="dwithin", distance=NEAR_M)[0]
            ]
        ] = True
        doubt = np.flatnonzero(~sure)
        if len(doubt):  # a point this close to its edge: compare areas instead
            di, ej = tree.query(second[doubt], predicate="intersects")
            shared = np.bincount(
                di,
                weights=shapely.area(
                    shapely.intersection(second[doubt][di], exact[ej])
                ),
                minlength=len(doubt),
            )
            made[doubt] = shared > 0.5 * shapely.area(second[doubt])
        return np.concatenate([exact, second[~made]])

    def close(self) -> None:
        """Stop the worker processes (unstarted tiles are cancelled)."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def __enter__(self) -> FaceNoding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_noding(
    lines: np.ndarray,
    *,
    workers: int = 1,
    client: Any = None,
    tiles: int | None = None,
) -> FaceNoding:
    """Start noding ``lines`` in tiles: here, on ``workers`` processes, or on a dask ``client``.

    The tiles come from the number of lines (or ``tiles``), never from
    ``workers``; one tile is one pass, here.
    """
    lines = np.asarray(lines, dtype=object)
    if not len(lines):
        return FaceNoding(lines, [(0.0, 0.0, 0.0, 0.0)], [], [_Lazy(node_lines, lines)])
    boxes = tile_boxes(tuple(shapely.total_bounds(lines)), len(lines), tiles)
    if len(boxes) == 1:  # one pass, here: nothing to share
        return FaceNoding(lines, boxes, [], [_Lazy(node_lines, lines)])
    tree = shapely.STRtree(lines)
    picks = [
        np.sort(tree.query(shapely.box(*b), predicate="dwithin", distance=MARGIN_M))
        for b in boxes
    ]
    if client is None and workers <= 1:
        return FaceNoding(
            lines,
            boxes,
            picks,
            [_Lazy(tile_faces, lines[p], b) for p, b in zip(picks, boxes, strict=True)],
        )
    # elsewhere: the tiles travel as WKB
    pool = None if client is not None else Workers(min(workers, len(boxes)))
    submit = (
        functools.partial(client.submit, pure=False) if pool is None else pool.submit
    )
    wkb = shapely.to_wkb(lines)
    futures = [
        submit(tile_faces_wkb, wkb[p], b) for p, b in zip(picks, boxes, strict=True)
    ]
    return FaceNoding(lines, boxes, picks, futures, pool)


def _geoms(values: np.ndarray) -> np.ndarray:
    """Return geometries, from WKB if a worker sent them so."""
    if len(values) and isinstance(values[0], bytes):
        return np.asarray(shapely.from_wkb(values), dtype=object)
    return np.asarray(values, dtype=object)


class _Lazy:
    """A call made when its result is asked for (one process, no pool)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def result(self) -> Any:
        return self.fn(*self.args)


class Workers:
    """Worker processes (``python -m multiplan.facetiles``) that run this module's tile work.

    Calls and results go over each worker's pipes as pickles. Unlike
    multiprocessing's spawn and forkserver, a worker never imports the caller's
    main script, so a script without ``if __name__ == "__main__"`` can call
    multiplan; unlike fork, it never copies a process that runs threads.
    Warnings raised in a worker are kept and raised again by :meth:`rewarn`, in
    the thread that collects the results.
    """

    def __init__(self, n: int) -> None:
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parent.parent)
        if here not in sys.path:  # a source tree: the workers load this same copy
            env["PYTHONPATH"] = os.pathsep.join(
                [here, *filter(None, [env.get("PYTHONPATH")])]
            )
        self.broken: RuntimeError | None = None
        self.caught: list[tuple[str, type[Warning]]] = []
        self.tasks: queue.SimpleQueue[tuple[Future[Any], bytes] | None] = (
            queue.SimpleQueue()
        )
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "multiplan.facetiles"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            for _ in range(max(1, n))
        ]
        self.threads = [
            threading.Thread(target=self._feed, args=(p,), daemon=True)
            for p in self.procs
        ]
        for t in self.threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``fn(*args)`` (a function of this module) for the next free worker."""
        future: Future[Any] = Future()
        self.tasks.put((future, pickle.dumps((fn.__name__, args), protocol=5)))
        return future

    def _feed(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        while (task := self.tasks.get()) is not None:
            future, call = task
            if not future.set_running_or_notify_cancel():
                continue
            if self.broken is not None:
                future.set_exception(self.broken)
                continue
            try:
                _send(proc.stdin, call)
                status, value, caught = pickle.loads(_receive(proc.stdout))
            except (OSError, EOFError):
                # one worker gone: every call left fails, none waits for ever
                self.broken = RuntimeError(
                    f"a noding process ended unexpectedly (exit code {proc.wait()})"
                )
                future.set_exception(self.broken)
                continue
            self.caught.extend(caught)
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)

    def rewarn(self) -> None:
        """Raise here, in the caller's thread, the warnings the workers raised so far."""
        caught, self.caught = self.caught, []
        for message, category in caught:
            warnings.warn(message, category, stacklevel=2)

    def shutdown(self) -> None:
        """Cancel what has not started and stop the workers (one still busy is killed)."""
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task[0].cancel()
        for _ in self.threads:
            self.tasks.put(None)
        for proc in self.procs:
            assert proc.stdin is not None
            with contextlib.suppress(OSError):  # a worker that died: a broken pipe
                proc.stdin.close()
        for proc in self.procs:
            try:  # an idle worker ends when its input does
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:  # busy with a tile no one will read
                proc.kill()
                proc.wait()
        for t in self.threads:
            t.join()
        for proc in self.procs:
            assert proc.stdout is not None
            proc.stdout.close()


def _send(pipe: IO[bytes], data: bytes) -> None:
    pipe.write(len(data).to_bytes(8, "little"))
    pipe.write(data)
    pipe.flush()


def _receive(pipe: IO[bytes]) -> bytes:
    head = pipe.read(8)
    if len(head) < 8:
        raise EOFError
    n = int.from_bytes(head, "little")
    data = pipe.read(n)
    if len(data) < n:
        raise EOFError
    return data


_TASKS: dict[str, Callable[..., Any]] = {"tile_faces_wkb": tile_faces_wkb}
"""What a worker may be asked to run, by name."""


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """Run calls from ``inp`` and write their results to ``out`` until ``inp`` ends (a worker's loop)."""
    while True:
        try:
            name, args = pickle.loads(_receive(inp))
        except EOFError:
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                reply: tuple[str, Any, list[Any]] = ("ok", _TASKS[name](*args), [])
            except Exception as exc:  # raised again in the caller
                reply = ("error", exc, [])
        reply[2].extend((str(w.message), w.category) for w in caught)
        try:
            data = pickle.dumps(reply, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            data = pickle.dumps(("error", RuntimeError(f"{name}: {exc}"), []))
        _send(out, data)


def node_in_tiles(
    lines: Sequence[Any] | np.ndarray,
    *,
    workers: int = 1,
    client: Any = None,
    tiles: int | None = None,
) -> np.ndarray:
    """Return the faces of ``lines`` (see the module): :func:`start_noding`, then wait.

    Examples
    --------
    >>> boxes = [shapely.box(x, 0, x + 1.5, 1) for x in range(6)]
    >>> one = node_in_tiles(shapely.boundary(np.array(boxes)), tiles=1)
    >>> three = node_in_tiles(shapely.boundary(np.array(boxes)), tiles=3)
    >>> sorted(shapely.to_wkt(one)) == sorted(shapely.to_wkt(three))
    True
    """
    with start_noding(
        np.asarray(lines, dtype=object), workers=workers, client=client, tiles=tiles
    ) as noding:
        return noding.faces()


if __name__ == "__main__":
    import signal

    # Ctrl-C is the caller's to handle: it stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # stray output must not mix with the results on stdout
    _out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, _out)
