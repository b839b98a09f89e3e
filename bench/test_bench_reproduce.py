"""Wall time of ``lamfast reproduce`` (docs/architecture.md, conventions): the whole job,
compilation included.

Run: ``pytest bench/test_bench_reproduce.py --benchmark-enable`` (quick grids, about 20 s), and
``LAMFAST_BENCH_FULL=1 pytest bench/test_bench_reproduce.py --benchmark-enable`` for the full
default run (all six panels, every grid point: minutes on a shared 2-core machine). Each is timed
once, in a fresh subprocess, so numba compilation and worker start-up are counted as a user sees
them. The ``-cold`` cases point ``LAMFAST_CACHE_DIR`` at an empty folder (the first run after an
install: every kernel the run needs is compiled, once, see docs/performance.md, cold start); the
others use the user's cache as it is (warm after any earlier run; ``extra_info["compiled"]`` says
whether this one compiled). ``extra_info`` also carries the CPU seconds of the whole process tree
(workers included) and by panel from the run's report.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time

import pytest

CASES = {"quick": ["--quick"], "quick-cold": ["--quick"]}
if os.environ.get("LAMFAST_BENCH_FULL"):
    CASES["full"] = []
    CASES["full-cold"] = []


@pytest.mark.parametrize("case", list(CASES))
def test_reproduce_wall_time(benchmark, tmp_path, case):
    benchmark.group = "reproduce"
    out = tmp_path / case
    env = dict(os.environ)
    if case.endswith("-cold"):
        env.pop("NUMBA_CACHE_DIR", None)  # it would win over LAMFAST_CACHE_DIR
        env["LAMFAST_CACHE_DIR"] = str(tmp_path / "numba-cache")  # empty: compile everything
    done = {}

    def run():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done["proc"] = subprocess.run(
            [
                sys.executable,
                "-c",
                "from lamfast.cli import main; main()",
                "reproduce",
                *CASES[case],
                "--out",
                str(out),
                "--force",
                "--no-plot",
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        done["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return seconds

    seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    report = (out / "report.md").read_text()
    cpu = re.search(r"CPU seconds by panel \(fits and probes\): (.*)", report)
    benchmark.extra_info.update(
        {
            "seconds": seconds,
            "cpu_seconds": done["cpu"],
            "compiled": "compiling kernels" in done["proc"].stderr,
            "cpu_by_panel": cpu.group(1) if cpu else "",
            "target_s": 60,
        }
    )
    if case.endswith("-cold"):
        assert "compiling kernels (first run)" in done["proc"].stderr
    assert "computed checks hold" in report
