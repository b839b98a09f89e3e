"""What the gradient solvers share with the paper's trainer: its initialisation
(``nn.Linear`` defaults), the layout of the flat parameter vector, and PyTorch's Adam step.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from ..errors import LamfastError
from .variant import Variant


# ------------------------------------------------------------------------------ initialisation
def paper_init(do: int, dz: int, da: int, variant: Variant, seed: int = 0) -> dict:
    """Initial parameters of the training protocol: PyTorch ``nn.Linear`` defaults, bias-free LAM.

    ``nn.Linear(fan_in, fan_out)`` draws its weight from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    (Kaiming-uniform with ``a = sqrt(5)``). The layers are:

    - IDM, free encoder: ``nn.Linear(2 do, dz)`` on ``[o, o']`` -> ``C, D``
      (bound ``1/sqrt(2 do)``);
      tied encoder: ``nn.Linear(do, dz)`` on ``delta`` -> ``D`` (bound ``1/sqrt(do)``), ``C = -D``;
    - FDM, learned decoder: ``nn.Linear(do + dz, do)`` on ``[o, z]`` -> ``A, B``
      (bound ``1/sqrt(do + dz)``); identity decoder: ``nn.Linear(dz, do)`` on ``z`` -> ``B``
      (bound ``1/sqrt(dz)``), ``A = I``;
    - action head (when ``label_weight > 0``): ``nn.Linear(dz, da)`` with bias -> ``E, h``
      (bound ``1/sqrt(dz)``).

    Draws come from ``np.random.default_rng(SeedSequence(seed, spawn_key=(4,)))`` in the order
    IDM, FDM, head; every solver that starts "from the training initialisation" calls this.

    Returns
    -------
    dict
        ``A`` (or None for the identity decoder), ``B``, ``C`` (None when tied), ``D``,
        ``E`` and ``h`` (None without supervision).
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(4,)))

    def linear(fan_in, fan_out):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=(fan_out, fan_in))

    out = {"A": None, "C": None, "E": None, "h": None}
    if variant.encoder == "free":
        W = linear(2 * do, dz)
        out["C"], out["D"] = W[:, :do].copy(), W[:, do:].copy()
    else:
        out["D"] = linear(do, dz)
    if variant.decoder == "learned":
        W = linear(do + dz, do)
        out["A"], out["B"] = W[:, :do].copy(), W[:, do:].copy()
    else:
        out["B"] = linear(dz, do)
    if variant.label_weight > 0:
        out["E"] = linear(dz, da)
        bound = 1.0 / np.sqrt(dz)
        out["h"] = rng.uniform(-bound, bound, size=da)
    return out


# ------------------------------------------------------------------------------ numba kernels
@njit
def _theta_offsets(do, dz, da, learned, free, supervised):
    """Offsets of A, B, C, D, E, h in the flat parameter vector ``theta`` (A only with a learned
    decoder, C only with a free encoder, E and h only when supervised); shared with
    lamfast.solvers.sgd."""
    off = 0
    oA = off
    if learned:
        off += do * do
    oB = off
    off += do * dz
    oC = off
    if free:
        off += dz * do
    oD = off
    off += dz * do
    oE = off
    if supervised:
        off += da * dz
    return oA, oB, oC, oD, oE, off


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


def _check_positive(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise LamfastError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
