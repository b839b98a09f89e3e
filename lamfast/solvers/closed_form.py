"""The ``eig`` solver: every closed form of the linear LAM (``docs/theory.md``).

PCA of ``E[delta delta^T]`` (identity decoder, any encoder; learned decoder, free encoder and
kappa > 0 with a random policy), innovation PCA (learned decoder, tied encoder) and action
supervision (top eigenvectors of ``M_aux`` when the reconstruction and head metrics are one
matrix; otherwise that closed form refined to the optimum of the profiled loss, item 5). Cases
without a closed form raise an error naming ``moment-gd``. Tied eigenvalue blocks that ``dz``
splits are detected and sampled by seeded random rotations.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..errors import LamfastError
from ..moments.core import Moments
from ..moments.eigen import top_eigh
from ..moments.linalg import _pinv_psd, _psd_power
from .fitted import FittedLAM, recon_loss
from .penalised import penalised_fit
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
            # sampled moments of a random policy, recorded frames: the ridge innovation PCA
            return penalised_fit(m, dz, variant, seed)
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


def check_labels(moments: Moments, labels: Moments | None, need=("delta", "a")) -> Moments:
    """The moments the action terms read: ``labels``, or ``moments`` itself when it is None.

    ``labels`` are the moments of the labelled rows (their ``count`` the number of labelled rows);
    ``None`` means every row of ``moments`` is labelled. One-line errors for what a solver cannot
    use: not ``Moments``, a missing block of ``need``, a ``delta`` of another width, NaN or inf.
    """
    if labels is None:
        return moments
    if not isinstance(labels, Moments):
        raise LamfastError(
            f"labels must be Moments of the labelled rows, got {type(labels).__name__}"
        )
    for name in need:
        if not labels.has(name):
            raise LamfastError(f"labels need a block {name!r}; labels have {list(labels.names)}")
    for name in ("o", "delta", "a"):
        if labels.has(name) and moments.has(name) and labels.size(name) != moments.size(name):
            raise LamfastError(
                f"labels have a block {name!r} of width {labels.size(name)}, "
                f"the moments {moments.size(name)}"
            )
    if not (np.isfinite(labels.cov).all() and np.isfinite(labels.mean).all()):
        raise LamfastError("labels contain NaN or inf")
    return labels


def _uncorrelated_centred(moments: Moments, names) -> bool:
    """True when ``Cov(y, o) = 0`` (to rounding) for every named block ``y``."""
    Soo = moments.block_cov("o")
    for name in names:
        cross = moments.block_cov(name, "o")
        scale = np.sqrt(max(np.trace(moments.block_cov(name)), 0.0) * max(np.trace(Soo), 0.0))
        if scale > 0 and np.linalg.norm(cross) > config.INDEPENDENCE_RTOL * scale:
            return False
    return True


def _check_supervised(m: Moments, lab: Moments, variant) -> None:
    """Refuse the variants whose optimum is not ``z = K delta`` on these moments."""
    identity_tied = variant.decoder == "identity" and variant.encoder == "tied"
    flat = variant.decoder == "learned" and variant.encoder == "free" and variant.kappa == 0
    if flat:
        raise _no_closed_form(
            "action supervision with a learned decoder, free encoder and kappa = 0"
        )
    if identity_tied:
        return
    correlated = _no_closed_form(
        "action supervision with o correlated to (delta, a) and an encoder or decoder "
        "that can use o"
    )
    if lab is m:
        if not _uncorrelated(m, ["delta", "a"]):
            raise correlated
    elif not _uncorrelated(m, ["delta"]):
        raise correlated
    elif lab.has("o"):
        if not _uncorrelated(lab, ["delta", "a"]):
            raise correlated
    elif variant.encoder == "free":
        raise LamfastError(
            "labels need an 'o' block when the encoder is free (z may read o on labelled rows)"
        )
    # The head has an intercept, so on the labelled rows what o could add to z is measured by
    # centred covariances; they equal the uncentred ones above only when E[o] = 0 or the block
    # means vanish, which recorded frames never do.
    if variant.encoder == "free" and not _uncorrelated_centred(lab, ["delta", "a"]):
        raise correlated


def _profiled_parts(lam, F, H, w, do, da):
    """The explained parts of the profiled loss and their gradient, as functions of ``Y``.

    In the basis that whitens ``M`` on its range (``K = Y^T lam^-1/2 U^T``), the reconstruction
    explains ``||P_Y lam^1/2||^2`` and the head ``||P_X H||^2`` with ``X = F^T Y``
    (``F F^T`` the whitened ``S_L``, ``F H`` the whitened ``S_La``): both are
    ``tr((K N K^T)^+ K Q K^T)`` written with projections, whose gradient
    ``d ||P_X H||^2 / dX = 2 (I - P_X) H H^T (X^+)^T`` holds at any constant rank of ``X`` (a
    labelled set of fewer rows than ``dz`` leaves ``K S_L K^T`` singular).
    """
    cw = w / da

    def parts(Y):
        Uy, sy, Vyt = np.linalg.svd(Y, full_matrices=False)
        keep = sy > config.pinv_rtol(max(Y.shape)) * max(sy[0], np.finfo(float).tiny)
        Uy, sy, Vyt = Uy[:, keep], sy[keep], Vyt[keep]
        LU = lam[:, None] * Uy
        rec = float(np.sum(Uy * LU))
        g = 2.0 / do * ((LU - Uy @ (Uy.T @ LU)) / sy) @ Vyt
        act = 0.0
        if cw > 0 and F.shape[1] > 0:
            X = F.T @ Y
            Ux, sx, Vxt = np.linalg.svd(X, full_matrices=False)
            keep = sx > config.pinv_rtol(max(X.shape)) * max(sx[0] if sx.size else 0.0, 1e-300)
            Ux, sx, Vxt = Ux[:, keep], sx[keep], Vxt[keep]
            HtU = H.T @ Ux
            act = float(np.sum(HtU * HtU))
            HHU = H @ HtU
            g += 2.0 * cw * F @ (((HHU - Ux @ (Ux.T @ HHU)) / sx) @ Vxt)
        return rec / do + cw * act, g

    return parts


def _orthonormal(Y):
    return np.linalg.svd(Y, full_matrices=False)[0]


def _refine(parts, Y0, scale):
    """Minimise the profiled loss over ``Y`` from ``Y0``: L-BFGS, then Newton steps.

    The loss is invariant under ``Y -> Y G`` and its gradient is orthogonal to ``span(Y)``, so
    both move only across subspaces. ``rel`` is the Frobenius norm of the gradient of
    ``loss / scale`` at the orthonormalised ``Y`` (``scale`` the loss of ``z = 0``). L-BFGS
    stops at ``rel <= config.REFINE_GTOL`` or when its line search no longer lowers the loss, which
    happens near ``rel ~ sqrt(eps)``: a step that small changes the loss by less than its
    rounding. The Newton steps (:func:`_newton`) only need gradients, so they carry on to
    ``rel <= config.REFINE_GTOL`` or until a step no longer lowers ``rel``. Deterministic.
    Returns ``(Y orthonormal, L-BFGS iterations, Newton steps, rel)``.
    """
    import scipy.optimize  # docs/architecture.md: a measured start-up cost, deferred

    shape = Y0.shape

    def fun(y):
        value, g = parts(y.reshape(shape))
        return -value / scale, -g.ravel() / scale

    Y = _orthonormal(Y0)
    f, g = fun(Y.ravel())
    rel = float(np.linalg.norm(g))
    iters = 0
    for _ in range(config.REFINE_ROUNDS):
        if rel <= config.REFINE_GTOL:
            break
        res = scipy.optimize.minimize(
            fun,
            Y.ravel(),
            jac=True,
            method="L-BFGS-B",
            options={
                "maxiter": config.REFINE_MAXITER,
                "maxfun": 2 * config.REFINE_MAXITER,
                "maxcor": 30,
                "ftol": 0.0,
                "gtol": config.REFINE_GTOL / np.sqrt(Y.size),
            },
        )
        iters += int(res.nit)
        Y_new = _orthonormal(res.x.reshape(shape))
        f_new, g_new = fun(Y_new.ravel())
        if not f_new < f:
            break
        Y, f, rel = Y_new, f_new, float(np.linalg.norm(g_new))
    Y, steps, rel = _newton(lambda Y: -parts(Y)[1] / scale, Y, rel)
    return Y, iters, steps, rel


def _newton(grad, Y, rel):
    """Newton steps on the Grassmannian, Hessian products by central differences of ``grad``.

    At an orthonormal ``Y`` with a horizontal gradient the Riemannian Hessian is the horizontal
    part of the gradient's derivative; differences with step 1e-5 (about eps^(1/3)) make it
    accurate to ~1e-10, so each step divides ``rel`` by far more than the 1e-2 that its
    truncated conjugate gradients ask for. A step is kept only if it lowers ``rel``.
    """
    steps = 0
    tiny = np.finfo(float).tiny
    for _ in range(config.NEWTON_STEPS):
        if rel <= config.REFINE_GTOL:
            break
        G = grad(Y)

        def hess(V, Y=Y):
            e = 1e-5 / max(float(np.linalg.norm(V)), tiny)
            D = (grad(Y + e * V) - grad(Y - e * V)) / (2.0 * e)
            return D - Y @ (Y.T @ D)

        d = np.zeros_like(Y)
        res = -G
        p = res.copy()
        rs = float(np.sum(res * res))
        for _ in range(config.NEWTON_CG):
            Hp = hess(p)
            pHp = float(np.sum(p * Hp))
            if not pHp > 0:  # not a minimum's neighbourhood: keep what CG has
                break
            alpha = rs / pHp
            d += alpha * p
            res -= alpha * Hp
            rs_new = float(np.sum(res * res))
            if np.sqrt(rs_new) <= 1e-2 * rel:
                break
            p = res + (rs_new / rs) * p
            rs = rs_new
        if not np.any(d):
            break
        Y_new = _orthonormal(Y + d)
        rel_new = float(np.linalg.norm(grad(Y_new)))
        if not rel_new < rel:
            break
        Y, rel, steps = Y_new, rel_new, steps + 1
    return Y, steps, rel


def _fit_supervised(m: Moments, lab: Moments, dz, variant, w, rng, seed) -> FittedLAM:
    if not lab.has("a"):
        raise LamfastError("action supervision needs an 'a' block in the moments")
    _check_supervised(m, lab, variant)
    do, da = m.size("o"), lab.size("a")
    eye = np.eye(do)
    # Reconstruction over every row, uncentred (the LAM has no biases); the head over the
    # labelled rows, centred (its intercept h is profiled out).
    M = m.second_moment("delta")
    S = lab.block_cov("delta")
    Sda = lab.block_cov("delta", "a")
    mu_a, mu_d = lab.block_mean("a"), lab.block_mean("delta")

    def build(K):
        B = M @ K.T @ _pinv_psd(K @ M @ K.T)
        E = Sda.T @ K.T @ _pinv_psd(K @ S @ K.T)
        h = mu_a - E @ (K @ mu_d)
        return eye.copy(), B, -K, K.copy(), {"E": E, "h": h}

    def objective(lam):
        # The exact supervised objective: recon_loss (every row) plus the head on the labels.
        r = lab.select(["delta", "a"])
        K = lam.D
        resid = np.hstack([-lam.E @ K, np.eye(da)])
        act = float(max(np.sum((resid @ r.cov) * resid), 0.0)) / da
        return lam.loss + w * act

    if np.array_equal(M, S):
        # Both metrics are the same matrix (zero mean, every row labelled: population
        # moments): whitening by it turns the loss into one eigenproblem.
        S_half_pinv = _psd_power(S, -0.5)
        G = S_half_pinv @ Sda
        M_aux = S / do + (w / da) * (G @ G.T)
        M_aux = 0.5 * (M_aux + M_aux.T)
        spectrum, Y, tie, draws = _top_with_ties(M_aux, dz, rng, zero_block_inert=True)
        notes = [
            f"action supervision, weight w = {w:.6g}: z = K delta, "
            "K = Y^T Sigma^(+1/2), Y = top eigenvectors of M_aux"
        ]
        if tie is not None:
            notes.append(_tie_note(tie, dz, draws))
        lam = _make(
            m, variant, dz, seed, spectrum, lambda Y: build(Y.T @ S_half_pinv), [Y, *draws],
            tie, tuple(notes),
        )  # fmt: skip
        for one in (lam, *lam.draws):
            one.extra["objective"] = objective(one)
        return lam
    return _fit_refined(m, lab, dz, variant, w, seed, M, S, Sda, build, objective)


def _fit_refined(m, lab, dz, variant, w, seed, M, S, Sda, build, objective) -> FittedLAM:
    """The supervised optimum when the two metrics differ (docs/theory.md, item 5).

    With ``E[delta] != 0`` or only some rows labelled, ``E[delta delta^T]`` (reconstruction,
    every row) and ``Cov(delta)`` (head, labelled rows) are different matrices: the two trace
    ratios of the profiled loss share no whitening, and no eigenvector solves it. The closed
    form in the reconstruction metric is the start; :func:`_refine` takes it to the optimum.
    """
    do, da = m.size("o"), lab.size("a")
    lam_all, U = np.linalg.eigh(0.5 * (M + M.T))
    keep = lam_all > config.pinv_rtol(do) * max(lam_all.max(initial=0.0), 0.0)
    lam_r, U = lam_all[keep], U[:, keep]
    r = lam_r.size
    # Whitened basis of range(M) (delta outside it is zero on every row): K = Y^T Winv^T.
    Winv = U / np.sqrt(lam_r)
    Sw = Winv.T @ S @ Winv
    ew, EV = np.linalg.eigh(0.5 * (Sw + Sw.T))
    fk = ew > config.pinv_rtol(max(r, 1)) * max(ew.max(initial=0.0), 0.0)
    F = EV[:, fk] * np.sqrt(ew[fk])  # Sw = F F^T
    Gw = Winv.T @ Sda
    # Gw = F H, as Cov_lab(delta, a) lies in the span of the labelled rows' centred deltas.
    H = (EV[:, fk].T @ Gw) / np.sqrt(ew[fk])[:, None]
    s = F.shape[1]
    scale = float(np.trace(M)) / do + w * max(float(np.trace(lab.block_cov("a"))), 0.0) / da
    scale = max(scale, np.finfo(float).tiny)
    k = min(dz, r)
    iters, newton, rel = 0, 0, 0.0
    Y = np.zeros((r, 0))
    if k > 0:
        T0 = np.diag(lam_r) / do + (w / da) * (Gw @ Gw.T)
        _, Y = top_eigh(0.5 * (T0 + T0.T), k)
    if k < r:
        Y, iters, newton, rel = _refine(_profiled_parts(lam_r, F, H, w, do, da), Y, scale)
    converged = k >= r or rel <= config.CONVERGED_RTOL
    if k < r and not converged:
        # Where the labelled rows leave a direction u of range(M) without variance (u^T delta
        # constant on them), a latent u + eps v is, to the head, v itself (the intercept takes
        # the constant, a gain 1/eps the scale) while the reconstruction sees u: optima may sit
        # at large gains, where the loss is badly conditioned, or only in the limit eps -> 0.
        where = (
            f"; the labelled rows leave {r - s} of the {r} directions of the frame differences "
            "without variance, near which the head's gain grows without bound"
            if s < r
            else ""
        )
        raise _no_closed_form(
            "action supervision where the refinement of the profiled loss did not converge "
            f"(relative gradient norm {rel:.3g} after {iters} L-BFGS iterations{where})"
        )
    K = np.zeros((dz, do))
    K[:k] = Y.T @ Winv.T
    A, B, C, D, more = build(K)
    # As moment-gd reports: variances of the reconstruction B z along its principal directions
    # (K M K^T = I, so they are the eigenvalues of Y^T lam Y).
    spectrum = np.zeros(dz)
    spectrum[:k] = np.linalg.eigvalsh(Y.T @ (lam_r[:, None] * Y))[::-1]
    why = ["E[delta] != 0" if np.any(m.block_mean("delta")) else None,
           None if lab is m else "only the labelled rows train the head"]  # fmt: skip
    why = ", ".join(x for x in why if x) or "they differ by rounding"
    rows = "every row" if lab is m else "labelled rows"
    head = (
        f"action supervision, weight w = {w:.6g}: z = K delta; the reconstruction metric "
        f"E[delta delta^T] (every row) and the head's Cov(delta) ({rows}) differ ({why}), "
        "so no eigenvector solves the loss: "
    )
    if k < r:
        how = (
            "the optimum of the profiled loss was refined from the closed form in the "
            f"reconstruction metric by L-BFGS ({iters} iterations"
            + (f", then {newton} Newton step{'s' * (newton > 1)}" if newton else "")
            + f"; final relative gradient norm {rel:.3g})"
        )
    else:
        how = f"dz >= rank E[delta delta^T] = {r}, so every K that spans its range is optimal"
    notes = [head + how, "no tie draws on the refined optimum (it is no eigenvector block)"]
    if k < r and s < r:
        least = float(np.linalg.eigvalsh(Y.T @ (F @ (F.T @ Y)))[0])
        notes.append(
            f"the labelled rows leave {r - s} of the {r} directions of the frame differences "
            f"without variance; the least labelled variance of a latent direction is {least:.3g} "
            "of its second moment over every row (small: the head amplifies it)"
        )
    lam = FittedLAM(dz, variant, "eig", seed, A, B, C, D, spectrum, **more)
    lam.loss = recon_loss(lam, m)
    lam.notes = tuple(notes)
    lam.extra.update(
        {
            "objective": objective(lam),
            "refine_iters": iters,
            "newton_steps": newton,
            "grad": rel,
        }
    )
    return lam


def eig_fit(
    moments: Moments, dz: int, variant: Variant, seed: int = 0, *, labels: Moments | None = None
) -> FittedLAM:
    """The closed-form optimum of ``variant`` on ``moments`` (checked inputs, see ``solve``).

    ``labels``: moments of the labelled rows (blocks ``delta`` and ``a``, ``o`` too for a free
    encoder), read by the action head of a supervised variant; None means every row of
    ``moments`` is labelled. The reconstruction always reads ``moments``. Where the two metrics
    differ the supervised optimum is refined by L-BFGS from the closed form (docs/theory.md,
    item 5).
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(3,)))
    w = variant.label_weight
    lab = check_labels(moments, labels)
    if w > 0:
        return _fit_supervised(moments, lab, dz, variant, w, rng, int(seed))
    return _fit_unsupervised(moments, dz, variant, rng, int(seed))
