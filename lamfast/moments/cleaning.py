"""Data cleaning on moments: remove a noise subspace from the frame differences.

Cleaning is linear, so it acts on moments directly (no second pass over the rows).
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..errors import LamfastError
from .core import Moments
from .eigen import top_eigh


def orthonormal_basis(U: np.ndarray, do: int, label: str = "basis") -> np.ndarray:
    """Orthonormal columns spanning ``U`` (given as do x k or k x do)."""
    U = np.asarray(U, dtype=np.float64)
    if U.ndim == 1:
        U = U[:, None]
    if U.ndim != 2 or do not in U.shape:
        raise LamfastError(f"{label}: shape {U.shape} has no axis of length do={do}")
    if U.shape[0] != do:
        U = U.T
    if not np.isfinite(U).all():
        raise LamfastError(f"{label}: contains NaN or inf")
    Q, R = np.linalg.qr(U)
    keep = np.abs(np.diag(R)) > config.pinv_rtol(do) * max(
        np.abs(np.diag(R)).max(initial=0), 1e-300
    )
    if not keep.any():
        raise LamfastError(f"{label}: spans nothing")
    return Q[:, keep]


def noise_basis_from_noop(noop: Moments, k: int) -> np.ndarray:
    """Top-``k`` principal directions of ``E[delta delta^T]`` over no-op transitions."""

    do = noop.size("delta")
    if not 1 <= k <= do:
        raise LamfastError(f"clean-k must be in [1, {do}], got {k}")
    _, V = top_eigh(noop.second_moment("delta"), k)
    return V


def clean_moments(m: Moments, U: np.ndarray) -> Moments:
    """Moments after projecting ``delta`` off ``span(U)``: ``delta -> (I - U U^T) delta``.

    Cleaning is linear, so it acts on moments directly (no second pass over the rows).
    """
    i = m.index("delta")
    T = np.eye(m.dim)
    T[i, i] -= U @ U.T
    cov = T @ m.cov @ T.T
    return Moments(m.count, T @ m.mean, 0.5 * (cov + cov.T), m.blocks, m.source + "+clean")
