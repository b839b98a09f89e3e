"""``Moments``: count, mean and centred covariance of a joint vector made of named blocks.

Moments are the interface of lamfast (docs/architecture.md): every source produces them, every
solver and
probe consumes them. This module holds the type, the accumulate kernel that turns a block of rows
into moments, the Chan et al. pairwise merge, and the fixed merge tree that makes streamed moments
bitwise identical for any chunking (docs/architecture.md, determinism).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .. import config
from .._blas import one_blas_thread
from .._jit import njit
from ..errors import LamfastError

Blocks = tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Moments:
    """First and second moments of a joint vector ``x`` made of named blocks.

    Parameters
    ----------
    count : float
        Number of rows ``n``; ``np.inf`` for exact population moments.
    mean : ndarray, shape (p,)
        ``E[x]`` (sample mean for finite ``n``).
    cov : ndarray, shape (p, p)
        Centred covariance ``E[(x - mean)(x - mean)^T]``; for finite ``n`` this is the centred
        co-moment divided by ``n`` (the maximum-likelihood normalisation, which is what an
        in-sample least-squares probe with intercept sees).
    blocks : tuple of (name, size)
        The joint layout, e.g. ``(("o", 128), ("delta", 128), ("a", 8), ("b", 8))``.
    source : str
        Where the moments came from: ``population``, ``wishart``, ``stream``, ``rows``, ...

    Notes
    -----
    The LAM has no biases, so its loss needs second moments ``E[x x^T] = cov + mean mean^T``
    (:meth:`second_moment`); probes have biases and use :meth:`block_cov`.

    Examples
    --------
    >>> m = Moments(count=4, mean=[1.0, 0.0], cov=[[1.0, 0.5], [0.5, 2.0]],
    ...             blocks=[("o", 1), ("delta", 1)])
    >>> m.block_cov("delta", "o").tolist(), m.second_moment("o").tolist()
    ([[0.5]], [[2.0]])
    """

    count: float
    mean: np.ndarray
    cov: np.ndarray
    blocks: Blocks
    source: str = "rows"

    def __post_init__(self):
        blocks = tuple((str(name), int(size)) for name, size in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        p = sum(size for _, size in blocks)
        mean = np.asarray(self.mean, dtype=np.float64)
        cov = np.asarray(self.cov, dtype=np.float64)
        if mean.shape != (p,) or cov.shape != (p, p):
            raise LamfastError(
                f"moments of a {p}-dim layout need mean ({p},) and cov ({p}, {p}), "
                f"got {mean.shape} and {cov.shape}"
            )
        names = [name for name, _ in blocks]
        if len(set(names)) != len(names):
            raise LamfastError(f"duplicate block names in layout {names}")
        if not self.count > 0:
            raise LamfastError(f"moments need a positive count, got {self.count!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_comoment(cls, count, mean, comoment, blocks, source="rows") -> Moments:
        """Build from a count, a mean and a centred co-moment (sum of centred outer products)."""
        return cls(float(count), mean, np.asarray(comoment) / float(count), blocks, source)

    # ------------------------------------------------------------------ layout
    @property
    def dim(self) -> int:
        """Length ``p`` of the joint vector."""
        return int(self.mean.shape[0])

    @property
    def names(self) -> tuple[str, ...]:
        """Block names in layout order."""
        return tuple(name for name, _ in self.blocks)

    def has(self, name: str) -> bool:
        """Whether the layout has a block called ``name``."""
        return name in self.names

    def index(self, name: str) -> slice:
        """Slice of block ``name`` in the joint vector."""
        start = 0
        for block, size in self.blocks:
            if block == name:
                return slice(start, start + size)
            start += size
        raise LamfastError(f"no block {name!r} in moments with blocks {list(self.names)}")

    def size(self, name: str) -> int:
        """Size of block ``name``."""
        s = self.index(name)
        return s.stop - s.start

    @property
    def comoment(self) -> np.ndarray:
        """Centred co-moment ``n * cov`` (only for finite counts)."""
        if not np.isfinite(self.count):
            raise LamfastError("population moments have no finite co-moment")
        return self.cov * self.count

    def block_mean(self, name: str) -> np.ndarray:
        """Mean of block ``name``."""
        return self.mean[self.index(name)]

    def block_cov(self, name: str, other: str | None = None) -> np.ndarray:
        """Centred covariance ``Cov(x_name, x_other)`` (``other`` defaults to ``name``)."""
        return self.cov[self.index(name), self.index(other or name)]

    def second_moment(self, name: str | None = None, other: str | None = None) -> np.ndarray:
        """Uncentred ``E[x_name x_other^T]``; the whole joint matrix when ``name`` is None."""
        full = self.cov + np.outer(self.mean, self.mean)
        if name is None:
            return full
        return full[self.index(name), self.index(other or name)]

    def select(self, names: Sequence[str]) -> Moments:
        """Moments of a sub-vector made of the named blocks, in the given order."""
        idx = np.concatenate([np.arange(self.dim)[self.index(n)] for n in names])
        blocks = tuple((n, self.size(n)) for n in names)
        return Moments(self.count, self.mean[idx], self.cov[np.ix_(idx, idx)], blocks, self.source)

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of two disjoint row sets (Chan et al.)."""
        if self.blocks != other.blocks:
            raise LamfastError("cannot merge moments of different layouts")
        if not (np.isfinite(self.count) and np.isfinite(other.count)):
            raise LamfastError("cannot merge population moments (count = inf)")
        mean = np.empty(self.dim)
        com = self.comoment.copy()
        _chan_merge(self.count, self.mean, com, other.count, other.mean, other.comoment, mean)
        return Moments.from_comoment(self.count + other.count, mean, com, self.blocks, self.source)

    def __repr__(self) -> str:
        layout = ", ".join(f"{n}:{s}" for n, s in self.blocks)
        return f"Moments(count={self.count:g}, blocks=[{layout}], source={self.source!r})"


# ---------------------------------------------------------------------------------- kernels
@njit
def _centre(X, out_mean, out_xc):
    """Mean of the rows of ``X`` (float64, C-contiguous, n x p) and the centred rows, written
    to the top-left ``n x p`` of ``out_xc`` (which may be larger: zero padding, see ``padded``).

    Two passes inside the block (mean, then centred values) so that large offsets with small
    spread lose no precision (docs/architecture.md, conventions, stumpy #1160); the product is left
    to BLAS.
    """
    n, p = X.shape
    column_means(X, out_mean)
    for i in range(n):
        for j in range(p):
            out_xc[i, j] = X[i, j] - out_mean[j]


@njit
def column_means(X, out_mean):
    """Means of the columns of ``X`` (n x p), summed row by row in order."""
    n, p = X.shape
    for j in range(p):
        out_mean[j] = 0.0
    for i in range(n):
        for j in range(p):
            out_mean[j] += X[i, j]
    for j in range(p):
        out_mean[j] /= n


@njit
def _chan_merge(na, mean_a, com_a, nb, mean_b, com_b, out_mean):
    """Merge (nb, mean_b, com_b) into (na, mean_a, com_a): com_a is updated in place.

    Chan, Golub & LeVeque: com = com_a + com_b + delta delta^T * na * nb / n.
    """
    n = na + nb
    p = mean_a.shape[0]
    w = na * nb / n
    fb = nb / n
    delta = np.empty(p)
    for j in range(p):
        delta[j] = mean_b[j] - mean_a[j]
        out_mean[j] = mean_a[j] + delta[j] * fb
    for i in range(p):
        for j in range(p):
            com_a[i, j] += com_b[i, j] + delta[i] * delta[j] * w


# ---------------------------------------------------------------------------------- merge tree
class MergeTree:
    """Fixed pairwise merge of block moments in block-index order.

    Blocks are pushed in order of their global index; two partial results merge as soon as they
    cover equal numbers of blocks (a binary counter), and :meth:`result` folds what is left from
    the right. The tree therefore depends only on the sequence of blocks, never on how they were
    grouped into chunks, threads or workers: streamed moments are bitwise reproducible
    (docs/architecture.md, determinism). The stack holds at most log2(blocks) partial results.
    """

    def __init__(self, blocks: Blocks, reducer=None):
        self.blocks = tuple(blocks)
        self.reducer = reducer or FULL  # what a block holds and how two merge
        self.stack: list[list] = []  # entries [n_blocks, count, mean, comoment]
        self.n_blocks = 0

    def push(self, count: float, mean: np.ndarray, comoment: np.ndarray) -> None:
        """Add the moments of the next block (the arrays are taken over, not copied)."""
        self.push_subtree(1, count, mean, comoment)

    def push_subtree(
        self, n_blocks: int, count: float, mean: np.ndarray, comoment: np.ndarray
    ) -> None:
        """Add the merged moments of the next ``n_blocks`` blocks, already merged by this tree.

        ``n_blocks`` must be a power of two that divides the number of blocks pushed so far:
        then every partial result on the stack covers at least ``n_blocks`` blocks, so pushing
        those blocks one by one would have built exactly this subtree before touching the stack.
        The moments must come from a :class:`MergeTree` fed with the same blocks (one stack entry,
        see :meth:`entries`), and the result is then bitwise identical to pushing them one by one.
        This is how distributed executors hand back the work of a task (``lamfast.moments.tree``).
        """
        n_blocks = int(n_blocks)
        if n_blocks < 1 or n_blocks & (n_blocks - 1) or self.n_blocks % n_blocks:
            raise LamfastError(
                f"a subtree of {n_blocks} blocks cannot follow {self.n_blocks} blocks in the "
                "merge tree (it must be a power of two dividing the blocks pushed so far)"
            )
        entry = [n_blocks, float(count), mean, comoment]
        while self.stack and self.stack[-1][0] == entry[0]:
            left = self.stack.pop()
            entry = self.reducer.merge(left, entry)
        self.stack.append(entry)
        self.n_blocks += n_blocks

    def entries(self) -> list[tuple[int, float, np.ndarray, np.ndarray]]:
        """The partial results ``(n_blocks, count, mean, comoment)``, oldest first.

        Feeding them to :meth:`push_subtree` of a tree that has seen ``m`` blocks, with
        ``self.n_blocks <= lowbit(m)``, continues that tree exactly (the basis of Dask tasks and
        checkpoints).
        """
        return [(int(e[0]), float(e[1]), e[2], e[3]) for e in self.stack]

    def result(self, source: str = "rows") -> Moments:
        """Merged moments of every block pushed so far."""
        if not self.stack:
            raise LamfastError("no rows were accumulated")
        acc = self.stack[-1]
        for left in reversed(self.stack[:-1]):
            acc = self.reducer.merge(left, acc)
        if acc[1] == 0:
            raise LamfastError("no rows were accumulated")
        return self.reducer.build(acc[1], acc[2], acc[3], self.blocks, source)


def _merge_entries(left, right):
    # An empty entry (count 0: a group with no rows in a block, see grouped_block_moments) is
    # the identity: the other entry is kept as it is, bit for bit, so every group's tree has
    # one entry per block and the same shape as the block stream.
    if right[1] == 0:
        return [left[0] + right[0], left[1], left[2], left[3]]
    if left[1] == 0:
        return [left[0] + right[0], right[1], right[2], right[3]]
    mean = np.empty_like(left[2])
    com = left[3].copy()
    _chan_merge(left[1], left[2], com, right[1], right[2], right[3], mean)
    return [left[0] + right[0], left[1] + right[1], mean, com]


def block_moments(X: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Count, mean and centred co-moment of one block of rows, in float64.

    The co-moment ``Xc^T Xc`` is one SYRK (numpy recognises a product of an array with its own
    transpose): half the flops of the GEMM numba's ``np.dot`` calls, an exactly symmetric
    result, and the GIL released, so blocks can run on threads side by side.
    """

    X = np.ascontiguousarray(X, dtype=np.float64)
    n, p = X.shape
    mean = np.empty(p)
    xc = np.zeros((padded(n), padded(p, PAD_COLUMNS)))
    _centre(X, mean, xc)
    with one_blas_thread():  # bitwise identical whatever the BLAS threads (_blas.py)
        com = np.dot(xc.T, xc)
    if com.shape[0] != p:
        com = np.ascontiguousarray(com[:p, :p])
    return float(n), mean, com


# OpenBLAS (its SkylakeX kernels, measured 2026-12-02 on a 2-core Xeon) rounds some products
# differently on the main thread (and on the first thread that used BLAS) than on the others:
# 35 of 40 random GEMM / SYRK shapes of block sizes differed in the last bits. With the outer
# dimensions padded with zeros to multiples of 8 and the inner one (the rows of a block) to a
# multiple of 64, none of 160 did. Zero rows and columns add exact zeros, so every block product
# is padded so: a block's moments are then the same bits on any thread, and a stream's on any
# thread count (tests/test_moments.py::test_block_products_bitwise_on_any_thread; before, 16x32
# frames with 4 actions, p = 1028, differed between 1 and 2 threads).
PAD_ROWS, PAD_COLUMNS = 64, 8


def padded(n: int, multiple: int = PAD_ROWS) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (rows of a block product: 64)."""
    return -(-int(n) // multiple) * multiple


class _Full:
    """What a block of the usual moments holds: ``block`` turns rows into ``(count, mean,
    co-moment)``, ``merge`` combines two tree entries, ``build`` makes the result and
    ``shifted`` adds a row shift back. Other kinds of moments (``lamfast.moments.thin``) bring
    their own."""

    block = staticmethod(block_moments)
    merge = staticmethod(_merge_entries)
    build = staticmethod(Moments.from_comoment)

    @staticmethod
    def shifted(m: Moments, shift: np.ndarray) -> Moments:
        """The moments of rows that were accumulated minus ``shift`` (covariances stay)."""
        return Moments(m.count, m.mean + shift, m.cov, m.blocks, m.source)


FULL = _Full()


def grouped_block_moments(X: np.ndarray, groups: np.ndarray, k: int) -> list[tuple]:
    """:func:`block_moments` of the rows of each group ``0..k-1`` of one block; a group without
    rows gives the empty entry ``(0.0, None, None)``, the identity of the merge."""
    out = []
    for g in range(k):
        sel = groups == g
        out.append(block_moments(X[sel]) if sel.any() else (0.0, None, None))
    return out


def check_moment_size(p: int, what: str) -> None:
    """Refuse, before allocating, a joint vector whose co-moment exceeds
    ``config.MAX_MOMENT_BYTES`` (one line instead of a MemoryError, or minutes of swapping)."""
    need = 8 * int(p) ** 2
    if need > config.MAX_MOMENT_BYTES:
        raise LamfastError(
            f"{what} has a joint vector of {p} values: its co-moment alone needs "
            f"{need / 2**30:.3g} GiB (the limit, config.MAX_MOMENT_BYTES, is "
            f"{config.MAX_MOMENT_BYTES / 2**30:.3g} GiB)"
        )
