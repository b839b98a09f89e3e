"""Simulated sources: rows, stream moments, Wishart draws, population moments."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lamfast import LamfastError, LinearWorld, stream_moments, wishart_moments
from lamfast.sources.simulate import chunk_moments, simulate_rows

from . import naive

WORLDS = {
    "none": dict(noise="none", chi=0.4),
    "gaussian": dict(noise="gaussian", sigma=0.7),
    "exo": dict(noise="exo", sigma=1.5, chi=0.3),
    "uniform": dict(noise="uniform", sigma=1.2, chi=1.0),
}


@pytest.fixture(params=sorted(WORLDS))
def world(request, seed):
    return LinearWorld(do=12, da=3, db=2, seed=seed % 1000, **WORLDS[request.param])


def test_population_matches_written_out_model(world):
    got = world.population_moments()
    mean, cov = naive.population_moments(world)
    assert_allclose(got.mean, mean, atol=1e-15)
    assert_allclose(got.cov, cov, atol=1e-14)
    assert got.blocks == world.blocks and np.isinf(got.count)


def test_bases_are_orthonormal(seed):
    w = LinearWorld(do=20, da=5, db=4, seed=seed % 1000)
    for B in (w.X, w.Y, w.P.T):
        assert_allclose(B.T @ B, np.eye(B.shape[1]), atol=1e-13)


def test_rows_reproduce_numpy_stream(world):
    """The numba kernel draws exactly numpy's Generator stream for block k."""
    got = simulate_rows(world, 0, 64)
    ref = naive.world_rows(world, 64, 64)
    # Same random numbers; only the association of the linear map differs (a few ulps).
    assert_allclose(got, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("block_rows", [100, 257, 1000])
def test_stream_moments_match_materialised_rows(world, block_rows):
    rows = 3001
    got = stream_moments(world, rows, block_rows=block_rows)
    n, mean, cov = naive.moments(naive.world_rows(world, rows, block_rows))
    assert got.count == n
    # Same rows; the two sides differ by summation order only: relative error <= n * eps
    # ~ 7e-13 per entry in the worst case, so 1e-9 cannot flake and still catches any real slip.
    scale = np.abs(cov).max()
    assert_allclose(got.mean, mean, rtol=1e-9, atol=1e-12 * scale)
    assert_allclose(got.cov, cov, rtol=1e-9, atol=1e-12 * scale)


def test_stream_bitwise_across_chunks(world):
    ref = stream_moments(world, 20_011, block_rows=500, chunk_blocks=1)
    for chunk_blocks in (3, 7, 41):
        got = stream_moments(world, 20_011, block_rows=500, chunk_blocks=chunk_blocks)
        assert np.array_equal(got.cov, ref.cov) and np.array_equal(got.mean, ref.mean)


def test_same_seed_same_bits_other_seed_other_rows(world):
    a = stream_moments(world, 5000, block_rows=1000)
    b = stream_moments(world, 5000, block_rows=1000)
    c = stream_moments(world.replace(seed=world.seed + 1), 5000, block_rows=1000)
    assert np.array_equal(a.cov, b.cov)
    assert not np.array_equal(a.cov, c.cov)


@pytest.mark.parametrize("name", ["exo", "gaussian", "uniform"])
def test_stream_converges_to_population(name, seed):
    """Every entry within 6 standard errors of the population value.

    For jointly Gaussian x, Var(S_ij) = (S_ii S_jj + S_ij^2) / n; for the uniform sources the
    fourth moment is smaller (kurtosis 1.8 < 3), so the same bound is conservative. With 1e3
    entries, P(any |z| > 6) < 1e3 * 2e-9: the test does not flake, yet a bias of 6 SE fails it.
    """
    world = LinearWorld(do=6, da=2, db=2, seed=seed % 1000, **WORLDS[name])
    n = 200_000
    got = stream_moments(world, n, block_rows=4096)
    pop = world.population_moments()
    d = np.diag(pop.cov)
    se_cov = np.sqrt((np.outer(d, d) + pop.cov**2) / n)
    se_mean = np.sqrt(d / n)
    live = se_cov > 0
    assert np.all(np.abs(got.cov - pop.cov)[live] < 6 * se_cov[live])
    assert np.all(np.abs(got.mean - pop.mean)[d > 0] < 6 * se_mean[d > 0])
    assert np.all(got.cov[~live] == 0) or np.abs(got.cov[~live]).max() < 1e-12


def _mean_var_se(x):
    """Sample mean, variance, and the standard errors of both (kurtosis-aware)."""
    R = x.shape[0]
    m, v = x.mean(axis=0), x.var(axis=0, ddof=1)
    m4 = ((x - m) ** 4).mean(axis=0)
    return m, v, np.sqrt(v / R), np.sqrt(np.maximum(m4 - v**2, 0) / R)


def test_wishart_matches_stream_in_distribution(seed):
    """Mean and variance of chosen entries over repeated draws agree within 6 standard errors."""
    world = LinearWorld(do=4, da=2, db=1, noise="exo", sigma=1.0, chi=0.5, seed=seed % 1000)
    n, R = 40, 3000
    pairs = [(0, 0), (4, 8), (8, 9), (5, 10), (1, 6)]  # (o,o) (delta,a) (a,a) (delta,b) (o,delta)
    stream = chunk_moments(world, 0, R, rows=n * R, block_rows=n)
    S = np.array([[com[i, j] / n for i, j in pairs] + [mean[4]] for _, mean, com in stream])
    Wm = [wishart_moments(world, n, draw=k) for k in range(R)]
    W = np.array([[m.cov[i, j] for i, j in pairs] + [m.mean[4]] for m in Wm])
    ms, vs, sms, svs = _mean_var_se(S)
    mw, vw, smw, svw = _mean_var_se(W)
    assert np.all(np.abs(ms - mw) < 6 * np.hypot(sms, smw))
    assert np.all(np.abs(vs - vw) < 6 * np.hypot(svs, svw))
    # and both are unbiased for the population covariance scaled by (n - 1) / n
    pop = world.population_moments()
    target = np.array([pop.cov[i, j] for i, j in pairs]) * (n - 1) / n
    assert np.all(np.abs(mw[:-1] - target) < 6 * smw[:-1])


def test_wishart_costs_the_same_for_any_n():
    w = LinearWorld(do=16, da=4, noise="exo", sigma=2.0)
    m = wishart_moments(w, 1e15)
    pop = w.population_moments()
    assert m.count == 1e15
    assert_allclose(m.cov, pop.cov, atol=1e-6)  # 1/sqrt(1e15) ~ 3e-8 per entry


def test_wishart_and_stream_errors():
    with pytest.raises(LamfastError, match="Gaussian"):
        wishart_moments(LinearWorld(do=4, da=2, noise="uniform", sigma=1.0), 100)
    with pytest.raises(LamfastError, match="rows >"):
        wishart_moments(LinearWorld(do=4, da=2), 3)
    for bad in (1, 2.5, -10, "x", float("nan")):
        with pytest.raises(LamfastError, match="rows"):
            stream_moments(LinearWorld(do=4, da=2), bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(do=0), "do"),
        (dict(da=9, do=8), "da"),
        (dict(noise="pink"), "noise"),
        (dict(sigma=-1.0), "sigma"),
        (dict(chi=1.5), "chi"),
        (dict(chi=float("nan")), "chi"),
        (dict(seed=-1), "seed"),
        (dict(db=0), "db"),
    ],
)
def test_world_validation(kwargs, message):
    with pytest.raises(LamfastError, match=message):
        LinearWorld(**kwargs)
