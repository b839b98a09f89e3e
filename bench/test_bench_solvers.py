"""Side-by-side timing of one grid point: the paper's PyTorch protocol, lamfast's numba ``sgd``
(the same protocol), ``moment-gd`` (its deterministic twin ``mode="paper"`` and the default
``mode="converge"``) and ``eig`` (docs/architecture.md, conventions).

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

from lamfast import LinearWorld
from lamfast.estimator import fit
from lamfast.probes.adam import sgd_metrics
from lamfast.probes.closed import probe_metrics
from lamfast.solvers.gd import moment_gd_fit
from lamfast.solvers.sgd import sgd_fit
from lamfast.solvers.variant import Variant

torch = pytest.importorskip("torch")
from . import paper_protocol_torch as paper  # noqa: E402

STEPS, PROBE_STEPS = 3000, 1000
POINTS = {
    # (world, variant, dz, latent-eval options); do = 128, da = 8 as in the paper
    "fig3-middle": (dict(noise="gaussian", sigma=0.5), Variant("identity", "free"), 8),
    "fig4-middle": (dict(noise="gaussian", sigma=0.5), Variant("learned", "free", 0.1), 8),
    "fig4-left": (dict(chi=0.5), Variant("learned", "free"), 4),
}
SOLVERS = ["torch-paper", "lamfast-sgd", "moment-gd-paper", "moment-gd", "eig"]


def _runner(solver, point):
    wkw, v, dz = POINTS[point]
    world = LinearWorld(do=128, da=8, seed=1, **wkw)
    if solver == "torch-paper":
        return lambda: paper.run(world, dz, v, steps=STEPS, probe_steps=PROBE_STEPS)
    if solver == "lamfast-sgd":
        return lambda: sgd_metrics(
            sgd_fit(world, dz, v, steps=STEPS), world, probes="adam", probe_steps=PROBE_STEPS,
            eval_rows=20_000,
        )  # fmt: skip
    m = world.population_moments()
    if solver == "moment-gd":
        return lambda: probe_metrics(moment_gd_fit(m, dz, v), m)
    if solver == "moment-gd-paper":  # the noise-aware deterministic twin of the protocol
        return lambda: probe_metrics(moment_gd_fit(m, dz, v, mode="paper", steps=STEPS), m)
    if v.decoder == "learned" and v.encoder == "free" and v.kappa == 0:
        pytest.skip("no closed form (flat direction): eig does not apply")
    return lambda: probe_metrics(fit(m, dz, v), m)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("point", list(POINTS))
def test_grid_point(benchmark, solver, point):
    torch.set_num_threads(1)
    fn = _runner(solver, point)
    fn()  # warm-up: compilation and caches, outside the timing
    benchmark.group = f"grid point {point} (do=128)"
    benchmark.extra_info.update(
        {
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "torch_threads": torch.get_num_threads(),
            "steps": STEPS,
            "probe_steps": PROBE_STEPS,
        }
    )
    out = benchmark.pedantic(fn, rounds=3, iterations=1)
    assert np.isfinite(out["llo"])
