"""Tiles (SPEC §12): the work of a check cut by where each A feature lies, and dask.

Every rule's A features are assigned to square tiles by their representative
point (``point_on_surface``); a tile computes the pieces of its A features
against the B features near them. Each piece belongs to one A feature, so every
piece is computed exactly once, and the pieces, sorted as SPEC §6 orders them,
are the same whatever the tiling. ``--cluster`` runs the tiles as tasks on a dask
distributed cluster (the ``multiplan[dask]`` extra); its workers read the inputs
from the manifest's paths themselves.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from multiplan import geometry
from multiplan.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from multiplan.layers import Layers

logger = logging.getLogger(__name__)

ONE_TILE_FEATURES = 250_000
"""Up to this many A features, the default is one tile (tiles repeat the B index
queries: on 100 000 parcels, four tiles cost 1.2 s more than one)."""
FEATURES_PER_TILE = 50_000
"""Beyond that, the default tile holds about this many A features: the memory a
tile's work needs is then that of 50 000 features, whatever the district (on
400 000 parcels, nine tiles took no longer than four)."""


class ClusterError(InputError):
    """A dask cluster cannot be reached or started, or dask is not installed."""


_ROWS = 1_000_000
"""A tile's key is its column times this plus its row (:meth:`TileGrid.keys`, :meth:`TileGrid.box`)."""


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of ``size`` metres anchored at ``(x0, y0)``; ``size == 0`` is one tile."""

    x0: float = 0.0
    y0: float = 0.0
    size: float = 0.0

    def keys(self, points: np.ndarray) -> np.ndarray:
        """Return the tile of each point (x, y rows) as one integer key (column-major, stable).

        A point without coordinates (an empty geometry's) is in no tile: key -1.
        """
        if self.size <= 0 or not len(points):
            return np.zeros(len(points), dtype=np.int64)
        xy = np.asarray(points, dtype=np.float64)
        missing = np.asarray(np.isnan(xy).any(axis=1), dtype=bool)
        xy = np.where(missing[:, None], 0.0, xy)
        col = np.floor((xy[:, 0] - self.x0) / self.size).astype(np.int64)
        row = np.floor((xy[:, 1] - self.y0) / self.size).astype(np.int64)
        return np.where(missing, -1, col * _ROWS + row)

    def box(self, key: int, pad: float = 0.0) -> tuple[float, float, float, float]:
        """Return the square of tile ``key`` (as :meth:`keys` numbers them), grown by ``pad``.

        Examples
        --------
        >>> grid = TileGrid(100.0, 200.0, 50.0)
        >>> key = int(grid.keys(np.array([[180.0, 210.0]]))[0])
        >>> grid.box(key)
        (150.0, 200.0, 200.0, 250.0)
        """
        col, row = divmod(int(key), _ROWS)
        x = self.x0 + col * self.size
        y = self.y0 + row * self.size
        return (x - pad, y - pad, x + self.size + pad, y + self.size + pad)


def representative_points(geoms: np.ndarray) -> np.ndarray:
    """Return each geometry's representative point (inside it) as x, y rows; NaN for empty or missing.

    Coordinates, not point objects: 16 bytes a feature instead of about 150.
    """
    geoms = np.asarray(geoms, dtype=object)
    xy = np.full((len(geoms), 2), np.nan)
    # the point objects (about 150 bytes each), a block at a time
    block = geometry.COPY_BLOCK
    for start in range(0, len(geoms), block):
        pts = shapely.point_on_surface(geoms[start : start + block])
        live = ~(shapely.is_empty(pts) | shapely.is_missing(pts))
        xy[start : start + len(pts)][live] = shapely.get_coordinates(pts[live])
    return xy


def plan(
    layers: Layers,
    a_layers: list[str],
    tile_size: float | None,
    keys: Callable[[str, TileGrid], np.ndarray] | None = None,
) -> tuple[TileGrid, list[int]]:
    """Return the tile grid and the keys of the tiles that hold A features.

    ``tile_size`` ``None`` chooses a size from the data (one tile up to
    :data:`ONE_TILE_FEATURES` A features, else about :data:`FEATURES_PER_TILE`
    a tile); ``0`` makes one tile. The grid starts at the A features' lower
    left corner. ``keys(layer, grid)`` gives a layer's :func:`tile_keys` when
    the caller keeps them (made here otherwise).
    """
    names = [n for n in dict.fromkeys(a_layers) if n in layers and len(layers[n])]
    geoms = [np.asarray(layers[n].geometry.array, dtype=object) for n in names]
    if not geoms:
        return TileGrid(), [0]
    bounds = shapely.total_bounds(np.concatenate(geoms))
    if np.isnan(bounds).any():  # every A feature empty
        return TileGrid(), [0]
    if tile_size is None:  # decided from counts and bounds, before any key is made
        size = default_tile_size(sum(len(g) for g in geoms), tuple(bounds))
    else:
        size = float(tile_size)
    if size <= 0:
        return TileGrid(), [0]
    grid = TileGrid(math.floor(bounds[0]), math.floor(bounds[1]), size)
    found = np.concatenate(
        [keys(n, grid) for n in names] if keys else [tile_keys(g, grid) for g in geoms]
    )
    found = np.unique(found[found >= 0])
    if not len(found):
        return TileGrid(), [0]
    return grid, found.tolist()


def tile_keys(geoms: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Return the tile of each geometry's representative point (-1 for empty or missing).

    A geometry whose bounding box lies in one tile has its representative point
    (which is inside it) in that tile: only the geometries whose boxes cross a
    tile's edge have their points made (:func:`representative_points`).

    Examples
    --------
    >>> grid = TileGrid(0.0, 0.0, 10.0)
    >>> l_shape = shapely.Polygon([(0, 0), (20, 0), (20, 2), (2, 2), (2, 20), (0, 20)])
    >>> tile_keys(np.array([shapely.box(1, 1, 2, 2), l_shape, None]), grid).tolist()
    [0, 1, -1]
    """
    geoms = np.asarray(geoms, dtype=object)
    if grid.size <= 0:
        return np.zeros(len(geoms), dtype=np.int64)
    bounds = shapely.bounds(geoms)  # NaN for empty or missing: key -1 at both corners
    out = grid.keys(bounds[:, :2])
    cross = np.flatnonzero(out != grid.keys(bounds[:, 2:]))
    out[cross] = grid.keys(representative_points(geoms[cross]))
    return out


def default_tile_size(n: int, bounds: tuple[float, float, float, float]) -> float:
    """Return a tile size for ``n`` A features over ``bounds``: one tile when they are few.

    Examples
    --------
    >>> default_tile_size(100_000, (0, 0, 20_000, 20_000))
    0.0
    >>> default_tile_size(1_600_000, (0, 0, 90_000, 90_000))
    15000.0
    """
    if n <= ONE_TILE_FEATURES:
        return 0.0
    side = max(bounds[2] - bounds[0], bounds[3] - bounds[1], 1.0)
    per_side = math.ceil(math.sqrt(n / FEATURES_PER_TILE))
    return float(math.ceil(side / per_side))


# --------------------------------------------------------------------------- dask


def check_address(address: str) -> None:
    """Check a ``--cluster`` value before any work: ``local`` or a scheduler's address.

    Raises
    ------
    ClusterError
        For anything else.

    Examples
    --------
    >>> check_address("tcp://10.0.0.5:8786")
    """
    if address != "local" and not address.startswith(("tcp://", "tls://", "ucx://")):
        raise ClusterError(
            f"--cluster must be local or a scheduler address such as tcp://HOST:8786, not {address!r}"
        )


def dask_client(address: str, workers: int) -> contextlib.AbstractContextManager[Any]:
    """Return a context that yields a dask ``Client``: a LocalCluster for ``local``.

    Inside another such context for the same address, the open client is
    yielded again (one LocalCluster serves a whole command).

    Raises
    ------
    ClusterError
        When dask distributed is not installed, or the scheduler cannot be reached.
    """
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ClusterError(
            "--cluster needs dask distributed, which is not installed",
            hint='Install it with pip install "multiplan[dask]"',
        ) from exc

    @contextlib.contextmanager
    def connect() -> Iterator[Any]:
        if address in _OPEN:
            yield _OPEN[address]
            return
        with _opened(address, workers) as client:
            _OPEN[address] = client
            try:
                yield client
            finally:
                del _OPEN[address]

    return connect()


_OPEN: dict[str, Any] = {}
"""The clients open in this process, by address."""


@contextlib.contextmanager
def _opened(address: str, workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if address == "local":
        with (
            LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # a worker busy in GEOS misses heartbeats; it is not an error to show
                silence_logs=logging.CRITICAL,
            ) as cluster,
            Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            yield client
        return
    check_address(address)
    try:
        client = Client(address, timeout="10s")  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the dask scheduler at {address} ({exc})",
            hint="Check that the scheduler runs and that this machine may connect to it",
        ) from exc
    with client:
        yield client


_WORKER_CACHE: dict[tuple[Any, ...], Any] = {}
"""Per worker process: the project, layers and context of the last check it ran."""


def worker_cache() -> dict[tuple[Any, ...], Any]:
    """Return the worker process's cache (one check's inputs at a time)."""
    return _WORKER_CACHE


def cache_key(manifest: str) -> tuple[Any, ...]:
    """Return a key that changes when the manifest changes (path, size and time)."""
    path = Path(manifest).resolve()
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def same_inputs(expected: tuple[tuple[str, str], ...]) -> None:
    """Refuse a worker's copy of an input that is not the client's (by SHA-256).

    Raises
    ------
    InputError
        Naming the first file the worker lacks or holds another copy of.
    """
    from multiplan.record import digests

    for path, digest in expected:
        f = Path(path)
        if not f.is_file():
            raise InputError("the worker has no such file", path=f)
        if digests([f])[0][1] != digest:
            raise InputError(
                "the worker's copy is not the client's (their SHA-256 differ)",
                path=f,
            )
