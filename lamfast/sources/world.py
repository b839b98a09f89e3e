"""``LinearWorld``: the paper's simulated linear world, its bases and its exact population moments.

Model (docs/theory.md)::

    o ~ N(0, I_do)                 observation
    a = chi * P o + (1 - chi) * e  action, e ~ N(0, I_da), P (da x do) with orthonormal rows
    q = X a                        action effect, X (do x da) with orthonormal columns
    eps                            exogenous noise: none | gaussian sigma*xi | exo sigma*Y b |
                                   uniform sigma*U[0,1)
    delta = o' - o = q + eps

Every row is a linear map of independent *sources* ``s = (o, e, b | xi, u)``: ``x = L s``. The
joint layout of ``x`` is ``[o, delta, a]`` followed by ``b`` (exo noise) or ``eps`` (gaussian or
uniform noise). Population moments are therefore exact: ``mean = L E[s]``, ``cov = L Cov(s) L^T``.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property

import numpy as np

from ..errors import LamfastError
from ..moments.core import Moments, check_moment_size

NOISE_KINDS = ("none", "gaussian", "exo", "uniform")


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Orthonormal columns from the QR decomposition of a Gaussian matrix."""
    q, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    return np.ascontiguousarray(q)


@dataclasses.dataclass(frozen=True)
class LinearWorld:
    """A simulated linear world of the paper (docs/theory.md).

    Parameters
    ----------
    do, da, db : int
        Dimensions of the observation, the action and the exogenous ("other agents") noise.
    noise : {"none", "gaussian", "exo", "uniform"}
        Kind of exogenous noise added to the frame difference.
    sigma : float
        Noise scale (>= 0).
    chi : float
        Policy determinism in [0, 1]: ``a = chi * P o + (1 - chi) * e``.
    seed : int
        Seeds the bases X, Y, P (``SeedSequence(seed, spawn_key=(0,))``) and the rows of block
        ``k`` (``SeedSequence(seed, spawn_key=(1, k))``).

    Examples
    --------
    >>> w = LinearWorld(do=16, da=4, noise="gaussian", sigma=0.5)
    >>> w.blocks
    (('o', 16), ('delta', 16), ('a', 4), ('eps', 16))
    >>> m = w.population_moments()
    >>> round(float(np.trace(m.block_cov("delta"))), 6)  # da + do * sigma^2
    8.0
    """

    do: int = 128
    da: int = 8
    db: int = 8
    noise: str = "none"
    sigma: float = 0.0
    chi: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("do", "da", "db"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise LamfastError(f"{name} must be a positive integer, got {value!r}")
        if self.noise not in NOISE_KINDS:
            raise LamfastError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {self.noise!r}")
        if not np.isfinite(self.sigma) or self.sigma < 0:
            raise LamfastError(f"sigma must be a finite number >= 0, got {self.sigma!r}")
        if not np.isfinite(self.chi) or not 0.0 <= self.chi <= 1.0:
            raise LamfastError(f"chi must be in [0, 1], got {self.chi!r}")
        if self.da > self.do:
            raise LamfastError(f"da ({self.da}) must not exceed do ({self.do})")
        if self.noise == "exo" and self.db > self.do:
            raise LamfastError(f"db ({self.db}) must not exceed do ({self.do})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise LamfastError(f"seed must be an integer, got {self.seed!r}")
        if self.seed < 0:
            raise LamfastError(f"seed must be >= 0, got {self.seed!r}")
        check_moment_size(sum(size for _, size in self.blocks), f"a world with do = {self.do}")

    def replace(self, **changes) -> LinearWorld:
        """A copy with some parameters changed (e.g. ``chi=0`` for random-action evaluation)."""
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------------------- bases
    @cached_property
    def _bases(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        # Always draw X, then Y, then P, so that a world's bases do not depend on its noise kind.
        X = _orthonormal(rng, self.do, self.da)
        Y = _orthonormal(rng, self.do, self.db)
        P = np.ascontiguousarray(_orthonormal(rng, self.do, self.da).T)
        return X, Y, P

    @property
    def X(self) -> np.ndarray:
        """Action-effect matrix (do x da), orthonormal columns."""
        return self._bases[0]

    @property
    def Y(self) -> np.ndarray:
        """Exogenous-noise basis (do x db), orthonormal columns (used when ``noise="exo"``)."""
        return self._bases[1]

    @property
    def P(self) -> np.ndarray:
        """Policy matrix (da x do), orthonormal rows."""
        return self._bases[2]

    # ----------------------------------------------------------------------------- layout
    @property
    def noise_block(self) -> str | None:
        """Name of the noise block in the joint layout: ``b``, ``eps`` or None."""
        return {"none": None, "exo": "b", "gaussian": "eps", "uniform": "eps"}[self.noise]

    @property
    def blocks(self) -> tuple[tuple[str, int], ...]:
        """Joint layout ``[o, delta, a]`` plus the noise block, as ``(name, size)`` pairs."""
        layout = [("o", self.do), ("delta", self.do), ("a", self.da)]
        if self.noise == "exo":
            layout.append(("b", self.db))
        elif self.noise in ("gaussian", "uniform"):
            layout.append(("eps", self.do))
        return tuple(layout)

    @property
    def n_gauss(self) -> int:
        """Number of standard-normal sources per row: o, e, then b (exo) or xi (gaussian)."""
        extra = {"none": 0, "exo": self.db, "gaussian": self.do, "uniform": 0}[self.noise]
        return self.do + self.da + extra

    @property
    def n_uniform(self) -> int:
        """Number of U[0, 1) sources per row (drawn after the normal ones)."""
        return self.do if self.noise == "uniform" else 0

    @cached_property
    def source_map(self) -> np.ndarray:
        """The matrix ``L`` (p x r) with ``x = L s``; sources ordered (o, e, b|xi, u)."""
        do, da = self.do, self.da
        p = sum(size for _, size in self.blocks)
        r = self.n_gauss + self.n_uniform
        L = np.zeros((p, r))
        io, idelta, ia = 0, do, 2 * do
        so, se, sn = 0, do, do + da
        L[io : io + do, so : so + do] = np.eye(do)
        # a = chi P o + (1 - chi) e
        L[ia : ia + da, so : so + do] = self.chi * self.P
        L[ia : ia + da, se : se + da] = (1.0 - self.chi) * np.eye(da)
        # delta = X a + eps
        L[idelta : idelta + do, :] = self.X @ L[ia : ia + da, :]
        if self.noise == "exo":
            nb = self.db
            L[idelta : idelta + do, sn : sn + nb] += self.sigma * self.Y
            L[2 * do + da : 2 * do + da + nb, sn : sn + nb] = np.eye(nb)
        elif self.noise in ("gaussian", "uniform"):
            L[idelta : idelta + do, sn : sn + do] += self.sigma * np.eye(do)
            L[2 * do + da : 3 * do + da, sn : sn + do] = self.sigma * np.eye(do)
        return L

    def source_mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of each (independent) source."""
        mean = np.zeros(self.n_gauss + self.n_uniform)
        var = np.ones_like(mean)
        mean[self.n_gauss :] = 0.5
        var[self.n_gauss :] = 1.0 / 12.0
        return mean, var

    @property
    def is_gaussian(self) -> bool:
        """True when every source is Gaussian (the Wishart source then applies)."""
        return self.noise != "uniform"

    # ----------------------------------------------------------------------------- moments
    def population_moments(self) -> Moments:
        """Exact population moments (``count = inf``) of the joint vector."""
        L = self.source_map
        mean_s, var_s = self.source_mean_var()
        mean = L @ mean_s
        cov = (L * var_s) @ L.T
        cov = 0.5 * (cov + cov.T)  # exact symmetry, whatever the rounding of the product
        return Moments(count=np.inf, mean=mean, cov=cov, blocks=self.blocks, source="population")

    def to_dict(self) -> dict:
        """Parameters as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)
