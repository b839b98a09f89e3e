"""The ``sgd`` solver: the paper's own training protocol, the slow reference (DESIGN 1.3).

Fresh Gaussian minibatches drawn from a :class:`LinearWorld` at every step, Adam (PyTorch's
update, lr 1e-3, betas (0.9, 0.999), eps 1e-8), batch 128, a configurable number of steps, from
the training initialisation of :func:`lamfast.gd.paper_init`. Per sample and per step:

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

from . import config
from ._jit import njit
from .errors import LamfastError
from .gd import _theta_offsets, paper_init
from .lam import LinearLAM, Variant, recon_loss
from .moments import Moments
from .probes import _noise_target, latent_map, probe_metrics
from .simulate import stream_moments
from .world import LinearWorld

NOISE_CODES = {"none": 0, "gaussian": 1, "exo": 2, "uniform": 3}
PROBES = ("closed", "adam")


def _generator(seed: int, key: int) -> np.random.Generator:
    """Training (key 5) and probe (key 6) streams: disjoint from the world's row stream (key 1)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(key,))))


# ------------------------------------------------------------------------------ kernels
@njit
def _draw_rows(gen, n, do, da, X, P, Y, chi, sigma, code, out):
    """Joint rows ``[o, delta, a, (b | eps)]`` of a world, written into ``out`` (n x p).

    Draws sources in the order of the world's stream rule (o, e, then b or xi as one normal
    array; then U[0, 1) for uniform noise), so with the same generator the rows equal
    :func:`lamfast.simulate.simulate_rows` up to rounding; the maps are applied structurally
    (``a = chi P o + (1 - chi) e``, ``delta = X a + noise``), O(n do da) instead of O(n p r).
    """
    n_extra = 0
    if code == 1:
        n_extra = do
    elif code == 2:
        n_extra = Y.shape[1]
    g = gen.standard_normal((n, do + da + n_extra))
    o = np.ascontiguousarray(g[:, :do])
    e = g[:, do : do + da]
    a = (1.0 - chi) * e
    if chi != 0.0:
        a += chi * np.dot(o, P.T)
    delta = np.dot(a, X.T)
    out[:, :do] = o
    out[:, 2 * do : 2 * do + da] = a
    if code == 1:
        eps = sigma * g[:, do + da :]
        delta += eps
        out[:, 2 * do + da :] = eps
    elif code == 2:
        b = np.ascontiguousarray(g[:, do + da :])
        delta += sigma * np.dot(b, Y.T)
        out[:, 2 * do + da :] = b
    elif code == 3:
        eps = sigma * gen.random((n, do))
        delta += eps
        out[:, 2 * do + da :] = eps
    out[:, do : 2 * do] = delta


@njit
def _adam_step(theta, grad, m, v, t, lr, b1, b2, eps):
    """PyTorch's Adam update (bias-corrected, eps outside the square root), in place."""
    c1 = 1.0 - b1**t
    c2 = 1.0 - b2**t
    for i in range(theta.shape[0]):
        g = grad[i]
        m[i] = b1 * m[i] + (1.0 - b1) * g
        v[i] = b2 * v[i] + (1.0 - b2) * g * g
        theta[i] -= lr * (m[i] / c1) / (np.sqrt(v[i] / c2) + eps)


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


# ------------------------------------------------------------------------------ public API
def _world_arrays(world: LinearWorld):
    Y = world.Y if world.noise == "exo" else np.zeros((world.do, 1))
    return (
        np.ascontiguousarray(world.X),
        np.ascontiguousarray(world.P),
        np.ascontiguousarray(Y),
        float(world.chi),
        float(world.sigma),
        NOISE_CODES[world.noise],
    )


def draw_rows(world: LinearWorld, rows: int, seed: int = 0, key: int = 5) -> np.ndarray:
    """Rows ``[o, delta, a, (b | eps)]`` from the sgd solver's generator (for tests and benches)."""
    p = sum(size for _, size in world.blocks)
    out = np.empty((int(rows), p))
    _draw_rows(_generator(seed, key), int(rows), world.do, world.da, *_world_arrays(world), out)
    return out


def _check_positive(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise LamfastError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


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
) -> LinearLAM:
    """Train a linear LAM by the paper's protocol: Adam on fresh minibatches from ``world``.

    Parameters
    ----------
    world : LinearWorld
        The world minibatches are drawn from (training stream ``SeedSequence(seed, (5,))``,
        independent of the world's own row stream).
    dz : int
    variant : Variant
    seed : int
        Seeds the initialisation (:func:`lamfast.gd.paper_init`, shared with ``moment-gd``) and
        the training stream.
    steps, lr, batch : optional
        Adam steps (default ``config.SGD_STEPS``), learning rate (``config.SGD_LR`` = 1e-3) and
        batch size (``config.BATCH_SIZE`` = 128).
    init : dict, optional
        Starting matrices instead of the seeded default.

    Returns
    -------
    LinearLAM
        ``solver="sgd"``; ``loss_`` is the exact population reconstruction loss of the trained
        model, ``losses_`` the minibatch loss of every step.

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
    if isinstance(dz, bool) or not isinstance(dz, int | np.integer) or not 1 <= dz <= do:
        raise LamfastError(f"dz must be an integer in [1, do={do}], got {dz!r}")
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
    lam = LinearLAM._fitted(dz, variant, "sgd", seed, A, B, C, D, spectrum, E=E, h=h, notes=notes)
    lam.loss_ = recon_loss(lam, pop)
    lam.losses_ = losses
    lam.steps_ = steps
    return lam


def adam_probe_mse(
    lam: LinearLAM,
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
    S, mu = eval_moments.cov, eval_moments.mean
    total = float(np.trace(S[sl, sl]))
    if total <= 0:
        return 1.0
    Szz = W @ S @ W.T
    Szy = W @ S[:, sl]
    bias = mu[sl] - G @ (W @ mu) - c
    mse = total - 2 * float(np.sum(G * Szy.T)) + float(np.sum((G @ Szz) * G)) + bias @ bias
    return float(max(mse, 0.0) / total)


def sgd_metrics(
    lam: LinearLAM,
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
    lam : LinearLAM
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
