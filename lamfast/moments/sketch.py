"""The top of a frame-difference spectrum from passes over the data: randomized subspace
iteration on thin moments (Halko, Martinsson & Tropp 2011, algorithm 4.4 with Rayleigh-Ritz).

Each pass over the data gives the products ``M Q`` and ``Sigma Q'`` of the uncentred second
moment ``M = E[delta delta^T]`` (the LAM's matrix, docs/theory.md) and the covariance
``Sigma = Cov(delta)`` (the spectrum the reports show) with the columns of the current bases:
both are the cross terms of the thin moments of ``[delta, Q^T delta, Q'^T delta]``
(``Sigma Q = Cov(delta, Q^T delta)``, ``M Q = Sigma Q + mu mu^T Q``). The first pass starts from
a seeded Gaussian matrix, each later one from the orthonormalised products of the one before;
after the last pass the Rayleigh-Ritz step ``T = Q^T (M Q)`` gives the eigenpairs, and
``M V - V diag(lambda)`` is known exactly from the same product, so every eigenpair comes with
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

SKETCH = "sketch"  # the narrow block of a pass: [Q_M^T delta, Q_S^T delta]


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
    """The state of a randomized subspace iteration for ``M`` and ``Sigma`` of one block.

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
        omega = rng.standard_normal((self.d, self.l))
        self.bases = [omega, omega]  # for M and for Sigma: one start serves both
        self.last = None  # (bases used, products) of the last pass
        self.passes = 0

    def columns(self) -> np.ndarray:
        """The ``d x 2l`` matrix whose products with ``delta`` the next pass accumulates."""
        return np.hstack(self.bases)

    def update(self, thin: ThinMoments, name: str = "delta") -> None:
        """Take the products of a pass (thin moments with wide block ``name`` and narrow block
        ``sketch`` = ``columns()^T delta``) and orthonormalise them into the next bases."""
        C = thin.block_cross(name, SKETCH)
        if C.shape != (self.d, 2 * self.l):
            raise LamfastError(
                f"a pass of {C.shape[1]} sketch columns of width {C.shape[0]} does not match "
                f"the sketch ({2 * self.l} columns of width {self.d})"
            )
        mu = thin.wide_mean(name)
        Q = self.columns()
        MQ = C[:, : self.l] + np.outer(mu, mu @ Q[:, : self.l])
        SQ = C[:, self.l :]
        self.last = ((Q[:, : self.l], MQ), (Q[:, self.l :], SQ))
        self.bases = [_orth(MQ), _orth(SQ)]
        self.passes += 1

    def _ritz(self, which: str, k: int | None):
        if self.passes < 2:  # the first pass only finds the range; Rayleigh-Ritz needs its basis
            raise LamfastError("eigenpairs from a sketch need at least two passes")
        k = self.k if k is None else int(k)
        Q, Y = self.last[0 if which == "M" else 1]  # Q orthonormal: the previous pass's output
        with one_blas_thread():
            T = Q.T @ Y
        w, U = np.linalg.eigh(0.5 * (T + T.T))
        order = np.argsort(w)[::-1][:k]
        return w[order], U[:, order], Q, Y

    def eigenpairs(self, which: str = "M", k: int | None = None) -> Eigenpairs:
        """Rayleigh-Ritz on the last pass: the top ``k`` (default ``self.k``) eigenpairs of
        ``M`` (``which="M"``) or ``Sigma`` (``"Sigma"``)."""
        w, U, Q, Y = self._ritz(which, k)
        V = Q @ U
        R = Y @ U - V * w  # exactly M V - V diag(w): Y = M Q
        top = max(abs(float(w[0])), np.finfo(float).tiny)
        return Eigenpairs(w, V, np.linalg.norm(R, axis=0) / top)

    def ritz_map(self, k: int | None = None) -> np.ndarray:
        """``G`` (``k x 2l``) with ``V^T delta = G [Q_M^T delta, Q_S^T delta]`` for the top
        ``k`` eigenvectors ``V = Q_M U`` of ``M``: the latents as a linear map of the last
        pass's narrow block, so their moments follow from that pass exactly."""
        _, U, _, _ = self._ritz("M", k)
        G = np.zeros((U.shape[1], 2 * self.l))
        G[:, : self.l] = U.T
        return G
