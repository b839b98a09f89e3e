"""lamfast: what does a latent action model's latent capture? The exact linear theory, fast.

Implements the linear theory of *What Do Latent Action Models Actually Learn?* (Zhang, Pearce et
al., arXiv 2506.15691): streamed frame-difference moments, truncated eigendecompositions,
closed-form linear LAMs and closed-form linear probes.
"""

from __future__ import annotations

from .eigen import top_eigh
from .errors import LamfastError
from .lam import LinearLAM, Variant, fit
from .moments import Moments, moments_from_rows
from .probes import probe_metrics, probe_mse
from .simulate import stream_moments, wishart_moments
from .world import LinearWorld

__version__ = "0.1.0"

__all__ = [
    "LamfastError",
    "LinearLAM",
    "LinearWorld",
    "Moments",
    "Variant",
    "fit",
    "moments_from_rows",
    "probe_metrics",
    "probe_mse",
    "stream_moments",
    "top_eigh",
    "wishart_moments",
    "__version__",
]
