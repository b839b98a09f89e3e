"""The sources stage: where rows come from. Simulated worlds (population, Wishart, streamed rows),
arrays in memory, the grid world, and frame files (:mod:`lamfast.sources.frames`); each source
yields :class:`~lamfast.moments.Moments`, and each has its own Dask adapter over the block
executor of :mod:`lamfast.moments.tree`.
"""

from .arrays import moments_from_transitions, moments_of
from .frames import FrameSource, frame_moments
from .simulate import stream_moments, wishart_moments
from .simulated import SOURCES, moments_from_world, world_moments
from .world import LinearWorld

__all__ = [
    "FrameSource",
    "frame_moments",
    "LinearWorld",
    "SOURCES",
    "moments_from_transitions",
    "moments_from_world",
    "moments_of",
    "stream_moments",
    "wishart_moments",
    "world_moments",
]
