"""Wall time of ``lamfast reproduce`` (docs/architecture.md, conventions): the whole job,
compilation included.

Run: ``pytest bench/test_bench_reproduce.py --benchmark-enable`` (quick grids, about 20 s), and
``LAMFAST_BENCH_FULL=1 pytest bench/test_bench_reproduce.py --benchmark-enable`` for the full
default run (all six panels, every grid point: minutes on a shared 2-core machine). Each is timed
once, in a fresh subprocess, so numba compilation and worker start-up are counted as a user sees
them. The ``-cold`` cases point ``LAMFAST_CACHE_DIR`` at an empty folder (the first run after an
install: every kernel the run needs is compiled, once, see docs/performance.md, cold start); the
others use the user's cache as it is (warm after any earlier run; ``extra_info["compile_seconds"]``
is 0 unless this one compiled). ``extra_info`` also carries the CPU seconds of the whole process
tree (workers included) and by panel from the run's report
(:func:`lamfast.benchmarks.reproduce_run`).
"""

from __future__ import annotations

import os

import pytest

from lamfast.benchmarks import reproduce_run

CASES = {"quick": ["--quick"], "quick-cold": ["--quick"]}
if os.environ.get("LAMFAST_BENCH_FULL"):
    CASES["full"] = []
    CASES["full-cold"] = []


@pytest.mark.parametrize("case", list(CASES))
def test_reproduce_wall_time(benchmark, tmp_path, case):
    benchmark.group = "reproduce"
    cold = case.endswith("-cold")
    done = {}

    def run():
        done.update(
            reproduce_run(
                CASES[case], str(tmp_path / case), str(tmp_path / "numba-cache") if cold else None
            )
        )
        return done["seconds"]

    benchmark.pedantic(run, rounds=1, iterations=1)
    # the targets are of the full default run
    target = (45 if cold else 30) if case.startswith("full") else None
    benchmark.extra_info.update({**done, "target_s": target})
    if cold:
        assert done["compile_seconds"] > 0  # an empty cache: the run compiled its kernels
    assert done["checks"] and done["checks"][0] == done["checks"][1]
