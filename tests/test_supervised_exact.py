"""Exact action supervision (docs/theory.md, item 5): a non-zero mean frame difference and labels
on some rows only. The reconstruction reads E[delta delta^T] over every row, the head Cov(delta)
over the labelled rows; where the two differ ``eig`` refines the optimum of the profiled loss
from the closed form, and where they are one matrix it is the closed form it always was."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from lamfast import LinearWorld, config
from lamfast.errors import LamfastError
from lamfast.estimator import fit
from lamfast.moments import moments_from_rows
from lamfast.solvers import closed_form
from lamfast.solvers.closed_form import NoClosedFormError, eig_fit
from lamfast.solvers.gd import moment_gd_fit
from lamfast.solvers.solve import solve
from lamfast.solvers.variant import Variant

from . import naive

DO, DA, DZ = 6, 2, 2
VARIANTS = [Variant(label_fraction=0.2), Variant(label_fraction=0.01, label_weighting="batch")]

# Tolerances. Both sides are minimisers of the same smooth loss, stopped at a relative gradient
# norm g <= 1e-10 (eig: L-BFGS then Newton; the naive BFGS: gtol 1e-11) or ~1e-9 (moment-gd's
# polish). The loss is stationary, so its error is second order, ~g^2 / curvature: far below the
# rounding of a loss of O(1) summed over 2000 rows (~1e-15); 1e-12 leaves a factor 1e3 over
# the measured 2e-16. Subspaces are first order, ~g / c with c the smallest curvature of
# L / L(K = 0) across subspaces (measured 0.13 to 0.17 on these data), so <= 1e-8 rad; arccos
# resolves angles only down to sqrt(2 eps) = 2.1e-8, which is what the comparisons measure;
# 1e-6 rad leaves a factor 50 over that floor.
LOSS_TOL = 1e-12
ANGLE_TOL = 1e-6


def _shifted_rows(seed=4, rows=2000):
    """Rows [o, delta, a, eps] of a full-rank world with a mean added to delta (recorded frames
    never have E[delta] = 0), and every fifth row labelled."""
    w = LinearWorld(do=DO, da=DA, noise="gaussian", sigma=0.6, seed=seed)
    X = naive.world_rows(w, rows, rows)
    X[:, DO : 2 * DO] += np.linspace(0.2, 0.8, DO)
    return X, X[::5], w.blocks


def _split(X):
    return X[:, DO : 2 * DO], X[:, 2 * DO : 2 * DO + DA]


def _theta(lam):
    return np.concatenate([lam.D.ravel(), lam.B.ravel(), lam.E.ravel(), lam.h])


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.label_weighting)
def test_refined_fit_is_the_row_level_minimum(variant):
    X, XL, blocks = _shifted_rows()
    m, lab = moments_from_rows(X, blocks), moments_from_rows(XL, blocks)
    lam = eig_fit(m, DZ, variant, labels=lab)
    assert "refined from the closed form" in lam.notes[0] and "L-BFGS" in lam.notes[0]
    assert lam.tie is None and lam.draws == ()
    w = variant.label_weight
    delta, _ = _split(X)
    delta_lab, a_lab = _split(XL)
    best, K, *_ = naive.fit_supervised_rows(delta, delta_lab, a_lab, DZ, w)
    # eig's own K, B, E, h on the rows: the minimum, and what lam reports
    got = naive.supervised_rows_loss(_theta(lam), delta, delta_lab, a_lab, DZ, w)[0]
    assert got == pytest.approx(best, abs=LOSS_TOL)
    assert lam.extra["objective"] == pytest.approx(best, abs=LOSS_TOL)
    recon = naive.lam_loss_rows(X, DO, lam.A, lam.B, lam.C, lam.D)
    assert lam.loss == pytest.approx(recon, abs=LOSS_TOL)
    assert naive.principal_angles(lam.D.T, K.T).max() < ANGLE_TOL


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.label_weighting)
def test_refined_fit_equals_converged_moment_gd(variant):
    X, XL, blocks = _shifted_rows(seed=5)
    m, lab = moments_from_rows(X, blocks), moments_from_rows(XL, blocks)
    eig = eig_fit(m, DZ, variant, labels=lab)
    gd = moment_gd_fit(m, DZ, variant, labels=lab)
    assert gd.extra["converged"]
    assert gd.extra["objective"] == pytest.approx(eig.extra["objective"], abs=LOSS_TOL)
    assert naive.principal_angles(eig.D.T, gd.D.T).max() < ANGLE_TOL
    # the same exact objective through solve(..., "auto"): the refined eig, not a fallback
    auto = solve(m, DZ, variant, "auto", labels=lab)
    assert auto.solver == "eig"
    assert_array_equal(auto.D, eig.D)


def _closed_form_today(m, dz, variant, seed):
    """The supervised closed form exactly as lamfast computed it before labels existed."""
    w = variant.label_weight
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    do, da = m.size("o"), m.size("a")
    S = m.block_cov("delta")
    S_half_pinv = closed_form._psd_power(S, -0.5)
    Sda = m.block_cov("delta", "a")
    G = S_half_pinv @ Sda
    M_aux = S / do + (w / da) * (G @ G.T)
    M_aux = 0.5 * (M_aux + M_aux.T)
    spectrum, Y, tie, draws = closed_form._top_with_ties(M_aux, dz, rng, zero_block_inert=True)
    M = m.second_moment("delta")
    mu_a, mu_d = m.block_mean("a"), m.block_mean("delta")
    fits = []
    for V in [Y, *draws]:
        K = V.T @ S_half_pinv
        B = M @ K.T @ closed_form._pinv_psd(K @ M @ K.T)
        E = Sda.T @ K.T @ closed_form._pinv_psd(K @ S @ K.T)
        fits.append((K, B, E, mu_a - E @ (K @ mu_d)))
    return spectrum, tie, fits


# Without noise the labels lift the four action directions alike: dz = 2 splits the tied block
# (random rotations are drawn); with exogenous noise (bases not orthogonal) nothing is tied.
@pytest.mark.parametrize(
    "world, dz",
    [(LinearWorld(do=12, da=4), 2), (LinearWorld(do=12, da=2, db=3, noise="exo", sigma=1.5), 3)],
    ids=["tied", "exo"],
)
def test_zero_mean_full_labels_keep_the_closed_form(world, dz):
    m = world.population_moments()
    variant = Variant(label_fraction=0.1)
    lam = eig_fit(m, dz, variant, seed=7)
    assert lam.notes[0].endswith("K = Y^T Sigma^(+1/2), Y = top eigenvectors of M_aux")
    assert not any("refined" in n for n in lam.notes)
    spectrum, tie, fits = _closed_form_today(m, dz, variant, 7)
    assert lam.tie == tie and (tie is not None) == (world.noise == "none")
    assert len(lam.draws) == len(fits) - 1
    assert_array_equal(lam.spectrum, spectrum)
    for one, (K, B, E, h) in zip((lam, *lam.draws), fits, strict=True):
        for got, want in ((one.D, K), (one.C, -K), (one.B, B), (one.E, E), (one.h, h)):
            assert_array_equal(got, want)
        assert_array_equal(one.A, np.eye(world.do))


def _assert_same_fit(a, b):
    for name in ("A", "B", "C", "D", "E", "h", "spectrum"):
        assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.loss == b.loss and a.notes == b.notes and a.tie == b.tie


def test_labels_none_is_labels_equal_to_moments():
    X, _, blocks = _shifted_rows()
    pop = LinearWorld(do=8, da=2, db=2, noise="exo", sigma=1.5).population_moments()
    for m in (moments_from_rows(X, blocks), pop):  # refined and closed-form branches
        v = VARIANTS[0]
        _assert_same_fit(eig_fit(m, DZ, v), eig_fit(m, DZ, v, labels=m))
        opts = {"steps": 30, "polish": False}
        _assert_same_fit(moment_gd_fit(m, DZ, v, **opts), moment_gd_fit(m, DZ, v, labels=m, **opts))
        _assert_same_fit(solve(m, DZ, v, "auto"), solve(m, DZ, v, "auto", labels=m))


def test_moments_need_no_action_block_when_labels_are_given():
    X, XL, blocks = _shifted_rows()
    m, lab = moments_from_rows(X, blocks), moments_from_rows(XL, blocks)
    v = VARIANTS[1]
    _assert_same_fit(
        eig_fit(m.select(["o", "delta"]), DZ, v, labels=lab), eig_fit(m, DZ, v, labels=lab)
    )
    est = fit(m.select(["o", "delta"]), DZ, v, labels=lab)
    assert_array_equal(est.D_, eig_fit(m, DZ, v, labels=lab).D)
    assert any("labelled rows" in n for n in est.notes_)


def test_bad_labels_are_one_line_errors():
    X, XL, blocks = _shifted_rows()
    m, lab = moments_from_rows(X, blocks), moments_from_rows(XL, blocks)
    v = VARIANTS[0]
    narrow = moments_from_rows(XL[:, 1:], [("o", DO - 1), ("delta", DO), ("a", DA), ("eps", DO)])
    wide = moments_from_rows(
        np.hstack([XL[:, : 2 * DO], XL[:, :1], XL[:, 2 * DO :]]),
        [("o", DO), ("delta", DO + 1), ("a", DA), ("eps", DO)],
    )
    cases = [
        (wide, "labels have a block 'delta' of width 7, the moments 6"),
        (lab.select(["o", "delta"]), "labels need a block 'a'"),
        (lab.select(["o", "a"]), "labels need a block 'delta'"),
        (lab.cov, "labels must be Moments"),
    ]
    for labels, msg in cases:
        for solver in ("eig", "auto", "moment-gd"):
            with pytest.raises(LamfastError, match=msg) as e:
                solve(m, DZ, v, solver, labels=labels)
            assert "\n" not in str(e.value)
    nan = type(lab)(lab.count, np.where(np.arange(lab.dim) == 3, np.nan, lab.mean), lab.cov,
                    lab.blocks)  # fmt: skip
    with pytest.raises(LamfastError, match="labels contain NaN or inf"):
        eig_fit(m, DZ, v, labels=nan)
    # moment-gd keeps the layout x = [o, delta] on the labelled rows too
    with pytest.raises(LamfastError, match="labels need a block 'o'"):
        moment_gd_fit(m, DZ, v, labels=lab.select(["delta", "a"]))
    with pytest.raises(LamfastError, match="labels have a block 'o' of width 5, the moments 6"):
        solve(m, DZ, v, labels=narrow)
    with pytest.raises(LamfastError, match="drop labels"):
        solve(m, DZ, v, "sgd", labels=lab, world=LinearWorld(do=DO, da=DA))


def test_labels_without_variance_in_a_direction():
    """delta has a constant component (no variance, strong second moment): the head's metric
    misses a direction the reconstruction wants. The fit says so; if the refinement cannot reach
    a stationary point there, eig refuses and auto runs moment-gd."""
    rng = np.random.default_rng(0)
    n = 2000
    Q = np.linalg.qr(rng.standard_normal((DO, DO)))[0]
    a = rng.standard_normal((n, DA))
    delta = a @ Q[:, :DA].T + 0.5 * rng.standard_normal((n, 3)) @ Q[:, DA : DA + 3].T
    delta += 3.0 * Q[:, DO - 1]
    X = np.hstack([rng.standard_normal((n, DO)), delta, a])
    m = moments_from_rows(X, [("o", DO), ("delta", DO), ("a", DA)])
    v = Variant(label_fraction=0.5)
    lam = eig_fit(m, DZ, v)
    assert any(s.startswith("the labelled rows leave 1 of the 6 directions") for s in lam.notes)
    got = naive.supervised_rows_loss(_theta(lam), delta, delta, a, DZ, 0.5)[0]
    assert got == pytest.approx(lam.extra["objective"], abs=LOSS_TOL)


def test_refinement_that_does_not_converge_is_refused(monkeypatch):
    X, XL, blocks = _shifted_rows()
    m, lab = moments_from_rows(X, blocks), moments_from_rows(XL, blocks)
    v = VARIANTS[0]
    monkeypatch.setattr(config, "REFINE_MAXITER", 1)
    monkeypatch.setattr(config, "NEWTON_STEPS", 0)
    with pytest.raises(NoClosedFormError, match="did not converge") as e:
        eig_fit(m, DZ, v, labels=lab)
    auto = solve(m, DZ, v, "auto", labels=lab)
    assert auto.solver == "moment-gd"
    assert auto.notes[-1] == f"solver auto: {e.value.reason} has no closed form, so moment-gd ran"
