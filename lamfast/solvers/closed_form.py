"""The ``eig`` solver: every closed form of the linear LAM (``docs/theory.md``).

PCA of ``E[delta delta^T]`` (identity decoder, any encoder; learned decoder, free encoder and
kappa > 0 with a random policy), innovation PCA (learned decoder, tied encoder) and action
supervision (top eigenvectors of ``M_aux``). Cases without a closed form raise an error naming
``moment-gd``. Tied eigenvalue blocks that ``dz`` splits are detected and sampled by seeded
random rotations.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..errors import LamfastError
from ..moments.core import Moments
from ..moments.eigen import top_eigh
from ..moments.linalg import _pinv_psd, _psd_power
from .fitted import FittedLAM, recon_loss
from .variant import Variant


def _haar(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random n x n orthogonal matrix (QR of a Gaussian, signs fixed by diag(R))."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))


def _top_with_ties(S, dz, rng, zero_block_inert):
    """Top-dz eigenvectors of S, the tied block that dz splits (if any), and rotated draws.

    ``zero_block_inert``: when the split block has eigenvalue 0 and the latent is the projection
    of the same matrix's variable, the extra directions carry no signal and no draw is needed.
    """
    d = S.shape[0]
    k = min(d, dz + 8)
    w, V = top_eigh(S, k)
    if dz == d:
        return w, V, None, []
    tol = config.TIE_RTOL * max(abs(w[0]), np.finfo(float).tiny)
    if w[dz - 1] - w[dz] > tol:
        return w, V[:, :dz], None, []
    while True:
        i1 = dz
        while i1 < k and w[dz - 1] - w[i1] <= tol:
            i1 += 1
        if i1 < k or k == d:
            break
        k = min(d, 2 * k)
        w, V = top_eigh(S, k)
    i0 = dz - 1
    while i0 > 0 and w[i0 - 1] - w[dz - 1] <= tol:
        i0 -= 1
    tie = (int(i0), int(i1))
    if zero_block_inert and abs(w[dz - 1]) <= tol:
        return w, V[:, :dz], tie, []
    draws = []
    for _ in range(config.TIE_DRAWS):
        Q = _haar(i1 - i0, rng)
        draws.append(np.hstack([V[:, :i0], V[:, i0:i1] @ Q[:, : dz - i0]]))
    return w, V[:, :dz], tie, draws


def _uncorrelated(moments: Moments, names) -> bool:
    """True when ``E[y o^T] = 0`` (to rounding) for every named block ``y``: a random policy."""
    Moo = moments.second_moment("o")
    for name in names:
        cross = moments.second_moment(name, "o")
        Myy = moments.second_moment(name)
        scale = np.sqrt(max(np.trace(Myy), 0.0) * max(np.trace(Moo), 0.0))
        if scale > 0 and np.linalg.norm(cross) > config.INDEPENDENCE_RTOL * scale:
            return False
    return True


def _mean_consistent_with_zero(moments: Moments, name: str) -> bool:
    """Whether the mean of block ``name`` is zero up to 6 standard errors (exactly, if n = inf)."""
    mu = moments.block_mean(name)
    tr = max(float(np.trace(moments.block_cov(name))), 0.0)
    if np.isinf(moments.count):
        return float(mu @ mu) <= config.INDEPENDENCE_RTOL * max(tr, np.finfo(float).tiny)
    # ||mu||^2 has expectation tr(Sigma)/n under a zero mean; 36 = (6 standard errors)^2.
    return float(mu @ mu) <= 36.0 * tr / moments.count


def _tie_note(tie, dz, draws) -> str:
    head = f"eigenvalues {tie[0] + 1}..{tie[1]} are tied and dz = {dz} splits them: "
    if not draws:
        return head + "they are zero, so the extra latent directions carry nothing"
    return head + f"the optimum is not unique; metrics average {len(draws)} random rotations"


class NoClosedFormError(LamfastError):
    """A variant whose optimum on these moments has no closed form; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(
            f"{reason} has no closed form; use the moment-gd solver (solver='moment-gd', "
            "--solver moment-gd, or --solver auto)"
        )
        self.reason = reason


def _no_closed_form(reason: str) -> NoClosedFormError:
    return NoClosedFormError(reason)


def _make(moments, variant, dz, seed, spectrum, build, Vs, tie, notes):
    """Build the primary LAM and one LAM per tie draw from eigenvector sets ``Vs``."""
    lams = []
    for V in Vs:
        A, B, C, D, more = build(V)
        lam = FittedLAM(dz, variant, "eig", seed, A, B, C, D, np.asarray(spectrum), **more)
        lam.loss = recon_loss(lam, moments)
        lam.tie, lam.notes = tie, tuple(notes)
        lams.append(lam)
    lams[0].draws = tuple(lams[1:])
    return lams[0]


def _fit_unsupervised(m: Moments, dz, variant, rng, seed) -> FittedLAM:
    do = m.size("o")
    eye = np.eye(do)
    M = m.second_moment("delta")
    learned = variant.decoder == "learned"
    notes = []
    if learned and variant.encoder == "free":
        if variant.kappa == 0:
            raise _no_closed_form(
                "a learned decoder with a free encoder and kappa = 0 (the o-content of z is a "
                "flat direction of the loss)"
            )
        if not _uncorrelated(m, ["delta"]):
            raise _no_closed_form(
                "a learned decoder, free encoder and kappa > 0 with o correlated to delta"
            )
        notes.append("kappa > 0 with a random policy forces A = I, C = -D: PCA of E[delta delta^T]")
        learned = False  # the optimum is the identity-decoder PCA
    if learned:
        Moo_inv = _pinv_psd(m.second_moment("o"))
        K = m.second_moment("delta", "o") @ Moo_inv
        Mr = M - K @ m.second_moment("o", "delta")
        Mr = 0.5 * (Mr + Mr.T)
        spectrum, V, tie, draws = _top_with_ties(Mr, dz, rng, zero_block_inert=False)
        notes.append(
            "innovation PCA: z = V^T delta, V = top eigenvectors of E[r r^T], r = delta - K o"
        )

        def build(V):
            P = V @ V.T
            return eye + (eye - P) @ K, V.copy(), -V.T.copy(), V.T.copy(), {}

    else:
        spectrum, V, tie, draws = _top_with_ties(M, dz, rng, zero_block_inert=True)
        notes.append("PCA of E[delta delta^T]: z = V^T delta")

        def build(V):
            return eye.copy(), V.copy(), -V.T.copy(), V.T.copy(), {}

    if tie is not None:
        notes.append(_tie_note(tie, dz, draws))
    return _make(m, variant, dz, seed, spectrum, build, [V, *draws], tie, tuple(notes))


def _fit_supervised(m: Moments, dz, variant, w, rng, seed) -> FittedLAM:
    if not m.has("a"):
        raise LamfastError("action supervision needs an 'a' block in the moments")
    identity_tied = variant.decoder == "identity" and variant.encoder == "tied"
    flat = variant.decoder == "learned" and variant.encoder == "free" and variant.kappa == 0
    if flat:
        raise _no_closed_form(
            "action supervision with a learned decoder, free encoder and kappa = 0"
        )
    if not identity_tied and not _uncorrelated(m, ["delta", "a"]):
        raise _no_closed_form(
            "action supervision with o correlated to (delta, a) and an encoder or decoder "
            "that can use o"
        )
    if not _mean_consistent_with_zero(m, "delta"):
        raise _no_closed_form("action supervision with a non-zero mean frame difference")
    do, da = m.size("o"), m.size("a")
    eye = np.eye(do)
    S = m.block_cov("delta")
    S_half_pinv = _psd_power(S, -0.5)
    Sda = m.block_cov("delta", "a")
    G = S_half_pinv @ Sda
    M_aux = S / do + (w / da) * (G @ G.T)
    M_aux = 0.5 * (M_aux + M_aux.T)
    spectrum, Y, tie, draws = _top_with_ties(M_aux, dz, rng, zero_block_inert=True)
    M = m.second_moment("delta")
    mu_a, mu_d = m.block_mean("a"), m.block_mean("delta")

    def build(Y):
        K = Y.T @ S_half_pinv
        B = M @ K.T @ _pinv_psd(K @ M @ K.T)
        E = Sda.T @ K.T @ _pinv_psd(K @ S @ K.T)
        h = mu_a - E @ (K @ mu_d)
        return eye.copy(), B, -K, K.copy(), {"E": E, "h": h}

    notes = [
        f"action supervision, weight w = {w:.6g}: z = K delta, "
        "K = Y^T Sigma^(+1/2), Y = top eigenvectors of M_aux"
    ]
    if tie is not None:
        notes.append(_tie_note(tie, dz, draws))
    return _make(m, variant, dz, seed, spectrum, build, [Y, *draws], tie, tuple(notes))


def eig_fit(moments: Moments, dz: int, variant: Variant, seed: int = 0) -> FittedLAM:
    """The closed-form optimum of ``variant`` on ``moments`` (checked inputs, see ``solve``)."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(3,)))
    w = variant.label_weight
    if w > 0:
        return _fit_supervised(moments, dz, variant, w, rng, int(seed))
    return _fit_unsupervised(moments, dz, variant, rng, int(seed))
