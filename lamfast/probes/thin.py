"""Linear probes from thin moments (frames too wide for the full co-moment).

The probe of a target ``y`` from a latent ``z`` is a least-squares fit with bias, whose
normalised error is the Schur complement ``[tr S_yy - tr(S_yz S_zz^+ S_zy)] / tr S_yy``
(:mod:`lamfast.probes.closed`). It needs only ``S_zz``, the cross terms ``S_zy`` and the
trace of ``S_yy``: for the observation of a wide frame, ``do x dz`` cross terms and ``do``
variances, which a thin pass holds (:class:`~lamfast.moments.thin.ThinMoments`).
"""

from __future__ import annotations

import numpy as np

from ..moments.linalg import _pinv_psd


def schur_probe(S_zz: np.ndarray, S_zy: np.ndarray, total: float):
    """``(mse, G)``: the normalised error of the best linear probe ``y ~ G z + h`` and its
    weights, from ``Cov(z)``, ``Cov(z, y)`` and ``tr Cov(y)`` (a target without variance
    scores 1, as in :func:`lamfast.probes.closed.probe_mse`)."""
    G = S_zy.T @ _pinv_psd(S_zz)
    if total <= 0:
        return 1.0, G
    explained = float(np.sum(G * S_zy.T))
    return float(max(total - explained, 0.0) / total), G
