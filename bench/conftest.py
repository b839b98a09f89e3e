"""pytest-benchmark suite (off in the normal test run; ``bench/`` is not under testpaths).

Run: ``pytest bench --benchmark-enable`` (add ``--benchmark-json=bench/results/run.json``).
Every benchmark carries the environment (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, threadpoolctl
info, numba threading layer) in ``extra_info``; never change those variables here.
"""

from __future__ import annotations

import pytest

from lamfast.benchmarks import environment


@pytest.fixture
def bench(benchmark):
    """``benchmark`` with the environment recorded and a few rounds after one warm-up call."""
    benchmark.extra_info.update(environment())

    def run(fn, rounds=5):
        fn()  # warm-up (compilation) outside the timing
        return benchmark.pedantic(fn, rounds=rounds, iterations=1)

    run.benchmark = benchmark
    return run
