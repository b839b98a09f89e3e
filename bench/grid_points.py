"""One grid point of a panel, solved by every solver with its probes: the cases shared by
``bench/test_bench_solvers.py`` (pytest-benchmark) and ``python -m bench.docs_tables``.

The paper's protocol in PyTorch (:mod:`bench.paper_protocol_torch`), lamfast's numba ``sgd`` (the
same protocol), ``moment-gd`` as its deterministic twin (``mode="paper"``, same steps) and in its
default ``converge`` mode, and ``eig``; the protocol implementations with Adam-trained probes, the
others with closed-form probes on population moments. do = 128, da = 8 as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable

from lamfast import LinearWorld
from lamfast.estimator import fit
from lamfast.probes.adam import sgd_metrics
from lamfast.probes.closed import probe_metrics
from lamfast.solvers.gd import moment_gd_fit
from lamfast.solvers.sgd import sgd_fit
from lamfast.solvers.variant import Variant

STEPS, PROBE_STEPS = 3000, 1000
POINTS = {
    # (world, variant, dz, what the docs' table calls the point)
    "fig3-middle": (
        dict(noise="gaussian", sigma=0.5),
        Variant("identity", "free"),
        8,
        "fig3-middle (σ = 0.5, dz = 8)",
    ),
    "fig4-middle": (
        dict(noise="gaussian", sigma=0.5),
        Variant("learned", "free", 0.1),
        8,
        "fig4-middle (κ = 0.1, σ = 0.5, dz = 8)",
    ),
    "fig4-left": (
        dict(chi=0.5),
        Variant("learned", "free"),
        4,
        "fig4-left (χ = 0.5, κ = 0, dz = 4)",
    ),
}
SOLVERS = ["torch-paper", "lamfast-sgd", "moment-gd-paper", "moment-gd", "eig"]


def runner(solver: str, point: str) -> Callable[[], dict] | None:
    """The point solved by ``solver``, probes included, as a callable returning the metrics;
    None where the solver does not apply (``eig`` without a closed form, ``torch-paper``
    without torch)."""
    wkw, v, dz, _ = POINTS[point]
    world = LinearWorld(do=128, da=8, seed=1, **wkw)
    if solver == "torch-paper":
        try:
            import torch

            from . import paper_protocol_torch as paper
        except ImportError:
            return None
        torch.set_num_threads(1)
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
        return None  # no closed form (flat direction): eig does not apply
    return lambda: probe_metrics(fit(m, dz, v), m)
