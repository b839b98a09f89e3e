"""Property tests (hypothesis): merge algebra, chunk invariance, symmetric PSD moments.

Tolerances are derived from the arithmetic, in units of the float64 epsilon ``EPS``:

* Chan's merge of (n_a, m_a, C_a) and (n_b, m_b, C_b) computes, per entry,
  ``C_a + C_b + d_i d_j w`` with ``d = m_b - m_a``, ``w = n_a n_b / n``. Every term is bounded
  by ``s_ij = sqrt(C_ii C_jj)`` of the merged co-moment (Cauchy-Schwarz on each part, and
  ``C_a,ii + C_b,ii + d_i^2 w = C_ii``), and the entry costs at most 5 roundings (d_i, d_j,
  two products with w, two sums; ``w`` itself one more), each at most ``EPS`` times a quantity
  <= 3 s_ij. Our data have |mean| <~ spread, so the rounding of ``d`` is of the same order.
  Two different merge orders of three parts differ by at most two merges' worth on each side:
  ``2 * 2 * 6 * 3 * EPS * s_ij = 72 EPS s_ij``. We assert ``MERGE_TOL = 100 EPS s_ij``.
* Whole versus chunked (a different tree, and different in-block sums): recursive summation of
  n terms has error <= (n - 1) EPS * sum |terms| (Higham, Thm 4.4), and sum |terms| <= 2 s_ij n
  for the centred products, giving ``CHUNK_TOL = 4 n EPS s_ij`` (a worst-case bound; the
  observed error is ~sqrt(n) times smaller, but a bound cannot flake).
* PSD: the eigenvalues of a symmetric perturbation E of a PSD matrix move by at most ||E||_2 <=
  p max|E_ij|; with the entry error above, ``lambda_min >= -p * CHUNK_TOL``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lamfast.moments.tree as dist_tree
import lamfast.sources.distributed as dist_distributed
from lamfast import LinearWorld, moments_from_rows, stream_moments
from lamfast.moments.core import MergeTree, block_moments

from . import naive

EPS = np.finfo(np.float64).eps
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def rows(seed, n, p, offset=0.0):
    r = np.random.default_rng(seed)
    return offset + r.standard_normal((n, p)) @ r.standard_normal((p, p)) * r.uniform(0.1, 10)


def scale(com):
    d = np.sqrt(np.abs(np.diag(com)))
    return np.outer(d, d)


seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 300)


@SETTINGS
@given(seeds, sizes, sizes, sizes, st.integers(1, 6))
def test_merge_commutative_and_associative(seed, na, nb, nc, p):
    X = rows(seed, na + nb + nc, p)
    A, B, C = (moments_from_rows(part) for part in np.split(X, [na, na + nb]))
    ab_c = A.merge(B).merge(C)
    a_bc = A.merge(B.merge(C))
    ba = B.merge(A)
    tol = 100 * EPS * scale(ab_c.comoment)
    assert np.all(np.abs(ab_c.comoment - a_bc.comoment) <= tol)
    assert np.all(np.abs(A.merge(B).comoment - ba.comoment) <= 100 * EPS * scale(ba.comoment))
    mtol = 100 * EPS * (np.abs(X).max(axis=0) + 1e-300)
    assert np.all(np.abs(ab_c.mean - a_bc.mean) <= mtol)
    assert np.all(np.abs(A.merge(B).mean - ba.mean) <= mtol)
    assert ab_c.count == a_bc.count == na + nb + nc


@SETTINGS
@given(seeds, st.integers(2, 2000), st.integers(1, 5), st.integers(1, 700), st.booleans())
def test_chunk_invariance_and_psd(seed, n, p, block_rows, offset):
    X = rows(seed, n, p, offset=1e3 if offset else 0.0)
    _, mean, cov = naive.moments_two_pass(X)
    m = moments_from_rows(X, block_rows=block_rows)
    tol = 4 * n * EPS * scale(cov * n) / n
    assert np.all(np.abs(m.cov - cov) <= tol + 1e-300)
    np.testing.assert_allclose(m.mean, mean, rtol=4 * n * EPS, atol=4 * n * EPS * np.abs(X).max())
    # Symmetric up to rounding: merges add the same rounded d_i d_j w to C_ij and C_ji, but
    # BLAS's in-block product may sum C_ij and C_ji in different orders (a micro-kernel edge),
    # so each side carries its own summation error: |C_ij - C_ji| <= 2 tol.
    assert np.all(np.abs(m.cov - m.cov.T) <= 2 * tol + 1e-300)
    lam_min = np.linalg.eigvalsh(m.cov)[0]
    assert lam_min >= -p * np.max(tol)


@SETTINGS
@given(st.integers(1, 90), st.lists(st.integers(1, 40), min_size=1, max_size=12))
def test_push_subtree_equals_pushing_blocks(n_blocks, cuts):
    # Any sequence of aligned runs, each merged in its own tree, rebuilds the global tree exactly.
    r = np.random.default_rng(n_blocks)
    blocks = [block_moments(r.standard_normal((7, 3)) + r.uniform(-5, 5)) for _ in range(n_blocks)]
    one = MergeTree((("x", 3),))
    for b in blocks:
        one.push(*b)
    many = MergeTree((("x", 3),))
    a, i = 0, 0
    while a < n_blocks:
        t = 1 << (cuts[i % len(cuts)].bit_length() - 1)  # a power of two from the drawn cut
        i += 1
        for first, stop in dist_tree.task_ranges(a, min(n_blocks, a + t), t):
            local = MergeTree(())
            for b in blocks[first:stop]:
                local.push(*b)
            for entry in local.entries():
                many.push_subtree(*entry)
            a = stop
    assert many.n_blocks == one.n_blocks
    x, y = one.result(), many.result()
    np.testing.assert_array_equal(x.cov, y.cov)
    np.testing.assert_array_equal(x.mean, y.mean)


def test_push_subtree_refuses_misaligned_subtrees():
    import pytest

    from lamfast import LamfastError

    tree = MergeTree((("x", 1),))
    entry = (1.0, np.zeros(1), np.zeros((1, 1)))
    tree.push(*entry)
    for n in (2, 3, 0):
        with pytest.raises(LamfastError, match="cannot follow"):
            tree.push_subtree(n, *entry)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.integers(1, 64), st.integers(1, 8), st.integers(0, 2**31))
def test_stream_bitwise_for_random_chunkings(chunk_blocks, task_log2, seed):
    world = LinearWorld(do=6, da=2, db=3, noise="exo", sigma=1.5, chi=0.3, seed=seed % 1000)
    n = 33 * 64 + 5
    ref = stream_moments(world, n, block_rows=64)
    a = stream_moments(world, n, block_rows=64, chunk_blocks=chunk_blocks)
    _, n_blocks, fn, _ = dist_distributed._stream_plan(world, n, 64, None)
    b = dist_tree.tree_moments(fn, n_blocks, world.blocks, task_blocks=1 << (task_log2 - 1))
    for got in (a, b):
        np.testing.assert_array_equal(got.cov, ref.cov)
        np.testing.assert_array_equal(got.mean, ref.mean)
