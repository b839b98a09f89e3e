"""What a solver returns: a plain record of fitted LAM parameters, and the exact LAM loss.

Notation (``docs/theory.md``)::

    IDM  z  = C o + D o'               C, D: dz x do
    FDM  o^' = A o + B z               A: do x do, B: do x dz
    loss L  = E||o^' - o'||^2 / do     (per coordinate, no biases)
    head a^ = E z + h                  E: da x dz (action supervision only)

Solvers never build the estimator (:class:`lamfast.estimator.LinearLAM` wraps this record), and
probes read only these fields (``A, B, C, D, dz, draws``), so both work on either.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..moments.core import Moments
from .variant import Variant


@dataclasses.dataclass(eq=False)
class FittedLAM:
    """Fitted parameters of a linear LAM and what the solver decided.

    Attributes
    ----------
    dz : int
    variant : Variant
    solver : str
        ``eig``, ``moment-gd`` or ``sgd``.
    seed : int
    A, B, C, D : ndarray
        FDM and IDM matrices.
    spectrum : ndarray
        Leading eigenvalues (descending) of the matrix whose eigenvectors define the latent.
    loss : float
        Reconstruction loss per coordinate on the fitted moments (no penalty).
    E, h : ndarray or None
        Action head, when supervised.
    tie : tuple of int or None
        ``(i0, i1)``: eigenvalues ``i0..i1-1`` are tied and ``dz`` splits them.
    draws : tuple of FittedLAM
        Optima drawn by random rotations inside the tied block; probes average over them.
    notes : tuple of str
        What the solver decided and why.
    extra : dict
        Solver-specific results (``converged``, ``steps``, ``losses``).
    """

    dz: int
    variant: Variant
    solver: str
    seed: int
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray
    spectrum: np.ndarray
    loss: float = float("nan")
    E: np.ndarray | None = None
    h: np.ndarray | None = None
    tie: tuple | None = None
    draws: tuple = ()
    notes: tuple = ()
    extra: dict = dataclasses.field(default_factory=dict)


def recon_loss(lam, moments: Moments) -> float:
    """Exact LAM loss per coordinate: ``E||(A + BC + BD - I) o + (BD - I) delta||^2 / do``.

    ``lam`` is anything with the fitted matrices ``A, B, C, D`` (a :class:`FittedLAM` or a
    fitted :class:`~lamfast.estimator.LinearLAM`).
    """
    do = moments.size("o")
    eye = np.eye(do)
    BD = lam.B @ lam.D
    R = np.hstack([lam.A + lam.B @ lam.C + BD - eye, BD - eye])
    M = moments.select(["o", "delta"]).second_moment()
    return float(max(np.sum((R @ M) * R), 0.0) / do)
