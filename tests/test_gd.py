"""The moment-gd solver: objective, gradient, constraints, and agreement with eig
(docs/solvers.md)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from lamfast import LinearWorld
from lamfast.errors import LamfastError
from lamfast.estimator import fit
from lamfast.moments import moments_from_rows
from lamfast.probes.closed import latent_map, probe_metrics
from lamfast.solvers.gd import MomentObjective, moment_gd_fit
from lamfast.solvers.trainer import paper_init
from lamfast.solvers.variant import Variant
from lamfast.sources.simulate import simulate_rows

from . import naive

VARIANTS = [
    Variant(dec, enc, kappa, m)
    for dec in ("identity", "learned")
    for enc in ("tied", "free")
    for kappa in (0.0, 0.3)
    for m in (0.0, 0.2)
]


def _world():
    # uniform noise: non-zero mean; chi > 0: o correlated with delta and a. Every term is live.
    return LinearWorld(do=7, da=3, noise="uniform", sigma=0.5, chi=0.4, seed=5)


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_objective_matches_model(variant, rng):
    m = _world().population_moments()
    obj = MomentObjective(m, 3, variant)
    theta = 0.4 * rng.standard_normal(obj.size)
    total, rec, _ = obj.value_grad(theta)
    mat = obj.matrices(theta)
    ref = naive.lam_objective(
        m.mean, m.cov, 7, 3, mat["A"], mat["B"], mat["C"], mat["D"],
        variant.kappa, variant.label_weight, mat["E"], mat["h"],
    )  # fmt: skip
    rec_ref = naive.lam_objective(m.mean, m.cov, 7, 3, mat["A"], mat["B"], mat["C"], mat["D"])
    # Both sides are sums of O(1) products of O(1) entries over <= 30 terms: 1e-12 is ~1e4 eps.
    np.testing.assert_allclose(total, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rec, rec_ref, rtol=1e-12, atol=1e-12)


def test_recon_matches_rows(seed):
    w = LinearWorld(do=9, da=3, noise="exo", sigma=0.7, db=2, chi=0.3, seed=seed % 1000)
    rows = simulate_rows(w, 0, 500)
    m = moments_from_rows(rows, w.blocks)
    v = Variant("learned", "free")
    obj = MomentObjective(m, 2, v)
    theta = obj.pack(paper_init(9, 2, 3, v, seed))
    mat = obj.matrices(theta)
    ref = naive.lam_loss_rows(rows, 9, mat["A"], mat["B"], mat["C"], mat["D"])
    np.testing.assert_allclose(obj.value_grad(theta)[1], ref, rtol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_gradient_finite_differences(variant, rng):
    m = _world().population_moments()
    obj = MomentObjective(m, 3, variant)
    theta = 0.4 * rng.standard_normal(obj.size)
    g = obj.value_grad(theta)[2].copy()
    # Central differences: truncation O(h^2 f''') ~ 1e-12, rounding O(eps f / h) ~ 1e-10 at
    # h = 1e-6 and f = O(1); the gradient entries are O(0.1..1), so 1e-7 relative to max|g|.
    h = 1e-6
    num = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        num[i] = (obj.value(theta + e) - obj.value(theta - e)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=0, atol=1e-7 * np.abs(g).max())


def test_constraints_and_init():
    m = LinearWorld(do=12, da=3, seed=2).population_moments()
    lam = fit(m, 3, Variant("identity", "tied"), solver="moment-gd", seed=4)
    assert np.array_equal(lam.A, np.eye(12))
    assert np.array_equal(lam.C, -lam.D)
    assert lam.solver == "moment-gd" and lam.converged_
    p = paper_init(12, 3, 3, Variant("learned", "free"), 4)
    assert np.abs(p["C"]).max() <= 1 / np.sqrt(24) and np.abs(p["A"]).max() <= 1 / np.sqrt(15)
    assert np.abs(p["B"]).max() <= 1 / np.sqrt(15) and p["E"] is None


# Identifiable variants (docs/theory.md, closed forms items 1, 2-tied, 3 with a random policy, 4).
# dz = da (or
# da + db) never splits a tied eigenvalue block, so the optimum is unique.
IDENTIFIABLE = [
    ("identity-tied", dict(noise="gaussian", sigma=0.3), Variant("identity", "tied"), 4),
    ("identity-free", dict(noise="gaussian", sigma=0.3), Variant("identity", "free"), 4),
    ("learned-tied-chi", dict(noise="gaussian", sigma=0.3, chi=0.5), Variant("learned", "tied"), 4),
    ("learned-free-kappa", dict(noise="gaussian", sigma=0.3), Variant("learned", "free", 0.1), 4),
    ("exo-strong", dict(noise="exo", sigma=2.0, db=3), Variant("identity", "tied"), 7),
    (
        "supervised-batch",
        dict(noise="exo", sigma=2.0, db=4),
        Variant("identity", "tied", label_fraction=0.01, label_weighting="batch"),
        4,
    ),
    (
        "supervised-learned-free",
        dict(noise="exo", sigma=2.0, db=4),
        Variant("learned", "free", 0.1, label_fraction=0.01, label_weighting="batch"),
        4,
    ),
]


@pytest.mark.parametrize("world_kw,variant,dz", [c[1:] for c in IDENTIFIABLE],
                         ids=[c[0] for c in IDENTIFIABLE])  # fmt: skip
def test_eig_equals_moment_gd(world_kw, variant, dz, seed):
    world = LinearWorld(do=24, da=4, seed=seed % 997, **world_kw)
    m = world.population_moments()
    ref = fit(m, dz, variant, solver="eig")
    got = fit(m, dz, variant, solver="moment-gd", seed=seed)
    assert got.converged_, got.notes
    assert ref.tie is None
    # Same decoder subspace and same latent information: the row space of the latent map z = W x
    # restricted to the support of the data (directions x never visits are flat, e.g. delta
    # outside span(X, Y) with exo noise), i.e. the row space of W Mx^(1/2).
    assert scipy.linalg.subspace_angles(ref.B, got.B).max() < 1e-6
    lam_, U = np.linalg.eigh(m.second_moment())
    root = (U * np.sqrt(np.clip(lam_, 0, None))) @ U.T
    Wr, Wg = latent_map(ref, m) @ root, latent_map(got, m) @ root
    # The polish stops at the rounding floor of the loss (a relative change ~1e-15 is no longer
    # seen), i.e. at a distance ~sqrt(1e-15 / curvature) from the optimum: with curvatures down to
    # ~1e-3 along the latent map here, angles of 1e-6 are that floor, and a change of rounding
    # (factorised constant products) moves them by a factor of about 2 either way.
    assert scipy.linalg.subspace_angles(Wr.T, Wg.T).max() < 3e-6
    mr, mg = probe_metrics(ref, m), probe_metrics(got, m)
    for key in ("act_mse", "obs_mse", "noi_mse", "recon", "llo"):
        assert abs(mr[key] - mg[key]) <= 1e-6, key


def test_flat_case_reconstructs_but_latent_misses_action(seed):
    """Learned decoder, free encoder, kappa = 0 (fig4-middle): the paper's over-parameterisation.

    recon reaches its optimum (0: no noise, dz = da) while the true latent keeps the o-content it
    started with, so linear probes cannot read the action from it.
    """
    world = LinearWorld(do=32, da=4, seed=seed % 991)
    m = world.population_moments()
    v = Variant("learned", "free", 0.0)
    with pytest.raises(LamfastError, match="moment-gd"):
        fit(m, 4, v, solver="eig")
    lam = fit(m, 4, v, solver="moment-gd", seed=seed)
    assert lam.converged_
    assert lam.loss < 1e-10
    r = probe_metrics(lam, m)
    assert r["act_mse"] > 0.5
    # the o-content S = C + D depends on the initialisation
    other = fit(m, 4, v, solver="moment-gd", seed=seed + 1)
    assert np.linalg.norm((lam.C + lam.D) - (other.C + other.D)) > 0.1


def test_deterministic_and_options(seed):
    m = LinearWorld(do=12, da=3, noise="gaussian", sigma=0.2, seed=1).population_moments()
    v = Variant("learned", "tied")
    a = moment_gd_fit(m, 3, v, seed=seed)
    b = moment_gd_fit(m, 3, v, seed=seed)
    assert np.array_equal(a.B, b.B) and np.array_equal(a.A, b.A)
    g = moment_gd_fit(m, 3, v, seed=seed, optimizer="gd", steps=20000, polish=False)
    assert g.extra["converged"], g.notes
    assert scipy.linalg.subspace_angles(a.B, g.B).max() < 1e-3
    with pytest.raises(LamfastError, match="optimizer"):
        moment_gd_fit(m, 3, v, optimizer="lbfgs")


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_kernel_matches_numpy(variant, monkeypatch, rng):
    """The numba Adam loop equals the numpy reference loop (same formulas, another summation
    order: rounding only, amplified at most by Adam's normalisation over 40 steps)."""
    from lamfast import config

    m = _world().population_moments()
    runs = []
    for kernel in (True, False):
        monkeypatch.setattr(config, "GD_KERNEL", kernel)
        # the kernel's E[o o^T] = I path (GD_KERNEL_EYE) against the general numpy formulas
        monkeypatch.setattr(config, "GD_KERNEL_EYE", kernel)
        runs.append(moment_gd_fit(m, 3, variant, seed=1, mode="paper", steps=40, noise_aware=False))
    for name in "ABCD":
        np.testing.assert_allclose(getattr(runs[0], name), getattr(runs[1], name), atol=1e-10)
    assert runs[0].notes == runs[1].notes


def test_cli_fit_with_moment_gd_and_sgd():
    from click.testing import CliRunner

    from lamfast.cli import cli

    runner = CliRunner()
    args = ["fit", "--do", "16", "--da", "4", "--dz", "4", "--decoder", "learned", "--encoder",
            "free", "--json"]  # fmt: skip
    out = runner.invoke(cli, [*args, "--solver", "moment-gd"])
    assert out.exit_code == 0, out.output
    assert '"solver": "moment-gd"' in out.output and "converged" in out.output
    out = runner.invoke(cli, [*args, "--solver", "eig"])
    assert out.exit_code == 2 and "moment-gd" in out.output
    out = runner.invoke(cli, [*args, "--solver", "sgd", "--decoder", "identity"])
    assert out.exit_code == 0 and '"solver": "sgd"' in out.output


@pytest.mark.parametrize(
    "variant", [v for v in VARIANTS if v.kappa == 0 and v.label_fraction == 0], ids=repr
)
def test_grad_variance_is_the_minibatch_variance(variant):
    """Without augmentation or labels a minibatch gradient is exactly the moment gradient of the
    batch's own moments (tests/test_sgd.py::test_one_step_is_the_moment_gradient), so the predicted
    variance can be checked against 2000 real minibatches of 128 rows.

    Tolerance: a variance estimated from n draws has relative standard error sqrt((k - 1) / n),
    k the kurtosis; products of two Gaussians have k <= 9, so SE <= sqrt(8 / 2000) = 0.063 per
    entry and for the sum of (positively correlated) entries; 0.2 is > 3 SE of that worst case
    (the measured ratios were within 0.01 of 1 on four variants). Augmentation and labels are
    checked against the sgd kernel in tests/test_sgd.py."""
    from lamfast.sources.minibatch import draw_rows

    w = LinearWorld(do=8, da=2, noise="gaussian", sigma=0.4, chi=0.3, seed=2)
    m = w.population_moments()
    obj = MomentObjective(m, 2, variant)
    theta = obj.pack(paper_init(8, 2, 2, variant, 0))
    pred = obj.grad_variance(theta, 128)
    rows = draw_rows(w, 128 * 2000, seed=1)
    grads = np.array(
        [
            MomentObjective(moments_from_rows(rows[i * 128 : (i + 1) * 128], w.blocks), 2, variant)
            .value_grad(theta)[2]
            .copy()
            for i in range(2000)
        ]
    )
    assert abs(pred.sum() / grads.var(axis=0).sum() - 1) < 0.2


@pytest.mark.parametrize("finite", [False, True], ids=["population", "sample"])
def test_profiled_polish(finite, monkeypatch):
    """Learned decoder, free encoder, kappa = 0, polish with A profiled out (C held).

    The profiled polish must (i) leave C exactly where Adam put it (the flat o-content), (ii) end
    at a stationary point of the full objective, (iii) at the optimal loss, which is closed-form:
    with K = Mdo Moo^-1 the residual of delta given o has second moment Sig = Mdd - K Mdo^T, and
    the best rank-dz reconstruction leaves the sum of its smallest eigenvalues, divided by do.
    Tolerance 1e-9: the polish stops at ~1e-10 relative gradient, and the loss error is
    second order in it."""
    from lamfast import config
    from lamfast.solvers.gd import _optimal_A

    world = LinearWorld(do=24, da=4, noise="gaussian", sigma=0.3, chi=0.5, seed=3)
    if finite:
        X = simulate_rows(world, 0, 4000)
        m = moments_from_rows(X, world.blocks)
    else:
        m = world.population_moments()
    v, dz, do = Variant("learned", "free", 0.0), 3, 24
    monkeypatch.setattr(config, "GD_POLISH_PROFILED", True)
    monkeypatch.setattr(config, "GD_KERNEL_EYE", True)
    got = moment_gd_fit(m, dz, v, seed=2)
    adam = moment_gd_fit(m, dz, v, seed=2, polish=False)
    assert np.array_equal(got.C, adam.C)
    assert got.extra["converged"], got.notes
    Mx = m.select(["o", "delta"]).second_moment()
    K = np.linalg.solve(Mx[:do, :do], Mx[:do, do:]).T
    Sig = Mx[do:, do:] - K @ Mx[:do, do:]
    best = np.sum(np.linalg.eigvalsh(Sig)[: do - dz]) / do
    assert abs(got.loss - best) <= 1e-9
    # the closed-form A zeroes the A-gradient for any B, C, D
    obj = MomentObjective(m, dz, v)
    theta = obj.pack(paper_init(do, dz, 4, v, 7))
    p = obj.unpack(theta)
    p["A"][...] = _optimal_A(obj, p["B"], p["C"], p["D"], K)
    gA = obj.unpack(obj.value_grad(theta)[2])["A"]
    assert np.max(np.abs(gA)) <= 1e-12


# ------------------------------------------------------------------------------ structured kernel
def test_identity_plus_low_rank(rng):
    from lamfast.solvers.gd import identity_plus_low_rank

    u = np.linalg.qr(rng.standard_normal((32, 4)))[0]
    M = 0.3 * np.eye(32) + u @ np.diag([2.0, 1.0, -0.2, 0.5]) @ u.T
    c, L, R = identity_plus_low_rank(M, symmetric=True)
    assert L.shape == (32, 4) and abs(c - 0.3) < 1e-14
    np.testing.assert_allclose(c * np.eye(32) + L @ R.T, M, rtol=0, atol=1e-14)
    G = rng.standard_normal((32, 5)) @ rng.standard_normal((5, 32))
    c, L, R = identity_plus_low_rank(G, symmetric=False)
    assert c == 0.0 and L.shape == (32, 5)
    np.testing.assert_allclose(L @ R.T, G, rtol=0, atol=1e-12)
    assert identity_plus_low_rank(np.zeros((32, 32)), symmetric=False)[1].shape == (32, 0)
    # rank above do / 4, or a bulk that is not one value: the dense products
    assert identity_plus_low_rank(rng.standard_normal((32, 32)), symmetric=False) is None
    assert identity_plus_low_rank(np.diag(np.linspace(1, 2, 32)), symmetric=True) is None


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_low_rank_kernel_equals_dense(variant, monkeypatch, rng):
    """The factorised constant products give the dense kernel's value and gradient to rounding,
    and both give the numpy objective's."""
    from lamfast import config
    from lamfast.solvers import gd

    # E[o o^T] = I; Mdo = chi X P (rank 3), Mdd and Sig = c I + rank 4 (uniform noise's mean)
    m = LinearWorld(do=32, da=3, noise="uniform", sigma=0.5, chi=0.4, seed=5).population_moments()
    out = []
    for lowrank in (True, False):
        monkeypatch.setattr(config, "GD_KERNEL_LOWRANK", lowrank)
        obj = MomentObjective(m, 3, variant)
        assert (obj.factors is not None) == lowrank
        theta = rng.standard_normal(obj.size) * 0.3 if not out else out[0][0]
        g = np.empty_like(theta)
        total = gd._value_grad(theta, g, gd._kernel_args(obj))
        out.append((theta, total, g))
    ref_total, _, ref_g = obj.value_grad(out[0][0].copy())
    for _, total, g in out:
        assert abs(total - ref_total) <= 1e-12 * abs(ref_total)
        np.testing.assert_allclose(g, ref_g, rtol=1e-10, atol=1e-12 * np.abs(ref_g).max())


def test_adam_update_is_pytorchs_formula(rng):
    """The split (vectorised) update is bitwise the one-loop update of PyTorch's Adam (with the
    bias correction of ``v`` as a product with ``s2 = 1 / sqrt(1 - b2^t)``)."""
    from lamfast.solvers.gd import _adam_update

    n = 1001
    theta, grad = rng.standard_normal(n), rng.standard_normal(n)
    m, v = rng.standard_normal(n) * 0.1, rng.random(n) * 0.01
    b1, b2, c1, s2, eps = 0.9, 0.999, 1e-3 / (1 - 0.9**7), 1 / np.sqrt(1 - 0.999**7), 1e-8
    want_m, want_v, want_t = m.copy(), v.copy(), theta.copy()
    for i in range(n):  # the textbook loop, one element at a time
        want_m[i] = b1 * want_m[i] + (1.0 - b1) * grad[i]
        want_v[i] = b2 * want_v[i] + (1.0 - b2) * grad[i] * grad[i]
        want_t[i] -= c1 * want_m[i] / (np.sqrt(want_v[i]) * s2 + eps)
    _adam_update(theta, grad, m, v, np.empty(n), b1, b2, c1, s2, eps)
    assert np.array_equal(m, want_m) and np.array_equal(v, want_v)
    assert np.array_equal(theta, want_t)


@pytest.mark.parametrize("noise_aware", [False, True])
def test_paper_mode_runs_every_step(noise_aware):
    """rtol = gtol = 0: no early stop, even once the loss has rounded to a constant (chi = 1:
    the decoder alone reconstructs; the loss reaches 0 in ~3000 steps and Adam keeps moving)."""
    m = LinearWorld(do=8, da=2, chi=1.0).population_moments()
    lam = moment_gd_fit(
        m, 2, Variant("learned", "free"), mode="paper", steps=4000, noise_aware=noise_aware
    )
    assert lam.extra["steps"] == 4000, lam.notes


@pytest.mark.parametrize("n", [0, 1, 7, 8, 13, 16401])
def test_sumsq_is_the_sum_of_squares(n, rng):
    """The kernel's eight-chain sum of squares against numpy's (another summation order: the
    rounding of n additions, n eps relative at most)."""
    from lamfast.solvers.gd import _sumsq

    x = rng.standard_normal(n)
    np.testing.assert_allclose(_sumsq(x), np.sum(x * x), rtol=max(n, 1) * np.finfo(float).eps)


@pytest.mark.parametrize("source", ["population", "wishart"])
@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "numpy"])
def test_loss_is_accurate_along_the_flat_direction(kernel, source, monkeypatch):
    """Moving along the flat o-content of z (C -> C + F, A -> A - B F) leaves the prediction,
    hence the loss, unchanged, however large A grows. With ||A|| ~ 3e3 the expanded loss
    (tr_r0 + 2 <B, V> + <B Z, B>, terms of size ||A||^2 ~ 1e7) moved by ~1e-9 and, at an
    optimum, buried the last decreases of the loss: the L-BFGS polish stopped in a failed line
    search. The loss from the residual stays at its rounding (~1e-15 here). With sampled moments
    (E[o o^T] != I) the kernel does so in the polish's evaluations (``_value_grad``)."""
    from lamfast import config
    from lamfast.solvers.gd import _kernel_args, _value_grad
    from lamfast.sources.simulated import world_moments

    monkeypatch.setattr(config, "GD_KERNEL", kernel)
    m = world_moments(LinearWorld(do=16, da=4, chi=0.5), source, 10**5)
    variant = Variant("learned", "free")
    obj = MomentObjective(m, 4, variant)
    start = paper_init(16, 4, 1, variant, 0)
    F = 1000.0 * np.random.default_rng(0).standard_normal((4, 16))
    moved = {**start, "A": start["A"] - start["B"] @ F, "C": start["C"] + F}
    assert np.linalg.norm(moved["A"]) > 3e3

    def loss(params):
        theta = obj.pack(params)
        if kernel:
            return _value_grad(theta, np.empty_like(theta), _kernel_args(obj))
        return obj.value_grad(theta)[0]

    assert abs(loss(moved) - loss(start)) < 1e-13 * loss(start)


@pytest.mark.parametrize("case", ["wishart", "population, eye path off", "do = 1"])
@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_polish_evaluation_matches_numpy(variant, case, monkeypatch):
    """The kernel's evaluation for the polish (the loss from its residual with E[o o^T] != I,
    through Moo^-1 and the Schur complement) against the numpy objective, which takes the loss
    from the residual on every call: the same value and gradient up to summation order."""
    from lamfast import config
    from lamfast.solvers.gd import _kernel_args, _value_grad
    from lamfast.sources.simulated import world_moments

    if case == "population, eye path off":
        monkeypatch.setattr(config, "GD_KERNEL_EYE", False)
    do, dz = (1, 1) if case == "do = 1" else (7, 3)
    world = LinearWorld(do=do, da=1 if do == 1 else 3, noise="gaussian", sigma=0.5, chi=0.4, seed=5)
    source = "population" if case.startswith("population") else "wishart"
    m = world_moments(world, source, 10**4)
    obj = MomentObjective(m, dz, variant)
    theta = obj.pack(paper_init(do, dz, world.da, variant, 3))
    g = np.empty_like(theta)
    total = _value_grad(theta, g, _kernel_args(obj))
    ref_total, _, ref_g = obj.value_grad(theta.copy())
    assert total > 0
    assert abs(total - ref_total) <= 1e-12 * abs(ref_total)
    np.testing.assert_allclose(g, ref_g, rtol=1e-10, atol=1e-12 * np.abs(ref_g).max())
