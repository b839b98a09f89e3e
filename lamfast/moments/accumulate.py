"""Block accumulation: cut a stream of row chunks into fixed blocks and merge their moments."""

from __future__ import annotations

import collections

import numpy as np

from .._blas import thread_pool
from .core import Blocks, MergeTree, Moments, block_moments


class _BlockAccumulator:
    """Cut a stream of row chunks into fixed blocks of ``block_rows`` rows and merge them.

    Each block's ``(count, mean, co-moment)`` goes to ``sink`` (default: a :class:`MergeTree`),
    in block order. With ``threads > 1`` full blocks are computed on the shared thread pool
    while the caller reads on (``block_moments`` releases the GIL); the results are the same
    bits, since each block is computed alone with one BLAS thread.
    """

    def __init__(self, blocks: Blocks, block_rows: int, sink=None, threads: int = 1):
        self.tree = MergeTree(blocks)
        self.sink = sink or (lambda block: self.tree.push(*block))
        self.p = sum(s for _, s in blocks)
        self.rows = int(block_rows)
        self.threads = max(int(threads), 1)
        self.free: list[np.ndarray] = []
        self.pending: collections.deque = collections.deque()  # (future, buffer)
        self.buf = np.empty((self.rows, self.p))
        self.fill = 0
        self.added = 0  # rows so far (blocks may still be computing)

    def add(self, rows: np.ndarray):
        n, i = rows.shape[0], 0
        self.added += n
        cap = self.buf.shape[0]
        while i < n:
            k = min(cap - self.fill, n - i)
            self.buf[self.fill : self.fill + k] = rows[i : i + k]
            self.fill += k
            i += k
            if self.fill == cap:
                self._block(self.buf)
                self.fill = 0

    def _block(self, X: np.ndarray):
        if self.threads == 1:
            self.sink(block_moments(X))
            return
        self.pending.append((thread_pool(self.threads).submit(block_moments, X), X))
        # one block per thread in flight (each holds its rows and their centred copy: memory
        # stays a few blocks whatever the dataset); the next buffer is one no block still uses
        while len(self.pending) > self.threads:
            self._drain_one()
        self.buf = self.free.pop() if self.free else np.empty((self.rows, self.p))

    def _drain_one(self):
        future, X = self.pending.popleft()
        self.sink(future.result())
        if X.shape[0] == self.rows:
            self.free.append(X)

    def flush(self):
        if self.fill:
            self._block(self.buf[: self.fill])
            self.fill = 0
        while self.pending:
            self._drain_one()

    def result(self, source: str) -> Moments:
        self.flush()
        return self.tree.result(source)
