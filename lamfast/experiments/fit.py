"""One fit of a simulated world (``lamfast fit`` without frame files): moments, fit, probes."""

from __future__ import annotations

import time

import numpy as np

from ..estimator import fit
from ..probes.closed import probe_metrics
from ..solvers.variant import Variant, check_dz
from ..sources.simulated import world_moments
from ..sources.world import LinearWorld


def run_fit(
    world: dict | LinearWorld,
    variant: dict | Variant,
    dz: int,
    source: str = "population",
    rows=None,
    solver: str = "auto",
    progress=None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
) -> dict:
    """Simulate (or compute) moments, fit a LAM, probe it; one JSON-ready dict.

    Examples
    --------
    >>> r = run_fit({"do": 16, "da": 4}, {}, dz=4)
    >>> r["llo"], r["source"]
    (2.0, 'population')
    """
    start = time.perf_counter()
    world = world if isinstance(world, LinearWorld) else LinearWorld(**world)
    variant = variant if isinstance(variant, Variant) else Variant(**variant)
    dz = check_dz(dz, world.do)
    moments = world_moments(
        world, source, rows, progress, workers=workers, scheduler=scheduler, checkpoint=checkpoint
    )
    lam = fit(moments, dz, variant, solver=solver, seed=world.seed, world=world)
    metrics = probe_metrics(lam, moments, world=world)
    return {
        **{k: (round(v, 15) if isinstance(v, float) else v) for k, v in metrics.items()},
        "source": source,
        "rows": None if source == "population" else int(moments.count),
        "seconds": time.perf_counter() - start,
        "dz": dz,
        "solver": lam.solver,  # with "auto": the solver that ran (the notes say why)
        "solver_requested": solver,
        "world": world.to_dict(),
        "variant": {
            "decoder": variant.decoder,
            "encoder": variant.encoder,
            "kappa": variant.kappa,
            "label_fraction": variant.label_fraction,
            "label_weighting": variant.label_weighting,
        },
        "loss": lam.loss,
        "spectrum": np.asarray(lam.spectrum).tolist(),
        "tie": list(lam.tie) if lam.tie else None,
        "notes": list(lam.notes),
    }
