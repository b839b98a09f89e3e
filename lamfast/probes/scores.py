"""Closed-form scores of any latent from the moments of ``[z, o, delta, a, noise]``: held-out
probes, the reference latents (the linear LAM of the same size, the supervised ceiling, chance),
and the future-exogenous leakage (docs/theory.md, probing any latent).

A latent is a *feature map*: a matrix ``W`` with ``z = W x`` on the joint vector ``x``. The user's
latent selects the ``z`` block; the references are maps fitted on the training folds. Every
target is a matrix ``T`` with ``y = T x`` too (the action block, ``o``, the exogenous part of
``o' = o + delta``), so one probe formula (:func:`~lamfast.probes.closed.linear_probe`,
:func:`~lamfast.probes.closed.probe_error`) scores them all.
"""

from __future__ import annotations

import numpy as np

from ..moments.core import Moments
from ..moments.linalg import _pinv_psd
from ..solvers.solve import solve
from ..solvers.variant import Variant
from .closed import latent_map, linear_probe, probe_error

MAPS = ("latent", "linear_lam", "ceiling", "chance")


def select(m: Moments, name: str) -> np.ndarray:
    """The matrix that selects block ``name`` of the joint vector (its rows only, not the
    ``p x p`` identity)."""
    sl = m.index(name)
    rows = np.arange(sl.stop - sl.start)
    W = np.zeros((len(rows), m.dim))
    W[rows, sl.start + rows] = 1.0
    return W


def noise_target(m: Moments, pixels: np.ndarray | None) -> np.ndarray | str | None:
    """The exogenous part: a matrix ``T`` with ``T x`` the pixels ``pixels`` of
    ``o' = o + delta``, or the ``noise`` block's name (noise arrays saved with the data)."""
    if m.has("noise"):
        return "noise"
    if pixels is None:
        return None
    T = np.zeros((len(pixels), m.dim))
    rows = np.arange(len(pixels))
    io, idelta = m.index("o"), m.index("delta")
    T[rows, io.start + pixels] = 1.0
    T[rows, idelta.start + pixels] = 1.0
    return T


def linear_lam_map(train: Moments, dz: int, seed: int = 0) -> np.ndarray:
    """The map of the linear LAM of ``dz`` latents (identity decoder, tied encoder: PCA of the
    frame differences) fitted on ``train``, embedded in the joint layout."""
    names = ["o", "delta"] + (["a"] if train.has("a") else [])
    sub = train.select(names)
    lam = solve(sub, dz, Variant(), "eig", seed)
    W_sub = latent_map(lam, sub)
    W = np.zeros((dz, train.dim))
    for name in ("o", "delta"):
        W[:, train.index(name)] = W_sub[:, sub.index(name)]
    return W


def ceiling_map(train: Moments, dz: int) -> np.ndarray:
    """The best linear latent of ``dz`` values for the action, from ``(o, o')``: reduced-rank
    regression of ``a`` on ``x = [o, delta]`` (docs/theory.md).

    With ``P = S_ax S_xx^+`` the full least-squares probe, the fitted values have covariance
    ``M = P S_xa``; the best rank-``dz`` predictor keeps the top ``dz`` eigenvectors ``U`` of
    ``M`` (Eckart-Young on the fitted values), so ``z = U^T P x``.
    """
    ix = np.r_[np.arange(train.dim)[train.index("o")], np.arange(train.dim)[train.index("delta")]]
    ia = train.index("a")
    S = train.cov
    Sxx = S[np.ix_(ix, ix)]
    Sxa = S[ix, ia]
    P = Sxa.T @ _pinv_psd(Sxx)
    M = P @ Sxa
    w, U = np.linalg.eigh(0.5 * (M + M.T))
    U = U[:, np.argsort(w)[::-1][: min(dz, M.shape[0])]]
    W = np.zeros((U.shape[1], train.dim))
    W[:, ix] = U.T @ P
    return W


def fold_maps(train: Moments, dz_ref: int | None, seed: int) -> dict[str, np.ndarray]:
    """The feature maps scored on one fold, fitted on its training moments (references only
    when ``dz_ref``; the ceiling only with actions)."""
    maps = {"latent": select(train, "z")}
    if dz_ref:
        maps["linear_lam"] = linear_lam_map(train, dz_ref, seed)
        if train.has("a"):
            maps["ceiling"] = ceiling_map(train, dz_ref)
    maps["chance"] = np.zeros((0, train.dim))
    return maps


def _score(W, T, train, test) -> float:
    """Normalised held-out MSE of the probe ``z = W x -> y = T x``: 1 without variance in
    sample (the paper's convention), undefined (NaN) on a held-out fold whose target does not
    vary (it would score 1 however well the probe predicts; the summary skips such folds)."""
    G, h = linear_probe(W, train, T)
    err, total = probe_error(G, h, W, test, T)
    if total <= 0:
        return 1.0 if test is train else float("nan")
    return float(max(err, 0.0) / total)


def _leak(W, T, Wo, train, test) -> float:
    """Future-exogenous leakage: the share of the exogenous part of ``o'`` that ``o`` does not
    predict and the latent does (a partial R^2), ``1 - MSE(z, o -> y) / MSE(o -> y)``."""
    G, h = linear_probe(Wo, train, T)
    base, total = probe_error(G, h, Wo, test, T)
    if total <= 0 or base <= 1e-12 * total:
        return float("nan")  # nothing exogenous left once o is known
    both = np.vstack([W, Wo])
    G, h = linear_probe(both, train, T)
    err, _ = probe_error(G, h, both, test, T)
    return float(1.0 - max(err, 0.0) / base)


def map_scores(W: np.ndarray, train: Moments, test: Moments, pixels) -> dict:
    """``act_mse``, ``act_r2``, ``obs_mse``, ``noi_mse``, ``leak`` and ``llo`` of one map (NaN
    where the target is not defined)."""
    nan = float("nan")
    out = {"act_mse": nan, "act_r2": nan}
    if train.has("a"):
        out["act_mse"] = _score(W, "a", train, test)
        out["act_r2"] = 1.0 - out["act_mse"]
    out["obs_mse"] = _score(W, "o", train, test)
    T = noise_target(train, pixels)
    if T is None:
        out["noi_mse"] = out["leak"] = nan
    else:
        out["noi_mse"] = _score(W, T, train, test)
        out["leak"] = _leak(W, T, select(train, "o"), train, test)
    out["llo"] = -out["act_mse"] + out["obs_mse"] + out["noi_mse"]
    return out
