"""Fresh minibatches of a :class:`~lamfast.sources.world.LinearWorld`, drawn inside numba: the
rows the ``sgd`` solver trains on and the Adam-trained probes learn from.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from .world import LinearWorld

NOISE_CODES = {"none": 0, "gaussian": 1, "exo": 2, "uniform": 3}


def _generator(seed: int, key: int) -> np.random.Generator:
    """Training (key 5) and probe (key 6) streams: disjoint from the world's row stream (key 1)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(key,))))


# ------------------------------------------------------------------------------ kernels
@njit
def _draw_rows(gen, n, do, da, X, P, Y, chi, sigma, code, out):
    """Joint rows ``[o, delta, a, (b | eps)]`` of a world, written into ``out`` (n x p).

    Draws sources in the order of the world's stream rule (o, e, then b or xi as one normal
    array; then U[0, 1) for uniform noise), so with the same generator the rows equal
    :func:`lamfast.sources.simulate.simulate_rows` up to rounding; the maps are applied structurally
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
