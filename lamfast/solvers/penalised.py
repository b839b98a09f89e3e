"""Learned decoder, free encoder, augmentation ``kappa > 0``: the exact optimum on any moments.

docs/theory.md item 4 solves this variant when ``E[delta o^T] = 0`` (a random policy in the
population): ``A = I``, ``C = -D``, PCA of ``E[delta delta^T]``. On sampled moments (wishart,
stream, recorded frames) ``E[delta o^T]`` is never exactly zero. This module solves the sampled
objective exactly, in closed form, for any ``E[delta o^T]``.

Notation: ``x = [o; delta]`` with uncentred second moments ``Moo = E[o o^T]``,
``Mdo = E[delta o^T]``, ``Mdd = E[delta delta^T]`` (what :class:`~.gd.MomentObjective` reads),
``S = C + D``, ``k = kappa``. The objective (gd.py, ``L_rec + L_aug``) times ``do`` is::

    F = E||P o + R delta||^2 + k^2 ||Q||^2 + k^2 ||P - Q||^2,
        P = A - I + B S,   R = B D - I,   Q = B S          (so A - I = P - Q).

**1. Profile A and S** (``B`` of full column rank, ``D`` fixed). ``(A, S) -> (P, Q)`` is a
bijection onto ``P`` free and ``Q`` with columns in ``range(B)`` (``A = I + P - Q``,
``S = B^+ Q``). Only the penalty reads ``Q``: writing ``P = Pi P + (I - Pi) P`` (``Pi`` the
orthogonal projector on ``range(B)``), ``||Q||^2 + ||P - Q||^2`` is least at ``Q = Pi P / 2``,
where it is ``tr(P^T N P)``, ``N = I - Pi / 2``.

**2. Profile P.** What is left is a quadratic in ``P`` whose stationarity condition is the
Sylvester equation ``P Moo + k^2 N P = -R Mdo``. ``N`` is ``1/2`` on ``range(B)`` and ``1`` off
it, so with ``T1 = (Moo + k^2 I)^-1`` and ``Th = (Moo + k^2/2 I)^-1``::

    P = -(I - Pi) R Mdo T1 - Pi R Mdo Th,

and the minimum is ``tr(R Mdd R^T) - <R Mdo, -P>``. With the ridge innovations
``Sig1 = Mdd - Mdo T1 Mdo^T``, ``Sigh = Mdd - Mdo Th Mdo^T`` and
``Sig3 = Sig1 - Sigh = Mdo (Th - T1) Mdo^T`` (PSD) this is the profiled loss::

    F(B, D) = tr(R Sig1 R^T) - tr(Pi R Sig3 R^T Pi)
            = tr(Sig1) - tr(Pi Sig3) + tr(B D Sigh D^T B^T) - 2 tr(B D Sigh),   (Pi B = B)

    dF/dB = 2 (B D Sigh D^T - Sigh D^T - (I - Pi) Sig3 B (B^T B)^-1)
    dF/dD = 2 (B^T B D Sigh - B^T Sigh)

(:func:`profiled_loss`; checked against finite differences in tests/test_penalised.py).

**3. Profile D.** ``F`` is a convex quadratic in ``D``: ``Sigh`` is PSD since
``Th <= Moo^+`` on the range of ``Mdo^T`` makes it at least the Schur complement
``Mdd - Mdo Moo^+ Mdo^T >= 0``. ``D = B^+`` zeroes ``dF/dD``, hence minimises, and there
``F = tr(Sig1) - tr(Pi Sig1)``.

**4. B.** By Ky Fan, ``tr(Pi Sig1)`` over rank-``dz`` projectors is largest on the top-``dz``
eigenvectors ``V`` of ``Sig1``. A ``B`` of rank ``r < dz`` is the same model as a latent of
size ``r`` (``B z`` only sees ``range(B)``), whose optimum keeps fewer eigenvalues and is no
better. So the global minimum is::

    do * L* = sum of the discarded eigenvalues of
              Sig1 = E[delta delta^T] - E[delta o^T] (E[o o^T] + k^2 I)^-1 E[o delta^T],

reached at ``B = V``, ``D = V^T``. There ``R = -(I - V V^T)``, so ``P = (I - V V^T) Mdo T1``
and ``Pi P = 0``: ``Q = 0``, so ``S = 0``, and the encoder is tied, ``C = -V^T``::

    z = V^T delta,    A = I + (I - V V^T) E[delta o^T] (E[o o^T] + k^2 I)^-1.

``Sig1`` is the innovation of the ridge regression of ``delta`` on ``o`` with penalty ``k^2``
(``E[o o^T] + k^2 I`` is the second moment of the augmented ``o + k2`` that the decoder reads).
When ``E[delta o^T] = 0`` it is ``E[delta delta^T]`` and the fit is item 4's PCA. As
``k -> 0`` it tends to the innovation PCA of item 2. As ``k -> inf`` it tends to the PCA of
item 1. The latent carries no ``o``: the ``o``-coefficient ``P`` of the optimum lies outside
``range(B)``, so copying ``o`` into ``z`` (``Q != 0``) would only add ``k^2 ||B S||^2``.

**Stationarity check.** At ``(V, V^T)`` the profiled gradient is ``dF/dD = 0`` and
``dF/dB = -2 (I - V V^T) Sig1 V``, the eigenvector residual. :func:`penalised_fit` reports its
Frobenius norm divided by ``tr E[delta delta^T]`` (``F`` at ``A = I``, ``B = 0``), which is
rounding-level (~1e-15). No iteration is needed: the cost is one ``do x do`` solve and one
top-``dz`` eigenproblem, like the other closed forms.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..errors import LamfastError
from ..moments.core import Moments
from ..moments.eigen import top_eigh
from .fitted import FittedLAM, recon_loss
from .variant import Variant, check_dz


def _blocks(moments: Moments):
    """``Moo, Mdo, Mdd``: the uncentred second moments that the objective reads."""
    for name in ("o", "delta"):
        if not moments.has(name):
            raise LamfastError(f"fit needs a block {name!r}; moments have {list(moments.names)}")
    do = moments.size("o")
    if moments.size("delta") != do:
        raise LamfastError(
            f"delta has width {moments.size('delta')}, o has {do}: they must be the same"
        )
    Mx = moments.select(["o", "delta"]).second_moment()
    Mx = 0.5 * (Mx + Mx.T)
    return Mx[:do, :do], Mx[do:, :do], Mx[do:, do:]


def _ridge(Moo, Mdo, Mdd, c):
    """``(Mdd - Mdo (Moo + c I)^-1 Mdo^T, Mdo (Moo + c I)^-1)`` for ``c > 0``, symmetrised."""
    G = Moo + c * np.eye(Moo.shape[0])
    K = np.linalg.solve(G, Mdo.T).T  # G symmetric: (G^-1 Mdo^T)^T = Mdo G^-1
    Sig = Mdd - K @ Mdo.T
    return 0.5 * (Sig + Sig.T), K


def ridge_innovation(moments: Moments, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """``Sig1`` and the ridge coefficient ``K = E[delta o^T] (E[o o^T] + kappa^2 I)^-1``.

    ``Sig1 = E[delta delta^T] - K E[o delta^T]``. Its top-``dz`` eigenvectors ``V`` define the
    optimum (module docstring), whose matrices :func:`penalised_matrices` builds.
    """
    k2 = float(kappa) ** 2
    if not np.isfinite(k2) or k2 <= 0:
        raise LamfastError(f"the ridge innovation needs kappa > 0, got {kappa!r}")
    return _ridge(*_blocks(moments), k2)


def penalised_matrices(V: np.ndarray, K: np.ndarray):
    """``A, B, C, D`` of the optimum for orthonormal eigenvectors ``V`` (do x dz) of ``Sig1``.

    ``B = V``, ``D = V^T``, ``C = -V^T``, ``A = I + (I - V V^T) K`` with ``K`` from
    :func:`ridge_innovation`.
    """
    A = K - V @ (V.T @ K)
    A[np.diag_indices_from(A)] += 1.0
    return A, V.copy(), -V.T.copy(), V.T.copy()


def penalised_objective(moments: Moments, lam, kappa: float) -> float:
    """The exact objective per coordinate, ``(E||R x||^2 + k^2 ||A - I||^2 + k^2 ||B S||^2) / do``.

    ``lam`` is anything with matrices ``A, B, C, D``. This is ``MomentObjective.value`` of gd.py
    with ``label_weight = 0``.
    """
    Moo, Mdo, Mdd = _blocks(moments)
    do = Moo.shape[0]
    k2 = float(kappa) ** 2
    eye = np.eye(do)
    S = lam.C + lam.D
    BS = lam.B @ S
    P = lam.A - eye + BS
    R = lam.B @ lam.D - eye
    rec = np.sum((P @ Moo) * P) + 2.0 * np.sum((R @ Mdo) * P) + np.sum((R @ Mdd) * R)
    At = lam.A - eye
    return float((max(rec, 0.0) + k2 * (np.sum(At * At) + np.sum(BS * BS))) / do)


def profiled_loss(moments: Moments, kappa: float):
    """The loss with ``A`` and ``S = C + D`` profiled out exactly, as a function of ``(B, D)``.

    Returns ``f(B, D) -> (value, dB, dD)``, with ``value`` per coordinate (``F(B, D) / do`` in
    the module docstring). ``B`` must have full column rank. Used to check the closed form;
    :func:`penalised_fit` does not iterate on it.
    """
    k2 = float(kappa) ** 2
    if not np.isfinite(k2) or k2 <= 0:
        raise LamfastError(f"the profiled loss needs kappa > 0, got {kappa!r}")
    Moo, Mdo, Mdd = _blocks(moments)
    do = Moo.shape[0]
    Sig1, _ = _ridge(Moo, Mdo, Mdd, k2)
    Sigh, _ = _ridge(Moo, Mdo, Mdd, k2 / 2.0)
    Sig3 = Sig1 - Sigh
    tr1 = float(np.trace(Sig1))

    def f(B, D):
        Gb = B.T @ B
        Binv = np.linalg.solve(Gb, B.T)  # B^+ (dz x do)
        BD = B @ D
        DSh = D @ Sigh  # dz x do
        S3B = Sig3 @ B
        value = (
            tr1
            - float(np.sum(Binv.T * S3B))  # tr(Pi Sig3) = tr(B^+ Sig3 B)
            + float(np.sum((B.T @ B) * (DSh @ D.T)))
            - 2.0 * float(np.sum(BD.T * Sigh))
        )
        # (I - Pi) Sig3 B (B^T B)^-1 = Sig3 (B^+)^T - B (B^+ Sig3 (B^+)^T)
        S3Bp = Sig3 @ Binv.T
        dB = 2.0 * (B @ (DSh @ D.T) - Sigh @ D.T - (S3Bp - B @ (Binv @ S3Bp)))
        dD = 2.0 * (Gb @ DSh - B.T @ Sigh)
        return value / do, dB / do, dD / do

    return f


def _tie(w, dz, scale):
    """``(i0, i1)``: the tied block of the descending spectrum ``w`` that ``dz`` splits, or None."""
    tol = config.TIE_RTOL * scale
    if dz >= w.size or w[dz - 1] - w[dz] > tol:
        return None
    i1 = dz
    while i1 < w.size and w[dz - 1] - w[i1] <= tol:
        i1 += 1
    i0 = dz - 1
    while i0 > 0 and w[i0 - 1] - w[dz - 1] <= tol:
        i0 -= 1
    return int(i0), int(i1)


def _haar(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random n x n orthogonal matrix (as closed_form draws them)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))


def penalised_fit(moments: Moments, dz: int, variant: Variant, seed: int = 0) -> FittedLAM:
    """Exact optimum of a learned-decoder, free-encoder LAM with augmentation ``kappa > 0``.

    Any moments, with or without correlation between ``o`` and ``delta``. The optimum is
    ``z = V^T delta`` (tied encoder), ``V`` the top-``dz`` eigenvectors of the ridge innovation
    ``E[delta delta^T] - E[delta o^T] (E[o o^T] + kappa^2 I)^-1 E[o delta^T]``, and
    ``A = I + (I - V V^T) E[delta o^T] (E[o o^T] + kappa^2 I)^-1``. The derivation is in the
    module docstring.

    Parameters
    ----------
    moments : Moments
        Needs blocks ``o`` and ``delta``.
    dz : int
    variant : Variant
        ``decoder="learned"``, ``encoder="free"``, ``kappa > 0``, no action supervision.
    seed : int
        Seeds the rotations drawn when ``dz`` splits a tied eigenvalue block (as in ``eig``).

    Returns
    -------
    FittedLAM
        ``solver="eig"``. ``loss`` is the reconstruction loss (no penalty). ``spectrum`` holds the
        top-``dz`` eigenvalues of the ridge innovation. ``extra`` has ``objective`` (the exact
        objective per coordinate, with the kappa terms) and ``grad`` (the relative norm of the
        profiled gradient at the fit).
    """
    if not isinstance(variant, Variant):
        raise LamfastError(f"variant must be a Variant, got {type(variant).__name__}")
    if variant.decoder != "learned" or variant.encoder != "free" or not variant.kappa > 0:
        raise LamfastError(
            "penalised_fit solves a learned decoder with a free encoder and kappa > 0, got "
            f"decoder={variant.decoder!r}, encoder={variant.encoder!r}, kappa={variant.kappa!r}"
        )
    if variant.label_weight != 0:
        raise LamfastError(
            f"penalised_fit has no action head; got label_weight = {variant.label_weight:g}"
        )
    if not isinstance(moments, Moments):
        raise LamfastError(f"moments must be Moments, got {type(moments).__name__}")
    if not (np.isfinite(moments.cov).all() and np.isfinite(moments.mean).all()):
        raise LamfastError("moments contain NaN or inf")
    Moo, Mdo, Mdd = _blocks(moments)
    do = Moo.shape[0]
    dz = check_dz(dz, do)
    seed = int(seed)
    kappa = float(variant.kappa)
    Sig, K = _ridge(Moo, Mdo, Mdd, kappa**2)
    k = min(do, dz + 1)  # one more than dz: the gap below the latent tells ties apart
    w, V = top_eigh(Sig, k)
    scale = max(abs(float(w[0])), np.finfo(float).tiny)
    tie = _tie(w, dz, scale)
    draws_V = []
    if tie is not None:
        # A tied block that dz splits: every rotation inside it is optimal. Find its extent on
        # the full spectrum and draw rotations as closed_form does.
        w_all, V_all = np.linalg.eigh(Sig)
        w, V = w_all[::-1], V_all[:, ::-1]
        tie = _tie(w, dz, scale)
        i0, i1 = tie
        block = V[:, i0:i1]
        # Extra directions are inert only if they read nothing: v^T delta = 0 for the block
        # (then also E[o delta^T] v = 0 by Cauchy-Schwarz, so z and B z do not see them).
        inert = float(np.trace(block.T @ Mdd @ block)) <= config.TIE_RTOL * max(
            float(np.trace(Mdd)), np.finfo(float).tiny
        )
        if not inert:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
            for _ in range(config.TIE_DRAWS):
                Q = _haar(i1 - i0, rng)
                draws_V.append(np.hstack([V[:, :i0], block @ Q[:, : dz - i0]]))
    spectrum = np.asarray(w[:dz], dtype=float).copy()
    V = V[:, :dz]
    # Stationarity: the profiled gradient at (V, V^T) is dF/dB = -2 (I - V V^T) Sig V, dF/dD = 0.
    SV = Sig @ V
    resid = SV - V @ (V.T @ SV)
    trMdd = float(np.trace(Mdd))
    rel = 2.0 * float(np.linalg.norm(resid)) / trMdd if trMdd > 0 else 0.0
    correlated = bool(np.any(Mdo))
    head = (
        "kappa > 0 with o correlated to delta in the sample: "
        if correlated
        else "kappa > 0 with E[delta o^T] = 0: "
    )
    notes = [
        head + "the exact optimum of the sampled loss is z = V^T delta (C = -D), V = top "
        "eigenvectors of the ridge innovation E[dd^T] - E[do^T](E[oo^T] + kappa^2 I)^-1 E[od^T], "
        "A = I + (I - VV^T) E[do^T](E[oo^T] + kappa^2 I)^-1 (closed form, no iterations; relative "
        f"gradient norm of the profiled loss {rel:.3g})"
    ]
    if tie is not None:
        head = f"eigenvalues {tie[0] + 1}..{tie[1]} are tied and dz = {dz} splits them: "
        notes.append(
            head + f"the optimum is not unique; metrics average {len(draws_V)} random rotations"
            if draws_V
            else head + "the block reads no delta, so the extra latent directions carry nothing"
        )
    lams = []
    for Vi in [V, *draws_V]:
        A, B, C, D = penalised_matrices(Vi, K)
        lam = FittedLAM(dz, variant, "eig", seed, A, B, C, D, spectrum.copy())
        lam.loss = recon_loss(lam, moments)
        lam.tie, lam.notes = tie, tuple(notes)
        lam.extra.update({"objective": penalised_objective(moments, lam, kappa), "grad": rel})
        lams.append(lam)
    lams[0].draws = tuple(lams[1:])
    return lams[0]
