"""The LAM variants of the paper as data (:class:`Variant`) and the solver names."""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import config
from ..errors import LamfastError

DECODERS = ("identity", "learned")


ENCODERS = ("tied", "free")


WEIGHTINGS = ("paper", "batch")


SOLVERS = ("eig", "moment-gd", "sgd")

# What a user may ask for: a solver, or "auto" (the closed form where one exists, else moment-gd).
SOLVER_CHOICES = ("auto", *SOLVERS)


@dataclasses.dataclass(frozen=True)
class Variant:
    """Options of a linear LAM (docs/architecture.md, conventions: variants are data).

    Parameters
    ----------
    decoder : {"identity", "learned"}
        ``identity`` fixes ``A = I``; ``learned`` fits ``A``.
    encoder : {"tied", "free"}
        ``tied`` forces ``C = -D`` (the latent sees only the frame difference).
    kappa : float
        Augmentation scale (>= 0): Gaussian noise ``N(0, kappa^2 I)`` added to the inputs.
    label_fraction : float
        Fraction ``m`` in [0, 1] of rows with action labels (action supervision).
    label_weighting : {"paper", "batch"}
        Weight of the action loss: ``w = m`` (the paper's per-sample objective) or
        ``w = 1 - (1 - m)^128`` (the authors' scripts average over the labelled rows of a batch).

    Examples
    --------
    >>> v = Variant(label_fraction=0.01, label_weighting="batch")
    >>> round(v.label_weight, 3)
    0.724
    """

    decoder: str = "identity"
    encoder: str = "tied"
    kappa: float = 0.0
    label_fraction: float = 0.0
    label_weighting: str = "paper"

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise LamfastError(
                f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}"
            )
        if self.encoder not in ENCODERS:
            raise LamfastError(
                f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}"
            )
        if not np.isfinite(self.kappa) or self.kappa < 0:
            raise LamfastError(f"kappa must be a finite number >= 0, got {self.kappa!r}")
        if not np.isfinite(self.label_fraction) or not 0 <= self.label_fraction <= 1:
            raise LamfastError(f"label_fraction must be in [0, 1], got {self.label_fraction!r}")
        if self.label_weighting not in WEIGHTINGS:
            raise LamfastError(
                f"label_weighting must be one of {', '.join(WEIGHTINGS)}, "
                f"got {self.label_weighting!r}"
            )

    @property
    def label_weight(self) -> float:
        """Effective weight ``w`` of the action loss (docs/theory.md, closed forms, item 4)."""
        m = float(self.label_fraction)
        if self.label_weighting == "paper":
            return m
        return 1.0 - (1.0 - m) ** config.BATCH_SIZE


def check_dz(dz, do: int) -> int:
    """``dz`` as an int if it is a whole number in ``[1, do]`` (a bool is not), else one error.

    Examples
    --------
    >>> check_dz(4, 16)
    4
    >>> check_dz(True, 16)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lamfast.errors.LamfastError: dz must be an integer in [1, do=16], got True
    """
    if isinstance(dz, bool) or not isinstance(dz, int | np.integer) or not 1 <= dz <= do:
        raise LamfastError(f"dz must be an integer in [1, do={do}], got {dz!r}")
    return int(dz)
