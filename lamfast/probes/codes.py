"""What a codebook's codes say about the actions: usage, perplexity, dead codes, and the code x
action contingency table (normalised mutual information, purity).

Every number here is a function of the contingency table ``N[k, a]`` (transitions with code ``k``
and action ``a``), counted in the same pass as the moments; with continuous actions only the
code counts exist.
"""

from __future__ import annotations

import numpy as np

from .. import config


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def code_stats(counts: np.ndarray, n_actions: int | None = None) -> dict:
    """Statistics of one codebook from its contingency table.

    Parameters
    ----------
    counts : ndarray, shape (K, n_actions) or (K,)
        Transitions per code and action (or per code only, without discrete actions).

    Returns
    -------
    dict
        ``size``, ``used``, ``dead`` (codes never used), ``usage`` (fraction per code),
        ``perplexity`` (``exp`` of the usage entropy: the number of codes in effective use),
        ``collapse`` (bool, see ``config.CODE_COLLAPSE_FRACTION``), and with actions ``nmi``
        (mutual information over the arithmetic mean of the two entropies, scikit-learn's
        default normalisation), ``purity`` (the fraction of transitions whose code's most
        frequent action is theirs) and ``contingency`` (the table, as lists).

    Examples
    --------
    >>> r = code_stats(np.array([[5, 0], [0, 5], [0, 0]]))
    >>> r["used"], r["dead"], round(r["perplexity"], 6), r["nmi"], r["purity"]
    (2, 1, 2.0, 1.0, 1.0)
    """
    counts = np.asarray(counts, dtype=np.float64)
    per_code = counts.sum(axis=1) if counts.ndim == 2 else counts
    n = float(per_code.sum())
    usage = per_code / n
    K = int(per_code.shape[0])
    perplexity = float(np.exp(_entropy(usage)))
    used = int(np.count_nonzero(per_code))
    reach = min(K, n_actions) if n_actions else K
    out = {
        "size": K,
        "used": used,
        "dead": K - used,
        "usage": usage.tolist(),
        "perplexity": perplexity,
        "collapse": bool(reach > 1 and perplexity < config.CODE_COLLAPSE_FRACTION * reach),
    }
    if counts.ndim == 2:
        joint = counts / n
        h_code = _entropy(usage)
        h_act = _entropy(joint.sum(axis=0))
        mi = _entropy(joint.sum(axis=0)) + h_code - _entropy(joint.ravel())
        mean_h = 0.5 * (h_code + h_act)
        # both partitions trivial: scikit-learn scores 1 (identical labelings), one trivial: 0
        if h_code == 0 and h_act == 0:
            nmi = 1.0
        else:
            nmi = float(max(mi, 0.0) / mean_h) if mean_h > 0 else 0.0
        out["nmi"] = min(nmi, 1.0)
        out["purity"] = float(counts.max(axis=1).sum() / n)
        out["contingency"] = counts.astype(np.int64).tolist()
    return out
