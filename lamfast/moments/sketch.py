"""The top of a frame-difference spectrum from passes over the data: randomized subspace
iteration on thin moments (Halko, Martinsson & Tropp 2011, algorithm 4.4 with Rayleigh-Ritz).

Each pass over the data gives the products ``Sigma Q`` and ``M Q`` of the covariance
``Sigma = Cov(delta)`` (the spectrum the reports show) and the uncentred second moment
``M = E[delta delta^T] = Sigma + mu mu^T`` (the LAM's matrix, docs/theory.md) with the columns
of the current basis: ``Sigma Q = Cov(delta, Q^T delta)`` is the cross term of the thin moments
of ``[delta, Q^T delta]``. The iteration runs on ``M``: the first pass starts from a seeded
Gaussian matrix, each later one from the orthonormalised ``M Q`` of the one before; after the
last pass the Rayleigh-Ritz steps ``Q^T (M Q)`` and ``Q^T (Sigma Q)`` give the eigenpairs of
both in the span of ``Q`` (a rank-one update apart, their top spaces nearly agree), and
``C V - V diag(lambda)`` is known exactly from the same products, so every eigenpair comes with
its residual. Memory: the ``d x l`` bases and products (``l = k + oversampling``), never
``d x d``. With ``p`` passes the angle between the ``j``-th eigenvector and its estimate
decays like ``(lambda_{l+1} / lambda_j)^(p - 1)`` and the eigenvalue's error like its square
(measured in tests/test_wide.py: 2e-3, 6e-7, 2e-10 after 2, 3, 4 passes at a ratio of 4e-4):
large gaps converge in a few passes, a flat spectrum (equal eigenvalues) has no unique subspace
to converge to and the residuals say so.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._blas import one_blas_thread
from ..errors import LamfastError
from .thin import ThinMoments

SKETCH = "sketch"  # the narrow block of a pass: Q^T delta
SKETCH_OBS = "sketch_o"  # the same columns applied to o: Q^T o (the fit in the subspace)


@dataclasses.dataclass
class Eigenpairs:
    """Top eigenpairs from a sketch, with ``residual[i] = ||C v_i - lambda_i v_i|| / lambda_1``."""

    values: np.ndarray
    vectors: np.ndarray
    residual: np.ndarray


def _orth(Y: np.ndarray) -> np.ndarray:
    with one_blas_thread():  # the same bits on any machine thread count
        q, r = np.linalg.qr(Y)
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))


class SubspaceIteration:
    """The state of a randomized subspace iteration for ``M`` of one block, with the Ritz pairs
    of ``Sigma = M - mu mu^T`` in the same basis.

    Parameters
    ----------
    d : int
        Width of the block (``do``).
    k : int
        Eigenpairs wanted.
    oversample : int
        Extra columns (``l = min(d, k + oversample)``).
    seed : int
        Seeds the starting matrix (``SeedSequence(seed, spawn_key=(13,))``).
    """

    def __init__(self, d: int, k: int, oversample: int, seed: int):
        if not 1 <= k <= d:
            raise LamfastError(f"a sketch of {k} eigenpairs needs 1 <= k <= d = {d}")
        self.d, self.k = int(d), int(k)
        self.l = min(self.d, self.k + max(int(oversample), 0))
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(13,)))
        self.basis = rng.standard_normal((self.d, self.l))
        self.last = None  # (basis used, M Q, Sigma Q) of the last pass
        self.passes = 0

    def columns(self) -> np.ndarray:
        """The ``d x l`` matrix whose products with ``delta`` the next pass accumulates."""
        return self.basis

    def update(self, thin: ThinMoments, name: str = "delta") -> None:
        """Take the products of a pass (thin moments with wide block ``name`` and narrow block
        ``sketch`` = ``columns()^T delta``) and orthonormalise them into the next basis."""
        C = thin.block_cross(name, SKETCH)  # Cov(delta, Q^T delta) = Sigma Q
        if C.shape != (self.d, self.l):
            raise LamfastError(
                f"a pass of {C.shape[1]} sketch columns of width {C.shape[0]} does not match "
                f"the sketch ({self.l} columns of width {self.d})"
            )
        mu = thin.wide_mean(name)
        Q = self.basis
        MQ = C + np.outer(mu, mu @ Q)
        self.last = (Q, MQ, C)
        self.basis = _orth(MQ)
        self.passes += 1

    def _ritz(self, which: str, k: int | None):
        if self.passes < 2:  # the first pass only finds the range; Rayleigh-Ritz needs its basis
            raise LamfastError("eigenpairs from a sketch need at least two passes")
        k = self.k if k is None else int(k)
        Q, MQ, SQ = self.last  # Q orthonormal: the previous pass's output
        Y = MQ if which == "M" else SQ
        with one_blas_thread():
            T = Q.T @ Y
        w, U = np.linalg.eigh(0.5 * (T + T.T))
        order = np.argsort(w)[::-1][:k]
        return w[order], U[:, order], Q, Y

    def eigenpairs(self, which: str = "M", k: int | None = None) -> Eigenpairs:
        """Rayleigh-Ritz on the last pass: the top ``k`` (default ``self.k``) eigenpairs of
        ``M`` (``which="M"``) or ``Sigma`` (``"Sigma"``) in the span of its basis."""
        w, U, Q, Y = self._ritz(which, k)
        V = Q @ U
        R = Y @ U - V * w  # exactly C V - V diag(w): Y = C Q
        top = max(abs(float(w[0])), np.finfo(float).tiny)
        return Eigenpairs(w, V, np.linalg.norm(R, axis=0) / top)

    def last_basis(self) -> np.ndarray:
        """The orthonormal ``d x l`` basis ``Q`` of the last pass (its columns' span holds
        every Ritz vector)."""
        if self.last is None:
            raise LamfastError("the sketch has made no pass yet")
        return self.last[0]

    def ritz_map(self, k: int | None = None) -> np.ndarray:
        """``G`` (``k x l``) with ``V^T delta = G Q^T delta`` for the top ``k`` eigenvectors
        ``V = Q U`` of ``M``: the latents as a linear map of the last pass's narrow block, so
        their moments follow from that pass exactly."""
        _, U, _, _ = self._ritz("M", k)
        return np.ascontiguousarray(U.T)
