"""Experiments: one grid point (``run_fit``) now; the paper's panels build on it.

Flow: world -> moments (population | wishart | stream) -> ``lam.fit`` -> ``probe_metrics``.
"""

from __future__ import annotations

import time

import numpy as np

from .errors import LamfastError
from .lam import Variant, fit
from .probes import probe_metrics
from .simulate import stream_moments, wishart_moments
from .world import LinearWorld

SOURCES = ("population", "wishart", "stream")


def world_moments(
    world: LinearWorld,
    source: str = "population",
    rows=None,
    progress=None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
):
    """Moments of a world from one of the simulated sources.

    ``workers`` / ``scheduler`` run the stream on Dask and ``checkpoint`` makes it resumable
    (``lamfast.distributed``); all three give the same bits as the plain stream.
    """
    scaled = {"workers": workers, "scheduler": scheduler, "checkpoint": checkpoint}
    used = [f"--{k}" for k, v in scaled.items() if v is not None]
    if used and source != "stream":
        raise LamfastError(f"{', '.join(used)} only apply to --source stream, not {source}")
    if source == "population":
        return world.population_moments()
    if rows is None:
        raise LamfastError(f"the {source} source needs a number of rows")
    if source == "wishart":
        return wishart_moments(world, rows)
    if source == "stream":
        if workers is not None or scheduler is not None:
            from .distributed import stream_moments_dask

            return stream_moments_dask(
                world,
                rows,
                workers=workers,
                scheduler=scheduler,
                checkpoint=checkpoint,
                progress=progress,
            )
        if checkpoint is not None:
            from .distributed import stream_moments_checkpointed

            return stream_moments_checkpointed(world, rows, checkpoint, progress=progress)
        return stream_moments(world, rows, progress=progress)
    raise LamfastError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")


def run_fit(
    world: dict | LinearWorld,
    variant: dict | Variant,
    dz: int,
    source: str = "population",
    rows=None,
    solver: str = "eig",
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
    if not isinstance(dz, int) or not 1 <= dz <= world.do:
        raise LamfastError(f"dz must be an integer in [1, do={world.do}], got {dz!r}")
    moments = world_moments(
        world, source, rows, progress, workers=workers, scheduler=scheduler, checkpoint=checkpoint
    )
    lam = fit(moments, dz, variant, solver=solver, seed=world.seed)
    metrics = probe_metrics(lam, moments, world=world)
    return {
        **{k: (round(v, 15) if isinstance(v, float) else v) for k, v in metrics.items()},
        "source": source,
        "rows": None if source == "population" else int(moments.count),
        "seconds": time.perf_counter() - start,
        "dz": dz,
        "solver": solver,
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
