"""Tutorial part 3: what fixes it — augmentation (or a tied encoder), cleaning, 1% of labels.

Three failure modes of the paper and their fixes, each computed exactly from moments:

A. A learned decoder without augmentation: the LAM reconstructs perfectly while its latent
   encodes the observation. Augmentation (kappa > 0) or a tied encoder removes that freedom.
B. Structured noise stronger than the action takes the latent. Cleaning: project a noise
   subspace, estimated from clips where the agent idles, out of the frame differences.
C. The same noise, fixed instead by action labels on 1% of the rows.

Run:  python examples/03_fixes.py [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

import lamfast


def fmt(r: dict) -> str:
    return " ".join(f"{k} {r[k]:.3f}" for k in ("act_mse", "obs_mse", "noi_mse", "recon", "llo"))


def augmentation(do: int, da: int) -> None:
    print("A. learned decoder, free encoder (z = C o + D o'), random policy, no noise")
    world = lamfast.LinearWorld(do=do, da=da, seed=2)
    m = world.population_moments()
    best = lamfast.LinearLAM(dz=da, decoder="learned", encoder="tied").fit(m)
    print("   an optimum with z = D delta:       ", fmt(lamfast.probe_metrics(best, m)))
    # Without augmentation the o-content of z is a flat direction of the loss: for any G,
    # C' = C + G and A' = A - B G predict exactly the same o' (B G o cancels). An optimiser from
    # a random initialisation stops somewhere in this valley, and then z encodes o.
    G = np.random.default_rng(0).standard_normal((da, do))
    valley = lamfast.LinearLAM(dz=da, decoder="learned", encoder="free")
    valley.A_, valley.B_ = best.A_ - best.B_ @ G, best.B_
    valley.C_, valley.D_, valley.draws_ = best.C_ + G, best.D_, ()
    print("   same loss, z = D delta + G o:       ", fmt(lamfast.probe_metrics(valley, m)))
    # Augmentation adds kappa^2 (||A - I||^2 + ||B (C + D)||^2) / do to the loss (docs/theory.md):
    # the
    # valley's points pay for G, so kappa > 0 selects G = 0.
    kappa = 0.1
    penalty = kappa**2 * (
        np.sum((valley.A_ - np.eye(do)) ** 2) + np.sum((valley.B_ @ (valley.C_ + valley.D_)) ** 2)
    )
    print(f"   kappa = {kappa} penalty of that point:  {penalty / do:.3f} (0 at G = 0)")
    fixed = lamfast.LinearLAM(dz=da, decoder="learned", encoder="free", kappa=kappa).fit(m)
    print(f"   fitted with kappa = {kappa}:           ", fmt(lamfast.probe_metrics(fixed, m)))


def clean(m: lamfast.Moments, U: np.ndarray) -> lamfast.Moments:
    """Moments after replacing delta by (I - U U^T) delta: a linear map T of the joint vector."""
    T = np.eye(m.dim)
    d = m.index("delta")
    T[d, d] -= U @ U.T
    return lamfast.Moments(m.count, T @ m.mean, T @ m.cov @ T.T, m.blocks, m.source + "+clean")


def cleaning(do: int, da: int, rows: int) -> None:
    print(f"\nB. exo noise sigma = 2 (stronger than the action), dz = da = {da}")
    world = lamfast.LinearWorld(do=do, da=da, db=da, noise="exo", sigma=2.0, seed=2)
    m = lamfast.moments_from_world(world, "wishart", rows)
    print("   before cleaning:", fmt(lamfast.probe_metrics(lamfast.LinearLAM(dz=da).fit(m), m)))
    # Idle clips (a = 0) show the noise alone. Here we simulate 2000 of them; in a dataset, pick
    # the transitions where the agent did nothing, or frame regions it never touches.
    rng = np.random.default_rng(1)
    idle = 2.0 * rng.standard_normal((2000, world.db)) @ world.Y.T
    idle_m = lamfast.moments_from_rows(idle)
    _, U = lamfast.top_eigh(idle_m.second_moment(), world.db)
    cleaned = clean(m, U)
    lam = lamfast.LinearLAM(dz=da).fit(cleaned)
    print("   after cleaning: ", fmt(lamfast.probe_metrics(lam, cleaned)))


def labels(do: int, da: int) -> None:
    print(
        f"\nC. the same noise, learned decoder, kappa = 0.1, dz = da = {da}, labels on 1% of rows"
    )
    world = lamfast.LinearWorld(do=do, da=da, db=da, noise="exo", sigma=2.0, seed=2)
    m = world.population_moments()
    for m_frac, weighting in ((0.0, "paper"), (0.01, "paper"), (0.01, "batch")):
        lam = lamfast.LinearLAM(
            dz=da,
            decoder="learned",
            encoder="free",
            kappa=0.1,
            label_fraction=m_frac,
            label_weighting=weighting,
        ).fit(m)
        w = lam.variant.label_weight
        print(
            f"   m = {m_frac:<4} {weighting:>5} (w = {w:.3f}):", fmt(lamfast.probe_metrics(lam, m))
        )
    print(
        "   With the authors' batch averaging (w = 1 - 0.99^128 = 0.72) 1% of labels rescue the\n"
        "   latent; weighting the action loss by m = 0.01 alone is not enough at sigma = 2."
    )


def main(quick: bool) -> None:
    do, da, rows = (32, 4, 100_000) if quick else (128, 8, 10_000_000)
    augmentation(do, da)
    cleaning(do, da, rows)
    labels(do, da)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    main(parser.parse_args().quick)
