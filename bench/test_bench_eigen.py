"""Top-16 eigenpairs at d = 4096 against numpy, scipy's subset driver and ARPACK."""

from __future__ import annotations

import numpy as np
import pytest

from lamfast.benchmarks import eigen_case, residual

_cases: dict = {}


@pytest.mark.parametrize("kind", ["sampled", "population"])
@pytest.mark.parametrize(
    "method",
    [
        "lamfast krylov",
        "lamfast auto",
        "np.linalg.eigh",
        "np.linalg.eigh, BLAS 1 thread",
        "scipy eigh subset",
        "scipy eigh subset, BLAS 1 thread",
        "scipy eigsh",
    ],
)
def test_eigen(bench, kind, method):
    if kind not in _cases:
        _cases[kind] = eigen_case(4096, 16, kind)
    case = _cases[kind]
    b = bench.benchmark
    b.group = f"eigen d=4096 k=16 {kind}"
    fn = case["fns"][method]
    dense = method.startswith(("np.linalg.eigh", "scipy eigh subset"))
    bench(fn, rounds=1 if dense else 3)
    w, V = fn()
    if method.startswith("np.linalg.eigh"):
        w, V = w[::-1][:16], V[:, ::-1][:, :16]
    b.extra_info["residual_over_norm"] = residual(case["C"], np.asarray(w), np.asarray(V))
