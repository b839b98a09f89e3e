"""Linear probes from thin moments (frames too wide for the full co-moment).

The probe of a target ``y`` from a latent ``z`` is a least-squares fit with bias, whose
normalised error is the Schur complement ``[tr S_yy - tr(S_yz S_zz^+ S_zy)] / tr S_yy``
(:mod:`lamfast.probes.closed`). It needs only ``S_zz``, the cross terms ``S_zy`` and the
trace of ``S_yy``: for the observation of a wide frame, ``do x dz`` cross terms and ``do``
variances, which a thin pass holds (:class:`~lamfast.moments.thin.ThinMoments`).

A probe fitted on one law and scored on another (a held-out fold) needs no more: with ``G``,
``h`` fitted on the training moments, its error on the test moments is

    tr S_yy - 2 tr(G S_zy) + tr(G S_zz G^T) + ||mu_y - G mu_z - h||^2,

the formula of :func:`lamfast.probes.closed.probe_error`, where every term is a narrow
covariance, a cross term, a mean or the sum of the target's variances
(:func:`thin_probe`, :func:`thin_probe_error`, :func:`thin_map_scores`). Latents are maps
``z = W y`` of the narrow block ``y``; targets are wide blocks (``o``, the exogenous pixels of
``o'``) or narrow ones (the actions, scored on the narrow moments as on narrow frames).
"""

from __future__ import annotations

import numpy as np

from ..moments.core import Moments
from ..moments.linalg import _pinv_psd
from ..moments.thin import ThinMoments
from .scores import _score


def schur_probe(S_zz: np.ndarray, S_zy: np.ndarray, total: float):
    """``(mse, G)``: the normalised error of the best linear probe ``y ~ G z + h`` and its
    weights, from ``Cov(z)``, ``Cov(z, y)`` and ``tr Cov(y)`` (a target without variance
    scores 1, as in :func:`lamfast.probes.closed.probe_mse`)."""
    G = S_zy.T @ _pinv_psd(S_zz)
    if total <= 0:
        return 1.0, G
    explained = float(np.sum(G * S_zy.T))
    return float(max(total - explained, 0.0) / total), G


def _terms(W: np.ndarray, m: ThinMoments, target: str):
    """``(S_zz, S_zy, mu_z)`` of the latent ``z = W y`` and the wide block ``target``."""
    S_zz = W @ m.cov_y @ W.T
    S_zy = W @ m.wide_cross(target).T
    return S_zz, S_zy, W @ m.mean_y


def thin_probe(W: np.ndarray, m: ThinMoments, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``G`` and intercept ``h`` of the least-squares probe ``y ~ G (W n) + h`` from the
    narrow block ``n`` to the wide block ``target`` (``W``: rows on the narrow layout)."""
    S_zz, S_zy, mu_z = _terms(W, m, target)
    G = S_zy.T @ _pinv_psd(S_zz)
    return G, m.wide_mean(target) - G @ mu_z


def thin_probe_error(G, h, W, test: ThinMoments, target: str) -> tuple[float, float]:
    """Unnormalised ``(MSE, tr S_yy)`` of the probe ``y^ = G (W n) + h`` of the wide block
    ``target`` under ``test`` (the terms of :func:`lamfast.probes.closed.probe_error`)."""
    S_zz, S_zy, mu_z = _terms(W, test, target)
    total = float(test.wide_var(target).sum())
    bias = test.wide_mean(target) - G @ mu_z - h
    mse = total - 2 * float(np.sum(G * S_zy.T)) + float(np.sum((G @ S_zz) * G)) + bias @ bias
    return float(mse), total


def thin_score(W, target: str, train: ThinMoments, test: ThinMoments, in_sample: bool) -> float:
    """Normalised error of the probe fitted on ``train``, scored on ``test``: as
    :func:`lamfast.probes.scores._score`, 1 for a target without variance in sample, NaN on a
    held-out fold where it does not vary."""
    G, h = thin_probe(W, train, target)
    err, total = thin_probe_error(G, h, W, test, target)
    if total <= 0:
        return 1.0 if in_sample else float("nan")
    return float(max(err, 0.0) / total)


def thin_map_scores(
    W: np.ndarray,
    train: ThinMoments,
    test: ThinMoments,
    narrow_train: Moments,
    narrow_test: Moments,
    in_sample: bool,
) -> dict:
    """The scores of :func:`lamfast.probes.scores.map_scores` for a latent map ``W`` of the
    narrow block: ``act_mse`` on the narrow moments (``narrow_*``, the same objects in sample),
    ``obs_mse`` and ``noi_mse`` (the wide block ``noise``, when there is one) from the thin
    terms. ``leak`` is NaN: its probe from ``o`` needs ``Cov(o)``, ``do x do``."""
    nan = float("nan")
    out = {"act_mse": nan, "act_r2": nan}
    if narrow_train.has("a"):
        out["act_mse"] = _score(W, "a", narrow_train, narrow_test)
        out["act_r2"] = 1.0 - out["act_mse"]
    out["obs_mse"] = thin_score(W, "o", train, test, in_sample)
    if any(name == "noise" for name, _ in train.wide):
        out["noi_mse"] = thin_score(W, "noise", train, test, in_sample)
    else:
        out["noi_mse"] = nan
    out["leak"] = nan
    out["llo"] = -out["act_mse"] + out["obs_mse"] + out["noi_mse"]
    return out
