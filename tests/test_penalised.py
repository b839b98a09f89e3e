"""The exact optimum of a learned decoder, free encoder and kappa > 0 (lamfast.solvers.penalised).

The references here do not use the module's derivation. The objective is written out from its
formula, with its plain gradient (``_objective``). Its value is checked against tests/naive.py's
``lam_objective``, which reads the model's equations. It is then minimised over all of
``A, B, C, D`` by scipy's BFGS.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from lamfast import config
from lamfast.errors import LamfastError
from lamfast.moments.core import Moments
from lamfast.solvers.closed_form import eig_fit
from lamfast.solvers.gd import MomentObjective, moment_gd_fit
from lamfast.solvers.penalised import (
    penalised_fit,
    penalised_objective,
    profiled_loss,
    ridge_innovation,
)
from lamfast.solvers.variant import Variant
from lamfast.sources import LinearWorld
from lamfast.sources.simulate import wishart_moments
from tests.naive import lam_objective

KAPPA = 0.5
VARIANT = Variant(decoder="learned", encoder="free", kappa=KAPPA)
EPS = np.finfo(float).eps


def _wishart(do=16, da=4, rows=10_000, seed=1, **kw):
    """A sampled world whose E[delta o^T] is O(1/sqrt(rows)), not zero."""
    kw = {"noise": "exo", "sigma": 2.0, "chi": 0.0, **kw}
    return wishart_moments(LinearWorld(do=do, da=da, seed=seed, **kw), rows)


def _blocks(m):
    do = m.size("o")
    Mx = m.select(["o", "delta"]).second_moment()
    return Mx, do


def _objective(Mx, do, dz, kappa):
    """``theta = [A, B, C, D] -> (do * L, gradient)`` from the formula of gd.py's docstring."""
    eye = np.eye(do)
    k2 = kappa**2
    sizes = [do * do, do * dz, dz * do, dz * do]
    cuts = np.cumsum(sizes)[:-1]

    def unpack(theta):
        A, B, C, D = np.split(theta, cuts)
        return A.reshape(do, do), B.reshape(do, dz), C.reshape(dz, do), D.reshape(dz, do)

    def f(theta):
        A, B, C, D = unpack(theta)
        S = C + D
        R = np.hstack([A - eye + B @ S, B @ D - eye])
        W = np.hstack([S, D])
        RM = R @ Mx
        At, BS = A - eye, B @ S
        value = np.sum(RM * R) + k2 * (np.sum(At * At) + np.sum(BS * BS))
        gA = 2 * RM[:, :do] + 2 * k2 * At
        gB = 2 * RM @ W.T + 2 * k2 * BS @ S.T
        gW = 2 * B.T @ RM
        gS = gW[:, :do] + 2 * k2 * B.T @ BS
        grad = np.concatenate([gA.ravel(), gB.ravel(), gS.ravel(), (gS + gW[:, do:]).ravel()])
        return value, grad

    return f, unpack, sum(sizes)


def _pack(lam):
    return np.concatenate([lam.A.ravel(), lam.B.ravel(), lam.C.ravel(), lam.D.ravel()])


def _latent_sines(Mx, W1, W2):
    """Sines of the principal angles between two latents ``z = W x`` as random variables.

    The angles are measured in the metric of ``Mx``: directions of ``x`` that never vary (the null
    space of ``Mx``, e.g. the 4 directions no exo noise or action reaches) change no ``z``.
    """
    w, U = np.linalg.eigh(Mx)
    half = U * np.sqrt(np.clip(w, 0.0, None))
    Q1 = np.linalg.qr((W1 @ half).T)[0]
    Q2 = np.linalg.qr((W2 @ half).T)[0]
    cos = np.clip(np.linalg.svd(Q1.T @ Q2, compute_uv=False), 0.0, 1.0)
    return np.sqrt(1.0 - cos**2)


def _latent(lam):
    return np.hstack([lam.C + lam.D, lam.D])


# ------------------------------------------------------------------------------ the reference
def test_reference_objective_is_the_model(rng):
    """The formula reference equals naive.lam_objective at a random point, and so does the
    module's penalised_objective and gd's MomentObjective. Each is a sum of O(100) terms of
    size O(10), so rounding is ~1e-13 relative; 1e-10 is far above that and far below a bug."""
    m = _wishart(do=8, da=2)
    Mx, do = _blocks(m)
    dz = 2
    f, unpack, n = _objective(Mx, do, dz, KAPPA)
    theta = rng.standard_normal(n) * 0.5
    A, B, C, D = unpack(theta)
    sel = m.select(["o", "delta", "a"])
    model = lam_objective(sel.mean, sel.cov, do, 2, A, B, C, D, kappa=KAPPA)
    np.testing.assert_allclose(f(theta)[0] / do, model, rtol=1e-10)

    class P:
        pass

    p = P()
    p.A, p.B, p.C, p.D = A, B, C, D
    np.testing.assert_allclose(penalised_objective(m, p, KAPPA), model, rtol=1e-10)
    obj = MomentObjective(m, dz, VARIANT)
    np.testing.assert_allclose(obj.value(obj.pack(dict(A=A, B=B, C=C, D=D))), model, rtol=1e-10)
    # and the reference gradient against central differences (h = 1e-6: truncation ~h^2, noise
    # ~eps * f / h ~ 1e-9 absolute on gradients of size O(10))
    g = f(theta)[1]
    h = 1e-6
    idx = rng.choice(n, 20, replace=False)
    fd = [(f(theta + h * e)[0] - f(theta - h * e)[0]) / (2 * h) for e in np.eye(n)[idx]]
    np.testing.assert_allclose(fd, g[idx], rtol=0, atol=1e-6 * np.linalg.norm(g))


# ------------------------------------------------------------------------------ profiled loss
def test_profiled_gradient_matches_central_differences(rng):
    """Analytic (dB, dD) of the profiled loss vs central differences at a random full-rank B.
    Step h = 1e-6: truncation O(h^2 |f'''|) ~ 1e-12, rounding O(eps |f| / h) ~ 1e-9 for |f| ~ 5;
    the bound 1e-6 * ||grad|| leaves three orders of margin for both."""
    m = _wishart(do=8, da=2)
    f = profiled_loss(m, KAPPA)
    do, dz = 8, 3
    B = rng.standard_normal((do, dz))
    D = rng.standard_normal((dz, do))
    _, dB, dD = f(B, D)
    g = np.concatenate([dB.ravel(), dD.ravel()])
    h = 1e-6
    fd = np.empty_like(g)
    for i in range(g.size):
        e = np.zeros(g.size)
        e[i] = h
        Bp, Dp = B + e[: do * dz].reshape(do, dz), D + e[do * dz :].reshape(dz, do)
        Bm, Dm = B - e[: do * dz].reshape(do, dz), D - e[do * dz :].reshape(dz, do)
        fd[i] = (f(Bp, Dp)[0] - f(Bm, Dm)[0]) / (2 * h)
    np.testing.assert_allclose(fd, g, rtol=0, atol=1e-6 * np.linalg.norm(g))


def test_profiled_value_is_the_minimum_over_A_and_C(rng):
    """For fixed B, D the reference objective is a convex quadratic in (A, C); its minimum, by
    L-BFGS to a gradient of 1e-12, equals the profiled value. The excess of an approximate
    minimum is O(||g||^2 / curvature), far below the 1e-9 relative tolerance; rounding ~1e-14."""
    m = _wishart(do=8, da=2)
    Mx, do = _blocks(m)
    dz = 3
    B = rng.standard_normal((do, dz))
    D = rng.standard_normal((dz, do))
    f, unpack, n = _objective(Mx, do, dz, KAPPA)
    nA, nC = do * do, dz * do

    def fa(x):
        theta = np.concatenate([x[:nA], B.ravel(), x[nA:], D.ravel()])
        v, g = f(theta)
        return v, np.concatenate([g[:nA], g[nA + do * dz : nA + do * dz + nC]])

    res = scipy.optimize.minimize(
        fa, np.zeros(nA + nC), jac=True, method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 20_000, "maxcor": 30},
    )  # fmt: skip
    np.testing.assert_allclose(profiled_loss(m, KAPPA)(B, D)[0] * do, res.fun, rtol=1e-9)


def test_profiled_lbfgs_finds_nothing_lower(rng):
    """L-BFGS on the profiled loss from random (B, D) ends at the closed-form value, never below
    it. Measured excess: 2e-14..5e-12 relative. Random starts leave B with condition ~30, and
    the loss is flat along B -> B G^-1, D -> G D, so L-BFGS stops less tightly than on the full
    objective. 1e-10 covers that; the closed form is the global minimum, so "never below" gets
    only rounding slack (1e-12)."""
    m = _wishart(do=8, da=2)
    do, dz = 8, 3
    f = profiled_loss(m, KAPPA)
    best = penalised_fit(m, dz, VARIANT).extra["objective"]

    def fun(x):
        v, dB, dD = f(x[: do * dz].reshape(do, dz), x[do * dz :].reshape(dz, do))
        return v, np.concatenate([dB.ravel(), dD.ravel()])

    for _ in range(2):
        x0 = rng.standard_normal(2 * do * dz)
        res = scipy.optimize.minimize(
            fun, x0, jac=True, method="L-BFGS-B",
            options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 20_000, "maxcor": 30},
        )  # fmt: skip
        assert res.fun >= best * (1 - 1e-12)
        np.testing.assert_allclose(res.fun, best, rtol=1e-10)


# ------------------------------------------------------------------------------ the optimum
def test_matches_naive_minimisation_over_all_parameters(rng):
    """On wishart moments (E[delta o^T] != 0) the fit's objective equals the best of three
    quasi-Newton runs over all of A, B, C, D (448 numbers) of the reference objective.

    L-BFGS (BFGS's limited-memory form; dense BFGS gets to the same point 14x slower) stops when
    a step no longer lowers the loss, within a few eps of a minimum: measured ~1e-15 relative.
    1e-10 leaves five orders for other seeds. The fit is the global minimum, so it also may not
    exceed the naive one by more than rounding (1e-12)."""
    m = _wishart()
    Mx, do = _blocks(m)
    dz = 4
    assert np.abs(Mx[do:, :do]).max() > 1e-3  # the case the closed forms refused
    lam = penalised_fit(m, dz, VARIANT)
    f, _, n = _objective(Mx, do, dz, KAPPA)
    naive = np.inf
    for _ in range(3):
        res = scipy.optimize.minimize(
            f, 0.3 * rng.standard_normal(n), jac=True, method="L-BFGS-B",
            options={"gtol": 1e-11, "ftol": 0.0, "maxiter": 20_000, "maxcor": 50},
        )  # fmt: skip
        naive = min(naive, res.fun / do)
    ours = lam.extra["objective"]
    np.testing.assert_allclose(ours, naive, rtol=1e-10)
    assert ours <= naive * (1 + 1e-12)
    np.testing.assert_allclose(ours, f(_pack(lam))[0] / do, rtol=1e-12)
    # the minimum is the sum of the discarded eigenvalues of the ridge innovation, per coordinate
    Sig, _ = ridge_innovation(m, KAPPA)
    w = np.linalg.eigvalsh(Sig)[::-1]
    np.testing.assert_allclose(ours, w[dz:].sum() / do, rtol=1e-10)
    np.testing.assert_allclose(lam.spectrum, w[:dz], rtol=1e-10)


def test_beats_moment_gd_and_agrees_on_the_latent():
    """moment-gd (Adam, then L-BFGS to a relative gradient ~1e-8) reaches the same optimum: its
    objective is no lower (its excess is O(grad^2), ~1e-15, so 1e-12 relative slack covers
    rounding), and its latent spans the same subspace. The angle error is O(grad / eigengap) ~
    1e-7 here; 1e-5 is the bound."""
    m = _wishart()
    dz = 4
    lam = penalised_fit(m, dz, VARIANT)
    gd = moment_gd_fit(m, dz, VARIANT)
    obj = MomentObjective(m, dz, VARIANT)
    gd_value = obj.value(obj.pack(dict(A=gd.A, B=gd.B, C=gd.C, D=gd.D)))
    assert lam.extra["objective"] <= gd_value * (1 + 1e-12)
    np.testing.assert_allclose(lam.extra["objective"], gd_value, rtol=1e-9)
    Mx, _ = _blocks(m)
    assert _latent_sines(Mx, _latent(lam), _latent(gd)).max() < 1e-5
    np.testing.assert_allclose(lam.loss, gd.loss, rtol=1e-6)


def test_stationary_in_the_full_objective():
    """The full gradient (gd.py's, every entry of A, B, C, D) vanishes at the fit: relative to
    tr E[delta delta^T] / do it is rounding-level. 1e-12 allows for do^2 terms of size ~eps. The
    reported profiled gradient is rounding-level too. The encoder is tied and z reads no o."""
    m = _wishart()
    lam = penalised_fit(m, 4, VARIANT)
    obj = MomentObjective(m, 4, VARIANT)
    g = obj.value_grad(obj.pack(dict(A=lam.A, B=lam.B, C=lam.C, D=lam.D)))[2]
    scale = np.trace(m.second_moment("delta")) / m.size("o")
    assert np.linalg.norm(g) <= 1e-12 * scale
    assert lam.extra["grad"] <= 1e-12
    np.testing.assert_array_equal(lam.C, -lam.D)
    assert lam.solver == "eig" and "correlated" in lam.notes[0]


def test_population_is_the_pca(seed):
    """With E[delta o^T] = 0 exactly (population, random policy) the fit is item 4's PCA:
    A = I and C = -D to the bit, and the same latent subspace, loss and spectrum as eig's
    closed form to rounding (1e-12: two eigensolvers on a matrix with an O(1) eigengap)."""
    world = LinearWorld(do=16, da=4, db=4, noise="exo", sigma=2.0, chi=0.0, seed=3)
    m = world.population_moments()
    assert not np.any(m.second_moment("delta", "o"))
    for dz in (4, 8):
        lam = penalised_fit(m, dz, VARIANT, seed=seed)
        ref = eig_fit(m, dz, VARIANT, seed=seed)
        np.testing.assert_array_equal(lam.A, np.eye(16))
        np.testing.assert_array_equal(lam.C, -lam.D)
        np.testing.assert_allclose(lam.B @ lam.D, ref.B @ ref.D, atol=1e-12)
        np.testing.assert_allclose(lam.spectrum, ref.spectrum[:dz], rtol=1e-12)  # eig keeps dz + 8
        np.testing.assert_allclose(lam.loss, ref.loss, rtol=1e-12, atol=1e-15)
        assert lam.tie is None and lam.draws == ()


def test_population_tie_is_drawn_like_eig(seed):
    """iid noise (population, random policy): the do - da noise eigenvalues sigma^2 are tied and
    dz = da + 1 splits them. The tie is reported as eig reports it, with as many rotation draws,
    and each draw is an optimum with the same objective (rounding: 1e-12)."""
    world = LinearWorld(do=12, da=3, noise="gaussian", sigma=0.5, chi=0.0, seed=3)
    m = world.population_moments()
    lam = penalised_fit(m, 4, VARIANT, seed=seed)
    ref = eig_fit(m, 4, VARIANT, seed=seed)
    assert lam.tie == ref.tie == (3, 12)
    assert len(lam.draws) == len(ref.draws) == config.TIE_DRAWS
    for d in lam.draws:
        np.testing.assert_allclose(d.extra["objective"], lam.extra["objective"], rtol=1e-12)
    assert "tied" in lam.notes[-1]


def test_correlated_tie_is_drawn():
    """A hand-made correlated law (Moo = I, diagonal blocks) whose ridge innovation
    d_i - m_i^2 / (1 + kappa^2) is 2 in three coordinates: dz = 2 splits that block. Every draw
    is optimal (same objective to 1e-12) and the draws differ from each other."""
    mdo = np.array([1.0, 0.0, 0.5, 0.0, 0.0, 0.2])
    mdd = np.array([2.0 + 1.0 / 1.25, 2.0, 2.0 + 0.25 / 1.25, 1.0, 0.5, 0.3])
    cov = np.block([[np.eye(6), np.diag(mdo)], [np.diag(mdo), np.diag(mdd)]])
    m = Moments(np.inf, np.zeros(12), cov, (("o", 6), ("delta", 6)), "population")
    lam = penalised_fit(m, 2, VARIANT, seed=1)
    assert lam.tie == (0, 3)
    assert len(lam.draws) == config.TIE_DRAWS
    np.testing.assert_allclose(lam.spectrum, [2.0, 2.0], rtol=1e-12)
    for d in lam.draws:
        np.testing.assert_allclose(d.extra["objective"], lam.extra["objective"], rtol=1e-12)
    assert not np.allclose(lam.draws[0].B @ lam.draws[0].D, lam.draws[1].B @ lam.draws[1].D)


def test_deterministic():
    m = _wishart(do=8, da=2)
    a, b = penalised_fit(m, 3, VARIANT), penalised_fit(m, 3, VARIANT)
    for name in "ABCD":
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize(
    "variant",
    [
        Variant(decoder="identity", encoder="free", kappa=0.5),
        Variant(decoder="learned", encoder="tied", kappa=0.5),
        Variant(decoder="learned", encoder="free", kappa=0.0),
        Variant(decoder="learned", encoder="free", kappa=0.5, label_fraction=0.1),
    ],
)
def test_other_variants_are_refused(variant):
    m = _wishart(do=8, da=2)
    with pytest.raises(LamfastError) as err:
        penalised_fit(m, 2, variant)
    assert "\n" not in str(err.value)


def test_bad_inputs_are_refused():
    m = _wishart(do=8, da=2)
    with pytest.raises(LamfastError, match="dz"):
        penalised_fit(m, 9, VARIANT)
    with pytest.raises(LamfastError, match="block 'o'"):
        penalised_fit(m.select(["delta", "a"]), 2, VARIANT)
