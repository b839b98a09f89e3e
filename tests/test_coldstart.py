"""Cold start (lamfast/experiments/warmup.py): kernels missing from the on-disk cache are
compiled once, and worker processes then load them instead of compiling them again.

Every check runs in a fresh interpreter with a private, empty ``LAMFAST_CACHE_DIR`` (numba's
dispatcher statistics say what a process compiled and what it loaded). The kernels used are the
stream's (about a second to compile): the ``moment-gd`` ones take half a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from lamfast.experiments import warmup as _warmup

SCRIPT = textwrap.dedent(
    """
    import concurrent.futures
    import contextlib
    import io
    import json
    import multiprocessing
    import sys

    from lamfast.experiments import warmup as _warmup
    from lamfast.experiments.points import Point, compute_points
    from lamfast.experiments.runner import run_points
    from lamfast.solvers.variant import Variant
    from lamfast.sources.world import LinearWorld


    def worker(points):  # in a spawned process: its rows and what it compiled or loaded
        rows = compute_points(points)
        return rows, _warmup.compile_counts()


    def point(world, solver="eig", source="stream", rows=20000, dz=2):
        return Point(
            "t", world, Variant(), dz=dz, solver=solver, source=source, rows=rows,
            evals=("train", "noise-free"),
        )


    if __name__ == "__main__":
        gaussian = LinearWorld(do=6, da=2, noise="gaussian", sigma=0.5, seed=3)
        stream = [point(gaussian), point(gaussian, dz=3)]
        closed = [point(gaussian, source="population", rows=None),
                  point(gaussian, source="wishart", rows=10**5)]
        out = {"cold": _warmup.missing(["moment-gd", "sgd", "stream"])}
        small = _warmup.examples(stream, ["stream"])
        out["examples"] = [(p.world.do, p.source, p.rows) for p in small]
        seconds, out["compiled"] = _warmup.warm_up(small)
        out["after"] = _warmup.missing(["stream"])
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            out["closed"] = pool.submit(worker, closed).result()[1]
            rows, out["worker"] = pool.submit(worker, stream).result()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            again = run_points(stream + closed, jobs=2, progress=True, label="t")
        out["rows_equal"] = [r for p in again[:2] for r in p] == rows
        out["again_stderr"] = err.getvalue()
        print(json.dumps(out))
    """
)

RUN_POINTS = textwrap.dedent(
    """
    import contextlib
    import io
    import json
    import sys

    from lamfast.experiments.points import Point
    from lamfast.experiments.runner import run_points
    from lamfast.solvers.variant import Variant
    from lamfast.sources.world import LinearWorld

    if __name__ == "__main__":
        world = LinearWorld(do=6, da=2, noise="exo", db=2, sigma=1.0, seed=5)
        points = [
            Point("t", world, Variant(), dz=dz, solver="eig", source=source, rows=rows)
            for dz in (1, 2) for source, rows in (("stream", 20000), ("population", None))
        ]
        jobs = int(sys.argv[1])
        out = {}
        for run in ("cold", "warm"):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                out[run] = run_points(points, jobs=jobs, progress=True, label="t")
            out[run + "_stderr"] = err.getvalue()
        print(json.dumps(out))
    """
)


def _run(tmp_path, script: str, *args: str) -> dict:
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "LAMFAST_CACHE_DIR": str(tmp_path / "numba"), "LAMFAST_CACHE": "1"}
    env.pop("NUMBA_CACHE_DIR", None)  # it would win over LAMFAST_CACHE_DIR
    done = subprocess.run(
        [sys.executable, str(path), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_worker_loads_what_the_warm_up_compiled(tmp_path):
    out = _run(tmp_path, SCRIPT)
    # An empty cache: every kind of kernel work is missing, in the table's order.
    assert out["cold"] == ["moment-gd", "sgd", "stream"]
    # The stream's small copy: do = 4 and several blocks of rows (so that blocks are merged).
    [(do, source, rows)] = out["examples"]
    assert (do, source) == (4, "stream") and rows > 2 * 4096
    assert out["compiled"] > 0
    assert out["after"] == []
    # Closed-form fits on population and Wishart moments run no kernel: they can run while
    # the kernels compile.
    assert not any(h or m for h, m in out["closed"].values()), out["closed"]
    # A fresh worker loads every kernel from disk and compiles none.
    worker = out["worker"]
    compiled = {k: m for k, (h, m) in worker.items() if m}
    assert not compiled, compiled
    loaded = {k for k, (h, m) in worker.items() if h}
    # ... and what it loads are exactly the kernels the table lists for the stream: a kernel
    # called from Python that the table lacks would be compiled by every worker again.
    listed = {f"{mod}.{name}" for mod, name in _warmup.KERNELS["stream"]}
    assert loaded == listed
    # A run on the warm cache says nothing about compiling and computes the same rows.
    assert out["rows_equal"]
    assert "compiling" not in out["again_stderr"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_points_compiles_once_and_says_so(tmp_path, jobs):
    out = _run(tmp_path, RUN_POINTS, str(jobs))
    assert "t: compiling kernels (first run): stream ..." in out["cold_stderr"]
    assert "t: compiled kernels in" in out["cold_stderr"]
    assert "compiling" not in out["warm_stderr"]
    assert out["cold"] == out["warm"]


def test_no_warm_up_without_a_cache(monkeypatch):
    monkeypatch.setattr(_warmup, "CACHE", False)
    assert _warmup.missing(["moment-gd", "stream"]) == []
    assert _warmup.missing([]) == []


def test_kinds_follow_solver_and_source():
    from lamfast.experiments.panels import RunOptions, panel_names
    from lamfast.experiments.points import panel_points

    points = [p for n in panel_names(None) for p in panel_points(n, RunOptions(quick=True))]
    kinds = {(p.solver, p.source): _warmup.kinds(p) for p in points}
    assert kinds[("eig", "population")] == frozenset()
    assert kinds[("moment-gd", "population")] == {"moment-gd"}
    [example] = _warmup.examples(points, ["moment-gd"])
    first = next(p for p in points if p.solver == "moment-gd")
    assert example.variant == first.variant and example.world.do == 4
    assert example.world.noise == first.world.noise and example.evals == first.evals
