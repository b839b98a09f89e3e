"""Thin moments: a narrow block and its cross terms with a wide one, never the wide square.

For frames too wide for the full co-moment (64 x 64 RGB: ``do = 12,288``, a 4.8 GB matrix per
partial result), what the fit and the probes need of the wide part ``w`` (``o``, ``delta``) is
its products with a few narrow columns ``y`` (a sketch ``Q^T delta``, a latent, the actions):
``Cov(w, y)``, ``Cov(y)``, the means and the variances of ``w`` (for traces). :class:`ThinMoments`
holds exactly those, in memory of order ``p_w x q``.

Blocks of rows ``[w, y]`` are reduced and merged like the full moments (the same
:class:`~lamfast.moments.core.MergeTree`, fed by
:class:`~lamfast.moments.accumulate.BlockAccumulator` with ``reducer=ThinReducer(p_w)``), so
thin moments are bitwise identical for any chunking and thread count too. Chan's update holds
block by block: with ``d = mean_b - mean_a`` and ``f = n_a n_b / n``::

    C_wy = C_wy^a + C_wy^b + f d_w d_y^T      C_yy likewise      v_w = v_w^a + v_w^b + f d_w^2

A block's cross co-moment is ``W^T (Y - mean_Y)``: centring one side is enough, so the wide
rows are never copied.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._blas import one_blas_thread
from .._jit import njit
from ..errors import LamfastError
from .core import PAD_COLUMNS, PAD_ROWS, Blocks, Moments, column_means, padded


@dataclasses.dataclass(frozen=True, eq=False)
class ThinMoments:
    """Count, means and the covariances ``Cov(w, y)``, ``Cov(y)`` and ``Var(w_i)`` of a joint
    vector ``[w, y]`` with a wide part ``w`` (layout ``wide``) and a narrow part ``y``
    (``narrow``). Covariances are co-moments divided by ``count``, as in :class:`Moments`."""

    count: float
    mean: np.ndarray
    cross: np.ndarray
    cov_y: np.ndarray
    var_w: np.ndarray
    wide: Blocks
    narrow: Blocks
    source: str = "rows"

    def __post_init__(self):
        pw = sum(size for _, size in self.wide)
        q = sum(size for _, size in self.narrow)
        shapes = (self.mean.shape, self.cross.shape, self.cov_y.shape, self.var_w.shape)
        if shapes != ((pw + q,), (pw, q), (q, q), (pw,)):
            raise LamfastError(f"thin moments of {pw} wide and {q} narrow values: bad shapes")

    @property
    def mean_w(self) -> np.ndarray:
        return self.mean[: self.cross.shape[0]]

    @property
    def mean_y(self) -> np.ndarray:
        return self.mean[self.cross.shape[0] :]

    def narrow_moments(self) -> Moments:
        """The full :class:`Moments` of the narrow block ``y``."""
        return Moments(self.count, self.mean_y, self.cov_y, self.narrow, self.source)

    def _slice(self, layout: Blocks, name: str) -> slice:
        start = 0
        for block, size in layout:
            if block == name:
                return slice(start, start + size)
            start += size
        raise LamfastError(f"no block {name!r} in {[b for b, _ in layout]}")

    def block_cross(self, wide: str, narrow: str) -> np.ndarray:
        """``Cov(w_wide, y_narrow)``."""
        return self.cross[self._slice(self.wide, wide), self._slice(self.narrow, narrow)]

    def wide_cross(self, wide: str) -> np.ndarray:
        """``Cov(w_wide, y)`` with the whole narrow part."""
        return self.cross[self._slice(self.wide, wide)]

    def wide_mean(self, name: str) -> np.ndarray:
        return self.mean_w[self._slice(self.wide, name)]

    def wide_var(self, name: str) -> np.ndarray:
        """The variances of the wide block ``name``, one per value."""
        return self.var_w[self._slice(self.wide, name)]

    def merge(self, other: ThinMoments) -> ThinMoments:
        """Thin moments of the union of two disjoint row sets: Chan's update (module docstring)
        on the co-moments ``count x covariance``, as :meth:`Moments.merge` does."""
        if (self.wide, self.narrow) != (other.wide, other.narrow):
            raise LamfastError("cannot merge thin moments of different layouts")
        na, nb = self.count, other.count
        n = na + nb
        d = other.mean - self.mean
        mean = self.mean + d * (nb / n)
        f = na * nb / n
        pw = self.cross.shape[0]
        dw, dy = d[:pw], d[pw:]
        cross = self.cross * na + other.cross * nb + f * np.outer(dw, dy)
        cov_y = self.cov_y * na + other.cov_y * nb + f * np.outer(dy, dy)
        var_w = self.var_w * na + other.var_w * nb + f * dw * dw
        return ThinMoments(
            n, mean, cross / n, cov_y / n, var_w / n, self.wide, self.narrow, self.source
        )


@njit
def _column_vars(X, pw, mean, out_var):
    """The co-moment diagonal of the first ``pw`` columns of ``X`` about ``mean``."""
    n = X.shape[0]
    for j in range(pw):
        out_var[j] = 0.0
    for i in range(n):
        for j in range(pw):
            d = X[i, j] - mean[j]
            out_var[j] += d * d


@njit
def _merge_cross(ca, cb, f, dy, dw, out):
    """``out = ca + cb + f dy dw^T`` (the transposed cross co-moments of two entries), in one
    sweep; the same operations as ``ca + cb + f * np.outer(dy, dw)``."""
    q, p = ca.shape
    for i in range(q):
        for j in range(p):
            out[i, j] = (ca[i, j] + cb[i, j]) + f * (dy[i] * dw[j])


def _product(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A @ B`` with the shapes BLAS sees padded as every block product (``core.padded``): the
    outer dimensions to multiples of 8 and the inner one to a multiple of 64. ``A`` is a view
    (rows of a block); its rows are copied only when their number is no multiple of 8 (a short
    last block), and a ragged end of the inner dimension is a separate product of a padded
    copy of the last columns (under 64 of them), so the bulk of the block is never copied."""
    n, k = A.shape
    if n % PAD_COLUMNS:
        A = _pad(A, PAD_COLUMNS, 1)
    k0 = k - k % PAD_ROWS
    out = A[:, :k0] @ B[:k0] if k0 else np.zeros((A.shape[0], B.shape[1]))
    if k0 < k:
        out += _pad(A[:, k0:], PAD_COLUMNS, PAD_ROWS) @ _pad(B[k0:], PAD_ROWS, PAD_COLUMNS)
    return out[:n]


class ThinReducer:
    """Blocks of rows to thin tree entries and back: the ``reducer`` of
    :class:`~lamfast.moments.accumulate.BlockAccumulator` (and of the fused frame pass,
    :class:`lamfast.sources.frames.wide.ThinAccumulator`).

    Rows hold the ``pw`` wide values first, then the narrow values given as they are. With
    ``sketch = (columns, Q)`` the narrow block starts with ``X[:, columns] @ Q``, computed inside
    the block (one BLAS thread, a fixed block of rows): the product of a chunk of any size would
    change its summation kernel, and with it the bits. A list of such pairs gives one narrow
    part each, in order (the sketch of ``delta``, then the same columns applied to ``o``).
    ``variances=False`` skips the variances of the wide values (a pass that only needs the
    cross terms): ``var_w`` is then NaN.

    A tree entry holds the cross co-moment transposed (``q x pw``: ``Yc^T W`` runs at twice the
    speed of ``W^T Yc`` in OpenBLAS for these shapes); :meth:`build` turns it back.
    """

    def __init__(self, pw: int, narrow: Blocks, sketch=None, variances: bool = True):
        self.pw, self.narrow = int(pw), tuple(narrow)
        self.variances = bool(variances)
        if sketch is not None and not isinstance(sketch, list):
            sketch = [sketch]
        self.sketch = []  # (columns, q, Q padded with zeros once, as every block product)
        for cols, Q in sketch or []:
            Q = np.ascontiguousarray(Q, dtype=np.float64)
            self.sketch.append((cols, Q.shape[1], _pad(Q, 1, PAD_COLUMNS)))

    def block(self, X: np.ndarray, mean: np.ndarray | None = None, rows: bool = False) -> tuple:
        """The tree entry of a block of rows ``X``; ``mean`` (the means of its columns, summed
        row by row as :func:`~lamfast.moments.core.column_means` does) when already known.
        ``rows``: ``(entry, Y)`` with the block's narrow rows ``Y`` (``n x q``: the sketch
        columns' values of every row, then the narrow values fed; as fed, before any shift is
        added back, :meth:`narrow_shift`)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        n, pw = X.shape[0], self.pw
        if mean is None:
            mean = np.empty(X.shape[1])
            column_means(X, mean)
        var = np.empty(pw)
        if self.variances:  # about the block's means (the wide rows are not copied)
            _column_vars(X, pw, mean, var)
        else:
            var.fill(np.nan)
        with one_blas_thread():  # bitwise identical whatever the BLAS threads
            Y = X[:, pw:]
            mean_y = mean[pw:]
            parts, means = [], []
            for cols, q, Qp in self.sketch:
                S = np.ascontiguousarray(_product(X[:, cols], Qp)[:, :q])
                mean_s = np.empty(q)
                column_means(S, mean_s)
                parts.append(S)
                means.append(mean_s)
            q = sum(part.shape[1] for part in parts) + Y.shape[1]
            # Yc^T (padded like every block product: core.padded), one side centred is enough
            ycT = np.zeros((padded(q, PAD_COLUMNS), padded(n)))
            row = 0
            for part, m in [*zip(parts, means, strict=True), (Y, mean_y)]:
                k = part.shape[1]
                np.subtract(part.T, m[:, None], out=ycT[row : row + k, :n])
                row += k
            W = X[:, :pw]
            if n % PAD_ROWS:  # a short last block: zero rows (the only copy of wide rows)
                W = _pad(W, PAD_ROWS, 1)
            pw8 = pw - pw % PAD_COLUMNS
            cross = ycT @ W[:, :pw8]
            if pw8 < pw:  # the last few wide columns, padded to 8
                tail = ycT @ _pad(W[:, pw8:], PAD_ROWS, PAD_COLUMNS)
                cross = np.hstack([cross, tail[:, : pw - pw8]])
            cross = np.ascontiguousarray(cross[:q])
            cyy = (ycT @ ycT.T)[:q, :q]
        mean = np.concatenate([mean[:pw], *means, mean_y])
        entry = float(n), mean, (cross, np.ascontiguousarray(cyy), var)
        if rows:
            return entry, np.hstack([*parts, Y])
        return entry

    def grouped(self, X: np.ndarray, groups: np.ndarray, k: int) -> list[tuple]:
        """:meth:`block` of the rows of each group ``0..k-1`` of one block (held-out folds); a
        group without rows gives the empty entry ``(0.0, None, None)``, the identity of
        :meth:`merge` (as :func:`~lamfast.moments.core.grouped_block_moments`)."""
        out = []
        for g in range(k):
            sel = groups == g
            out.append(self.block(X[sel]) if sel.any() else (0.0, None, None))
        return out

    def merge(self, left, right):
        if right[1] == 0:
            return [left[0] + right[0], left[1], left[2], left[3]]
        if left[1] == 0:
            return [left[0] + right[0], right[1], right[2], right[3]]
        na, nb = left[1], right[1]
        n = na + nb
        d = right[2] - left[2]
        mean = left[2] + d * (nb / n)
        f = na * nb / n
        dw, dy = d[: self.pw], d[self.pw :]
        (ca, ya, va), (cb, yb, vb) = left[3], right[3]
        cross = np.empty_like(ca)  # transposed: q x pw
        _merge_cross(ca, cb, f, dy, dw, cross)
        cyy = ya + yb + f * np.outer(dy, dy)
        var = va + vb + f * dw * dw
        return [left[0] + right[0], n, mean, (cross, cyy, var)]

    def shifted(self, m: ThinMoments, shift: np.ndarray) -> ThinMoments:
        """Add back a shift of the fed rows (wide values, then the given narrow ones) and its
        image under the sketch columns (computed from the shifted values: zero for ``delta``,
        ``Q^T shift`` for the columns applied to ``o``)."""
        mean = m.mean.copy()
        mean[: self.pw] += shift[: self.pw]
        mean[self.pw :] += self.narrow_shift(shift)
        return dataclasses.replace(m, mean=mean)

    def narrow_shift(self, shift: np.ndarray) -> np.ndarray:
        """What a shift of the fed rows moves the narrow values by: its image under each set of
        sketch columns (zero for ``delta``'s, which are never shifted), then the shift of the
        narrow values fed."""
        out = []
        for cols, q, Qp in self.sketch:
            if np.any(shift[cols]):
                with one_blas_thread():  # a vector times d x q: bits vary with BLAS threads
                    out.append(shift[cols] @ Qp[:, :q])
            else:  # exactly zero: no rounding added
                out.append(np.zeros(q))
        out.append(shift[self.pw :])
        return np.concatenate(out)

    def build(self, count, mean, com, blocks, source) -> ThinMoments:
        cross, cyy, var = com
        wide = _split(blocks, self.pw)
        cross = np.ascontiguousarray(cross.T)
        return ThinMoments(
            float(count), mean, cross / count, cyy / count, var / count, wide, self.narrow, source
        )


def _pad(A: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``A`` with zero rows and columns up to multiples of ``rows`` and ``columns``."""
    r, c = padded(A.shape[0], rows), padded(A.shape[1], columns)
    if (r, c) == A.shape:
        return A
    out = np.zeros((r, c))
    out[: A.shape[0], : A.shape[1]] = A
    return out


def _split(blocks: Blocks, pw: int) -> Blocks:
    """The wide part of a joint layout: its blocks up to ``pw`` values."""
    out, total = [], 0
    for name, size in blocks:
        if total >= pw:
            break
        out.append((name, size))
        total += size
    if total != pw:
        raise LamfastError(f"layout {list(blocks)} does not split after {pw} values")
    return tuple(out)
