"""Simulated moments of a ``LinearWorld``: streamed rows (numba) and direct Wishart draws.

Stream rule (DESIGN 3.2): rows are generated in blocks of ``block_rows``; block ``k`` draws its
sources from ``np.random.Generator(PCG64(SeedSequence(seed, spawn_key=(1, k))))``, first a
``(rows, n_gauss)`` array of standard normals (o, e, then b or xi), then a ``(rows, n_uniform)``
array of U[0, 1) (uniform noise only). Block moments are merged by :class:`MergeTree`, so the
result is bitwise identical whatever the chunking. The last block may be short.
"""

from __future__ import annotations

import numpy as np

from . import config
from ._blas import one_blas_thread
from ._jit import njit
from ._progress import Progress
from .errors import LamfastError
from .moments import MergeTree, Moments, _block_moments
from .world import LinearWorld


def block_generator(seed: int, block: int) -> np.random.Generator:
    """The random generator of block ``block`` of a world with seed ``seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(1, block))))


@njit
def _simulate_block(gen, Lt, n_gauss, n_uniform, rows, out_x):
    """Rows ``x = s L^T`` of one block; ``gen`` reproduces numpy's Generator stream exactly."""
    s = np.empty((rows, n_gauss + n_uniform))
    g = gen.standard_normal((rows, n_gauss))
    s[:, :n_gauss] = g
    if n_uniform > 0:
        u = gen.random((rows, n_uniform))
        s[:, n_gauss:] = u
    out_x[:, :] = np.dot(s, Lt)


def simulate_rows(world: LinearWorld, block: int, rows: int) -> np.ndarray:
    """Materialise the joint rows of one block (``rows`` x p), in the world's layout."""
    Lt = np.ascontiguousarray(world.source_map.T)
    out = np.empty((rows, Lt.shape[1]))
    _simulate_block(
        block_generator(world.seed, block), Lt, world.n_gauss, world.n_uniform, rows, out
    )
    return out


def _check_rows(rows) -> int:
    try:
        value = float(rows)
    except (TypeError, ValueError):
        raise LamfastError(f"rows must be a number, got {rows!r}") from None
    if not np.isfinite(value) or value < 2 or value != int(value):
        raise LamfastError(f"rows must be a whole number >= 2, got {rows!r}")
    return int(value)


def chunk_moments(
    world: LinearWorld, first: int, stop: int, rows: int, block_rows: int
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Moments ``(count, mean, co-moment)`` of blocks ``first..stop-1`` of a ``rows``-row stream.

    The unit of work shared by every executor (serial loop, threads, Dask tasks, checkpointed
    runs): each block's moments depend only on the world, the block index, ``rows`` and
    ``block_rows``, never on how blocks are grouped.
    """
    Lt = np.ascontiguousarray(world.source_map.T)
    p = Lt.shape[1]
    x = np.empty((block_rows, p))
    out = []
    with one_blas_thread():  # bitwise identical whatever the process's BLAS threads (_blas.py)
        for k in range(first, stop):
            m = min(block_rows, rows - k * block_rows)
            xb = x[:m]
            gen = block_generator(world.seed, k)
            _simulate_block(gen, Lt, world.n_gauss, world.n_uniform, m, xb)
            mean = np.empty(p)
            com = np.empty((p, p))
            _block_moments(xb, mean, com)
            out.append((float(m), mean, com))
    return out


def stream_moments(
    world: LinearWorld,
    rows,
    *,
    block_rows: int | None = None,
    chunk_blocks: int | None = None,
    progress: bool | None = None,
) -> Moments:
    """Moments of ``rows`` simulated rows, generated block by block and accumulated.

    Parameters
    ----------
    world : LinearWorld
    rows : int
        Number of rows (``1e8`` is accepted if whole).
    block_rows : int, optional
        Rows per block (default ``config.BLOCK_ROWS``). Part of the stream's definition.
    chunk_blocks : int, optional
        Blocks per unit of work; has no effect on the result.
    progress : bool, optional
        Progress bar on stderr (default: only on a terminal, after a few seconds).

    Examples
    --------
    >>> w = LinearWorld(do=8, da=2, seed=1)
    >>> m = stream_moments(w, 10_000, block_rows=1000)
    >>> m.count, m.source
    (10000.0, 'stream')
    """
    n = _check_rows(rows)
    block_rows = int(block_rows or config.BLOCK_ROWS)
    chunk_blocks = int(chunk_blocks or config.CHUNK_BLOCKS)
    if block_rows < 2 or chunk_blocks < 1:
        raise LamfastError("block_rows must be >= 2 and chunk_blocks >= 1")
    n_blocks = -(-n // block_rows)
    tree = MergeTree(world.blocks)
    with Progress(total=n, label="stream", enabled=progress) as bar:
        for first in range(0, n_blocks, chunk_blocks):
            done = 0
            for count, mean, com in chunk_moments(
                world, first, min(first + chunk_blocks, n_blocks), n, block_rows
            ):
                tree.push(count, mean, com)
                done += count
            bar.update(done)
    return tree.result("stream")


def wishart_moments(world: LinearWorld, rows, *, draw: int = 0) -> Moments:
    """Moments of ``rows`` Gaussian rows sampled directly, in O(r^3) whatever ``rows`` is.

    For Gaussian worlds the sources are N(0, I_r): the centred co-moment of ``n`` rows is
    Wishart(n - 1, I_r), independent of the mean, which is N(0, I_r / n). Both are drawn directly
    (Bartlett decomposition) and mapped through the source map ``L`` (DESIGN 3.1).
    ``draw`` selects an independent draw (``SeedSequence(seed, spawn_key=(2, draw))``).

    Examples
    --------
    >>> w = LinearWorld(do=8, da=2, seed=1)
    >>> wishart_moments(w, 1e12).count
    1000000000000.0
    """
    if not world.is_gaussian:
        raise LamfastError(
            "the wishart source needs Gaussian noise; use --source stream for uniform noise"
        )
    n = _check_rows(rows)
    r = world.n_gauss
    if n - 1 < r:
        raise LamfastError(f"wishart needs rows > {r} (the number of sources); use stream")
    rng = np.random.default_rng(np.random.SeedSequence(world.seed, spawn_key=(2, int(draw))))
    nu = float(n - 1)
    # Bartlett: W = T T^T, T lower triangular, T_ii^2 ~ chi2(nu - i), T_ij ~ N(0, 1) for i > j.
    T = np.tril(rng.standard_normal((r, r)), k=-1)
    T[np.diag_indices(r)] = np.sqrt(rng.chisquare(nu - np.arange(r)))
    mean_s = rng.standard_normal(r) / np.sqrt(n)
    L = world.source_map
    LT = L @ T
    com = LT @ LT.T
    com = 0.5 * (com + com.T)
    return Moments.from_comoment(n, L @ mean_s, com, world.blocks, "wishart")
