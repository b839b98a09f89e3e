"""Truncated symmetric eigensolver: the top-k eigenpairs with a deterministic sign rule."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from . import config
from .errors import LamfastError

METHODS = ("auto", "dense", "subset", "arpack")


def _sign_rule(V: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive (first one on ties)."""
    if V.size == 0:
        return V
    idx = np.argmax(np.abs(V), axis=0)
    signs = np.sign(V[idx, np.arange(V.shape[1])])
    signs[signs == 0] = 1.0
    return V * signs


def top_eigh(C, k: int, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenpairs of a symmetric matrix, eigenvalues in descending order.

    Parameters
    ----------
    C : array_like, shape (d, d)
        Symmetric matrix (only symmetry up to rounding is required; it is symmetrised).
    k : int
        Number of eigenpairs, ``1 <= k <= d``.
    method : {"auto", "dense", "subset", "arpack"}
        ``dense``: full LAPACK ``syevd``; ``subset``: LAPACK's subset driver (``syevr`` with an
        index range); ``arpack``: ``scipy.sparse.linalg.eigsh`` with a fixed start vector;
        ``auto``: ``subset`` up to ``config.EIGH_DENSE_MAX``, ARPACK above when ``k`` is small.

    Returns
    -------
    w : ndarray, shape (k,)
        Eigenvalues, descending.
    V : ndarray, shape (d, k)
        Orthonormal eigenvectors; each column's entry of largest magnitude is positive.

    Examples
    --------
    >>> w, V = top_eigh(np.diag([1.0, 3.0, 2.0]), 2)
    >>> w.tolist(), V[:, 0].tolist()
    ([3.0, 2.0], [0.0, 1.0, 0.0])
    """
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise LamfastError(f"top_eigh needs a square matrix, got shape {C.shape}")
    d = C.shape[0]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= d:
        raise LamfastError(f"k must be an integer in [1, {d}], got {k!r}")
    if not np.isfinite(C).all():
        raise LamfastError("matrix contains NaN or inf")
    if method not in METHODS:
        raise LamfastError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    C = 0.5 * (C + C.T)
    if method == "auto":
        method = "subset" if (d <= config.EIGH_DENSE_MAX or 4 * k > d) else "arpack"
    if method == "arpack" and k >= d - 1:
        method = "subset"  # ARPACK needs k < d - 1
    if method == "dense":
        w, V = np.linalg.eigh(C)
        w, V = w[::-1][:k], V[:, ::-1][:, :k]
    elif method == "subset":
        w, V = scipy.linalg.eigh(C, subset_by_index=[d - k, d - 1], driver="evr")
        if w.shape[0] < k:
            # syevr's index range can return fewer pairs than asked inside a large cluster of
            # equal eigenvalues (e.g. sigma^2 I + X X^T); the full driver never does.
            return top_eigh(C, k, method="dense")
        w, V = w[::-1], V[:, ::-1]
    else:
        v0 = np.full(d, 1.0 / np.sqrt(d))  # fixed start vector: deterministic results
        try:
            w, V = scipy.sparse.linalg.eigsh(C, k=k, which="LA", v0=v0, tol=0.0)
        except scipy.sparse.linalg.ArpackNoConvergence:
            return top_eigh(C, k, method="subset")
        order = np.argsort(w)[::-1]
        w, V = w[order], V[:, order]
    return np.ascontiguousarray(w), np.ascontiguousarray(_sign_rule(V))
