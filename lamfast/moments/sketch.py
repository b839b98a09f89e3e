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

With a ``projector`` basis ``U`` (orthonormal, ``d x k``) the same iteration runs on ``P M P``,
``P = I - U U^T`` (the moments of cleaned differences ``P delta``,
:mod:`lamfast.moments.cleaning`): its columns are ``P Q``, so a pass gives ``M P Q`` and ``P``
applied to it gives ``P M P Q``; the Ritz pairs and residuals are those of ``P M P`` and every
Ritz vector lies in ``range(P)``, so its latent ``V^T P delta = V^T delta`` is again a map of the
pass's narrow block. One pass can carry several iterations side by side (the columns of each
stacked, each reading its own slice of the sketch block: ``update(thin, at=...)``).
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
    projector : array, optional
        An orthonormal ``d x k`` basis ``U``: iterate on ``P M P`` with ``P = I - U U^T``
        (``l`` at most ``d - k``, the dimension of ``range(P)``).
    """

    def __init__(self, d: int, k: int, oversample: int, seed: int, projector=None):
        if not 1 <= k <= d:
            raise LamfastError(f"a sketch of {k} eigenpairs needs 1 <= k <= d = {d}")
        self.d, self.k = int(d), int(k)
        self.l = min(self.d, self.k + max(int(oversample), 0))
        self.projector = None
        if projector is not None:
            U = np.ascontiguousarray(projector, dtype=np.float64)
            if U.ndim != 2 or U.shape[0] != self.d or self.l > self.d - U.shape[1]:
                raise LamfastError(
                    f"a projector of shape {U.shape} leaves no room for a sketch of {self.l} "
                    f"columns of width {self.d}"
                )
            self.projector = U
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(13,)))
        self.basis = rng.standard_normal((self.d, self.l))
        self.last = None  # (basis used, M Q, Sigma Q) of the last pass
        self.passes = 0

    def project(self, Y: np.ndarray) -> np.ndarray:
        """``P Y`` (``Y`` itself without a projector)."""
        U = self.projector
        if U is None:
            return Y
        with one_blas_thread():  # the same bits on any machine thread count
            return Y - U @ (U.T @ Y)

    def columns(self) -> np.ndarray:
        """The ``d x l`` matrix whose products with ``delta`` the next pass accumulates (``P Q``
        with a projector)."""
        return self.project(self.basis)

    def update(self, thin: ThinMoments, name: str = "delta", at: int | None = None) -> None:
        """Take the products of a pass (thin moments with wide block ``name`` and narrow block
        ``sketch`` = ``columns()^T delta``) and orthonormalise them into the next basis.

        ``at``: the pass carried other columns too, this iteration's ``l`` start at column
        ``at`` of the sketch block (None: the block holds exactly this iteration's columns)."""
        C = thin.block_cross(name, SKETCH)  # Cov(delta, Q^T delta) = Sigma Q
        if at is not None and C.shape[0] == self.d and 0 <= at <= C.shape[1] - self.l:
            C = C[:, at : at + self.l]
        if C.shape != (self.d, self.l):
            raise LamfastError(
                f"a pass of {C.shape[1]} sketch columns of width {C.shape[0]} does not match "
                f"the sketch ({self.l} columns of width {self.d}"
                + ("" if at is None else f" from column {at}")
                + ")"
            )
        mu = thin.wide_mean(name)
        Q = self.columns()
        with one_blas_thread():  # a vector times d x l: its bits vary with BLAS threads
            MQ = C + np.outer(mu, mu @ Q)
        if self.projector is not None:  # P M P Q and P Sigma P Q
            MQ, C = self.project(MQ), self.project(C)
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
        ``M`` (``which="M"``) or ``Sigma`` (``"Sigma"``) in the span of its basis (of ``P M P``
        and ``P Sigma P`` with a projector)."""
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
