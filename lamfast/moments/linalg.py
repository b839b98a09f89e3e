"""Linear algebra of PSD matrices (covariances): powers and pseudo-inverses on the support."""

from __future__ import annotations

import numpy as np

from .. import config


def _psd_power(S: np.ndarray, power: float) -> np.ndarray:
    """``S^power`` of a PSD matrix on its support (pseudo-inverse power when negative)."""
    w, V = np.linalg.eigh(0.5 * (S + S.T))
    cut = config.pinv_rtol(S.shape[0]) * max(w.max(initial=0.0), 0.0)
    keep = w > cut
    wp = np.zeros_like(w)
    wp[keep] = w[keep] ** power
    return (V * wp) @ V.T


def _pinv_psd(S: np.ndarray) -> np.ndarray:
    return _psd_power(S, -1.0)
