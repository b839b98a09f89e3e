"""Equal work: lamfast and scikit-learn find the top-k principal directions of the same
pre-generated Delta rows (no row generation timed), side by side in one group."""

from __future__ import annotations

import numpy as np
import pytest

from lamfast.benchmarks import equal_work_case

ROWS = 262_144
_case: dict = {}


def _get():
    if not _case:
        _case.update(equal_work_case(128, ROWS))
    return _case


@pytest.mark.parametrize(
    "method", ["lamfast", "sklearn IncrementalPCA.partial_fit", "sklearn PCA(covariance_eigh)"]
)
def test_equal_work(bench, method):
    case = _get()
    if method not in case["fns"]:
        pytest.skip("scikit-learn missing")
    b = bench.benchmark
    b.group = f"top-{case['k']} PCA of the same {ROWS} Delta rows, do=128"
    fn, n = case["fns"][method]
    bench(fn, rounds=5)
    b.extra_info.update(rows_per_s=n / b.stats.stats.median, rows=n, k=case["k"])


def test_equal_work_methods_agree():
    """The methods find the same subspace, so the timings compare the same answer: exactly for
    PCA(covariance_eigh); IncrementalPCA keeps only k directions between batches, an
    approximation (3.6e-4 on these rows)."""
    case = equal_work_case(128, 16_384)
    _, V = case["fns"]["lamfast"][0]()
    P = V @ V.T
    for name, atol in (
        ("sklearn IncrementalPCA.partial_fit", 1e-3),
        ("sklearn PCA(covariance_eigh)", 1e-10),
    ):
        if name not in case["fns"]:
            continue
        C = case["fns"][name][0]().components_
        assert np.allclose(C.T @ C, P, rtol=0, atol=atol), name
