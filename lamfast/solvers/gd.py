"""The ``moment-gd`` solver: deterministic Adam / gradient descent on the exact population loss.

Every variant of the linear LAM has a population objective that is an explicit function of
second moments (docs/solvers.md). With ``x = [o; delta]``, ``Mx = E[x x^T]``, ``S = C + D`` (the
``o``-content of the latent) and ``W = [S, D]`` (so ``z = W x``)::

    residual   o^' - o' = R x,    R = [A + B S - I,  B D - I] = R0 + B W,   R0 = [A - I, -I]
    recon      L_rec = tr(R Mx R^T) / do
    augment    L_aug = kappa^2 (||A - I||_F^2 + ||B S||_F^2) / do
    actions    L_act = w [tr S_aa - 2 tr(E W S_xa) + tr(E W S_xx W^T E^T)] / da
                       + w kappa^2 ||E S||_F^2 / da

``L_aug``: the augmented model of docs/theory.md is ``z = C(o + k1) + D(o' + k1)`` and
``o^' = A(o + k2) + B z - k2`` with ``k1, k2 ~ N(0, kappa^2 I)`` drawn independently of each other
and of ``x``. Its residual is ``R x + B S k1 + (A - I) k2``; the three terms are uncorrelated, so
``E||.||^2 = tr(R Mx R^T) + kappa^2 ||B S||^2 + kappa^2 ||A - I||^2`` (the cross term
``2 kappa^2 tr((A - I)^T B S)`` would appear only if ``k1 = k2``). ``L_act``: the head reads the
same (augmented) latent ``z + S k1``, and its intercept ``h`` is profiled out in closed form
(``h = mu_a - E W mu_x``), which turns ``E||a - E z - h||^2`` into the covariance expression
above; its gradient in the other parameters is unchanged (envelope theorem). ``w`` is
``Variant.label_weight``. ``Mx`` is over every row; ``S_xx, S_xa, S_aa`` and the means of ``h``
are over the labelled rows (``labels``, default every row).

Gradients (``G = 2 R Mx / do = [G1, G2]``)::

    dA = G1 + 2 kappa^2 (A - I) / do
    dB = G W^T + 2 kappa^2 B S S^T / do
    dW = B^T G + (2 w / da) E^T (E W S_xx - S_ax)
    dS += 2 kappa^2 (B^T B S / do + w E^T E S / da)     (S = C + D, the first block of W)
    dE = (2 w / da) (E W S_xx W^T - S_ax W^T) + (2 w kappa^2 / da) E S S^T
    free encoder:  dC = dS,  dD = dS + dW[:, do:]      tied (C = -D, S = 0):  dD = dW[:, do:]

(checked against finite differences in ``tests/test_gd.py``). Everything is arranged so that only
``(A - I) Moo`` costs ``do^3`` (learned decoder), and, with ``Moo != I``, the ``G1 Moo^-1`` of
the loss's value (:meth:`MomentObjective.value_grad`); the rest is ``O(dz do^2)``.

Initialisation follows the training protocol (PyTorch ``nn.Linear`` default, bias-free LAM, see
:func:`paper_init`). The default optimiser is Adam (the paper's) followed by an L-BFGS polish;
see :func:`moment_gd_fit`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import config
from .._jit import njit
from ..errors import LamfastError
from ..moments.core import Moments
from .closed_form import check_labels
from .fitted import FittedLAM, recon_loss
from .trainer import _theta_offsets, paper_init
from .variant import Variant

OPTIMIZERS = ("adam", "gd")
MODES = ("converge", "paper")


# ------------------------------------------------------------------------------ structure
def identity_plus_low_rank(M: np.ndarray, symmetric: bool):
    """``M = c I + L R^T`` with ``rank(L R^T) <= do / 4``, or None when ``M`` is not of that form.

    The factors are exact to rounding: accepted only if ``|M - c I - L R^T|`` stays below
    ``64 do eps max|M|`` entrywise, the rounding of the products that built ``M``. Symmetric
    ``M``: ``c`` is the median eigenvalue (the bulk), ``L = U (w - c)`` and ``R = U`` over the
    eigenvalues off the bulk. Otherwise ``c = 0`` and ``L R^T`` is the truncated SVD. Returns
    ``(c, L, R)`` with ``L, R`` of shape ``(do, r)``, C-contiguous.

    Examples
    --------
    >>> u = np.linalg.qr(np.random.default_rng(0).standard_normal((40, 3)))[0]
    >>> c, L, R = identity_plus_low_rank(0.25 * np.eye(40) + u @ u.T, symmetric=True)
    >>> round(c, 12), L.shape
    (0.25, (40, 3))
    >>> identity_plus_low_rank(np.diag(np.arange(40.0)), symmetric=True) is None
    True
    """
    do = M.shape[0]
    scale = float(np.max(np.abs(M), initial=0.0))
    tol = 64 * do * np.finfo(float).eps * max(scale, np.finfo(float).tiny)
    if symmetric:
        w, U = np.linalg.eigh(M)
        c = float(np.median(w))
        off = np.abs(w - c) > tol
        L = U[:, off] * (w[off] - c)
        R = U[:, off]
    else:
        c = 0.0
        U, sv, Vt = np.linalg.svd(M)
        off = sv > tol
        L = U[:, off] * sv[off]
        R = Vt[off].T
    if L.shape[1] > do // 4:
        return None
    L, R = np.ascontiguousarray(L), np.ascontiguousarray(R)
    err = M - L @ R.T
    err[np.diag_indices(do)] -= c
    if float(np.max(np.abs(err), initial=0.0)) > tol:
        return None
    return c, L, R


# ------------------------------------------------------------------------------ the objective
class MomentObjective:
    """Exact population objective of a LAM variant and its gradient, from moments only.

    Parameters live in one flat vector ``theta`` laid out as ``A`` (learned decoder), ``B``,
    ``C`` (free encoder), ``D``, ``E`` (supervision); :meth:`unpack` returns views.

    Parameters
    ----------
    moments : Moments
        Needs ``o`` and ``delta``; ``a`` too when the variant is supervised and ``labels`` is
        None. The reconstruction terms read these (every row).
    dz : int
    variant : Variant
    labels : Moments, optional
        Moments of the labelled rows (blocks ``o``, ``delta``, ``a``), from which the action
        terms take ``S_xx, S_ax, S_aa`` and the means of the intercept. None: every row of
        ``moments`` is labelled.
    """

    def __init__(self, moments: Moments, dz: int, variant: Variant, labels: Moments | None = None):
        do = moments.size("o")
        self.do, self.dz, self.variant = do, int(dz), variant
        self.learned = variant.decoder == "learned"
        self.free = variant.encoder == "free"
        self.k2 = float(variant.kappa) ** 2
        self.w = float(variant.label_weight)
        self.Mx = np.ascontiguousarray(moments.select(["o", "delta"]).second_moment())
        self.trMdd = float(np.trace(self.Mx[do:, do:]))
        # The paper's worlds have E[o o^T] = I exactly (population moments): then (A - I) Moo,
        # the only do^3 product of a step, is (A - I) itself. Exact test, no tolerance.
        self.Moo_is_eye = bool(np.array_equal(self.Mx[:do, :do], np.eye(do)))
        # The loss is taken from its residual (value_grad): that needs the Schur complement of
        # Moo in Mx, SigG = Mdd - Mdo Moo^-1 Mdo^T, and Moo^-1 (None for Moo = I); both None
        # where Moo is too ill-conditioned for an explicit inverse (fewer rows than do): there
        # the loss stays the expansion. With Moo = I the kernel's fast path (GD_KERNEL_EYE)
        # takes the same matrix as Sig, for either decoder; (0, 0) placeholders otherwise.
        Moo, Mdo, Mdd = self.Mx[:do, :do], self.Mx[do:, :do], self.Mx[do:, do:]
        self.Minv = self.SigG = None
        schur = None
        if self.Moo_is_eye:
            schur = np.ascontiguousarray(Mdd - Mdo @ Mdo.T)
        elif self.learned:
            ev = np.linalg.eigvalsh(Moo)
            if ev[0] > config.GD_RESIDUAL_RCOND * ev[-1]:
                Minv = np.linalg.inv(Moo)
                self.Minv = np.ascontiguousarray((Minv + Minv.T) / 2)
                schur = Mdd - Mdo @ self.Minv @ Mdo.T
                schur = np.ascontiguousarray((schur + schur.T) / 2)
        if self.learned:
            self.SigG = schur
        self.trSigG = float(np.trace(schur)) if self.SigG is not None else 0.0
        eye_path = self.Moo_is_eye and config.GD_KERNEL_EYE
        self.Sig = schur if eye_path else np.zeros((0, 0))
        self.trSig = float(np.trace(self.Sig))
        # Identity plus low rank (the paper's worlds: Mdo = chi X P, Mdd and Sig = sigma^2 I plus
        # rank da or da + db): the kernel multiplies by the factors instead of the do x do
        # matrices (see identity_plus_low_rank; None where the structure does not hold exactly).
        self.factors = None
        if eye_path and config.GD_KERNEL_LOWRANK:
            parts = (
                identity_plus_low_rank(self.Mx[do:, :do], symmetric=False),
                identity_plus_low_rank(self.Mx[do:, do:], symmetric=True),
                identity_plus_low_rank(self.Sig, symmetric=True),
            )
            if all(f is not None for f in parts):
                self.factors = parts
        # Constant blocks, contiguous once (the step reuses them thousands of times).
        self.Mdo = np.ascontiguousarray(self.Mx[do:, :do])
        self.Mo_ = np.ascontiguousarray(self.Mx[:do, :])
        self.Md_ = np.ascontiguousarray(self.Mx[do:, :])
        if self.w > 0:
            # The o block of the labelled rows is needed even for a tied encoder: S_xx is the
            # covariance of x = [o, delta], and keeping its layout keeps one kernel for both.
            lab = check_labels(moments, labels, need=("o", "delta", "a"))
            if not lab.has("a"):
                raise LamfastError("action supervision needs an 'a' block in the moments")
            self.da = lab.size("a")
            sel = lab.select(["o", "delta", "a"])
            p = 2 * do
            self.Sxx = np.ascontiguousarray(sel.cov[:p, :p])
            self.Sax = np.ascontiguousarray(sel.cov[p:, :p])
            self.Saa = np.ascontiguousarray(sel.cov[p:, p:])
            self.trSaa = float(np.trace(self.Saa))
            self.mu_x, self.mu_a = sel.mean[:p], sel.mean[p:]
        else:
            self.da = moments.size("a") if moments.has("a") else 0
        shapes = []
        if self.learned:
            shapes.append(("A", (do, do)))
        shapes.append(("B", (do, self.dz)))
        if self.free:
            shapes.append(("C", (self.dz, do)))
        shapes.append(("D", (self.dz, do)))
        if self.w > 0:
            shapes.append(("E", (self.da, self.dz)))
        self.shapes = shapes
        self.size = sum(r * c for _, (r, c) in shapes)

    # ----------------------------------------------------------------- packing
    def unpack(self, theta: np.ndarray) -> dict:
        """Views of the parameter matrices inside ``theta``."""
        out, start = {}, 0
        for name, (r, c) in self.shapes:
            out[name] = theta[start : start + r * c].reshape(r, c)
            start += r * c
        return out

    def pack(self, params: dict) -> np.ndarray:
        """Flat vector from a dict of matrices (e.g. :func:`paper_init`)."""
        theta = np.empty(self.size)
        views = self.unpack(theta)
        for name in views:
            views[name][...] = params[name]
        return theta

    # ----------------------------------------------------------------- value and gradient
    def value_grad(self, theta: np.ndarray, grad: np.ndarray | None = None):
        """Total objective, its reconstruction part, and the gradient (written into ``grad``)."""
        do, k2, w = self.do, self.k2, self.w
        Mx = self.Mx
        p = self.unpack(theta)
        if grad is None:
            grad = np.empty_like(theta)
        g = self.unpack(grad)
        B, D = p["B"], p["D"]
        S = p["C"] + D if self.free else None
        W = np.hstack([S, D]) if self.free else np.hstack([-0.0 * D, D])
        WM = W @ Mx  # dz x 2do
        Z = WM @ W.T  # W Mx W^T
        # V = R0 Mx W^T (do x dz); B^T R0 Mx (dz x 2do); first block column of R Mx
        if self.learned:
            At = p["A"] - np.eye(do)
            AtMoo = At if self.Moo_is_eye else At @ Mx[:do, :do]
            V = At @ WM[:, :do].T - WM[:, do:].T
            BtR0M = (B.T @ At) @ self.Mo_ - B.T @ self.Md_
            tr_r0 = float(np.sum(At * AtMoo)) - 2.0 * float(np.sum(At * self.Mdo)) + self.trMdd
        else:
            V = -WM[:, do:].T
            BtR0M = -(B.T @ self.Md_)
            tr_r0 = self.trMdd
        BZ = B @ Z
        G1 = None
        if self.learned:
            G1 = AtMoo - self.Mdo + B @ WM[:, :do]  # (R Mx)_o; dA = (2/do) G1 (+ kappa term)
        if G1 is not None and self.SigG is not None:
            # The loss from its residual, by the block LDL of Mx: tr(R Mx R^T) =
            # tr(G1 Moo^-1 G1^T) + tr((B D - I) SigG (B D - I)^T). The expansion
            # tr_r0 + 2 <B, V> + <B Z, B> cancels terms of size ||A||^2, and A grows along the
            # flat o-content of z (C -> C + F, A -> A - B F): at ||A|| ~ 1e3 its rounding buried
            # the polish's last decreases of the loss.
            G1M = G1 if self.Minv is None else G1 @ self.Minv
            Sg = self.SigG
            rec = float(np.sum(G1 * G1M)) + self.trSigG - 2.0 * float(np.sum(D * (B.T @ Sg)))
            rec = (rec + float(np.sum((B.T @ B) * (D @ Sg @ D.T)))) / do
        else:
            rec = (tr_r0 + 2.0 * float(np.sum(B * V)) + float(np.sum(BZ * B))) / do
        rec = max(rec, 0.0)
        total = rec
        c = 2.0 / do
        # dB = (2/do) R Mx W^T = (2/do) (V + B Z)
        np.multiply(V + BZ, c, out=g["B"])
        # dW = (2/do) B^T R Mx = (2/do) (B^T R0 Mx + B^T B W Mx)
        BtB = B.T @ B
        dW = c * (BtR0M + BtB @ WM)
        if self.learned:
            # dA = (2/do) [(A - I) Moo - Mdo + B (W Mx)[:, :do]]
            g["A"][...] = c * G1
        if k2 > 0:
            if self.learned:
                total += k2 * float(np.sum(At * At)) / do
                g["A"] += (2.0 * k2 / do) * At
            if self.free:
                BS = B @ S
                total += k2 * float(np.sum(BS * BS)) / do
                SSt = S @ S.T
                g["B"] += (2.0 * k2 / do) * (B @ SSt)
                dW[:, :do] += (2.0 * k2 / do) * (BtB @ S)
        if w > 0:
            E = p["E"]
            da = self.da
            WS = W @ self.Sxx  # dz x 2do
            Zc = WS @ W.T
            Zxa = W @ self.Sax.T  # dz x da
            EZ = E @ Zc
            act = self.trSaa - 2.0 * float(np.sum(E * Zxa.T)) + float(np.sum(EZ * E))
            g["E"][...] = (2.0 * w / da) * (EZ - Zxa.T)
            dW += (2.0 * w / da) * (E.T @ (E @ WS - self.Sax))
            if k2 > 0 and self.free:
                ES = E @ S
                act += k2 * float(np.sum(ES * ES))
                g["E"] += (2.0 * w * k2 / da) * (E @ SSt)
                dW[:, :do] += (2.0 * w * k2 / da) * (E.T @ ES)
            total += w * max(act, 0.0) / da
        if self.free:
            g["C"][...] = dW[:, :do]
            g["D"][...] = dW[:, :do] + dW[:, do:]
        else:
            g["D"][...] = dW[:, do:]
        return total, rec, grad

    def grad_variance(self, theta: np.ndarray, batch: int, label_weighting: str = "batch"):
        """Per-entry variance of the minibatch gradient of the paper's protocol at ``theta``.

        Each gradient entry is a batch mean of products ``u_j v_k`` of linear functions of the
        row (and of the fresh augmentation noise). For zero-mean jointly Gaussian ``u, v``
        (Isserlis) ``Var(u_j v_k) = E[u_j^2] E[v_k^2] + E[u_j v_k]^2``, and the batch mean divides
        it by ``batch``. Second moments are uncentred, so worlds with a mean (uniform noise) are
        approximated. The action part uses the number ``K ~ Bin(batch, m)`` of labelled rows:
        averaged over them (``"batch"``) it adds ``E[1/K; K > 0]`` times the per-row variance and
        ``w (1 - w)`` times the squared conditional mean; summed over the batch (``"paper"``) it
        is ``(m E[(u v)^2] - m^2 E[u v]^2) / batch``. Recon and action parts are added as if
        independent. Used by ``moment_gd_fit(..., mode="paper", noise_aware=True)``.
        """
        do, k2, w = self.do, self.k2, self.w
        Mx = self.Mx
        p = self.unpack(theta)
        B, D = p["B"], p["D"]
        S = p["C"] + D if self.free else np.zeros_like(D)
        W = np.hstack([S, D])
        At = p["A"] - np.eye(do) if self.learned else np.zeros((do, do))
        R = np.hstack([At + B @ S, B @ D - np.eye(do)])
        RM = R @ Mx
        # recon + penalty gradient (no action part): c E[u v] for every parameter
        obj_noact = self if w == 0 else _without_labels(self)
        gbar = obj_noact.value_grad(theta)[2]
        gb = self.unpack(gbar)
        c = 2.0 / do
        e_err = np.sum(RM * R, axis=1) + k2 * (np.sum((B @ S) ** 2, axis=1) + np.sum(At**2, axis=1))
        BtR = B.T @ R
        e_bt = np.sum((BtR @ Mx) * BtR, axis=1) + k2 * (
            np.sum((B.T @ B @ S) ** 2, axis=1) + np.sum((B.T @ At) ** 2, axis=1)
        )
        dMoo = np.diag(Mx)[:do]
        dMdd = np.diag(Mx)[do:]
        dMon = dMoo + 2 * np.diag(Mx[:do, do:]) + dMdd  # diag E[o' o'^T]
        s_z = np.diag(W @ Mx @ W.T) + k2 * np.sum(S**2, axis=1)
        var = np.empty_like(theta)
        vv = self.unpack(var)
        n = float(batch)
        if self.learned:
            vv["A"][...] = (c**2 * np.outer(e_err, dMoo + k2) + gb["A"] ** 2) / n
        vv["B"][...] = (c**2 * np.outer(e_err, s_z) + gb["B"] ** 2) / n
        if self.free:
            vv["C"][...] = (c**2 * np.outer(e_bt, dMoo + k2) + gb["C"] ** 2) / n
            vv["D"][...] = (c**2 * np.outer(e_bt, dMon + k2) + gb["D"] ** 2) / n
        else:
            vv["D"][...] = (c**2 * np.outer(e_bt, dMdd) + gb["D"] ** 2) / n
        if w > 0:
            E = p["E"]
            ca = 2.0 / self.da
            Zc = W @ self.Sxx @ W.T + k2 * (S @ S.T)
            Zxa = W @ self.Sax.T
            Sr = E @ Zc @ E.T - E @ Zxa.T - Zxa @ E.T + self.Saa
            s_r = np.diag(Sr)
            s_u = np.diag(E.T @ Sr @ E)
            # E[r z^T] (da x dz) and E[(E^T r) x^T] for the encoder entries, per labelled row
            Erz = E @ Zc - Zxa.T
            cross = E.T @ (E @ W @ self.Sxx - self.Sax)  # dz x 2do
            m = float(self.variant.label_fraction)
            if label_weighting == "batch":
                # E[1/K; K > 0] for K ~ Binomial(batch, m)
                import scipy.stats  # 0.24 s of start-up: only noise-aware fits need it

                k = np.arange(1, batch + 1)
                inv_k = float(np.sum(scipy.stats.binom.pmf(k, batch, m) / k))

                def act_var(su, sv, cr):
                    return ca**2 * ((np.outer(su, sv) + cr**2) * inv_k + cr**2 * (w - w * w))
            else:

                def act_var(su, sv, cr):
                    return ca**2 * (m * (np.outer(su, sv) + 2 * cr**2) - m * m * cr**2) / n

            vv["E"][...] = act_var(s_r, s_z, Erz)
            if self.free:
                vv["C"][...] += act_var(s_u, dMoo + k2, cross[:, :do])
                vv["D"][...] += act_var(s_u, dMon + k2, cross[:, :do] + cross[:, do:])
            else:
                vv["D"][...] += act_var(s_u, dMdd, cross[:, do:])
        return var

    def value(self, theta: np.ndarray) -> float:
        """Total objective (reconstruction + penalties)."""
        return self.value_grad(theta)[0]

    # ----------------------------------------------------------------- result
    def matrices(self, theta: np.ndarray) -> dict:
        """Full ``A, B, C, D, E, h`` (copies) with the variant's constraints applied."""
        p = self.unpack(theta)
        do = self.do
        D = p["D"].copy()
        out = {
            "A": p["A"].copy() if self.learned else np.eye(do),
            "B": p["B"].copy(),
            "C": p["C"].copy() if self.free else -D,
            "D": D,
            "E": None,
            "h": None,
        }
        if self.w > 0:
            E = p["E"].copy()
            W = np.hstack([out["C"] + D, D])
            out["E"], out["h"] = E, self.mu_a - E @ (W @ self.mu_x)
        return out


def _without_labels(obj: MomentObjective) -> MomentObjective:
    """A view of ``obj`` whose objective drops the action term (same theta layout)."""
    clone = object.__new__(MomentObjective)
    clone.__dict__.update(obj.__dict__)
    clone.w = 0.0
    return clone


# The kernel below is written in explicit loops and small helpers rather than array expressions:
# numba compiles each array expression or sliced assignment into a broadcasting loop nest of its
# own, and with dozens of them the Adam kernel took ~28 s to compile (a cold run's longest wait,
# 2-core AMD EPYC); in loops it takes ~8 s, allocates fewer temporaries and runs ~15% faster a
# step, with the same operations in the same order (bitwise the same end points; numpy's sum over
# a temporary is one sequential chain too).
@njit
def _times(X, c, L, R):
    """``X (c I + L R^T)`` in ``O(rows do r)`` instead of ``O(rows do^2)``."""
    rows, n = X.shape
    out = np.empty((rows, n))
    if L.shape[1] > 0:
        P = np.dot(np.dot(X, L), R.T)
        for i in range(rows):
            for j in range(n):
                out[i, j] = c * X[i, j] + P[i, j]
    else:
        for i in range(rows):
            for j in range(n):
                out[i, j] = c * X[i, j]
    return out


@njit
def _sum_prod(X, Y):
    """``np.sum(X * Y)`` of two 2-D arrays of one shape, without the temporary (numpy's order:
    one chain over the rows of ``X * Y``)."""
    s = 0.0
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            s += X[i, j] * Y[i, j]
    return s


@njit
def _add_into(out, X, f):
    """``out += f * X`` in place (2-D)."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] += f * X[i, j]


@njit
def _join(X, Y):
    """``[X, Y]`` side by side (``np.hstack`` of two 2-D arrays with the same rows)."""
    rows, n = X.shape
    out = np.empty((rows, n + Y.shape[1]))
    for i in range(rows):
        for j in range(n):
            out[i, j] = X[i, j]
        for j in range(Y.shape[1]):
            out[i, n + j] = Y[i, j]
    return out


@njit
def _minus(P, X):
    """``P - X`` as a new C-contiguous array (2-D; ``X`` may be a transposed view)."""
    rows, n = P.shape
    out = np.empty((rows, n))
    for i in range(rows):
        for j in range(n):
            out[i, j] = P[i, j] - X[i, j]
    return out


@njit(inline="always")
def _sumsq(x):
    """``sum(x * x)`` in eight interleaved partial sums: one running sum waits out the adder's
    latency on every element (a fixed order either way, so the result is deterministic)."""
    n = x.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n8 = n - n % 8
    for i in range(0, n8, 8):
        s0 += x[i] * x[i]
        s1 += x[i + 1] * x[i + 1]
        s2 += x[i + 2] * x[i + 2]
        s3 += x[i + 3] * x[i + 3]
        s4 += x[i + 4] * x[i + 4]
        s5 += x[i + 5] * x[i + 5]
        s6 += x[i + 6] * x[i + 6]
        s7 += x[i + 7] * x[i + 7]
    for i in range(n8, n):
        s0 += x[i] * x[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit
def _schur_part(trS, D, BtS, BtB, DS):
    """``tr((B D - I) S (B D - I)^T)`` for a symmetric ``S``, from ``tr S``, ``B^T S``,
    ``B^T B`` and ``D S``: the delta part of the loss from its residual (the terms are of the
    size of ``B D``, which the flat directions leave alone)."""
    return trS - 2.0 * _sum_prod(D, BtS) + _sum_prod(BtB, np.dot(DS, D.T))


@njit(inline="always")
def _value_grad_kernel(
    theta, grad, Mx, Mo_, Md_, Mdo, traces, Sig, lowrank, Lo, Ro, cd, Ld, Rd, cs, Ls, Rs,
    moo_eye, learned, free, k2, w, Sxx, Sax, trSaa, Mg, exact, do, dz, da,
):  # fmt: skip
    """:meth:`MomentObjective.value_grad` as one kernel (the same quantities, the same layout of
    theta; the loss from its residual as there, but with ``Moo != I`` only where ``exact``: the
    polish's evaluations).

    The Adam loop calls it thousands of times: in a kernel a step costs its matrix products and
    nothing else (tests/test_gd.py::test_kernel_matches_numpy guards the equality). With
    ``lowrank`` the constant blocks are applied through their factors ``Mdo = Lo Ro^T``,
    ``Mdd = cd I + Ld Rd^T``, ``Sig = cs I + Ls Rs^T`` (:func:`identity_plus_low_rank`): the only
    ``do x do x dz`` products left are the three with the dense decoder ``A``. ``traces`` holds
    ``(tr Mdd, tr Sig, tr SigG)``, ``Mg`` ``(Moo^-1, SigG)`` (see :class:`MomentObjective`; shape
    ``(2, 0, 0)`` where there are none): packed,
    because the inlined call must stay within 30 arguments (beyond, CPython passes them as a
    tuple, which numba's inliner refuses).
    """
    trMdd, trSig, trSigG = traces[0], traces[1], traces[2]
    oA, oB, oC, oD, oE, _ = _theta_offsets(do, dz, da, learned, free, False)
    B = theta[oB : oB + do * dz].reshape(do, dz)
    D = theta[oD : oD + dz * do].reshape(dz, do)
    S = np.zeros((dz, do))
    if free:
        C = theta[oC : oC + dz * do].reshape(dz, do)
        for i in range(dz):
            for j in range(do):
                S[i, j] = C[i, j] + D[i, j]
    W = _join(S, D)
    # Sig is only passed (do x do) when config.GD_KERNEL_EYE is on; otherwise the general path.
    fast_eye = moo_eye and Sig.shape[0] == do
    if fast_eye and lowrank:
        # W Mx = [S + D Mdo, S Mdo^T + D Mdd] through the factors
        WMo = _times(D, 0.0, Lo, Ro)
        WMd = _times(D, cd, Rd, Ld)
        if free:
            _add_into(WMo, S, 1.0)
            _add_into(WMd, _times(S, 0.0, Ro, Lo), 1.0)
        WM = _join(WMo, WMd)
    elif fast_eye:
        # Moo = I: W Mx = [S + D Mdo, W Mx[:, do:]] skips the identity block (3 instead of 4
        # dz x do x do products).
        WMo = np.dot(D, Mdo)
        if free:
            _add_into(WMo, S, 1.0)
        WMd = np.dot(W, Md_.T)
        WM = _join(WMo, WMd)
    else:
        WM = np.dot(W, Mx)
        WMo = np.ascontiguousarray(WM[:, :do])
        WMd = np.ascontiguousarray(WM[:, do:])
    Z = np.dot(WM, W.T)
    Bt = np.ascontiguousarray(B.T)
    BtB = np.dot(Bt, B)
    if learned:
        At = theta[oA : oA + do * do].reshape(do, do).copy()
        for i in range(do):
            At[i, i] -= 1.0
        V = _minus(np.dot(At, WMo.T), WMd.T)
    else:
        At = np.zeros((1, 1))
        V = np.empty((do, dz))
        for i in range(do):
            for j in range(dz):
                V[i, j] = -WMd[j, i]
    AtMoo = At
    if learned and fast_eye:
        # Moo = I, with Amd = (A - I) - Mdo:  R0 Mx = [Amd, Amd Mdo^T - Sig] where
        # Sig = Mdd - Mdo Mdo^T, so B^T R0 Mx = [Q, Q Mdo^T - B^T Sig] with Q = B^T Amd (one
        # product fewer than B^T R0 Mx itself).
        Amd = _minus(At, Mdo)
        Q = np.dot(Bt, Amd)
        if lowrank:
            BtSig = _times(Bt, cs, Ls, Rs)
            DSig = _times(D, cs, Ls, Rs)
            BtR0M = _join(Q, _minus(_times(Q, 0.0, Ro, Lo), BtSig))
        else:
            BtSig = np.dot(Bt, Sig)
            DSig = np.dot(D, Sig)
            BtR0M = _join(Q, _minus(np.dot(Q, Mdo.T), BtSig))
        # The loss from its residual (see below), so tr_r0 holds the delta part
        tr_r0 = _schur_part(trSig, D, BtSig, BtB, DSig)
    elif learned:
        if not moo_eye:
            AtMoo = np.dot(At, np.ascontiguousarray(Mx[:do, :do]))
        BtR0M = _minus(np.dot(np.dot(Bt, At), Mo_), np.dot(Bt, Md_))
        tr_r0 = _sum_prod(At, AtMoo) - 2.0 * _sum_prod(At, Mdo) + trMdd
    else:
        if fast_eye and lowrank:
            BtR0M = _join(_times(Bt, 0.0, Lo, Ro), _times(Bt, cd, Ld, Rd))
        else:
            BtR0M = np.dot(Bt, Md_)
        for i in range(dz):
            for j in range(2 * do):
                BtR0M[i, j] = -BtR0M[i, j]
        tr_r0 = trMdd
    BZ = np.dot(B, Z)
    c = 2.0 / do
    # dB = c (V + B Z), written straight into grad
    gB = grad[oB : oB + do * dz].reshape(do, dz)
    for i in range(do):
        for j in range(dz):
            gB[i, j] = c * (V[i, j] + BZ[i, j])
    P = np.dot(BtB, WM)
    dW = np.empty((dz, 2 * do))
    for i in range(dz):
        for j in range(2 * do):
            dW[i, j] = c * (BtR0M[i, j] + P[i, j])
    if learned:
        # dA = c ((A - I) Moo - Mdo + B WMo), written straight into grad
        BWMo = np.dot(B, WMo)
        # the branch on k2 outside the loops: with it inside, the loop stayed scalar
        gA = grad[oA : oA + do * do]
        for i in range(do):
            for j in range(do):
                gA[i * do + j] = c * (AtMoo[i, j] - Mdo[i, j] + BWMo[i, j])
    if learned and fast_eye:
        # With Moo = I, tr(R Mx R^T) = ||G1||^2 + tr((B D - I) Sig (B D - I)^T), G1 = (R Mx)_o
        # = dA / c (MomentObjective.value_grad). The expansion tr_r0 + 2 <B, V> + <B Z, B>
        # cancels terms of size ||A||^2, and along the flat o-content of z (C -> C + F,
        # A -> A - B F) A grows: at ||A|| ~ 1e3 its rounding (~1e-8) buried the last decreases
        # of the loss and stopped the L-BFGS polish in a failed line search, far from the
        # optimum (fig4-left, chi = 0.8, dz = 8).
        rec = (_sumsq(gA) / (c * c) + tr_r0) / do
    elif learned and exact and Mg.shape[1] == do:
        # Any Moo: tr(G1 Moo^-1 G1^T) + tr((B D - I) SigG (B D - I)^T). A do^3 product more
        # than the expansion, so only for the polish (its line search needs the loss's last
        # digits; Adam's stopping rule does not).
        G1 = grad[oA : oA + do * do].reshape(do, do)
        Minv, SigG = Mg[0], Mg[1]
        q = _sum_prod(G1, np.dot(G1, Minv)) / (c * c)
        rec = (q + _schur_part(trSigG, D, np.dot(Bt, SigG), BtB, np.dot(D, SigG))) / do
    else:
        rec = (tr_r0 + 2.0 * _sum_prod(B, V) + _sum_prod(BZ, B)) / do
    if rec < 0.0:
        rec = 0.0
    total = rec
    if learned:
        if k2 > 0.0:
            ck = 2.0 * k2 / do
            for i in range(do):
                for j in range(do):
                    gA[i * do + j] += ck * At[i, j]
            total += k2 * _sum_prod(At, At) / do
    if k2 > 0.0 and free:
        BS = np.dot(B, S)
        total += k2 * _sum_prod(BS, BS) / do
        _add_into(gB, np.dot(B, np.dot(S, S.T)), 2.0 * k2 / do)
        _add_into(dW[:, :do], np.dot(BtB, S), 2.0 * k2 / do)
    if w > 0.0:
        E = theta[oE : oE + da * dz].reshape(da, dz)
        WS = np.dot(W, Sxx)
        Zc = np.dot(WS, W.T)
        Zxa = np.dot(W, Sax.T)
        EZ = np.dot(E, Zc)
        act = trSaa - 2.0 * _sum_prod(E, Zxa.T) + _sum_prod(EZ, E)
        gE = grad[oE : oE + da * dz].reshape(da, dz)
        f = 2.0 * w / da
        for i in range(da):
            for j in range(dz):
                gE[i, j] = f * (EZ[i, j] - Zxa[j, i])
        _add_into(dW, np.dot(E.T, _minus(np.dot(E, WS), Sax)), f)
        if k2 > 0.0 and free:
            ES = np.dot(E, S)
            act += k2 * _sum_prod(ES, ES)
            fk = 2.0 * w * k2 / da
            _add_into(gE, np.dot(E, np.dot(S, S.T)), fk)
            _add_into(dW[:, :do], np.dot(E.T, ES), fk)
        if act < 0.0:
            act = 0.0
        total += w * act / da
    # the branch outside the loops (inside, it would keep them scalar)
    if free:
        for i in range(dz):
            for j in range(do):
                grad[oC + i * do + j] = dW[i, j]
                grad[oD + i * do + j] = dW[i, j] + dW[i, do + j]
    else:
        for i in range(dz):
            for j in range(do):
                grad[oD + i * do + j] = dW[i, do + j]
    return total


@njit(error_model="numpy")
def _adam_kernel(
    theta, grad, Mx, Mo_, Md_, Mdo, traces, Sig, lowrank, Lo, Ro, cd, Ld, Rd, cs, Ls, Rs,
    moo_eye, learned, free, k2, w, Sxx, Sax, trSaa, Mg, do, dz, da, steps, lr, decay, b1, b2, eps,
    rtol, gtol, window, hist,
):  # fmt: skip
    """Deterministic Adam (PyTorch's update) with the stopping rule of :func:`_adam`.

    Returns ``(steps_done, reason)``: 0 step limit, 1 gradient norm, 2 relative loss change.
    With ``steps = 0`` it evaluates the objective once instead (the value into ``hist[0]``, the
    gradient into ``grad``): the polish's evaluations (:func:`_value_grad`), so that the
    objective's code is compiled once, inlined here, and not again as a kernel of its own.
    """
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    denom = np.empty_like(theta)
    g0 = -1.0
    tiny = 1e-300
    exact = steps == 0  # the polish's evaluations: the loss to its last digits
    for t in range(1, max(steps, 1) + 1):
        # the one call site of the inlined objective (two would compile its code twice)
        total = _value_grad_kernel(
            theta, grad, Mx, Mo_, Md_, Mdo, traces, Sig, lowrank, Lo, Ro, cd, Ld, Rd, cs, Ls, Rs,
            moo_eye, learned, free, k2, w, Sxx, Sax, trSaa, Mg, exact, do, dz, da,
        )  # fmt: skip
        hist[t - 1] = total
        if steps == 0:
            return 0, 0
        gn = np.sqrt(_sumsq(grad))
        if g0 < 0.0:
            g0 = max(gn, tiny)
        # rtol = gtol = 0 (paper mode) never stop early, even where the loss rounds to a constant
        if gtol > 0.0 and gn <= gtol * g0:
            return t - 1, 1
        if rtol > 0.0 and t - 1 >= window:
            old = hist[t - 1 - window]
            scale = max(abs(total), abs(old), tiny)
            if abs(old - total) <= rtol * scale:
                return t - 1, 2
        step = lr * decay ** (t - 1)
        c1 = step / (1.0 - b1**t)
        s2 = 1.0 / np.sqrt(1.0 - b2**t)
        _adam_update(theta, grad, m, v, denom, b1, b2, c1, s2, eps)
    return steps, 0


@njit(error_model="numpy")
def _adam_update(theta, grad, m, v, denom, b1, b2, c1, s2, eps):
    """One Adam update in place: PyTorch's formula with ``c1 = lr / (1 - b1^t)`` and
    ``s2 = 1 / sqrt(1 - b2^t)``, the operations of :func:`_adam` in order.

    The update is bound by the vector unit's divisions and square roots (~20,000 parameters at
    do = 128, about a third of a step), so the bias correction of ``v`` is a product with ``s2``
    where PyTorch divides ``sqrt(v)`` by ``sqrt(1 - b2^t)`` (one rounding apart): one division
    and one root per parameter instead of two divisions and a root, 28 -> 22 us at do = 128,
    dz = 8 (2-core AMD EPYC VM, AVX-512, 2026-12-03).
    Three loops rather than one: with four arrays written in one loop LLVM gives up proving them
    disjoint; split, each loop is vectorised. The division vectorises only under numba's numpy
    error model (Python's checks every divisor for zero; here they are > eps > 0). The result is
    bitwise that of the single loop.
    """
    n = theta.shape[0]
    for i in range(n):
        gi = grad[i]
        m[i] = b1 * m[i] + (1.0 - b1) * gi
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi
    for i in range(n):
        denom[i] = np.sqrt(v[i]) * s2 + eps
    for i in range(n):
        theta[i] -= c1 * m[i] / denom[i]


# ------------------------------------------------------------------------------ optimisers
@dataclasses.dataclass
class _Trace:
    steps: int = 0
    polish_iters: int = 0
    converged: bool = False
    reason: str = ""


def _kernel_args(obj) -> tuple:
    """The objective's constants in the order :func:`_value_grad_kernel` takes them after
    ``(theta, grad)`` (placeholders for the supervision terms when there are no labels)."""
    empty = np.zeros((1, 1))
    sup = obj.w > 0
    if obj.factors is None:
        none = np.zeros((obj.do, 0))
        factors = (False, none, none, 0.0, none, none, 0.0, none, none)
    else:
        (_, Lo, Ro), (cd, Ld, Rd), (cs, Ls, Rs) = obj.factors
        factors = (True, Lo, Ro, cd, Ld, Rd, cs, Ls, Rs)
    mg = np.zeros((2, 0, 0))
    if obj.SigG is not None:
        minv = np.eye(obj.do) if obj.Minv is None else obj.Minv
        mg = np.ascontiguousarray(np.stack([minv, obj.SigG]))
    return (
        obj.Mx, obj.Mo_, obj.Md_, obj.Mdo, np.array([obj.trMdd, obj.trSig, obj.trSigG]),
        obj.Sig, *factors, obj.Moo_is_eye, obj.learned, obj.free,
        obj.k2, obj.w, obj.Sxx if sup else empty, obj.Sax if sup else empty,
        obj.trSaa if sup else 0.0, mg, obj.do, obj.dz, max(obj.da, 1),
    )  # fmt: skip


def _value_grad(theta: np.ndarray, grad: np.ndarray, consts: tuple) -> float:
    """The objective's value at ``theta`` and its gradient into ``grad`` by the kernel
    (``consts`` from :func:`_kernel_args`): :func:`_adam_kernel` with no step."""
    hist = np.empty(1)
    _adam_kernel(theta, grad, *consts, 0, 0.0, 1.0, 0.9, 0.999, 1e-8, 0.0, 0.0, 1, hist)
    return float(hist[0])


def _adam_fast(obj, theta, steps, lr, lr_final, betas, eps, rtol, gtol, trace):
    """:func:`_adam` in one numba kernel (:func:`_adam_kernel`); the default path."""
    decay = (lr_final / lr) ** (1.0 / max(steps - 1, 1)) if lr_final else 1.0
    hist = np.empty(max(steps, 1))
    if steps <= 0:  # the kernel's steps = 0 evaluates the objective: no Adam step is taken
        trace.steps, trace.converged, trace.reason = 0, False, "step limit"
        return theta
    done, reason = _adam_kernel(
        theta, np.zeros_like(theta), *_kernel_args(obj), int(steps), float(lr),
        float(decay), float(betas[0]), float(betas[1]), float(eps), float(rtol), float(gtol),
        int(config.GD_WINDOW), hist,
    )  # fmt: skip
    trace.steps = int(done)
    trace.converged = reason != 0
    trace.reason = ("step limit", "gradient norm", "relative loss change")[reason]
    return theta


class _StoppingRule:
    """The Adam/GD stopping rule: the gradient norm falls below ``gtol`` times its first value,
    or the total loss changes by less than ``rtol`` (relative) over ``config.GD_WINDOW`` steps.
    A zero tolerance turns its rule off: paper mode runs every step even where the loss has
    rounded to a constant (Adam still moves there, by up to lr a step)."""

    def __init__(self, rtol, gtol):
        self.rtol, self.gtol = rtol, gtol
        self.window = config.GD_WINDOW
        self.hist = []
        self.g0 = None

    def __call__(self, total, g, t, trace) -> bool:
        gn = float(np.sqrt(g @ g))
        if self.g0 is None:
            self.g0 = max(gn, np.finfo(float).tiny)
        self.hist.append(total)
        if self.gtol > 0 and gn <= self.gtol * self.g0:
            trace.steps, trace.converged, trace.reason = t - 1, True, "gradient norm"
            return True
        if self.rtol > 0 and len(self.hist) > self.window:
            old = self.hist[-self.window - 1]
            scale = max(abs(total), abs(old), np.finfo(float).tiny)
            if abs(old - total) <= self.rtol * scale:
                trace.steps, trace.converged, trace.reason = t - 1, True, "relative loss change"
                return True
        return False


def _adam(obj, theta, steps, lr, lr_final, betas, eps, rtol, gtol, trace, noise=None):
    """Deterministic Adam (PyTorch's update, bias-corrected) with a geometric lr decay.

    Stops when the gradient norm falls below ``gtol`` times its initial value, or when the total
    loss changes by less than ``rtol`` (relative) over a window of ``config.GD_WINDOW`` steps.
    The numpy reference of :func:`_adam_fast`. ``noise(theta)``, if given, returns the variance
    of the minibatch gradient, which is added to ``g^2`` in Adam's second moment (refreshed every
    ``config.GD_NOISE_EVERY`` steps): the mean-field twin of minibatch Adam.
    """
    b1, b2 = betas
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    g = np.empty_like(theta)
    decay = (lr_final / lr) ** (1.0 / max(steps - 1, 1)) if lr_final else 1.0
    stop = _StoppingRule(rtol, gtol)
    for t in range(1, steps + 1):
        total, _, g = obj.value_grad(theta, g)
        if stop(total, g, t, trace):
            return theta
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        if noise is not None:
            if (t - 1) % config.GD_NOISE_EVERY == 0:
                var = noise(theta)
            v += (1 - b2) * var
        step = lr * decay ** (t - 1)
        mhat_scale = step / (1 - b1**t)
        denom = np.sqrt(v)
        denom *= 1.0 / np.sqrt(1 - b2**t)
        denom += eps
        theta -= mhat_scale * m / denom
    trace.steps, trace.reason = steps, "step limit"
    return theta


def _gd(obj, theta, steps, lr, rtol, gtol, trace):
    """Plain gradient descent with a fixed step ``lr``; same stopping rule as :func:`_adam`."""
    g = np.empty_like(theta)
    stop = _StoppingRule(rtol, gtol)
    for t in range(1, steps + 1):
        total, _, g = obj.value_grad(theta, g)
        if not np.isfinite(total):
            raise LamfastError(f"moment-gd diverged (plain GD, lr = {lr}); lower the lr")
        if stop(total, g, t, trace):
            return theta
        theta -= lr * g
    trace.steps, trace.reason = steps, "step limit"
    return theta


def _profiled_decoder(obj) -> bool:
    """True when the polish may eliminate ``A`` in closed form (:func:`_polish_profiled`).

    Learned decoder, no augmentation (``kappa = 0``), free encoder: the loss depends on ``A`` only
    through the reconstruction least squares, and ``C`` only through ``A + B S`` (the flat
    direction). With ``kappa > 0`` the penalty ``||A - I||^2`` couples ``A`` to ``S``.
    """
    return obj.learned and obj.free and obj.k2 == 0.0


def _optimal_A(obj, B, C, D, K):
    """Closed-form decoder ``A`` for fixed ``B, C, D`` (kappa = 0).

    The reconstruction residual is ``R x`` with ``R = [A + B S - I, B D - I]``; stationarity in
    ``A`` reads ``(A + B S - I) Moo + (B D - I) Mdo = 0`` (``Mdo = E[delta o^T]``), so
    ``A = I - B S + (I - B D) K`` with ``K = Mdo Moo^{-1}`` (``K = Mdo`` when ``Moo = I``).
    """
    S = C + D
    A = (K - B @ (D @ K)) - B @ S
    A[np.diag_indices_from(A)] += 1.0
    return A


def _polish_profiled(obj, theta, maxiter, gtol, trace):
    """L-BFGS over ``(B, D)`` only, with ``A`` profiled out and ``C`` held (see _profiled_decoder).

    For fixed ``B, C, D`` the optimal ``A`` is closed-form (:func:`_optimal_A`); by the envelope
    theorem the gradient of the profiled loss in ``(B, D)`` is the full gradient at that ``A``.
    At that ``A`` the gradient in ``C`` (``B^T (R Mx)_o``) vanishes identically, so ``C`` is left
    where Adam put it: the flat direction (the ``o``-content of ``z``) is not polished, only the
    directions that change the loss are. The full-space polish spends thousands of iterations
    (up to its cap, near chi = 0.9) pushing that flat, ill-conditioned direction to 1e-10 without
    changing the loss or the surrogate latent.
    """
    do, dz = obj.do, obj.dz
    Moo = obj.Mx[:do, :do]
    K = obj.Mdo if obj.Moo_is_eye else np.linalg.solve(Moo, obj.Mdo.T).T  # Mdo Moo^-1
    work = theta.copy()
    p = obj.unpack(work)
    C = p["C"].copy()
    nB = do * dz
    sup = obj.w > 0
    consts = _kernel_args(obj)
    extra = [] if not sup else [("E", obj.da * dz)]
    nE = obj.da * dz if sup else 0
    g = np.empty_like(work)
    gv = obj.unpack(g)

    def load(x):
        p["B"][...] = x[:nB].reshape(do, dz)
        p["D"][...] = x[nB : 2 * nB].reshape(dz, do)
        if extra:
            p["E"][...] = x[2 * nB :].reshape(obj.da, dz)
        p["A"][...] = _optimal_A(obj, p["B"], C, p["D"], K)

    def fun(x):
        load(x)
        if config.GD_KERNEL:
            total = _value_grad(work, g, consts)
        else:
            total = obj.value_grad(work, g)[0]
        out = np.empty_like(x)
        out[:nB] = gv["B"].ravel()
        out[nB : 2 * nB] = gv["D"].ravel()
        if extra:
            out[2 * nB :] = gv["E"].ravel()
        return total, out

    x0 = np.concatenate([p["B"].ravel(), p["D"].ravel()] + ([p["E"].ravel()] if extra else []))
    assert x0.size == 2 * nB + nE
    res = _lbfgs(fun, x0, maxiter, gtol)
    trace.polish_iters = int(res.nit)
    load(np.asarray(res.x))
    return work


def _lbfgs(fun, x0, maxiter, gtol):
    """The one L-BFGS call of both polishes: stop on the gradient only (``ftol = 0``)."""
    options = {
        "maxiter": int(maxiter),
        "maxcor": 30,
        "ftol": 0.0,
        "gtol": gtol,
        "maxfun": 2 * int(maxiter),
    }
    import scipy.optimize  # 0.14 s of start-up: only the polish of moment-gd needs it

    return scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", options=options)


def _polish(obj, theta, maxiter, gtol, trace):
    """L-BFGS from the optimiser's end point to machine-precision stationarity.

    Needed because Adam with any fixed or decayed lr stalls at a distance O(lr) from the optimum,
    while the tests compare subspaces to 1e-6 rad. L-BFGS is deterministic and, started at the end
    of the Adam path, moves only to the nearest stationary point: along flat directions of the
    loss (the init-dependent cases) the gradient vanishes, so the Adam end point is kept there.
    """
    g = np.empty_like(theta)
    if config.GD_KERNEL:
        consts = _kernel_args(obj)

        def fun(x):
            x = np.ascontiguousarray(x)
            gg = np.empty_like(x)
            return _value_grad(x, gg, consts), gg

    else:

        def fun(x):
            total, _, gg = obj.value_grad(x, g)
            return total, gg.copy()

    res = _lbfgs(fun, theta, maxiter, gtol)
    trace.polish_iters = int(res.nit)
    return np.asarray(res.x)


# ------------------------------------------------------------------------------ the solver
def moment_gd_fit(
    moments: Moments,
    dz: int,
    variant: Variant,
    *,
    seed: int = 0,
    mode: str = "converge",
    optimizer: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    lr_final: float | None = None,
    polish: bool | None = None,
    rtol: float | None = None,
    gtol: float | None = None,
    init: dict | None = None,
    noise_aware: bool | None = None,
    labels: Moments | None = None,
) -> FittedLAM:
    """Fit a LAM by deterministic optimisation of its exact population objective.

    Parameters
    ----------
    moments : Moments
        Needs ``o``, ``delta`` (and ``a`` when supervised without ``labels``). Finite or
        population moments.
    dz : int
    variant : Variant
        Every variant is supported; ``decoder="identity"`` fixes ``A = I`` and ``encoder="tied"``
        makes ``D`` the single encoder parameter (``C = -D``).
    seed : int
        Seeds the initialisation (:func:`paper_init`).
    mode : {"converge", "paper"}
        ``converge`` (default): Adam with a decaying lr until the stopping rule fires, then the
        L-BFGS polish: the optimum the trainer's initialisation leads to. ``paper``: the
        deterministic twin of the ``sgd`` solver, i.e. the paper's finite training: Adam at
        constant lr ``config.SGD_LR`` for ``config.SGD_STEPS`` steps, no early stop, no polish
        (explicit ``steps``/``lr``/... still override), noise-aware by default. Finite training
        matters where the loss has slow or flat directions (learned decoder, small kappa, few
        labels).
    optimizer : {"adam", "gd"}
        Default ``config.GD_OPTIMIZER`` (Adam, the paper's optimiser, so that the init-dependent
        flat directions end where a trainer would leave them).
    steps, lr, lr_final : optional
        Step limit, initial learning rate and final learning rate of a geometric decay
        (``lr_final=lr`` keeps it constant); defaults in ``config`` (``GD_*``).
    polish : bool
        Finish with L-BFGS to machine-precision stationarity (default ``config.GD_POLISH``).
    rtol, gtol : float, optional
        Stopping rule: relative change of the loss over ``config.GD_WINDOW`` steps below ``rtol``,
        or gradient norm below ``gtol`` times the initial one.
    init : dict, optional
        Starting matrices (as returned by :func:`paper_init`) instead of the seeded default.
    noise_aware : bool, optional
        Default: True in ``paper`` mode, False in ``converge`` mode. Adam only: add the variance
        of the protocol's minibatch gradient (batch ``config.BATCH_SIZE``,
        :meth:`MomentObjective.grad_variance`) to Adam's second moment, so that ``mode="paper"``
        follows minibatch Adam where gradient noise dominates (small kappa, few labels).
        Gaussian worlds; runs the numpy loop.
    labels : Moments, optional
        Moments of the labelled rows (blocks ``o``, ``delta``, ``a``; ``count`` the number of
        labelled rows) for the action terms of a supervised variant; None: every row of
        ``moments`` is labelled (:class:`MomentObjective`).

    Returns
    -------
    FittedLAM
        ``solver="moment-gd"``; ``loss`` is the reconstruction loss (no penalties; the total
        objective is ``extra["objective"]``), ``spectrum``
        the variances of the reconstructed latent ``B z`` along its principal directions,
        ``notes`` records the optimiser, steps and whether it converged (also in ``extra``:
        ``converged``, ``steps``).
    """
    if mode not in MODES:
        raise LamfastError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "paper":
        optimizer = optimizer or "adam"
        steps = config.SGD_STEPS if steps is None else steps
        lr = config.SGD_LR if lr is None else lr
        lr_final = lr if lr_final is None else lr_final
        polish = False if polish is None else polish
        rtol = 0.0 if rtol is None else rtol
        gtol = 0.0 if gtol is None else gtol
        noise_aware = True if noise_aware is None else noise_aware
    noise_aware = bool(noise_aware)
    optimizer = optimizer or config.GD_OPTIMIZER
    if optimizer not in OPTIMIZERS:
        raise LamfastError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    steps = int(config.GD_STEPS if steps is None else steps)
    if steps < 0:
        raise LamfastError(f"steps must be >= 0, got {steps}")
    polish = config.GD_POLISH if polish is None else bool(polish)
    rtol = config.GD_RTOL if rtol is None else float(rtol)
    gtol = config.GD_GTOL if gtol is None else float(gtol)
    obj = MomentObjective(moments, dz, variant, labels=labels)
    if init is None:
        init = paper_init(obj.do, obj.dz, max(obj.da, 1), variant, seed)
    theta = obj.pack(init)
    trace = _Trace()
    # Scale of the problem for the stopping rules: the largest gradient entry at the start.
    g_init = np.max(np.abs(obj.value_grad(theta)[2]), initial=0.0)
    stationary = config.GD_POLISH_GTOL * max(g_init, np.finfo(float).tiny)
    if optimizer == "adam":
        lr = config.GD_ADAM_LR if lr is None else float(lr)
        lr_final = config.GD_ADAM_LR_FINAL if lr_final is None else lr_final
        args = (obj, theta, steps, lr, lr_final, config.ADAM_BETAS, config.ADAM_EPS, rtol, gtol)
        if noise_aware:
            weighting = variant.label_weighting

            def noise(th):
                return obj.grad_variance(th, config.BATCH_SIZE, weighting)

            theta = _adam(*args, trace, noise=noise)
        else:
            theta = (_adam_fast if config.GD_KERNEL else _adam)(*args, trace)
    else:
        lr = config.GD_LR if lr is None else float(lr)
        theta = _gd(obj, theta, steps, lr, rtol, gtol, trace)
    if polish:
        if config.GD_POLISH_PROFILED and _profiled_decoder(obj):
            theta = _polish_profiled(obj, theta, config.GD_POLISH_MAXITER, stationary, trace)
        else:
            theta = _polish(obj, theta, config.GD_POLISH_MAXITER, stationary, trace)
    total, _, g = obj.value_grad(theta)
    if not np.isfinite(total):
        raise LamfastError("moment-gd diverged; lower the learning rate")
    mats = obj.matrices(theta)
    gnorm = float(np.linalg.norm(g))
    # Converged: the Adam/GD stopping rule fired, or the polish came within GD_CONVERGED_RTOL of
    # stationarity. L-BFGS aims lower (GD_POLISH_GTOL) but its line search stops once a loss
    # decrease is below the rounding of the loss, ~sqrt(eps) in relative gradient terms.
    g_end = float(np.max(np.abs(g), initial=0.0))
    converged = (not polish and trace.converged) or (
        polish and g_end <= config.GD_CONVERGED_RTOL * max(g_init, np.finfo(float).tiny)
    )
    how = mode + (", noise-aware" if noise_aware else "")
    notes = [
        f"moment-gd ({how}): {optimizer} lr={lr:g}, {trace.steps} steps ({trace.reason})"
        + (f", then L-BFGS {trace.polish_iters} iterations" if polish else ""),
        f"{'converged' if converged else 'NOT converged'}: objective {total:.6g}, "
        f"gradient norm {gnorm:.3g}",
    ]
    Bz = mats["B"] @ np.hstack([mats["C"] + mats["D"], mats["D"]])
    spectrum = np.linalg.eigvalsh(Bz @ obj.Mx @ Bz.T)[::-1][: obj.dz]
    lam = FittedLAM(
        obj.dz,
        variant,
        "moment-gd",
        seed,
        mats["A"],
        mats["B"],
        mats["C"],
        mats["D"],
        spectrum,
        E=mats["E"],
        h=mats["h"],
        notes=tuple(notes),
        extra={"converged": bool(converged), "steps": trace.steps, "objective": float(total)},
    )
    lam.loss = recon_loss(lam, moments)
    return lam
