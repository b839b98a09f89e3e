"""The probes stage: what a latent holds. Closed-form probes on ``Moments`` (Schur complements,
LLO, principal angles), probes on frame files, and Adam-trained probes (the paper's protocol).
"""

from .closed import LATENTS, latent_map, linear_probe, principal_angles, probe_metrics, probe_mse

__all__ = [
    "LATENTS",
    "latent_map",
    "linear_probe",
    "principal_angles",
    "probe_metrics",
    "probe_mse",
]
