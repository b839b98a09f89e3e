"""The simulated sources of a :class:`~lamfast.sources.world.LinearWorld`: exact population
moments, a direct Wishart draw, or streamed rows (in process, resumable, or on Dask).
"""

from __future__ import annotations

from ..errors import LamfastError
from ..moments.core import Moments
from .distributed import stream_moments_checkpointed, stream_moments_dask
from .simulate import stream_moments, wishart_moments
from .world import LinearWorld

SOURCES = ("population", "wishart", "stream")


def world_moments(
    world: LinearWorld,
    source: str = "population",
    rows=None,
    progress=None,
    draw: int = 0,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
):
    """Moments of a world from one of the simulated sources.

    ``draw`` selects an independent Wishart draw (the stream source is keyed by the world's seed).
    ``workers`` / ``scheduler`` run the stream on Dask and ``checkpoint`` makes it resumable
    (``lamfast.sources.distributed``); all three give the same bits as the plain stream.
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
        return wishart_moments(world, rows, draw=draw)
    if source == "stream":
        if workers is not None or scheduler is not None:
            return stream_moments_dask(
                world,
                rows,
                workers=workers,
                scheduler=scheduler,
                checkpoint=checkpoint,
                progress=progress,
            )
        if checkpoint is not None:
            return stream_moments_checkpointed(world, rows, checkpoint, progress=progress)
        return stream_moments(world, rows, progress=progress)
    raise LamfastError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")


def moments_from_world(
    world: LinearWorld, source: str = "population", rows=None, *, progress: bool | None = None
) -> Moments:
    """Moments of a simulated :class:`~lamfast.sources.world.LinearWorld`.

    Parameters
    ----------
    world : LinearWorld
    source : {"population", "wishart", "stream"}
        Exact moments (``count = inf``), a direct Wishart draw of ``rows`` rows, or ``rows``
        streamed rows (docs/architecture.md, sources).
    rows : int, optional
        Number of rows (``wishart`` and ``stream``).
    progress : bool, optional
        Progress bar on stderr for ``stream``.

    Examples
    --------
    >>> w = LinearWorld(do=8, da=2)
    >>> moments_from_world(w).source, moments_from_world(w, "wishart", 1e9).count
    ('population', 1000000000.0)
    """

    if not isinstance(world, LinearWorld):
        raise LamfastError(f"moments_from_world needs a LinearWorld, got {type(world).__name__}")
    return world_moments(world, source, rows, progress)
