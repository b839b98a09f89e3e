"""lamfast: what does a latent action model's latent capture? The exact linear theory, fast.

Implements the linear theory of *What Do Latent Action Models Actually Learn?* (Zhang, Pearce et
al., arXiv 2506.15691): streamed frame-difference moments, truncated eigendecompositions,
closed-form linear LAMs and closed-form linear probes.

The public API (everything in ``__all__``) is typed (PEP 561 ``py.typed``) and documented with
numpydoc docstrings whose examples run in the test suite. Array arguments follow the rules of
:mod:`lamfast.sources.arrays` (numpy arrays, memmaps, float32/float64 or integer frames, any
object with ``__array__`` such as a CPU torch tensor).

Examples
--------
>>> import lamfast
>>> world = lamfast.LinearWorld(do=32, da=4, noise="gaussian", sigma=0.5)
>>> m = lamfast.moments_from_world(world)
>>> lam = lamfast.fit(m, dz=4)
>>> {k: round(v, 3) for k, v in lamfast.probe_metrics(lam, m).items()}
{'act_mse': 0.2, 'obs_mse': 1.0, 'noi_mse': 0.975, 'recon': 0.219, 'llo': 1.775}
"""

from __future__ import annotations

from ._version import __version__
from .errors import LamfastError
from .estimator import LinearLAM, NotFittedError, fit
from .experiments.panels import RunOptions
from .experiments.probe import probe_latents
from .experiments.reproduce import reproduce
from .moments import Moments, moments_from_rows, top_eigh
from .probes import probe_metrics, probe_mse
from .solvers import Variant
from .sources import (
    FrameSource,
    LinearWorld,
    frame_moments,
    moments_from_transitions,
    moments_from_world,
    stream_moments,
    wishart_moments,
)

__all__ = [
    "RunOptions",
    "reproduce",
    "FrameSource",
    "LamfastError",
    "LinearLAM",
    "LinearWorld",
    "Moments",
    "NotFittedError",
    "Variant",
    "fit",
    "frame_moments",
    "moments_from_rows",
    "moments_from_transitions",
    "moments_from_world",
    "probe_latents",
    "probe_metrics",
    "probe_mse",
    "stream_moments",
    "top_eigh",
    "wishart_moments",
    "__version__",
]
