"""The solvers stage: from ``Moments`` (or a world, for ``sgd``) to a record of fitted parameters.

``eig`` (closed forms, :mod:`lamfast.solvers.closed_form`), ``moment-gd`` (Adam on the exact
loss, :mod:`lamfast.solvers.gd`) and ``sgd`` (the paper's protocol, :mod:`lamfast.solvers.sgd`)
share the variant (:mod:`~lamfast.solvers.variant`) and return a
:class:`~lamfast.solvers.fitted.FittedLAM`; :func:`~lamfast.solvers.solve.solve` picks one.
"""

from .fitted import FittedLAM, recon_loss
from .variant import DECODERS, ENCODERS, SOLVERS, WEIGHTINGS, Variant, check_dz

__all__ = [
    "DECODERS",
    "ENCODERS",
    "FittedLAM",
    "SOLVERS",
    "Variant",
    "WEIGHTINGS",
    "check_dz",
    "recon_loss",
]
