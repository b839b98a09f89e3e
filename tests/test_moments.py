"""Moments kernel, merge and merge tree against plain numpy (docs/architecture.md, conventions,
9)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lamfast import LamfastError, Moments, moments_from_rows
from lamfast.moments.core import MergeTree, block_moments

from . import naive
from .conftest import RTOL


def _rows(rng, n=1000, p=7, offset=0.0, dtype=np.float64):
    A = rng.standard_normal((p, p))
    return (rng.standard_normal((n, p)) @ A + offset).astype(dtype)


@pytest.mark.parametrize("block_rows", [1, 64, 333, 5000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_moments_match_numpy(rng, block_rows, dtype):
    X = _rows(rng, dtype=dtype)
    got = moments_from_rows(X, block_rows=block_rows)
    n, mean, cov = naive.moments(X)  # np.cov on the float64 upcast: same data, one pass
    assert got.count == n
    # Both sides accumulate in float64: differences are summation-order rounding, O(n eps).
    assert_allclose(got.mean, mean, rtol=RTOL[np.float64], atol=1e-12)
    assert_allclose(got.cov, cov, rtol=RTOL[np.float64], atol=1e-12)


def test_block_size_one_row_has_zero_comoment():
    count, mean, com = block_moments(np.array([[1.0, 2.0, 3.0]]))
    assert count == 1.0 and mean.tolist() == [1.0, 2.0, 3.0] and not com.any()


def test_merge_equals_single_pass(rng):
    X = _rows(rng, n=901)
    Y = _rows(rng, n=77, offset=3.0)
    a, b = moments_from_rows(X), moments_from_rows(Y)
    merged = a.merge(b)
    n, mean, cov = naive.moments(np.vstack([X, Y]))
    assert merged.count == n
    assert_allclose(merged.mean, mean, rtol=RTOL[np.float64], atol=1e-12)
    assert_allclose(merged.cov, cov, rtol=RTOL[np.float64], atol=1e-12)


def test_tree_is_independent_of_grouping(rng):
    """The merge tree depends on the block sequence only: pushing the same blocks gives the
    same bits whether they come from one call or many."""
    X = _rows(rng, n=10_007)
    whole = moments_from_rows(X, block_rows=100)
    # moments_from_rows accumulates rows shifted by the first row (precision at large offsets)
    tree = MergeTree((("x", X.shape[1]),))
    for start in range(0, X.shape[0], 100):
        tree.push(*block_moments(X[start : start + 100] - X[0]))
    again = tree.result()
    assert np.array_equal(whole.cov, again.cov)
    assert np.array_equal(whole.mean, again.mean + X[0])


def test_large_offset_small_spread(rng):
    """Two-pass blocks + Chan merge keep precision with a 1e6 offset (stumpy #1160)."""
    X = 1e6 + 1e-3 * rng.standard_normal((20_000, 4))
    got = moments_from_rows(X, block_rows=1000)
    ref = np.cov(X - X.mean(axis=0), rowvar=False, bias=True)  # two-pass reference
    # Each stored row is exact only to eps * 1e6 = 2.2e-10; a centred product then carries an
    # error of about 2 * 2.2e-10 * 1e-3 = 4.4e-13 per row, so entries agree to ~1e-12 absolute
    # (1e-6 of the 1e-6 variances), whatever the summation order.
    assert_allclose(got.cov, ref, rtol=1e-8, atol=1e-12)


def test_constant_rows_give_zero_covariance():
    X = np.full((5000, 3), 7.25)
    got = moments_from_rows(X, block_rows=128)
    assert got.mean.tolist() == [7.25] * 3
    assert not got.cov.any()


def test_symmetric_psd_and_trace(rng):
    m = moments_from_rows(_rows(rng, n=3000, p=12), block_rows=256)
    assert np.array_equal(m.cov, m.cov.T)
    w = np.linalg.eigvalsh(m.cov)
    assert w.min() > -1e-12 * w.max()
    assert_allclose(np.trace(m.cov), w.sum(), rtol=1e-12)


def test_blocks_views(rng):
    X = _rows(rng, n=500, p=5)
    m = moments_from_rows(X, blocks=[("u", 2), ("v", 3)])
    _, mean, cov = naive.moments(X)
    assert_allclose(m.block_cov("u", "v"), cov[:2, 2:], rtol=1e-12, atol=1e-14)
    assert_allclose(m.second_moment("v"), cov[2:, 2:] + np.outer(mean[2:], mean[2:]), rtol=1e-12)
    sub = m.select(["v", "u"])
    assert sub.names == ("v", "u")
    assert_allclose(sub.block_cov("u"), m.block_cov("u"))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(5), "2-d"),
        (np.zeros((0, 3)), "no rows"),
        (np.array([["a", "b"]]), "numeric"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "row 0"),
    ],
)
def test_bad_rows(bad, message):
    with pytest.raises(LamfastError, match=message):
        moments_from_rows(bad)


def test_bad_layout():
    with pytest.raises(LamfastError, match="layout"):
        moments_from_rows(np.zeros((3, 3)), blocks=[("x", 2)])
    with pytest.raises(LamfastError, match="duplicate"):
        Moments(1.0, np.zeros(2), np.zeros((2, 2)), (("x", 1), ("x", 1)))
    with pytest.raises(LamfastError, match="population"):
        Moments(np.inf, np.zeros(1), np.eye(1), (("x", 1),)).merge(
            Moments(1.0, np.zeros(1), np.eye(1), (("x", 1),))
        )


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_rows_and_transitions_are_bitwise_for_any_thread_count(rng, monkeypatch, threads):
    """moments_from_rows and moments_from_transitions compute blocks on threads; every thread
    count gives the same bits as one (each block alone, merged in block order)."""
    from lamfast import config, moments_from_transitions

    X = rng.standard_normal((5000, 7)) + 1e3
    o, o2, a = X[:, :3], X[:, 3:6], X[:, 6:]
    monkeypatch.setattr(config, "STREAM_THREADS", 1)
    ref = moments_from_rows(X, block_rows=256)
    ref_t = moments_from_transitions(o, o2, a, block_rows=256)
    monkeypatch.setattr(config, "STREAM_THREADS", threads)
    got = moments_from_rows(X, block_rows=256)
    got_t = moments_from_transitions(o, o2, a, block_rows=256)
    for r, g in ((ref, got), (ref_t, got_t)):
        assert np.array_equal(r.cov, g.cov) and np.array_equal(r.mean, g.mean)
        assert r.count == g.count


@pytest.mark.parametrize("n", [64, 777, 1903])
def test_block_products_bitwise_on_any_thread(rng, n):
    """A block's moments are the same bits on the calling thread and on pool threads, also for
    a short last block (OpenBLAS rounds products with an inner dimension that is no multiple of
    64 differently on the thread that used BLAS first: lamfast.moments.core.padded)."""
    import concurrent.futures

    from lamfast.moments.thin import ThinReducer

    X = rng.standard_normal((n, 1028))
    thin = ThinReducer(1024, (("y", 4),))
    sketch = ThinReducer(12, (("s", 24),), sketch=(slice(0, 500), rng.standard_normal((500, 24))))
    jobs = (lambda: block_moments(X), lambda: thin.block(X), lambda: sketch.block(X[:, :512]))

    def arrays(entry):
        com = entry[2] if isinstance(entry[2], tuple) else (entry[2],)
        return [entry[1], *com]

    here = [arrays(job()) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for job, ref in zip(jobs, here, strict=True):
            for future in [pool.submit(job) for _ in range(2)]:
                for a, b in zip(arrays(future.result()), ref, strict=True):
                    np.testing.assert_array_equal(a, b)
