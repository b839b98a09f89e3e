"""Truncated symmetric eigensolver: the top-k eigenpairs with a deterministic sign rule."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import scipy.linalg

from .. import config
from .._blas import one_blas_thread, parallel_matmul
from .._jit import njit
from ..errors import LamfastError

METHODS = ("auto", "dense", "subset", "arpack", "krylov")


@njit
def _symmetrise(C, out):
    """``out = (C + C^T) / 2`` in 16 x 16 tiles (cache-friendly; the same bits as numpy's
    ``0.5 * (C + C.T)``, since IEEE addition is commutative). 16: at d = 4096 the pass took
    47 ms against 98 ms with 64 x 64 tiles (whose two 32 KiB tiles overflow L1)."""
    d = C.shape[0]
    for i0 in range(0, d, 16):
        for j0 in range(0, i0 + 1, 16):
            for i in range(i0, min(i0 + 16, d)):
                for j in range(j0, min(j0 + 16, i + 1)):
                    v = 0.5 * (C[i, j] + C[j, i])
                    out[i, j] = v
                    out[j, i] = v


def _sign_rule(V: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive (first one on ties)."""
    if V.size == 0:
        return V
    idx = np.argmax(np.abs(V), axis=0)
    signs = np.sign(V[idx, np.arange(V.shape[1])])
    signs[signs == 0] = 1.0
    return V * signs


def _orthonormalise(Z: np.ndarray, K: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Columns spanning ``Z`` orthogonalised against the orthonormal ``K`` (two passes).

    Classical Gram-Schmidt twice ("twice is enough", Giraud et al.), then a QR of the block.
    Directions that vanish (the Krylov space is exhausted, e.g. a low-rank C) are replaced by
    random ones, orthogonalised the same way, so the basis stays orthonormal and full.
    """
    scale = np.linalg.norm(Z, axis=0)
    for _ in range(2):
        if K.shape[1]:
            Z = Z - parallel_matmul(K, parallel_matmul(K.T, Z))
    Q, R = np.linalg.qr(Z)
    weak = np.abs(np.diag(R)) <= 1e-10 * max(float(scale.max(initial=0.0)), 1e-300)
    if weak.any():
        fill = rng.standard_normal((Z.shape[0], int(weak.sum())))
        basis = np.hstack([K, Q[:, ~weak]])
        for _ in range(2):
            fill = fill - basis @ (basis.T @ fill)
        Q[:, weak] = np.linalg.qr(fill)[0]
    return Q


def _krylov_top(
    C, k, *, block, max_basis, tol, v0=None, max_matvecs=None, check_every=3, stats=None
):
    """Top-``k`` eigenpairs by restarted block Krylov with Rayleigh-Ritz.

    The basis ``K`` grows by one block ``C Q_j`` (orthonormalised) per step; the product of every
    basis block with ``C`` is computed exactly once and kept, so the projected matrix
    ``T = K^T C K`` is exact (no three-term-recurrence assumption) and the Ritz residuals
    ``C u - theta u`` come for free. When the basis is full it restarts from the best Ritz
    vectors (half the basis) and their products (a thick restart). Stops when every wanted
    residual satisfies ``||C v - lambda v|| <= tol * ||C||`` with ``||C||`` bounded below by the
    largest Ritz value magnitude, so the returned pairs meet the rule for the true norm. Returns
    None when ``max_matvecs`` block products did not suffice (the caller falls back to LAPACK).
    """
    d = C.shape[0]
    b = block
    # A thick restart keeps half the basis: the Ritz vectors next to the wanted ones carry most
    # of what the basis learnt about the (often tightly clustered) part of the spectrum below.
    restart = max(b, (max_basis // b // 2) * b)
    rng = np.random.default_rng(0)  # fixed: the result is a deterministic function of C
    start = rng.standard_normal((d, b))
    if v0 is not None:
        start[:, : v0.shape[1]] = v0[:, :b]
    K = np.empty((d, max_basis))
    CK = np.empty((d, max_basis))
    T = np.zeros((max_basis, max_basis))
    with one_blas_thread():
        K[:, :b] = _orthonormalise(start, K[:, :0], rng)
        cols, done, matvecs, steps = b, 0, 0, 0  # basis columns; columns with a known C-product
        while True:
            # C times the newest block, and its column of T (every block is multiplied once).
            Z = parallel_matmul(C, K[:, done:cols])
            matvecs += 1
            steps += 1
            CK[:, done:cols] = Z
            H = parallel_matmul(K[:, :cols].T, Z)
            T[:cols, done:cols] = H
            T[done:cols, :cols] = H.T
            done = cols
            full = cols + b > max_basis
            # Never after the first product: the basis is then only the starting block, and a
            # starting block that holds eigenvectors (a warm start) would pass the residual
            # rule with whatever eigenvalues it holds. From the second product on, the basis
            # holds C times the random columns too.
            check = steps == 2 or steps % check_every == 0
            if full or check or (max_matvecs and matvecs >= max_matvecs):
                Tc = 0.5 * (T[:cols, :cols] + T[:cols, :cols].T)
                keep = min(cols, max(b, k, restart))
                theta, Y = scipy.linalg.eigh(Tc, subset_by_index=[cols - keep, cols - 1])
                theta, Y = theta[::-1], Y[:, ::-1]
                norm = max(abs(theta[0]), float(np.abs(np.diag(Tc)).max()), 1e-300)
                U = K[:, :cols] @ Y[:, :k]
                R = CK[:, :cols] @ Y[:, :k] - U * theta[:k]
                if stats is not None:
                    stats.update(block_products=matvecs, basis=cols)
                if np.linalg.norm(R, axis=0).max() <= tol * norm:
                    return theta[:k], U
                if max_matvecs and matvecs >= max_matvecs:
                    return None
                if full:
                    # Thick restart (Wu & Simon; Stewart's Krylov-Schur): C K = K T + Q B E^T
                    # with Q the next block, so the kept Ritz vectors U = K Y satisfy
                    # C U = U Theta + Q (...): continuing from Q keeps the Krylov structure.
                    # (Continuing from the residuals of converged Ritz vectors instead would
                    # feed rounding noise into the basis.)
                    new = _orthonormalise(Z, K[:, :cols], rng)
                    Yr = Y[:, :restart]
                    K[:, :restart] = K[:, :cols] @ Yr
                    CK[:, :restart] = CK[:, :cols] @ Yr
                    T[:, :] = 0.0
                    T[:restart, :restart] = np.diag(theta[:restart])
                    cols = done = restart
                    K[:, cols : cols + b] = new
                    cols += b
                    continue
            K[:, cols : cols + b] = _orthonormalise(Z, K[:, :cols], rng)
            cols += b


def top_eigh(
    C, k: int, method: str = "auto", *, v0=None, tol: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
        ``krylov``: restarted block Krylov with Rayleigh-Ritz on BLAS-3 products, stopped by the
        residual rule ``||C v - lambda v|| <= tol ||C||`` (falls back to ``subset`` if it does
        not converge within the cost of a dense solve);
        ``auto``: ``krylov`` when ``d >= config.EIGH_KRYLOV_MIN_D`` and
        ``k <= d / config.EIGH_KRYLOV_MAX_K_FRACTION``, else ``subset`` (thresholds measured,
        see ``config``).
    v0 : array_like, shape (d, j), optional
        Warm start for ``krylov`` (e.g. the eigenvectors of a previous fit): the first columns of
        the starting block. Other methods ignore it.
    tol : float, optional
        Residual tolerance of ``krylov`` relative to ``||C||`` (default ``config.EIGH_TOL``).

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
    if d >= 256:
        sym = np.empty_like(C)
        _symmetrise(C, sym)
        C = sym
    else:
        C = 0.5 * (C + C.T)
    if method == "auto":
        krylov = d >= config.EIGH_KRYLOV_MIN_D and k * config.EIGH_KRYLOV_MAX_K_FRACTION <= d
        method = "krylov" if krylov else "subset"
    start = None
    if method == "krylov" and v0 is not None:
        start = np.asarray(v0, dtype=np.float64).reshape(d, -1)[:, :k]
        if not np.isfinite(start).all():
            raise LamfastError("v0 contains NaN or inf")
    if method == "krylov":
        block = max(k, config.EIGH_KRYLOV_MIN_BLOCK)
        if start is not None:
            # A warm start spans (nearly) invariant directions: Ritz pairs inside it have tiny
            # residuals whether or not they are the top ones. Random columns beside it let the
            # first block products find larger eigenvalues outside it before the first check.
            block = max(block, start.shape[1] + max(4, k // 2))
        block = min(d, block)
        if 3 * block > d:
            method = "subset"  # a Krylov basis of a few blocks would be the whole space
    if method == "krylov":
        # Budget: stop (and use LAPACK) before the block products cost more than a dense solve
        # (~ 9 d^3 flops for syevr with vectors; each block product costs 2 d^2 * block).
        budget = max(4, int(9 * d / (2 * block)))
        got = _krylov_top(
            C,
            k,
            block=block,
            max_basis=max(
                2 * block, min(d // 2, config.EIGH_KRYLOV_MAX_BLOCKS * block) // block * block
            ),
            tol=config.EIGH_TOL if tol is None else float(tol),
            v0=start,
            max_matvecs=budget,
            check_every=config.EIGH_KRYLOV_CHECK_EVERY,
        )
        if got is None:
            method = "subset"
        else:
            w, V = got
    if method == "arpack" and k >= d - 1:
        method = "subset"  # ARPACK needs k < d - 1
    one_thread = one_blas_thread if d <= config.EIGH_LAPACK_ONE_THREAD_MAX_D else nullcontext
    if method == "dense":
        with one_thread():
            w, V = np.linalg.eigh(C)
        w, V = w[::-1][:k], V[:, ::-1][:, :k]
    elif method == "subset":
        with one_thread():
            w, V = scipy.linalg.eigh(C, subset_by_index=[d - k, d - 1], driver="evr")
        if w.shape[0] < k:
            # syevr's index range can return fewer pairs than asked inside a large cluster of
            # equal eigenvalues (e.g. sigma^2 I + X X^T); the full driver never does.
            return top_eigh(C, k, method="dense")
        w, V = w[::-1], V[:, ::-1]
    elif method == "arpack":
        # Imported here: scipy.sparse costs ~0.2 s at start-up (lamfast fit's cold start).
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        start = np.full(d, 1.0 / np.sqrt(d))  # fixed start vector: deterministic results
        try:
            w, V = eigsh(C, k=k, which="LA", v0=start, tol=0.0)
        except ArpackNoConvergence:
            return top_eigh(C, k, method="subset")
        order = np.argsort(w)[::-1]
        w, V = w[order], V[:, order]
    return np.ascontiguousarray(w), np.ascontiguousarray(_sign_rule(V))
