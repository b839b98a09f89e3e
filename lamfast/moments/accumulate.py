"""Block accumulation: cut a stream of row chunks into fixed blocks and merge their moments."""

from __future__ import annotations

import collections
from collections.abc import Iterable

import numpy as np

from .. import config
from .._blas import thread_pool, usable_cores
from ..errors import LamfastError
from .core import FULL, Blocks, MergeTree, Moments, grouped_block_moments


def block_threads(p: int, block_rows: int) -> int:
    """Threads for a :class:`BlockAccumulator` of ``p`` columns: the cores this process may use
    (or ``config.STREAM_THREADS``), capped so that the blocks in flight (rows, their centred copy
    and a co-moment each) stay within ``config.FRAME_INFLIGHT_BYTES``. Never changes a bit."""
    per_block = int(block_rows) * p * 16 + p * p * 8
    threads = int(config.STREAM_THREADS) or usable_cores()
    return max(1, min(threads, int(config.FRAME_INFLIGHT_BYTES) // per_block))


class BlockPipeline:
    """Full blocks to ``sink``, reduced in order: on the caller's thread, or with ``threads > 1``
    on the shared pool while the caller fills the next buffer.

    Subclasses set ``threads``, ``sink``, ``pending`` (a deque), ``free`` (a list), ``buf``
    and ``fill``, and define ``_buffers()`` (a fresh block buffer) and ``_compute(buffers, n)``
    (the reduction of the first ``n`` rows of a buffer).
    """

    def _block(self, buffers, n):
        if self.threads == 1:
            self.sink(self._compute(buffers, n))
            return
        self.pending.append((thread_pool(self.threads).submit(self._compute, buffers, n), buffers))
        # one block per thread in flight (each holds its rows and their centred copy: memory
        # stays a few blocks whatever the dataset); the next buffer is one no block still uses
        while len(self.pending) > self.threads:
            self._drain_one()
        self.buf = self.free.pop() if self.free else self._buffers()

    def _drain_one(self):
        future, buffers = self.pending.popleft()
        self.sink(future.result())
        self.free.append(buffers)

    def flush(self):
        if self.fill:
            self._block(self.buf, self.fill)
            self.fill = 0
        while self.pending:
            self._drain_one()


class BlockAccumulator(BlockPipeline):
    """Cut a stream of row chunks into fixed blocks of ``block_rows`` rows and merge them.

    Each block's ``(count, mean, co-moment)`` goes to ``sink`` (default: a :class:`MergeTree`),
    in block order. With ``threads > 1`` full blocks are computed on the shared thread pool
    while the caller reads on (``block_moments`` releases the GIL); the results are the same
    bits, since each block is computed alone with one BLAS thread.

    ``shift`` (a joint row) is subtracted from every row as it is added, in float64, and added
    back to the mean of :meth:`result`: moments are shift-invariant, but rows near a large common
    offset lose precision in the block means, which the merge then amplifies into the co-moment
    (tests/test_robust.py::test_large_offset). Rows of any real dtype are converted to float64
    before the subtraction, so ``uint8`` or float32 rows never wrap or round.

    ``groups = k > 0`` keeps the moments of ``k`` groups of rows (held-out folds): every row
    comes with its group in ``add(rows, groups)``, blocks are still cut from the whole stream,
    and each block gives one entry per group (:func:`~lamfast.moments.core.grouped_block_moments`,
    empty where a group has no row), so each group's tree depends only on the stream, never on
    the chunking; :meth:`result` returns one ``Moments`` per group (None for an empty group).

    ``reducer`` says what a block holds (default: the full moments); ``lamfast.moments.thin``
    keeps only the narrow block and its cross terms with a wide one, for frames too wide to
    square (with groups, its ``grouped`` gives a block's entry per group).
    """

    def __init__(
        self,
        blocks: Blocks,
        block_rows: int,
        sink=None,
        threads: int = 1,
        shift=None,
        groups=0,
        reducer=None,
    ):
        self.groups = int(groups)
        self.reducer = reducer or FULL
        self.trees = [MergeTree(blocks, self.reducer) for _ in range(max(self.groups, 1))]
        self.tree = self.trees[0]
        self.sink = sink or self._push
        self.p = sum(s for _, s in blocks)
        self.rows = int(block_rows)
        self.threads = max(int(threads), 1)
        self.free: list[tuple] = []
        self.pending: collections.deque = collections.deque()  # (future, buffers)
        self.buf = self._buffers()
        self.fill = 0
        self.added = 0  # rows so far (blocks may still be computing)
        self.shift = None if shift is None else np.asarray(shift, dtype=np.float64)

    def _buffers(self) -> tuple:
        labels = np.empty(self.rows, dtype=np.int64) if self.groups else None
        return np.empty((self.rows, self.p)), labels

    def _push(self, block):
        if not self.groups:
            self.tree.push(*block)
            return
        for tree, entry in zip(self.trees, block, strict=True):
            tree.push(*entry)

    def add(self, rows: np.ndarray, groups: np.ndarray | None = None):
        if (groups is None) != (not self.groups):
            raise LamfastError("rows need their groups exactly when the accumulator has groups")
        n, i = rows.shape[0], 0
        self.added += n
        cap = self.rows
        while i < n:
            k = min(cap - self.fill, n - i)
            X, labels = self.buf
            out = X[self.fill : self.fill + k]
            if self.shift is None:
                out[...] = rows[i : i + k]
            else:
                np.subtract(rows[i : i + k], self.shift, out=out, dtype=np.float64)
            if labels is not None:
                labels[self.fill : self.fill + k] = groups[i : i + k]
            self.fill += k
            i += k
            if self.fill == cap:
                self._block(self.buf, cap)
                self.fill = 0

    def _compute(self, buffers, n):
        X, labels = buffers
        if labels is None:
            return self.reducer.block(X[:n])
        if self.reducer is not FULL:  # e.g. thin moments of every held-out fold
            return self.reducer.grouped(X[:n], labels[:n], self.groups)
        return grouped_block_moments(X[:n], labels[:n], self.groups)

    def result(self, source: str):
        """The merged moments (the shift added back to the mean); with groups, a list of them
        (None for a group without rows)."""
        self.flush()
        if not self.groups:
            return self._shifted(self.tree.result(source))
        return [self._shifted(t.result(source)) if _has_rows(t) else None for t in self.trees]

    def _shifted(self, m):
        if self.shift is None:
            return m
        return self.reducer.shifted(m, self.shift)


def _has_rows(tree: MergeTree) -> bool:
    return any(entry[1] > 0 for entry in tree.stack)


def moments_from_rows(
    X,
    blocks: Iterable[tuple[str, int]] | None = None,
    block_rows: int | None = None,
) -> Moments:
    """Moments of the rows of ``X`` (n x p, any real dtype; accumulated in float64).

    Rows are shifted by the first row (exactness at large offsets), cut into blocks of
    ``block_rows`` and merged by :class:`MergeTree`, so the result is the same bit for bit as
    streaming the same shifted blocks with any executor
    (``lamfast.moments.tree.tree_moments(..., shift=X[0])``).

    Examples
    --------
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> m = moments_from_rows(X, blocks=[("x", 2)])
    >>> m.count, m.mean.tolist()
    (6.0, [5.0, 6.0])
    """

    X = np.asarray(X)
    if X.ndim != 2:
        raise LamfastError(f"rows must be a 2-d array (n x p), got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise LamfastError(f"rows must be numeric, got dtype {X.dtype}")
    if X.shape[0] < 1:
        raise LamfastError("no rows given")
    blocks = tuple(blocks) if blocks is not None else (("x", X.shape[1]),)
    if sum(s for _, s in blocks) != X.shape[1]:
        raise LamfastError(f"layout {list(blocks)} does not match {X.shape[1]} columns")
    step = int(block_rows or config.BLOCK_ROWS)
    # Accumulate the rows shifted by the first row. Float64 block means near a large offset (1e6)
    # carry absolute rounding of ~1e-10, which the merge's mean differences then amplify into the
    # co-moment (relative error ~1e-8 at spread 1e-3). Shifted rows are small, and x - x0 is
    # exact when x and x0 are within a factor of 2 (Sterbenz), so every mean and difference keeps
    # full relative precision.
    acc = BlockAccumulator(
        blocks,
        step,
        threads=block_threads(X.shape[1], step) if X.shape[0] > step else 1,
        shift=np.asarray(X[0], dtype=np.float64),
    )
    for start in range(0, X.shape[0], step):
        chunk = X[start : start + step]
        if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise LamfastError(f"row {bad} contains NaN or inf")
        acc.add(chunk)
    return acc.result("rows")
