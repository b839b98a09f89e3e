"""Closed-form linear probes, the paper's LLO metric, and principal angles (docs/theory.md,
scoring).

A probe with bias from a latent ``z = W x`` to a target block ``y`` is a least-squares fit; for
moments its MSE is a Schur complement::

    MSE_y = [tr S_yy - tr(S_yz S_zz^+ S_zy)] / tr S_yy

The normaliser is the target's total variance under the evaluation law. For the paper's worlds
this is exactly its normalisation: ``da`` (actions), ``do`` (observations), ``do sigma^2``
(gaussian noise), ``db`` (exo noise, probed through ``b``). A target with no variance (no noise)
scores 1 by definition. ``LLO = -act_mse + obs_mse + noi_mse`` (best: 2).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ..errors import LamfastError
from ..moments.core import Moments
from ..moments.linalg import _pinv_psd
from ..solvers.fitted import FittedLAM, recon_loss

LATENTS = ("true", "surrogate")


def latent_map(lam: FittedLAM, moments: Moments, latent: str = "true") -> np.ndarray:
    """Matrix ``W`` with ``z = W x`` on the joint vector ``x`` of ``moments``.

    ``true``: ``z = C o + D o' = (C + D) o + D delta``. ``surrogate``: the paper's
    ``z~ = o^' - o = (A - I) o + B z``, probed when the decoder is learned.
    """
    if latent not in LATENTS:
        raise LamfastError(f"latent must be one of {', '.join(LATENTS)}, got {latent!r}")
    io, idelta = moments.index("o"), moments.index("delta")
    W = np.zeros((lam.dz, moments.dim))
    W[:, io] = lam.C + lam.D
    W[:, idelta] = lam.D
    if latent == "surrogate":
        W = lam.B @ W
        W[:, io] += lam.A - np.eye(lam.A.shape[0])
    return W


def _check_layout(train: Moments, test: Moments):
    if train.blocks != test.blocks:
        raise LamfastError("training and evaluation moments must share one layout")


def probe_mse(
    W: np.ndarray, moments: Moments, target, eval_moments: Moments | None = None
) -> float:
    """Normalised MSE of the optimal linear probe (with bias) from ``z = W x`` to ``target`` (a
    block name, or a matrix ``T`` with ``y = T x``).

    With ``eval_moments`` the probe (weights and intercept) is fitted on ``moments`` and scored on
    ``eval_moments`` (distribution shift, docs/theory.md, scoring).

    Examples
    --------
    >>> from lamfast import LinearWorld, fit
    >>> m = LinearWorld(do=16, da=4).population_moments()
    >>> W = latent_map(fit(m, dz=2), m)                  # z = W x, 2 of 4 action dims
    >>> round(probe_mse(W, m, "a"), 9), round(probe_mse(W, m, "o"), 9)
    (0.5, 1.0)
    """
    test = moments if eval_moments is None else eval_moments
    _check_layout(moments, test)
    G, h = linear_probe(W, moments, target)
    if eval_moments is not None:
        return probe_score(G, h, W, test, target)
    Sxy, _, total = _target(moments, target)
    if total <= 0:
        return 1.0  # nothing to predict: the paper's "no noise -> 1"
    mse = total - float(np.sum(G * (W @ Sxy).T))
    return float(max(mse, 0.0) / total)


def probe_score(G: np.ndarray, h: np.ndarray, W: np.ndarray, test: Moments, target) -> float:
    """Normalised MSE of the given probe ``y^ = G (W x) + h`` under the law of ``test``::

        [tr S_yy - 2 tr(G S_zy) + tr(G S_zz G^T) + ||mu_y - G mu_z - h||^2] / tr S_yy

    (1 when the target has no variance). ``target``: a block name, the block's slice of the
    joint vector, or a matrix ``T`` with ``y = T x``.
    """
    err, total = probe_error(G, h, W, test, target)
    return 1.0 if total <= 0 else float(max(err, 0.0) / total)


def probe_error(G, h, W, test: Moments, target) -> tuple[float, float]:
    """Unnormalised ``(MSE, tr S_yy)`` of the probe ``y^ = G (W x) + h`` under ``test``."""
    S, mu = test.cov, test.mean
    Sxy, mu_y, total = _target(test, target)
    Szz = W @ S @ W.T
    Szy = W @ Sxy
    bias = mu_y - G @ (W @ mu) - h
    mse = total - 2 * float(np.sum(G * Szy.T)) + float(np.sum((G @ Szz) * G)) + bias @ bias
    return float(mse), float(total)


def _target(m: Moments, target):
    """``(Cov(x, y), E[y], tr Cov(y))`` of a target: a block name or slice, or ``y = T x``."""
    if isinstance(target, str):
        target = m.index(target)
    if isinstance(target, slice):
        return m.cov[:, target], m.mean[target], float(np.trace(m.cov[target, target]))
    T = np.asarray(target, dtype=np.float64)
    Sxy = m.cov @ T.T
    return Sxy, T @ m.mean, float(np.sum(T * Sxy.T))


def _noise_target(moments: Moments) -> str | None:
    for name in ("b", "eps"):
        if moments.has(name):
            return name
    return None


def principal_angles(B: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between ``span(B)`` and ``span(basis)``."""
    return np.sort(scipy.linalg.subspace_angles(B, basis))


def probe_metrics(
    lam: FittedLAM,
    moments: Moments,
    *,
    eval_moments: Moments | None = None,
    latent: str = "true",
    world=None,
) -> dict:
    """The paper's metrics for a fitted LAM, averaged over tie draws (docs/theory.md, ties).

    Parameters
    ----------
    lam : FittedLAM or LinearLAM
    moments : Moments
        The law the probes are fitted on (and ``recon`` is measured on).
    eval_moments : Moments, optional
        Score the fitted probes on another law (e.g. random actions, noise-free transitions).
    latent : {"true", "surrogate"}
        Probe ``z`` or the surrogate ``o^' - o``.
    world : LinearWorld, optional
        Adds the principal angles of ``span(B)`` to ``span(X)`` (and ``span(Y)`` for exo noise).

    Returns
    -------
    dict
        ``act_mse``, ``obs_mse``, ``noi_mse``, ``recon``, ``llo`` (floats; ``act_mse`` and ``llo``
        are NaN without an ``a`` block), plus ``angles_action`` / ``angles_noise`` (lists, radians)
        when ``world`` is given.

    Examples
    --------
    >>> from lamfast import LinearWorld, fit
    >>> m = LinearWorld(do=16, da=4).population_moments()
    >>> r = probe_metrics(fit(m, dz=2), m)
    >>> round(r["act_mse"], 9), round(r["llo"], 9)
    (0.5, 1.5)
    """
    if eval_moments is not None:
        _check_layout(moments, eval_moments)
    lams = (lam, *lam.draws) if lam.draws else (lam,)
    rows = [_metrics_one(one, moments, eval_moments, latent, world) for one in lams]
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], list):
            out[key] = np.mean(np.array(values), axis=0).tolist()
        else:
            out[key] = float(np.mean(values))
    return out


def _metrics_one(lam, moments, eval_moments, latent, world) -> dict:
    W = latent_map(lam, moments, latent)
    act = probe_mse(W, moments, "a", eval_moments) if moments.has("a") else float("nan")
    obs = probe_mse(W, moments, "o", eval_moments)
    target = _noise_target(moments)
    noi = probe_mse(W, moments, target, eval_moments) if target else 1.0
    out = {
        "act_mse": act,
        "obs_mse": obs,
        "noi_mse": noi,
        "recon": recon_loss(lam, moments),
        "llo": -act + obs + noi,
    }
    if world is not None:
        out["angles_action"] = principal_angles(lam.B, world.X).tolist()
        if world.noise == "exo":
            out["angles_noise"] = principal_angles(lam.B, world.Y).tolist()
    return out


def linear_probe(W: np.ndarray, m: Moments, target="a") -> tuple[np.ndarray, np.ndarray]:
    """Weights ``G`` and intercept ``h`` of the least-squares probe ``y ~ G (W x) + h``.

    ``target``: a block name or slice, or a matrix ``T`` with ``y = T x``.
    """

    Sxy, mu_y, _ = _target(m, target)
    Szz = W @ m.cov @ W.T
    G = (W @ Sxy).T @ _pinv_psd(Szz)
    h = mu_y - G @ (W @ m.mean)
    return G, h
