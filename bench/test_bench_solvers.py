"""Side-by-side timing of one grid point: the paper's PyTorch protocol, lamfast's numba ``sgd``
(the same protocol), ``moment-gd`` (its deterministic twin ``mode="paper"`` and the default
``mode="converge"``) and ``eig`` (docs/architecture.md, conventions); the cases are in
``bench/grid_points.py``.

Run: ``OPENBLAS_NUM_THREADS=1 pytest bench/test_bench_solvers.py --benchmark-enable``
(one thread everywhere: the panels run one grid point per core). Warm-up (numba compilation,
torch start-up) happens outside the timing. Every solver includes its probes: Adam-trained probes
for the two protocol implementations (same steps), closed-form probes on population moments for
``moment-gd`` and ``eig``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from .grid_points import POINTS, PROBE_STEPS, SOLVERS, STEPS, runner


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("point", list(POINTS))
def test_grid_point(benchmark, solver, point):
    fn = runner(solver, point)
    if fn is None:
        pytest.skip(f"{solver} does not apply here (no closed form, or torch missing)")
    fn()  # warm-up: compilation and caches, outside the timing
    benchmark.group = f"grid point {point} (do=128)"
    benchmark.extra_info.update(
        {
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "steps": STEPS,
            "probe_steps": PROBE_STEPS,
        }
    )
    out = benchmark.pedantic(fn, rounds=3, iterations=1)
    assert np.isfinite(out["llo"])
