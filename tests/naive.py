"""Slow, obviously-correct references (STYLE 6).

Plain numpy/scipy on materialised rows. One reference per public lamfast function, same name and
arguments where that makes sense. References never import lamfast internals: they use only the
documented public attributes of a ``LinearWorld`` (its bases X, Y, P and parameters) and the
documented stream rule (block k draws from ``SeedSequence(seed, spawn_key=(1, k))``).
"""

from __future__ import annotations

import numpy as np


# ------------------------------------------------------------------------------ rows and moments
def world_rows(world, rows: int, block_rows: int) -> np.ndarray:
    """Materialise the joint rows [o, delta, a, (b | eps)] of a world, block by block."""
    out = []
    for k, start in enumerate(range(0, rows, block_rows)):
        m = min(block_rows, rows - start)
        g = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(world.seed, spawn_key=(1, k)))
        )
        extra = {"none": 0, "exo": world.db, "gaussian": world.do, "uniform": 0}[world.noise]
        s = g.standard_normal((m, world.do + world.da + extra))
        o = s[:, : world.do]
        e = s[:, world.do : world.do + world.da]
        a = world.chi * o @ world.P.T + (1 - world.chi) * e
        q = a @ world.X.T
        cols = [o]
        if world.noise == "none":
            delta, noise = q, None
        elif world.noise == "exo":
            b = s[:, world.do + world.da :]
            delta, noise = q + world.sigma * b @ world.Y.T, b
        elif world.noise == "gaussian":
            eps = world.sigma * s[:, world.do + world.da :]
            delta, noise = q + eps, eps
        else:
            eps = world.sigma * g.random((m, world.do))
            delta, noise = q + eps, eps
        cols += [delta, a] + ([noise] if noise is not None else [])
        out.append(np.hstack(cols))
    return np.vstack(out)


def moments(X) -> tuple[float, np.ndarray, np.ndarray]:
    """(count, mean, covariance with 1/n) of rows, via np.cov in float64."""
    X = np.asarray(X, dtype=np.float64)
    return float(X.shape[0]), X.mean(axis=0), np.atleast_2d(np.cov(X, rowvar=False, bias=True))


def population_moments(world) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of [o, delta, a, noise] written out block by block from the model."""
    do, da = world.do, world.da
    c = world.chi
    I_o = np.eye(do)
    # Cov(o, o) = I; a = c P o + (1 - c) e
    Saa = c**2 * world.P @ world.P.T + (1 - c) ** 2 * np.eye(da)
    Sao = c * world.P
    if world.noise == "exo":
        Sn = world.sigma**2 * world.Y @ world.Y.T
        noise_cov, noise_delta = np.eye(world.db), world.sigma * world.Y.T  # Cov(b), Cov(b, delta)
        mean_eps = np.zeros(do)
    elif world.noise == "gaussian":
        Sn = world.sigma**2 * I_o
        noise_cov, noise_delta = Sn, Sn
        mean_eps = np.zeros(do)
    elif world.noise == "uniform":
        Sn = world.sigma**2 / 12 * I_o
        noise_cov, noise_delta = Sn, Sn
        mean_eps = np.full(do, world.sigma / 2)
    else:
        Sn, noise_cov, noise_delta, mean_eps = np.zeros((do, do)), None, None, np.zeros(do)
    X = world.X
    Sdd = X @ Saa @ X.T + Sn
    Sdo = X @ Sao
    Sda = X @ Saa
    blocks = [[I_o, Sdo.T, Sao.T], [Sdo, Sdd, Sda], [Sao, Sda.T, Saa]]
    mean = [np.zeros(do), mean_eps, np.zeros(da)]
    if noise_cov is not None:
        nd = noise_cov.shape[0]
        blocks[0].append(np.zeros((do, nd)))
        blocks[1].append(noise_delta.T)
        blocks[2].append(np.zeros((da, nd)))
        blocks.append([np.zeros((nd, do)), noise_delta, np.zeros((nd, da)), noise_cov])
        mean.append(mean_eps[:nd] if world.noise != "exo" else np.zeros(nd))
    return np.concatenate(mean), np.block(blocks)


# ------------------------------------------------------------------------------ eigen
def top_eigh(C, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of a symmetric matrix with np.linalg.eigh, descending (signs arbitrary)."""
    w, V = np.linalg.eigh(np.asarray(C, dtype=np.float64))
    return w[::-1][:k], V[:, ::-1][:, :k]


# ------------------------------------------------------------------------------ probes
def probe_mse(Z, Y) -> float:
    """In-sample MSE of the least-squares probe with intercept from rows Z to rows Y,
    normalised by the total variance of Y."""
    Z1 = np.hstack([Z, np.ones((Z.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(Z1, Y, rcond=None)
    resid = Y - Z1 @ coef
    total = np.sum((Y - Y.mean(axis=0)) ** 2)
    return float(np.sum(resid**2) / total)


def projector(V) -> np.ndarray:
    """Orthogonal projector on span(V)."""
    Q, _ = np.linalg.qr(V)
    return Q @ Q.T
