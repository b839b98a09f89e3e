"""Wall time of ``lamfast reproduce`` (docs/architecture.md, conventions): the whole job,
compilation included.

Run: ``pytest bench/test_bench_reproduce.py --benchmark-enable`` (quick grids, about 20 s), and
``LAMFAST_BENCH_FULL=1 pytest bench/test_bench_reproduce.py --benchmark-enable`` for the full
default run (all six panels, every grid point: minutes on a shared 2-core machine). Each is timed
once, in a fresh subprocess, so numba compilation and worker start-up are counted as a user sees
them. ``extra_info`` carries the CPU seconds by panel from the run's report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

CASES = {"quick": ["--quick"]}
if os.environ.get("LAMFAST_BENCH_FULL"):
    CASES["full"] = []


@pytest.mark.parametrize("case", list(CASES))
def test_reproduce_wall_time(benchmark, tmp_path, case):
    benchmark.group = "reproduce"
    out = tmp_path / case

    def run():
        start = time.perf_counter()
        subprocess.run(
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
        )
        return time.perf_counter() - start

    seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    report = (out / "report.md").read_text()
    cpu = re.search(r"CPU seconds by panel \(fits and probes\): (.*)", report)
    benchmark.extra_info.update(
        {"seconds": seconds, "cpu_by_panel": cpu.group(1) if cpu else "", "target_s": 60}
    )
    assert "computed checks hold" in report
