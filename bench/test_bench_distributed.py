"""Dask scaling benchmark: a 1e7-row stream at do=128, one process vs 1 and 2 Dask workers.

Off in the normal test run (``bench/`` is not under ``testpaths``; pytest-benchmark is disabled by
default). Run it with::

    pytest bench/test_bench_distributed.py --benchmark-enable --benchmark-json=dask.json

``LAMFAST_BENCH_ROWS`` (default 1e7) and ``LAMFAST_BENCH_ROUNDS`` (default 3) change the size.
Clusters are started (and their workers warmed up: numba kernels loaded from the cache) outside
the timing, which therefore measures steady-state throughput; the start-up cost of a
``LocalCluster`` is measured separately (``test_cluster_startup``). Every result carries rows/s,
the worker count, ``OPENBLAS_CORETYPE`` and the BLAS thread counts in ``extra_info``.
"""

from __future__ import annotations

import os
import time

import pytest

import lamfast.moments.tree as dist_tree
import lamfast.sources.distributed as dist_distributed
from lamfast import LinearWorld, stream_moments

pytest.importorskip("distributed")
pytest.importorskip("pytest_benchmark")

ROWS = int(float(os.environ.get("LAMFAST_BENCH_ROWS", "1e7")))
ROUNDS = int(os.environ.get("LAMFAST_BENCH_ROUNDS", "3"))
WORLD = LinearWorld(do=128, da=8, seed=0)


def _machine() -> dict:
    from threadpoolctl import threadpool_info

    return {
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "blas_threads": [p.get("num_threads") for p in threadpool_info()],
        "cpus": os.cpu_count(),
        "rows": ROWS,
        "do": WORLD.do,
    }


def _record(benchmark, workers):
    benchmark.extra_info.update(_machine())
    benchmark.extra_info["workers"] = workers
    benchmark.extra_info["rows_per_s"] = ROWS / benchmark.stats.stats.median


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def client(request):
    with dist_tree.dask_client(workers=request.param) as c:
        dist_distributed.stream_moments_dask(WORLD, 64 * 4096, client=c)  # warm every worker
        yield c, request.param


def test_single_process(benchmark):
    benchmark.group = f"stream {ROWS:.0e} rows, do=128"
    stream_moments(WORLD, 2 * 4096)  # compile / load the cached kernels
    m = benchmark.pedantic(stream_moments, args=(WORLD, ROWS), rounds=ROUNDS, iterations=1)
    assert m.count == ROWS
    _record(benchmark, 0)


def test_single_process_free_blas(benchmark, monkeypatch):
    # The same path with BLAS threads left to OpenBLAS (the pre-Dask behaviour): faster on an idle
    # multi-core machine, but not bitwise reproducible across thread counts (lamfast/_blas.py).
    import contextlib

    import lamfast.sources.simulate

    monkeypatch.setattr(lamfast.sources.simulate, "one_blas_thread", contextlib.nullcontext)
    benchmark.group = f"stream {ROWS:.0e} rows, do=128"
    stream_moments(WORLD, 2 * 4096)
    m = benchmark.pedantic(stream_moments, args=(WORLD, ROWS), rounds=ROUNDS, iterations=1)
    assert m.count == ROWS
    _record(benchmark, 0)


def test_dask(benchmark, client):
    c, workers = client
    benchmark.group = f"stream {ROWS:.0e} rows, do=128"
    m = benchmark.pedantic(
        dist_distributed.stream_moments_dask,
        args=(WORLD, ROWS),
        kwargs={"client": c},
        rounds=ROUNDS,
        iterations=1,
    )
    assert m.count == ROWS
    _record(benchmark, workers)


def test_cluster_startup(benchmark):
    benchmark.group = "LocalCluster start + first task"

    def start():
        t = time.perf_counter()
        with dist_tree.dask_client(workers=2) as c:
            dist_distributed.stream_moments_dask(WORLD, 4096, client=c)
        return time.perf_counter() - t

    benchmark.pedantic(start, rounds=1, iterations=1)
    benchmark.extra_info.update(_machine())
