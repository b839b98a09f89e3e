"""Simulated-stream throughput (rows/s) against numpy and scikit-learn on the same rows."""

from __future__ import annotations

import pytest

from lamfast.benchmarks import machine_limits, stream_case

CASES = {128: 262_144, 1024: 16_384}
_cases: dict = {}


def _case(do):
    if do not in _cases:
        _cases[do] = stream_case(do, CASES[do])
        case = _cases[do]
        case["limits"] = machine_limits(case["r"], case["block_rows"])
    return _cases[do]


@pytest.mark.parametrize("do", sorted(CASES))
@pytest.mark.parametrize(
    "method",
    [
        "lamfast",
        "lamfast rows kernel",
        "numpy pipeline",
        "numpy pipeline, BLAS 1 thread",
        "sklearn IncrementalPCA.partial_fit",
        "sklearn IncrementalPCA, generating its rows",
        "sklearn PCA(covariance_eigh)",
    ],
)
def test_stream(bench, do, method):
    case = _case(do)
    if method not in case["fns"]:
        pytest.skip("scikit-learn missing")
    b = bench.benchmark
    b.group = f"stream do={do} exo, {case['rows']} rows"
    rounds = 2 if method.startswith("sklearn") or do > 128 else 5
    fn, n = case["fns"][method]
    bench(fn, rounds=rounds)
    r = case["r"]
    lim = case["limits"]
    t = b.stats.stats.median
    t_limit = n * r / lim["rng_normals_per_s"] + n * r * (r + 1) / lim["syrk_flops_per_s"]
    b.extra_info.update(
        rows_per_s=n / t, fraction_of_library_limit=t_limit / t, limits=lim, rows=n, r=r
    )
