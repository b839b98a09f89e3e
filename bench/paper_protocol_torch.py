"""A faithful PyTorch implementation of the paper's training protocol (baseline, not lamfast).

Written from the paper's description (arXiv 2506.15691, section 3 and appendix B) and
docs/theory.md:
bias-free linear IDM and FDM (``nn.Linear`` default initialisation), fresh Gaussian minibatches of
128 from the linear world at every step, Adam with lr 1e-3, per-coordinate MSE; augmentation noise
``k1, k2 ~ N(0, kappa^2 I)`` fresh per sample; action labels on a random fraction ``m`` of each
batch, the action loss averaged over the labelled rows (the authors' scripts). Probes are linear
layers with bias trained by Adam on fresh minibatches, scored on held-out rows. float32, like the
authors' PyTorch code. Used by ``bench/grid_points.py`` (``bench/test_bench_solvers.py`` and
``python -m bench.docs_tables``) to time lamfast against it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn


def _world_tensors(world):
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return t(world.X), t(world.P), t(world.Y)


def _sample(world, X, P, Y, n, gen):
    """Rows (o, delta, a, noise target) of the linear world, drawn with torch."""
    do, da = world.do, world.da
    o = torch.randn(n, do, generator=gen)
    e = torch.randn(n, da, generator=gen)
    a = world.chi * o @ P.T + (1 - world.chi) * e
    delta = a @ X.T
    noise = None
    if world.noise == "gaussian":
        noise = world.sigma * torch.randn(n, do, generator=gen)
        delta = delta + noise
    elif world.noise == "exo":
        noise = torch.randn(n, world.db, generator=gen)
        delta = delta + world.sigma * noise @ Y.T
    elif world.noise == "uniform":
        noise = world.sigma * torch.rand(n, do, generator=gen)
        delta = delta + noise
    return o, delta, a, noise


class LinearLAM(nn.Module):
    """The paper's linear LAM: IDM ``z = C o + D o'`` and FDM ``o^' = A o + B z`` (bias-free)."""

    def __init__(self, do, dz, da, decoder="learned", encoder="free", supervised=False):
        super().__init__()
        self.decoder, self.encoder = decoder, encoder
        self.idm = nn.Linear(2 * do if encoder == "free" else do, dz, bias=False)
        self.fdm = nn.Linear(do + dz if decoder == "learned" else dz, do, bias=False)
        self.head = nn.Linear(dz, da) if supervised else None

    def encode(self, o, o_next):
        if self.encoder == "free":
            return self.idm(torch.cat([o, o_next], dim=1))
        return self.idm(o_next - o)

    def decode(self, o, z):
        if self.decoder == "learned":
            return self.fdm(torch.cat([o, z], dim=1))
        return o + self.fdm(z)


def train(world, dz, variant, steps=3000, lr=1e-3, batch=128, seed=0):
    """Train a linear LAM by the paper's protocol; returns the model."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    X, P, Y = _world_tensors(world)
    m = variant.label_fraction
    model = LinearLAM(world.do, dz, world.da, variant.decoder, variant.encoder, m > 0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    kappa = variant.kappa
    for _ in range(steps):
        o, delta, a, _ = _sample(world, X, P, Y, batch, gen)
        o_next = o + delta
        if kappa > 0:
            k1 = kappa * torch.randn(batch, world.do, generator=gen)
            k2 = kappa * torch.randn(batch, world.do, generator=gen)
            z = model.encode(o + k1, o_next + k1)
            pred = model.decode(o + k2, z) - k2
        else:
            z = model.encode(o, o_next)
            pred = model.decode(o, z)
        loss = ((pred - o_next) ** 2).mean()
        if m > 0:
            mask = torch.rand(batch, generator=gen) < m
            if mask.any():
                r = model.head(z[mask]) - a[mask]
                loss = loss + (r**2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def probe(world, model, target, steps=1000, lr=1e-3, batch=128, eval_rows=20_000, seed=0):
    """Normalised MSE of a linear probe trained by Adam from the latent to a target block."""
    gen = torch.Generator().manual_seed(seed + 1)
    X, P, Y = _world_tensors(world)
    dz = model.idm.out_features
    idx = {"a": 2, "o": 0, "noise": 3}[target]
    dy = {"a": world.da, "o": world.do}.get(target)
    if dy is None:
        if world.noise == "none":
            return 1.0
        dy = world.db if world.noise == "exo" else world.do
    lin = nn.Linear(dz, dy)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    for _ in range(steps):
        o, delta, a, noise = _sample(world, X, P, Y, batch, gen)
        y = (o, delta, a, noise)[idx]
        with torch.no_grad():
            z = model.encode(o, o + delta)
        loss = ((lin(z) - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        o, delta, a, noise = _sample(world, X, P, Y, eval_rows, gen)
        y = (o, delta, a, noise)[idx]
        z = model.encode(o, o + delta)
        mse = ((lin(z) - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    return float(mse)


def run(world, dz, variant, steps=3000, probe_steps=1000, seed=0) -> dict:
    """Train and probe one grid point; metrics and wall time."""
    start = time.perf_counter()
    model = train(world, dz, variant, steps=steps, seed=seed)
    act = probe(world, model, "a", probe_steps, seed=seed)
    obs = probe(world, model, "o", probe_steps, seed=seed)
    noi = probe(world, model, "noise", probe_steps, seed=seed)
    return {
        "act_mse": act,
        "obs_mse": obs,
        "noi_mse": noi,
        "llo": -act + obs + noi,
        "seconds": time.perf_counter() - start,
    }
