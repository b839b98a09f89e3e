"""Simulated moments of a ``LinearWorld``: streamed rows (numba) and direct Wishart draws.

Stream rule (docs/architecture.md, determinism): rows are generated in blocks of ``block_rows``;
block ``k`` draws its
sources from ``np.random.Generator(PCG64(SeedSequence(seed, spawn_key=(1, k))))``, first a
``(rows, n_gauss)`` array of standard normals (o, e, then b or xi), then a ``(rows, n_uniform)``
array of U[0, 1) (uniform noise only). Block moments are merged by :class:`MergeTree`, so the
result is bitwise identical whatever the chunking. The last block may be short.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

from .. import config
from .._blas import one_blas_thread, thread_pool, usable_cores
from .._jit import njit
from .._progress import Progress
from ..errors import LamfastError
from ..moments.core import MergeTree, Moments, block_moments
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
    if value > config.MAX_ROWS:
        # counts are float64: beyond 2^53 they are no longer exact (and no stream ends)
        raise LamfastError(f"rows must be at most {config.MAX_ROWS:.3g} (2^53), got {rows!r}")
    return int(value)


# ---------------------------------------------------------------------------- source-space path
# The fast path (docs/architecture.md, sources): every row is x = L s with independent sources s,
# so the
# co-moment of a block is S_x = L S_s L^T. A block therefore only draws its r sources, centres
# them and takes one SYRK of the (rows x r) source matrix (r^2 flops per row instead of the
# p^2 + 2 p r of materialising and multiplying joint rows); the map to the joint layout is done
# once per block with the structure of L (O(do^2 (da + db)) flops, not O(p^2 r)). It is mapped per
# block, not once at the very end, so that ``chunk_moments`` keeps returning joint-layout block
# moments: every executor (serial, threads, Dask, checkpoints) merges the same arrays with the
# same MergeTree and gets the same bits.
KERNELS = ("source", "rows")


@njit
def _centred_sources(gen, n_gauss, n_uniform, rows, S, out_mean):
    """Draw one block's sources into ``S[:rows]``, centred, and their mean into ``out_mean``.

    The draw order is the stream's definition: ``rows x n_gauss`` standard normals in C order,
    then ``rows x n_uniform`` uniforms; scalar draws from a numpy ``Generator`` inside numba
    reproduce numpy's array fill exactly (tests/test_perf_paths.py::test_sources_match_numpy).
    The column sums are fused with the draw so the block is read once more only to centre it.
    """
    r = n_gauss + n_uniform
    for j in range(r):
        out_mean[j] = 0.0
    for i in range(rows):
        for j in range(n_gauss):
            v = gen.standard_normal()
            S[i, j] = v
            out_mean[j] += v
    for i in range(rows):
        for j in range(n_gauss, r):
            v = gen.random()
            S[i, j] = v
            out_mean[j] += v
    for j in range(r):
        out_mean[j] /= rows
    for i in range(rows):
        for j in range(r):
            S[i, j] -= out_mean[j]


class _SourcePlan:
    """Everything a worker needs to turn block ``k`` into joint-layout moments.

    The joint map uses the structure of ``LinearWorld.source_map`` (sources o, e, n = b | xi | u):
    ``a = chi P o + (1 - chi) e``, ``delta = X a + N n`` with ``N = sigma Y`` (exo) or
    ``sigma I`` (gaussian, uniform), and the noise block is ``n`` (exo) or ``sigma n``.
    tests/test_perf_paths.py checks the result against ``L S L^T`` and against materialised rows.
    """

    def __init__(self, world: LinearWorld, rows: int, block_rows: int):
        self.seed = world.seed
        self.rows = rows
        self.block_rows = block_rows
        self.n_gauss = world.n_gauss
        self.n_uniform = world.n_uniform
        self.r = self.n_gauss + self.n_uniform
        self.do, self.da = world.do, world.da
        self.nn = self.r - world.do - world.da
        self.p = sum(size for _, size in world.blocks)
        self.chi = float(world.chi)
        self.X = world.X
        self.P = world.P
        self.noise = world.noise
        self.sigma = float(world.sigma)
        self.N = self.sigma * world.Y if world.noise == "exo" else None  # None: N = sigma I
        self.nb_scale = 1.0 if world.noise == "exo" else self.sigma
        self._local = threading.local()

    def buffer(self) -> np.ndarray:
        """A per-thread (block_rows x r) scratch array, reused across blocks (no page faults)."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = np.empty((self.block_rows, self.r))
            self._local.buf = buf
        return buf

    def block(self, k: int) -> tuple[float, np.ndarray, np.ndarray]:
        """Count, joint mean and joint centred co-moment of block ``k``."""
        m = min(self.block_rows, self.rows - k * self.block_rows)
        S = self.buffer()[:m]
        mean_s = np.empty(self.r)
        _centred_sources(block_generator(self.seed, k), self.n_gauss, self.n_uniform, m, S, mean_s)
        com_s = np.dot(S.T, S)  # numpy detects S^T S and calls SYRK; the GIL is released
        mean, com = self.to_joint(mean_s, com_s)
        return float(m), mean, com

    def _apply_N(self, M: np.ndarray) -> np.ndarray:
        return self.sigma * M if self.N is None else self.N @ M

    def to_joint(self, mean_s: np.ndarray, com_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map source moments to the joint layout [o, delta, a, noise]: ``(L mu, L S L^T)``."""
        do, da, nn, chi = self.do, self.da, self.nn, self.chi
        o, e, n = slice(0, do), slice(do, do + da), slice(do + da, do + da + nn)
        # a = chi P o + (1 - chi) e, against every source, then against itself.
        if chi == 0.0:
            Sa = com_s[e, :].copy()
            Saa = Sa[:, e].copy()
            mu_a = mean_s[e].copy()
        else:
            Sa = chi * (self.P @ com_s[o, :]) + (1.0 - chi) * com_s[e, :]
            Saa = chi * (Sa[:, o] @ self.P.T) + (1.0 - chi) * Sa[:, e]
            mu_a = chi * (self.P @ mean_s[o]) + (1.0 - chi) * mean_s[e]
        Saa = 0.5 * (Saa + Saa.T)
        # y = [o, a, n]; delta = X a + N n against y, then against itself.
        Sao, San = Sa[:, o], Sa[:, n]
        D_o = self.X @ Sao
        D_a = self.X @ Saa
        D_n = self.X @ San
        mu_d = self.X @ mu_a
        if nn:
            D_o += self._apply_N(com_s[n, o])
            D_a += self._apply_N(San.T)
            D_n += self._apply_N(com_s[n, n])
            mu_d += self._apply_N(mean_s[n])
        D_d = D_a @ self.X.T
        if nn:
            D_d += self._apply_N(D_n.T).T
        D_d = 0.5 * (D_d + D_d.T)
        p = self.p
        com = np.empty((p, p))
        mean = np.empty(p)
        io, idl, ia, inb = slice(0, do), slice(do, 2 * do), slice(2 * do, 2 * do + da), None
        mean[io] = mean_s[o]
        mean[idl] = mu_d
        mean[ia] = mu_a
        com[io, io] = com_s[o, o]
        com[idl, io] = D_o
        com[io, idl] = D_o.T
        com[ia, io] = Sao
        com[io, ia] = Sao.T
        com[idl, idl] = D_d
        com[idl, ia] = D_a
        com[ia, idl] = D_a.T
        com[ia, ia] = Saa
        if nn:
            s = self.nb_scale
            inb = slice(2 * do + da, p)
            mean[inb] = s * mean_s[n]
            com[io, inb] = s * com_s[o, n]
            com[inb, io] = com[io, inb].T
            com[idl, inb] = s * D_n
            com[inb, idl] = com[idl, inb].T
            com[ia, inb] = s * San
            com[inb, ia] = com[ia, inb].T
            com[inb, inb] = (s * s) * com_s[n, n]
        return mean, com


def _rows_block(world: LinearWorld, Lt: np.ndarray, x: np.ndarray, k: int, m: int):
    """Reference path: materialise block ``k``'s joint rows, then accumulate them."""
    xb = x[:m]
    _simulate_block(block_generator(world.seed, k), Lt, world.n_gauss, world.n_uniform, m, xb)
    return block_moments(xb)


# ------------------------------------------------------------------------------- threads
def _threads(threads: int | None) -> int:
    value = config.STREAM_THREADS if threads is None else threads
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise LamfastError(f"threads must be an integer >= 0 (0: all cores), got {value!r}")
    return int(value) or usable_cores()


def _iter_blocks(world, first, stop, rows, block_rows, threads, kernel):
    """Yield block moments of blocks ``first..stop-1`` in block order, computed on threads."""
    if kernel not in KERNELS:
        raise LamfastError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if kernel == "source":
        plan = _SourcePlan(world, rows, block_rows)
        work = plan.block
    else:
        Lt = np.ascontiguousarray(world.source_map.T)
        local = threading.local()

        def work(k):
            x = getattr(local, "x", None)
            if x is None:
                x = local.x = np.empty((block_rows, Lt.shape[1]))
            return _rows_block(world, Lt, x, k, min(block_rows, rows - k * block_rows))

    with one_blas_thread():
        if threads == 1 or stop - first <= 1:
            for k in range(first, stop):
                yield work(k)
            return
        pool = thread_pool(threads)
        ahead = 2 * threads  # blocks in flight: keeps every thread busy while the caller merges
        pending: collections.deque = collections.deque()
        k = first
        while k < stop or pending:
            while k < stop and len(pending) < ahead:
                pending.append(pool.submit(work, k))
                k += 1
            yield pending.popleft().result()


def chunk_moments(
    world: LinearWorld,
    first: int,
    stop: int,
    rows: int,
    block_rows: int,
    *,
    threads: int | None = None,
    kernel: str = "source",
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Moments ``(count, mean, co-moment)`` of blocks ``first..stop-1`` of a ``rows``-row stream.

    The unit of work shared by every executor (serial loop, threads, Dask tasks, checkpointed
    runs): each block's moments depend only on the world, the block index, ``rows`` and
    ``block_rows``, never on how blocks are grouped or on how many threads computed them.

    Parameters
    ----------
    world : LinearWorld
    first, stop : int
        Block range (``stop`` excluded).
    rows, block_rows : int
        Rows of the whole stream and rows per block (the last block may be short).
    threads : int, optional
        Threads over blocks (default ``config.STREAM_THREADS``; 0 = all cores). BLAS runs on one
        thread meanwhile. Never changes the result.
    kernel : {"source", "rows"}
        ``source`` (fast): accumulate the independent sources with one SYRK per block and map the
        co-moment to the joint layout, ``S_x = L S_s L^T``. ``rows``: materialise the joint rows
        and accumulate them (the reference). Equal up to rounding
        (tests/test_perf_paths.py::test_source_kernel_matches_rows).
    """
    n_threads = _threads(threads)
    return list(_iter_blocks(world, first, stop, rows, block_rows, n_threads, kernel))


def stream_moments(
    world: LinearWorld,
    rows,
    *,
    block_rows: int | None = None,
    chunk_blocks: int | None = None,
    progress: bool | None = None,
    threads: int | None = None,
    kernel: str = "source",
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
        Blocks per progress update; has no effect on the result.
    progress : bool, optional
        Progress bar on stderr (default: only on a terminal, after a few seconds).
    threads : int, optional
        Threads over blocks (default ``config.STREAM_THREADS``, 0 = all cores); has no effect on
        the result, which is bitwise identical for any value.
    kernel : {"source", "rows"}
        Fast source-space accumulation or the row-materialising reference (see
        :func:`chunk_moments`).

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
    n_threads = _threads(threads)
    n_blocks = -(-n // block_rows)
    tree = MergeTree(world.blocks)
    with Progress(total=n, label="stream", enabled=progress) as bar:
        done = 0
        blocks = _iter_blocks(world, 0, n_blocks, n, block_rows, n_threads, kernel)
        for i, (count, mean, com) in enumerate(blocks, 1):
            tree.push(count, mean, com)
            done += count
            if i % chunk_blocks == 0 or i == n_blocks:
                bar.update(done)
                done = 0
    return tree.result("stream")


def wishart_moments(world: LinearWorld, rows, *, draw: int = 0) -> Moments:
    """Moments of ``rows`` Gaussian rows sampled directly, in O(r^3) whatever ``rows`` is.

    For Gaussian worlds the sources are N(0, I_r): the centred co-moment of ``n`` rows is
    Wishart(n - 1, I_r), independent of the mean, which is N(0, I_r / n). Both are drawn directly
    (Bartlett decomposition) and mapped through the source map ``L`` (docs/architecture.md,
    sources).
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
