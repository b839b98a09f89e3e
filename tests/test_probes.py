"""Closed-form probes against least-squares probes on materialised rows."""

from __future__ import annotations

import numpy as np
import pytest

from lamfast import LinearWorld, fit, moments_from_rows, probe_metrics
from lamfast.probes.closed import latent_map, principal_angles, probe_mse

from . import naive

# Closed form and lstsq solve the same normal equations on the same rows: they agree to the
# conditioning of the latent covariance times eps (~1e-12 here); 1e-8 leaves a wide margin.
TOL = 1e-8


@pytest.fixture(scope="module")
def data():
    w = LinearWorld(do=10, da=3, db=2, noise="exo", sigma=1.4, chi=0.4, seed=11)
    rows = naive.world_rows(w, 5000, 5000)
    return w, rows, moments_from_rows(rows, blocks=w.blocks)


@pytest.mark.parametrize("latent", ["true", "surrogate"])
def test_probe_mse_matches_lstsq(data, latent):
    w, rows, m = data
    lam = fit(m, 3, decoder="learned", encoder="tied")
    o, delta, a = naive.split(rows, w.do, w.da)
    z = lam.encode(o, o + delta)
    if latent == "surrogate":
        z = lam.predict_next(o, z) - o
    W = latent_map(lam, m, latent)
    b = rows[:, 2 * w.do + w.da :]
    for target, y in (("a", a), ("o", o), ("b", b)):
        assert probe_mse(W, m, target) == pytest.approx(naive.probe_mse(z, y), abs=TOL)


def test_metrics_on_rows(data):
    w, rows, m = data
    lam = fit(m, 4)
    r = probe_metrics(lam, m, world=w)
    o, delta, a = naive.split(rows, w.do, w.da)
    z = lam.encode(o, o + delta)
    act = naive.probe_mse(z, a)
    obs = naive.probe_mse(z, o)
    noi = naive.probe_mse(z, rows[:, 2 * w.do + w.da :])
    assert r["act_mse"] == pytest.approx(act, abs=TOL)
    assert r["llo"] == pytest.approx(-act + obs + noi, abs=TOL)
    assert r["recon"] == pytest.approx(naive.lam_loss(rows, w.do, lam.A, lam.B, lam.C, lam.D))
    np.testing.assert_allclose(r["angles_action"], naive.principal_angles(lam.B, w.X), atol=1e-7)
    np.testing.assert_allclose(r["angles_noise"], naive.principal_angles(lam.B, w.Y), atol=1e-7)


def test_distribution_shift_matches_lstsq(data):
    """Probe fitted on-policy (chi = 0.4), scored on random actions (chi = 0)."""
    w, rows, m = data
    w_test = w.replace(chi=0.0)
    test_rows = naive.world_rows(w_test, 8000, 4000)[4000:]  # block 1: rows unseen in training
    assert np.array_equal(w_test.X, w.X)  # same seed, same bases
    m_test = moments_from_rows(test_rows, blocks=w.blocks)
    lam = fit(m, 2)
    W = latent_map(lam, m)
    o, delta, a = naive.split(rows, w.do, w.da)
    z = lam.encode(o, o + delta)
    z1 = np.hstack([z, np.ones((len(z), 1))])
    coef, *_ = np.linalg.lstsq(z1, a, rcond=None)
    ot, dt, at = naive.split(test_rows, w.do, w.da)
    zt = np.hstack([lam.encode(ot, ot + dt), np.ones((len(ot), 1))])
    ref = np.sum((at - zt @ coef) ** 2) / np.sum((at - at.mean(axis=0)) ** 2)
    assert probe_mse(W, m, "a", eval_moments=m_test) == pytest.approx(ref, abs=TOL)


def test_zero_variance_target_scores_one():
    w = LinearWorld(do=8, da=2, noise="gaussian", sigma=0.0)
    m = w.population_moments()
    assert probe_metrics(fit(m, 2), m)["noi_mse"] == 1.0


def test_principal_angles_of_identical_and_orthogonal_spaces():
    E = np.eye(6)
    np.testing.assert_allclose(principal_angles(E[:, :2], E[:, :2]), 0.0, atol=1e-12)
    np.testing.assert_allclose(principal_angles(E[:, :2], E[:, 2:4]), np.pi / 2, atol=1e-12)
