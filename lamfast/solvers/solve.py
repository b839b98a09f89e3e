"""One entry point to the three solvers: validate the inputs once, run the chosen solver."""

from __future__ import annotations

import numpy as np

from ..errors import LamfastError
from ..moments.core import Moments
from .closed_form import NoClosedFormError, check_labels, eig_fit
from .fitted import FittedLAM
from .gd import moment_gd_fit
from .sgd import sgd_fit
from .variant import SOLVER_CHOICES, Variant, check_dz


def solve(
    moments: Moments,
    dz: int,
    variant: Variant,
    solver: str = "eig",
    seed: int = 0,
    *,
    world=None,
    solver_options: dict | None = None,
    labels: Moments | None = None,
) -> FittedLAM:
    """Fitted parameters of ``variant`` on ``moments`` by ``solver``.

    ``auto``: the closed form where one exists, else moment-gd (the fit's ``solver`` says which ran,
    and its notes why). ``eig``: the closed forms (:func:`~lamfast.solvers.closed_form.eig_fit`);
    ``moment-gd``: Adam on the exact loss (:func:`~lamfast.solvers.gd.moment_gd_fit`); ``sgd``: the
    paper's protocol on minibatches of ``world`` (:func:`~lamfast.solvers.sgd.sgd_fit`; the moments
    only fix the layout). ``solver_options`` go to the solver (steps, lr, ...).

    ``labels``: moments of the labelled rows (blocks ``delta`` and ``a``; ``o`` too for
    moment-gd and for a free encoder; ``count`` the number of labelled rows), read by the action
    head of a supervised variant while the reconstruction reads ``moments`` (every row). None:
    every row of ``moments`` is labelled. ``moments`` then need no ``a`` block.

    Examples
    --------
    >>> from lamfast.sources import LinearWorld
    >>> m = LinearWorld(do=8, da=2).population_moments()
    >>> lam = solve(m, 2, Variant())
    >>> lam.solver, round(lam.loss, 12)
    ('eig', 0.0)
    """
    if not isinstance(moments, Moments):
        raise LamfastError(f"fit needs Moments, got {type(moments).__name__}")
    for name in ("o", "delta"):
        if not moments.has(name):
            raise LamfastError(f"fit needs a block {name!r}; moments have {list(moments.names)}")
    dz = check_dz(dz, moments.size("o"))
    if solver not in SOLVER_CHOICES:
        raise LamfastError(f"solver must be one of {', '.join(SOLVER_CHOICES)}, got {solver!r}")
    if not (np.isfinite(moments.cov).all() and np.isfinite(moments.mean).all()):
        raise LamfastError("moments contain NaN or inf")
    seed = int(seed)
    if labels is not None:
        check_labels(moments, labels)
        if solver == "sgd":
            raise LamfastError("the sgd solver draws its labelled rows from world; drop labels")
    gd_options = {**(solver_options or {}), **({} if labels is None else {"labels": labels})}
    if solver == "moment-gd":
        return moment_gd_fit(moments, dz, variant, seed=seed, **gd_options)
    if solver == "sgd":
        if world is None:
            raise LamfastError("the sgd solver samples rows: pass world=LinearWorld(...)")
        return sgd_fit(world, dz, variant, seed=seed, **(solver_options or {}))
    if solver == "eig":
        return eig_fit(moments, dz, variant, seed, labels=labels)
    try:
        return eig_fit(moments, dz, variant, seed, labels=labels)
    except NoClosedFormError as e:
        lam = moment_gd_fit(moments, dz, variant, seed=seed, **gd_options)
        lam.notes = (*lam.notes, f"solver auto: {e.reason} has no closed form, so moment-gd ran")
        return lam
