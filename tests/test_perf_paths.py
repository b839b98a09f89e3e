"""Fast paths equal their references (no timing here: speed lives in bench/).

- the source-space stream kernel (one SYRK of the sources per block, mapped by L) equals the
  row-materialising kernel and the naive rows of tests/naive.py, to rounding;
- the threaded stream is bitwise identical to the serial one for any thread count and chunking;
- the block-Krylov eigensolver equals dense LAPACK (eigenvalues, subspaces, residuals).
"""

from __future__ import annotations

import numpy as np
import pytest

from lamfast import simulate
from lamfast.eigen import top_eigh
from lamfast.errors import LamfastError
from lamfast.moments import MergeTree
from lamfast.world import LinearWorld

from . import naive

EPS = np.finfo(np.float64).eps

WORLDS = [
    dict(noise="exo", sigma=2.0, chi=0.0),
    dict(noise="exo", sigma=0.5, chi=0.4),
    dict(noise="gaussian", sigma=0.7, chi=0.3),
    dict(noise="uniform", sigma=1.5, chi=0.0),
    dict(noise="none", sigma=0.0, chi=1.0),
]


def _world(seed, **kw):
    return LinearWorld(do=12, da=3, db=4, seed=seed, **kw)


def _rounding_bound(world, K):
    """Entry-wise bound on the difference of two float64 evaluations of the same moments.

    Every path computes each co-moment entry as a sum of at most K rounded products (the dot
    product over the rows of a block or of the whole sample, the r-term sums of the map
    x = L s or S_x = L S_s L^T, the few Chan merges). Higham's bound for such a sum is
    gamma_K * sum |terms| with gamma_K = K eps / (1 - K eps), and by Cauchy-Schwarz and the
    triangle inequality sum_rows |x_i x_j| / n <= scale_i scale_j with
    scale = |L| sqrt(E s^2) (E s^2 = 1 for normals, 1/3 for U[0, 1)); a factor 2 covers the
    sample's second moments exceeding the population's (a 1/sqrt(n) effect) and another 2 the two
    evaluations being compared. So |cov_a - cov_b|_ij <= 4 gamma_K scale_i scale_j, and the
    same with one factor scale for the means. The bound is ~1e-11 relative here, while any real
    defect (a wrong block, draw or map entry) moves entries by O(1/sqrt(rows)) >= 1e-3.
    """
    mean_s, var_s = world.source_mean_var()
    scale = np.abs(world.source_map) @ np.sqrt(2.0 * (var_s + mean_s**2))
    gamma = K * EPS / (1 - K * EPS)
    return 4 * gamma * scale, 4 * gamma * np.outer(scale, scale)


@pytest.mark.parametrize("kw", WORLDS, ids=lambda kw: f"{kw['noise']}-chi{kw['chi']}")
def test_source_kernel_matches_rows(seed, kw):
    """Per block: fast source-space moments == row-materialising kernel == naive rows."""
    world = _world(seed, **kw)
    rows, block_rows = 5000, 2048  # three blocks, the last one short
    fast = simulate.chunk_moments(world, 0, 3, rows, block_rows)
    slow = simulate.chunk_moments(world, 0, 3, rows, block_rows, kernel="rows")
    X = naive.world_rows(world, rows, block_rows)
    r = world.n_gauss + world.n_uniform
    tol_mean, tol_cov = _rounding_bound(world, block_rows + 2 * r + 8)
    for k, ((nf, mf, cf), (ns, ms, cs)) in enumerate(zip(fast, slow, strict=True)):
        count, mean, cov = naive.moments(X[k * block_rows : (k + 1) * block_rows])
        assert nf == ns == count
        for m, c in ((mf, cf), (ms, cs)):
            assert np.all(np.abs(m - mean) <= tol_mean)
            assert np.all(np.abs(c / count - cov) <= tol_cov)


@pytest.mark.parametrize("kw", WORLDS, ids=lambda kw: f"{kw['noise']}-chi{kw['chi']}")
def test_structured_map_equals_dense_map(seed, kw):
    """The structured joint map equals (L mu, L S L^T) for an arbitrary PSD source co-moment."""
    world = _world(seed, **kw)
    L = world.source_map
    r = L.shape[1]
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((r + 3, r))
    S = G.T @ G
    mu = rng.standard_normal(r)
    plan = simulate._SourcePlan(world, 10, 10)
    mean, com = plan.to_joint(mu, S)
    # Sums of at most 2 r + 4 products; |S_ab| <= sqrt(S_aa S_bb) (PSD) gives the scale.
    gamma = (2 * r + 4) * EPS
    scale = np.abs(L) @ np.sqrt(np.diag(S))
    assert np.all(np.abs(com - L @ S @ L.T) <= 2 * gamma * np.outer(scale, scale))
    assert np.all(np.abs(mean - L @ mu) <= 2 * gamma * (np.abs(L) @ np.abs(mu)))
    assert np.array_equal(com, com.T)


def test_sources_match_numpy_stream(seed):
    """Scalar draws inside numba reproduce numpy's array fill (normals, then uniforms)."""
    world = _world(seed, noise="uniform", sigma=1.0)
    rows = 300
    S = np.empty((rows, world.n_gauss + world.n_uniform))
    mean = np.empty(S.shape[1])
    simulate._centred_sources(
        simulate.block_generator(world.seed, 7), world.n_gauss, world.n_uniform, rows, S, mean
    )
    g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(world.seed, spawn_key=(1, 7))))
    raw = np.hstack([g.standard_normal((rows, world.n_gauss)), g.random((rows, world.n_uniform))])
    # Mean: a sum of `rows` terms (gamma_rows * max|x|); centring adds one rounding of each entry.
    assert np.allclose(mean, raw.mean(axis=0), rtol=0, atol=rows * EPS * np.abs(raw).max())
    assert np.allclose(S + mean, raw, rtol=0, atol=4 * EPS * (np.abs(raw).max() + 1))


@pytest.mark.parametrize("kw", WORLDS[:3], ids=lambda kw: kw["noise"])
def test_stream_matches_naive(seed, kw):
    """Whole stream (threads, merge tree) against np.cov of all naive rows."""
    world = _world(seed, **kw)
    rows, block_rows = 9000, 1024
    m = simulate.stream_moments(world, rows, block_rows=block_rows, threads=2)
    count, mean, cov = naive.moments(naive.world_rows(world, rows, block_rows))
    r = world.n_gauss + world.n_uniform
    tol_mean, tol_cov = _rounding_bound(world, rows + 2 * r + 16)
    assert m.count == count
    assert np.all(np.abs(m.mean - mean) <= tol_mean)
    assert np.all(np.abs(m.cov - cov) <= tol_cov)


def test_stream_bitwise_across_threads(seed):
    """Bitwise identical for any thread count and any chunking (DESIGN 3.2)."""
    world = _world(seed, noise="exo", sigma=2.0, chi=0.2)
    rows, block_rows = 20_000, 1000
    ref = simulate.stream_moments(world, rows, block_rows=block_rows, threads=1)
    for threads, chunk in ((2, 3), (3, 1), (0, 16)):
        got = simulate.stream_moments(
            world, rows, block_rows=block_rows, threads=threads, chunk_blocks=chunk
        )
        assert np.array_equal(got.mean, ref.mean) and np.array_equal(got.cov, ref.cov)
    # The executor's unit of work: uneven chunks on different thread counts, same MergeTree.
    tree = MergeTree(world.blocks)
    for first, stop, threads in ((0, 7, 2), (7, 8, 1), (8, 20, 3)):
        for block in simulate.chunk_moments(world, first, stop, rows, block_rows, threads=threads):
            tree.push(*block)
    got = tree.result("stream")
    assert np.array_equal(got.mean, ref.mean) and np.array_equal(got.cov, ref.cov)


def test_rows_kernel_bitwise_across_threads(seed):
    world = _world(seed, noise="gaussian", sigma=0.3)
    a = simulate.stream_moments(world, 5000, block_rows=1000, threads=1, kernel="rows")
    b = simulate.stream_moments(world, 5000, block_rows=1000, threads=2, kernel="rows")
    assert np.array_equal(a.cov, b.cov) and np.array_equal(a.mean, b.mean)


def test_stream_bad_options():
    world = _world(0)
    with pytest.raises(LamfastError, match="kernel"):
        simulate.stream_moments(world, 100, kernel="fast")
    with pytest.raises(LamfastError, match="threads"):
        simulate.stream_moments(world, 100, threads=-1)
