"""lamfast's SGD kernel against an independent PyTorch implementation of the paper's protocol.

``bench/paper_protocol_torch.py`` trains the paper's linear LAM the way the authors' PyTorch code
does (``nn.Linear`` initialisation, fresh minibatches of 128, Adam 1e-3, float32). lamfast's
``solver="sgd"`` is a numba re-implementation of the same protocol (float64, its own random
streams). Trained from independent seeds, both give random endpoints; the test checks that the two
distributions agree: the exact population loss and the closed-form action probe of the trained
matrices, mean against mean.
"""

from __future__ import annotations

import numpy as np
import pytest

from lamfast import LinearLAM, LinearWorld, Variant, fit
from lamfast.probes.closed import latent_map, probe_mse
from lamfast.solvers.fitted import recon_loss

torch = pytest.importorskip("torch")  # in the test extra; skipped only by hand-made installs
from bench import paper_protocol_torch as paper  # noqa: E402  (the reference: must import)

SEEDS = range(6)
STEPS = 1500  # short of convergence on purpose: finite training is what the protocols share


def _from_torch(model, world, dz, variant) -> LinearLAM:
    """The trained torch modules as lamfast matrices: z = C o + D o', o^' = A o + B z."""
    do = world.do
    W = model.idm.weight.detach().double().numpy()
    F = model.fdm.weight.detach().double().numpy()
    if variant.encoder == "free":
        C, D = W[:, :do], W[:, do:]
    else:  # tied: z = W (o' - o)
        C, D = -W, W
    if variant.decoder == "learned":
        A, B = F[:, :do], F[:, do:]
    else:  # identity: o^' = o + B z
        A, B = np.eye(do), F
    return LinearLAM._fitted(dz, variant, "torch-paper", 0, A, B, C, D, spectrum=np.zeros(dz))


def _scores(lam, m):
    return recon_loss(lam, m), probe_mse(latent_map(lam, m), m, "a")


@pytest.mark.parametrize(
    "variant",
    [
        Variant(decoder="learned", encoder="free", kappa=0.0),
        Variant(decoder="identity", encoder="free", kappa=0.1),
    ],
    ids=["learned-free", "identity-free-kappa"],
)
def test_numba_sgd_matches_the_pytorch_protocol(variant):
    torch.set_num_threads(1)
    world = LinearWorld(do=12, da=2, noise="gaussian", sigma=0.5, seed=3)
    m = world.population_moments()
    dz = 2
    ours, theirs = [], []
    for seed in SEEDS:
        lam = fit(m, dz, variant, solver="sgd", world=world, seed=seed,
                  solver_options={"steps": STEPS})  # fmt: skip
        ours.append(_scores(lam, m))
        model = paper.train(world, dz, variant, steps=STEPS, seed=seed)
        theirs.append(_scores(_from_torch(model, world, dz, variant), m))
    ours, theirs = np.array(ours), np.array(theirs)
    n = len(SEEDS)
    # Same protocol, independent seeds: the difference of the two means has standard deviation
    # sqrt(s1^2 / n + s2^2 / n). Six estimated SDs (a sample SD from n = 6 is rarely below half
    # the true one, so at least ~3 true SDs: a false alarm about once in 700 runs, never seen)
    # plus a floor for float32 (torch) against float64 (lamfast) rounding along 1500 Adam steps,
    # far below the seed spread, of 1e-3 of the value.
    sd = np.sqrt(ours.var(axis=0, ddof=1) / n + theirs.var(axis=0, ddof=1) / n)
    tol = 6 * sd + 1e-3 * np.abs(theirs.mean(axis=0))
    gap = np.abs(ours.mean(axis=0) - theirs.mean(axis=0))
    assert (gap <= tol).all(), (ours.mean(axis=0), theirs.mean(axis=0), sd)
    # and the test can tell protocols apart: ten times fewer steps moves the means far outside
    short = np.array(
        [
            _scores(
                fit(
                    m,
                    dz,
                    variant,
                    solver="sgd",
                    world=world,
                    seed=s,
                    solver_options={"steps": STEPS // 10},
                ),
                m,
            )
            for s in SEEDS
        ]  # fmt: skip
    )
    assert (np.abs(short.mean(axis=0) - theirs.mean(axis=0)) > tol).any()
