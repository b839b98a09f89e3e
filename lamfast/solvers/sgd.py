"""The ``sgd`` solver: the paper's own training protocol, the slow reference (docs/solvers.md).

Fresh Gaussian minibatches drawn from a :class:`LinearWorld` at every step, Adam (PyTorch's
update, lr 1e-3, betas (0.9, 0.999), eps 1e-8), batch 128, a configurable number of steps, from
the training initialisation of :func:`lamfast.solvers.trainer.paper_init`. Per sample and per step:

- augmentation (kappa > 0): ``k1, k2 ~ N(0, kappa^2 I)`` drawn fresh;
  ``z = C(o + k1) + D(o' + k1)`` (tied encoder: ``z = D((o' + k1) - (o + k1))``),
  ``o^' = A(o + k2) + B z - k2`` (identity decoder: ``A = I``), loss ``||o^' - o'||^2 / do``;
- action supervision (``label_fraction = m > 0``): each row is labelled with probability ``m``;
  the head ``a^ = E z + h`` is scored on the labelled rows, ``||a^ - a||^2 / da``, averaged over
  the labelled rows (``label_weighting="batch"``, the authors' scripts: expected weight
  ``1 - (1 - m)^batch``) or summed and divided by the batch size (``"paper"``: weight ``m``).

Everything runs in one numba kernel per fit (:func:`_sgd_kernel`); the numpy ``Generator`` passed
in reproduces numpy's stream, so a fit is repeatable bit for bit from its seed. Probes are scored
in closed form on moments of held-out rows (:func:`sgd_metrics`), or trained by Adam on fresh
minibatches as the paper did (``probes="adam"``).
"""

from __future__ import annotations

import numpy as np

from .. import config
from .._jit import njit
from ..errors import LamfastError
from ..sources.minibatch import _draw_rows, _generator, _world_arrays
from ..sources.world import LinearWorld
from .fitted import FittedLAM, recon_loss
from .trainer import _adam_step, _check_positive, _theta_offsets, paper_init
from .variant import Variant, check_dz


@njit
def _sgd_kernel(
    gen, steps, n, do, da, dz, X, P, Y, chi, sigma, code,
    learned, free, kappa, supervised, m_frac, batch_weighting,
    lr, b1, b2, eps, theta, losses,
):  # fmt: skip
    """Adam on fresh minibatches; ``theta`` = [A (learned), B, C (free), D, E, h (supervised)].

    Writes the minibatch reconstruction loss of each step into ``losses``.
    """
    p = 2 * do + da
    if code == 1 or code == 3:
        p += do
    elif code == 2:
        p += Y.shape[1]
    rows = np.empty((n, p))
    grad = np.zeros_like(theta)
    mom = np.zeros_like(theta)
    vel = np.zeros_like(theta)
    oA, oB, oC, oD, oE, oh = _theta_offsets(do, dz, da, learned, free, supervised)
    for t in range(1, steps + 1):
        _draw_rows(gen, n, do, da, X, P, Y, chi, sigma, code, rows)
        o = np.ascontiguousarray(rows[:, :do])
        delta = np.ascontiguousarray(rows[:, do : 2 * do])
        a = np.ascontiguousarray(rows[:, 2 * do : 2 * do + da])
        o_next = o + delta
        if kappa > 0.0:
            k1 = kappa * gen.standard_normal((n, do))
            k2 = kappa * gen.standard_normal((n, do))
            xi = o + k1
            xn = o_next + k1
            xa = o + k2
        else:
            k2 = np.zeros((1, 1))
            xi = o
            xn = o_next
            xa = o
        B = theta[oB : oB + do * dz].reshape(do, dz)
        D = theta[oD : oD + dz * do].reshape(dz, do)
        if free:
            C = theta[oC : oC + dz * do].reshape(dz, do)
            z = np.dot(xi, C.T) + np.dot(xn, D.T)
        else:
            xd = xn - xi
            z = np.dot(xd, D.T)
        pred = np.dot(z, B.T)
        if learned:
            A = theta[oA : oA + do * do].reshape(do, do)
            pred += np.dot(xa, A.T)
        else:
            pred += xa
        if kappa > 0.0:
            pred -= k2
        err = pred - o_next
        losses[t - 1] = np.sum(err * err) / (n * do)
        gpred = (2.0 / (n * do)) * err
        grad[:] = 0.0
        if learned:
            grad[oA : oA + do * do] = np.dot(gpred.T, xa).ravel()
        grad[oB : oB + do * dz] = np.dot(gpred.T, z).ravel()
        gz = np.dot(gpred, B)
        if supervised:
            mask = gen.random(n) < m_frac
            n_lab = 0
            for i in range(n):
                if mask[i]:
                    n_lab += 1
            if n_lab > 0:
                E = theta[oE : oE + da * dz].reshape(da, dz)
                h = theta[oh : oh + da]
                ahat = np.dot(z, E.T) + h
                r = ahat - a
                for i in range(n):
                    if not mask[i]:
                        r[i, :] = 0.0
                denom = float(n_lab) if batch_weighting else float(n)
                gah = (2.0 / (da * denom)) * r
                grad[oE : oE + da * dz] = np.dot(gah.T, z).ravel()
                grad[oh : oh + da] = gah.sum(axis=0)
                gz += np.dot(gah, E)
        if free:
            grad[oC : oC + dz * do] = np.dot(gz.T, xi).ravel()
            grad[oD : oD + dz * do] = np.dot(gz.T, xn).ravel()
        else:
            grad[oD : oD + dz * do] = np.dot(gz.T, xd).ravel()
        _adam_step(theta, grad, mom, vel, t, lr, b1, b2, eps)


def sgd_fit(
    world: LinearWorld,
    dz: int,
    variant: Variant | None = None,
    *,
    seed: int = 0,
    steps: int | None = None,
    lr: float | None = None,
    batch: int | None = None,
    init: dict | None = None,
) -> FittedLAM:
    """Train a linear LAM by the paper's protocol: Adam on fresh minibatches from ``world``.

    Parameters
    ----------
    world : LinearWorld
        The world minibatches are drawn from (training stream ``SeedSequence(seed, (5,))``,
        independent of the world's own row stream).
    dz : int
    variant : Variant
    seed : int
        Seeds the initialisation (:func:`lamfast.solvers.trainer.paper_init`, shared with
        ``moment-gd``) and
        the training stream.
    steps, lr, batch : optional
        Adam steps (default ``config.SGD_STEPS``), learning rate (``config.SGD_LR`` = 1e-3) and
        batch size (``config.BATCH_SIZE`` = 128).
    init : dict, optional
        Starting matrices instead of the seeded default.

    Returns
    -------
    FittedLAM
        ``solver="sgd"``; ``loss`` is the exact population reconstruction loss of the trained
        model, ``extra["losses"]`` the minibatch loss of every step.

    Examples
    --------
    >>> w = LinearWorld(do=8, da=2, seed=0)
    >>> lam = sgd_fit(w, 2, Variant(), steps=3000)
    >>> lam.loss < 1e-3
    True
    """
    variant = variant or Variant()
    if not isinstance(world, LinearWorld):
        raise LamfastError(f"the sgd solver needs a LinearWorld, got {type(world).__name__}")
    do, da = world.do, world.da
    dz = check_dz(dz, do)
    dz = int(dz)
    steps = _check_positive("steps", config.SGD_STEPS if steps is None else steps)
    batch = _check_positive("batch", config.BATCH_SIZE if batch is None else batch)
    lr = float(config.SGD_LR if lr is None else lr)
    if not (np.isfinite(lr) and lr > 0):
        raise LamfastError(f"lr must be a positive number, got {lr!r}")
    learned = variant.decoder == "learned"
    free = variant.encoder == "free"
    supervised = variant.label_fraction > 0
    p = init or paper_init(do, dz, da, variant, seed)
    if supervised and p.get("E") is None:
        raise LamfastError("init lacks the action head (E, h) that supervision trains")
    parts = []
    if learned:
        parts.append(p["A"])
    parts.append(p["B"])
    if free:
        parts.append(p["C"])
    parts.append(p["D"])
    if supervised:
        parts += [p["E"], p["h"]]
    theta = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in parts])
    losses = np.empty(steps)
    b1, b2 = config.ADAM_BETAS
    _sgd_kernel(
        _generator(seed, 5), steps, batch, do, da, dz, *_world_arrays(world),
        learned, free, float(variant.kappa), supervised, float(variant.label_fraction),
        variant.label_weighting == "batch", lr, b1, b2, config.ADAM_EPS, theta, losses,
    )  # fmt: skip
    if not np.isfinite(theta).all():
        raise LamfastError("sgd diverged (non-finite parameters); lower the lr")
    off = 0

    def take(r, c):
        nonlocal off
        out = theta[off : off + r * c].reshape(r, c).copy()
        off += r * c
        return out

    A = take(do, do) if learned else np.eye(do)
    B = take(do, dz)
    C = take(dz, do) if free else None
    D = take(dz, do)
    C = -D if C is None else C
    E = take(da, dz) if supervised else None
    h = theta[off : off + da].copy() if supervised else None
    notes = (
        f"sgd: Adam lr={lr:g}, batch {batch}, {steps} steps on fresh minibatches "
        f"(final minibatch loss, mean of last 100: {losses[-100:].mean():.6g})",
    )
    Bz = B @ np.hstack([C + D, D])
    pop = world.population_moments()
    Mx = pop.select(["o", "delta"]).second_moment()
    spectrum = np.linalg.eigvalsh(Bz @ Mx @ Bz.T)[::-1][:dz]
    lam = FittedLAM(
        dz, variant, "sgd", seed, A, B, C, D, spectrum, E=E, h=h, notes=notes,
        extra={"losses": losses, "steps": steps},
    )  # fmt: skip
    lam.loss = recon_loss(lam, pop)
    return lam
