"""Closed-form linear LAMs: spot formulas on population moments and naive fits on rows."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lamfast import (
    LamfastError,
    LinearWorld,
    Variant,
    config,
    fit,
    moments_from_rows,
    probe_metrics,
)

from . import naive

# Population moments are exact: metrics are rational functions of the moments evaluated in
# float64, so they agree with their closed forms to a few hundred ulps.
EXACT = 1e-10


@pytest.mark.parametrize("dz", range(1, 13))
def test_no_noise_act_mse(dz):
    w = LinearWorld(do=32, da=4, seed=3)
    m = w.population_moments()
    r = probe_metrics(fit(m, dz), m)
    assert r["act_mse"] == pytest.approx(max(0.0, 1 - dz / 4), abs=EXACT)
    assert r["obs_mse"] == pytest.approx(1.0, abs=EXACT)
    assert r["noi_mse"] == 1.0
    assert r["llo"] == pytest.approx(2 - max(0.0, 1 - dz / 4), abs=EXACT)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 1.5])
@pytest.mark.parametrize("dz", [4, 6, 10])
def test_gaussian_noise_act_mse(sigma, dz):
    """dz >= da: z holds a + X^T eps (variance 1 + sigma^2 per action direction), so the best
    linear read-out of a leaves sigma^2 / (1 + sigma^2)."""
    w = LinearWorld(do=32, da=4, noise="gaussian", sigma=sigma, seed=1)
    m = w.population_moments()
    r = probe_metrics(fit(m, dz), m)
    assert r["act_mse"] == pytest.approx(sigma**2 / (1 + sigma**2), abs=EXACT)


@pytest.mark.parametrize("noise, sigma", [("none", 0.0), ("exo", 2.0), ("gaussian", 0.5)])
@pytest.mark.parametrize("dz", [2, 5, 8])
def test_min_loss_is_discarded_eigenvalues(noise, sigma, dz):
    w = LinearWorld(do=24, da=4, db=3, noise=noise, sigma=sigma, seed=2)
    m = w.population_moments()
    lam = fit(m, dz)
    eig = np.linalg.eigvalsh(m.second_moment("delta"))[::-1]
    assert lam.loss == pytest.approx(eig[dz:].sum() / w.do, abs=EXACT)


def test_pca_matches_naive_on_rows(rng):
    w = LinearWorld(do=10, da=3, db=2, noise="exo", sigma=1.3, seed=4)
    rows = naive.world_rows(w, 5000, 5000)
    m = moments_from_rows(rows, blocks=w.blocks)
    lam = fit(m, 3)
    A, B, C, D = naive.pca_lam(rows, w.do, 3)
    assert_allclose(naive.projector(lam.B), naive.projector(B), atol=1e-8)
    ref_loss = naive.lam_loss(rows, w.do, A, B, C, D)
    assert lam.loss == pytest.approx(ref_loss, rel=1e-9)
    assert naive.lam_loss(rows, w.do, lam.A, lam.B, lam.C, lam.D) == pytest.approx(
        ref_loss, rel=1e-9
    )
    # Ky Fan: no other dz-dim subspace does better
    for _ in range(5):
        Q, _ = np.linalg.qr(rng.standard_normal((w.do, 3)))
        assert naive.lam_loss(rows, w.do, np.eye(w.do), Q, -Q.T, Q.T) > lam.loss


@pytest.mark.parametrize("chi", [0.0, 0.5, 1.0])
def test_innovation_pca_matches_naive(chi, rng):
    w = LinearWorld(do=10, da=3, noise="gaussian", sigma=0.3, chi=chi, seed=5)
    rows = naive.world_rows(w, 4000, 4000)
    m = moments_from_rows(rows, blocks=w.blocks)
    lam = fit(m, 2, decoder="learned", encoder="tied")
    A, B, C, D = naive.innovation_lam(rows, w.do, 2)
    assert_allclose(lam.A, A, atol=1e-8)
    assert_allclose(naive.projector(lam.B), naive.projector(B), atol=1e-8)
    ref = naive.lam_loss(rows, w.do, A, B, C, D)
    assert naive.lam_loss(rows, w.do, lam.A, lam.B, lam.C, lam.D) == pytest.approx(ref, rel=1e-9)
    assert lam.loss == pytest.approx(ref, rel=1e-9)


def test_learned_decoder_random_policy_is_pca():
    w = LinearWorld(do=16, da=4, noise="exo", sigma=0.5)
    m = w.population_moments()
    pca = fit(m, 3)
    for variant in (Variant("learned", "tied"), Variant("learned", "free", kappa=0.1)):
        lam = fit(m, 3, variant)
        assert_allclose(lam.A, np.eye(16), atol=1e-12)
        assert_allclose(naive.projector(lam.B), naive.projector(pca.B), atol=1e-10)


def test_no_closed_form_names_moment_gd():
    m = LinearWorld(do=8, da=2, chi=0.5).population_moments()
    with pytest.raises(LamfastError, match="moment-gd"):
        fit(m, 2, decoder="learned", encoder="free")
    # kappa > 0 with a correlated policy: the ridge innovation PCA (docs/theory.md, item 4)
    assert fit(m, 2, decoder="learned", encoder="free", kappa=0.1).solver == "eig"
    with pytest.raises(LamfastError, match="moment-gd"):
        fit(m, 2, decoder="learned", encoder="tied", label_fraction=0.1)


def test_supervised_reduces_to_pca_when_weight_vanishes():
    """m -> 0: M_aux = Sigma / do exactly (a weight of 1e-300 underflows against Sigma)."""
    w = LinearWorld(do=20, da=4, db=4, noise="exo", sigma=1.5, seed=6)
    m = w.population_moments()
    sup = fit(m, 5, label_fraction=1e-300)
    assert sup.E is not None  # the supervised path ran
    pca = fit(m, 5)
    assert_allclose(naive.projector(sup.D.T), naive.projector(pca.D.T), atol=1e-9)
    assert sup.loss == pytest.approx(pca.loss, abs=EXACT)


@pytest.mark.parametrize("weighting", ["paper", "batch"])
def test_supervised_is_optimal_on_rows(weighting, rng):
    """The eig solution minimises the supervised objective computed by lstsq on rows: it beats
    plain PCA, random encoders and small perturbations of itself."""
    w = LinearWorld(do=10, da=3, db=3, noise="exo", sigma=1.6, seed=7)
    rows = naive.world_rows(w, 6000, 6000)
    rows = rows - rows.mean(axis=0)  # zero-mean delta: the objective the closed form solves
    m = moments_from_rows(rows, blocks=w.blocks)
    variant = Variant(label_fraction=0.2, label_weighting=weighting)
    wt = variant.label_weight
    lam = fit(m, 3, variant)
    best = naive.supervised_objective(rows, w.do, w.da, lam.D, wt)
    pca = fit(m, 3)
    assert best < naive.supervised_objective(rows, w.do, w.da, pca.D, wt)
    for _ in range(5):
        assert best <= naive.supervised_objective(
            rows, w.do, w.da, rng.standard_normal((3, 10)), wt
        )
        K = lam.D + 1e-3 * rng.standard_normal(lam.D.shape)
        assert best <= naive.supervised_objective(rows, w.do, w.da, K, wt) + 1e-12


def test_label_weights():
    assert Variant(label_fraction=0.01).label_weight == 0.01
    assert Variant(label_fraction=0.01, label_weighting="batch").label_weight == pytest.approx(
        1 - 0.99**128
    )


def test_ties_are_detected_and_averaged():
    w = LinearWorld(do=16, da=4)
    m = w.population_moments()
    lam = fit(m, 2, seed=1)
    assert lam.tie == (0, 4)
    assert len(lam.draws) == config.TIE_DRAWS
    for one in (lam, *lam.draws):
        assert probe_metrics(one, m)["act_mse"] == pytest.approx(0.5, abs=EXACT)
    # a split zero block needs no draws: its directions carry nothing
    big = fit(m, 6)
    assert big.tie == (4, 16) and big.draws == ()
    # distinct seeds give distinct draws, same seed the same
    other = fit(m, 2, seed=2)
    assert not np.allclose(lam.draws[0].B, other.draws[0].B)
    assert np.array_equal(fit(m, 2, seed=1).draws[0].B, lam.draws[0].B)


def test_no_tie_when_gap_is_clear():
    """Noise eigenvalues ~4 (sigma^2), action eigenvalues ~1: dz = 2 = db splits nothing."""
    m = LinearWorld(do=16, da=4, noise="exo", sigma=2.0, db=2).population_moments()
    lam = fit(m, 2)
    assert lam.tie is None and lam.draws == ()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dz=0), "dz"),
        (dict(dz=17), "dz"),
        (dict(dz=2, decoder="fancy"), "decoder"),
        (dict(dz=2, encoder="x"), "encoder"),
        (dict(dz=2, kappa=-0.1), "kappa"),
        (dict(dz=2, label_fraction=1.5), "label_fraction"),
        (dict(dz=2, label_weighting="x"), "label_weighting"),
        (dict(dz=2, solver="adam"), "solver"),
    ],
)
def test_bad_fit_arguments(kwargs, message):
    m = LinearWorld(do=16, da=4).population_moments()
    with pytest.raises(LamfastError, match=message):
        fit(m, **kwargs)
