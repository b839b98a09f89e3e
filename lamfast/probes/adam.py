"""Probes trained by Adam on fresh minibatches (the paper's protocol), and the metrics of a LAM
trained by ``sgd`` scored on held-out rows.
"""

from __future__ import annotations

import numpy as np

from .. import config
from .._jit import njit
from ..errors import LamfastError
from ..moments.core import Moments
from ..solvers.fitted import FittedLAM, recon_loss
from ..solvers.trainer import _adam_step, _check_positive
from ..sources.minibatch import _draw_rows, _generator, _world_arrays
from ..sources.simulate import stream_moments
from ..sources.world import LinearWorld
from .closed import _noise_target, latent_map, probe_metrics, probe_score

PROBES = ("closed", "adam")


@njit
def _probe_kernel(
    gen, steps, n, do, da, X, P, Y, chi, sigma, code, W, t0, t1, lr, b1, b2, eps, theta
):  # fmt: skip
    """Adam on fresh minibatches for a linear probe ``y^ = G (W x) + c``, ``y = x[t0:t1]``.

    ``theta`` = [G (dy x dz), c (dy)]; loss ``||y^ - y||^2 / dy`` averaged over the batch.
    """
    p = W.shape[1]
    dz = W.shape[0]
    dy = t1 - t0
    rows = np.empty((n, p))
    grad = np.zeros_like(theta)
    mom = np.zeros_like(theta)
    vel = np.zeros_like(theta)
    for t in range(1, steps + 1):
        _draw_rows(gen, n, do, da, X, P, Y, chi, sigma, code, rows)
        z = np.dot(rows, W.T)
        G = theta[: dy * dz].reshape(dy, dz)
        c = theta[dy * dz :]
        r = np.dot(z, G.T) + c - rows[:, t0:t1]
        gr = (2.0 / (n * dy)) * r
        grad[: dy * dz] = np.dot(gr.T, z).ravel()
        grad[dy * dz :] = gr.sum(axis=0)
        _adam_step(theta, grad, mom, vel, t, lr, b1, b2, eps)


def adam_probe_mse(
    lam: FittedLAM,
    world: LinearWorld,
    target: str,
    eval_moments: Moments,
    *,
    latent: str = "true",
    steps: int | None = None,
    lr: float | None = None,
    batch: int | None = None,
    seed: int = 0,
) -> float:
    """Normalised MSE of a probe trained by Adam on fresh minibatches (the paper's probes).

    The probe ``y^ = G z + c`` (``nn.Linear(dz, dy)`` initialisation) is trained on rows of
    ``world``, then scored exactly on ``eval_moments`` (held-out rows, possibly of another law)::

        [tr S_yy - 2 tr(G S_zy) + tr(G S_zz G^T) + ||mu_y - G mu_z - c||^2] / tr S_yy
    """
    if tuple(world.blocks) != tuple(eval_moments.blocks):
        raise LamfastError("evaluation moments must have the world's layout")
    steps = _check_positive("probe steps", config.SGD_PROBE_STEPS if steps is None else steps)
    batch = _check_positive("batch", config.BATCH_SIZE if batch is None else batch)
    lr = float(config.SGD_LR if lr is None else lr)
    W = np.ascontiguousarray(latent_map(lam, eval_moments, latent))
    sl = eval_moments.index(target)
    dz, dy = W.shape[0], sl.stop - sl.start
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    bound = 1.0 / np.sqrt(dz)
    theta = rng.uniform(-bound, bound, size=dy * dz + dy)
    b1, b2 = config.ADAM_BETAS
    _probe_kernel(
        _generator(seed, 6), steps, batch, world.do, world.da, *_world_arrays(world),
        W, sl.start, sl.stop, lr, b1, b2, config.ADAM_EPS, theta,
    )  # fmt: skip
    G, c = theta[: dy * dz].reshape(dy, dz), theta[dy * dz :]
    return probe_score(G, c, W, eval_moments, sl)


def sgd_metrics(
    lam: FittedLAM,
    world: LinearWorld,
    *,
    eval_rows: int | None = None,
    eval_world: LinearWorld | None = None,
    latent: str = "true",
    probes: str = "closed",
    probe_steps: int | None = None,
    seed: int = 0,
) -> dict:
    """The paper's metrics of a trained LAM, scored on held-out rows.

    Parameters
    ----------
    lam : FittedLAM or LinearLAM
    world : LinearWorld
        The training law; probes are fitted on it.
    eval_rows : int, optional
        Held-out rows (``stream_moments`` of the world's own row stream, disjoint from the
        training stream); default ``config.SGD_EVAL_ROWS``.
    eval_world : LinearWorld, optional
        Score the probes on another law (e.g. ``world.replace(chi=0)``, random actions).
    latent : {"true", "surrogate"}
    probes : {"closed", "adam"}
        ``closed``: least-squares probes from the held-out moments (Schur complements).
        ``adam``: probes trained by Adam on fresh minibatches, as in the paper.
    """
    if probes not in PROBES:
        raise LamfastError(f"probes must be one of {', '.join(PROBES)}, got {probes!r}")
    rows = int(config.SGD_EVAL_ROWS if eval_rows is None else eval_rows)
    fit_m = stream_moments(world, rows)
    test_m = stream_moments(eval_world, rows) if eval_world is not None else None
    if probes == "closed":
        return probe_metrics(lam, fit_m, eval_moments=test_m, latent=latent)
    score_on = test_m if test_m is not None else fit_m
    act = adam_probe_mse(lam, world, "a", score_on, latent=latent, steps=probe_steps, seed=seed)
    obs = adam_probe_mse(lam, world, "o", score_on, latent=latent, steps=probe_steps, seed=seed)
    target = _noise_target(fit_m)
    noi = (
        adam_probe_mse(lam, world, target, score_on, latent=latent, steps=probe_steps, seed=seed)
        if target
        else 1.0
    )
    return {
        "act_mse": act,
        "obs_mse": obs,
        "noi_mse": noi,
        "recon": recon_loss(lam, fit_m),
        "llo": -act + obs + noi,
    }
