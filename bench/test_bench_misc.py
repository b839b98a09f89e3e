"""Wishart moments of 1e9 rows, and the cold start of the CLI (subprocesses)."""

from __future__ import annotations

from lamfast.benchmarks import cold_start
from lamfast.sources.simulate import wishart_moments
from lamfast.sources.world import LinearWorld


def test_wishart_1e9(bench):
    world = LinearWorld(do=128, da=8, db=8, noise="exo", sigma=2.0)
    bench.benchmark.group = "wishart do=128 n=1e9"
    bench(lambda: wishart_moments(world, 10**9), rounds=7)


def test_cold_start(bench):
    """import / first call (empty numba cache) / cached call, each in a fresh process."""
    bench.benchmark.group = "cold start"
    result = {}
    bench(lambda: result.update(cold_start(3)), rounds=1)
    bench.benchmark.extra_info.update({f"seconds: {k}": v for k, v in result.items()})
