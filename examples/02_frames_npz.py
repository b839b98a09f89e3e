"""Tutorial part 2: the same question on frame data stored in an ``.npz`` file.

The script first writes a small dataset in the layout most recorders produce: ``frames`` of shape
(episodes, steps, height, width) and the ``actions`` taken between consecutive frames, shape
(episodes, steps - 1, da). (Here the frames come from a linear world with a moving "other agent":
swap in your own file.) It then builds the rows ``[o, delta, a]`` from consecutive frames inside
each episode, reduces them to moments with ``lamfast.moments_from_rows``, fits the LAM and probes
its latent against the recorded actions. Run:

    python examples/02_frames_npz.py [--quick] [--npz PATH]

``--npz`` takes either that layout or the one ``lamfast fit`` reads (one time axis: ``frames``
(T, ...) with ``actions`` (T or T - 1 rows) and optionally ``episode_starts`` or ``dones``; or
pairs ``o`` / ``o_next``), which goes through ``lamfast.FrameSource``, the path of ``lamfast fit``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import lamfast


def write_dataset(path: str, episodes: int, steps: int, side: int, da: int, sigma: float) -> None:
    """Frames o_{t+1} = o_t + X a_t + sigma * Y b_t: actions plus a stronger distractor."""
    rng = np.random.default_rng(0)
    pixels = side * side
    X = np.linalg.qr(rng.standard_normal((pixels, da)))[0]  # what each action does to the image
    Y = np.linalg.qr(rng.standard_normal((pixels, da)))[0]  # what the other agent does
    actions = rng.standard_normal((episodes, steps - 1, da))
    moves = actions @ X.T + sigma * rng.standard_normal((episodes, steps - 1, da)) @ Y.T
    first = rng.standard_normal((episodes, 1, pixels))
    frames = np.concatenate([first, first + np.cumsum(moves, axis=1)], axis=1)
    frames = frames.reshape(episodes, steps, side, side).astype(np.float32)
    np.savez(path, frames=frames, actions=actions.astype(np.float32))


def layout(path: str) -> str:
    """``episodes`` (frames per episode, this script's layout) or ``lamfast`` (one time axis)."""
    with np.load(path) as data:
        keys = set(data.files)
        if keys & {"o", "o_next", "episode_starts", "dones"}:
            return "lamfast"
        if "frames" not in keys or "actions" not in keys:
            raise SystemExit(
                f"{path}: needs 'frames' and 'actions' (found {sorted(keys)}): either frames "
                "(episodes, steps, ...) with actions (episodes, steps - 1, da), or the layout of "
                "lamfast fit (frames (T, ...) with actions of T or T - 1 rows)"
            )
        frames, actions = data["frames"], data["actions"]
    per_episode = actions.ndim == 3 and actions.shape[:2] == (frames.shape[0], frames.shape[1] - 1)
    if per_episode and frames.ndim >= 3:
        return "episodes"
    if actions.shape[0] in (frames.shape[0], frames.shape[0] - 1):
        return "lamfast"
    raise SystemExit(
        f"{path}: frames {frames.shape} and actions {actions.shape} match neither layout: frames "
        "(episodes, steps, ...) with actions (episodes, steps - 1, da), or frames (T, ...) with "
        "actions of T or T - 1 rows (then lamfast fit reads it too)"
    )


def transition_moments(path: str) -> lamfast.Moments:
    """Moments of [o, delta, a] over consecutive frames; differences never cross episodes."""
    data = np.load(path)
    frames, actions = data["frames"], data["actions"]
    episodes, steps = frames.shape[:2]
    pixels = int(np.prod(frames.shape[2:]))
    # Convert to float64 before differencing (uint8 frames would wrap around).
    f = frames.reshape(episodes, steps, pixels).astype(np.float64)
    o = f[:, :-1].reshape(-1, pixels)
    delta = (f[:, 1:] - f[:, :-1]).reshape(-1, pixels)
    a = actions.reshape(-1, actions.shape[-1]).astype(np.float64)
    rows = np.hstack([o, delta, a])
    blocks = [("o", pixels), ("delta", pixels), ("a", a.shape[1])]
    # For files larger than memory, call moments_from_rows per chunk of episodes and merge the
    # results with Moments.merge (or use lamfast.moments_from_transitions on memmapped arrays).
    return lamfast.moments_from_rows(rows, blocks)


def main(quick: bool, npz: str | None) -> None:
    episodes, steps, side, da = (20, 50, 6, 3) if quick else (100, 300, 16, 8)
    with tempfile.TemporaryDirectory() as tmp:
        path = npz or os.path.join(tmp, "frames.npz")
        if not os.path.exists(path):
            write_dataset(path, episodes, steps, side, da, sigma=2.0)
        kind = layout(path)
        if kind == "lamfast":  # the reader of `lamfast fit`: episodes, chunks, dtypes handled
            m = lamfast.FrameSource(path).moments()
        else:
            m = transition_moments(path)
        if not m.has("a"):
            raise SystemExit(f"{path}: has no actions to probe the latent with")
        da = m.size("a")
        print(f"{path.rsplit('/', 1)[-1]}: {m.count:.0f} transitions, do={m.size('o')}, da={da}")

        lam = lamfast.LinearLAM(dz=da).fit(m)
        r = lamfast.probe_metrics(lam, m)
        print(f"dz = da = {da}: act_mse {r['act_mse']:.3f}, obs_mse {r['obs_mse']:.3f}")
        print("  eigenvalues of E[delta delta^T]:", np.round(lam.spectrum_[: 2 * da], 2).tolist())
        print(f"  score (noise unknown, so -recon): {lam.score(m):.4f}")
        # The noise is not observed in real data, so the noise probe cannot be run (noi_mse is
        # reported as 1 by definition); the action probe and the spectrum tell the story: the top
        # eigenvalues form two groups, and act_mse ~ 1 says the top group is not the action.
        wide = lamfast.LinearLAM(dz=2 * da).fit(m)
        print(f"dz = 2*da = {2 * da}: act_mse {lamfast.probe_metrics(wide, m)['act_mse']:.3f}")

        # The estimator also takes the arrays themselves (same moments, one pass).
        if kind == "lamfast":
            src = lamfast.FrameSource(path)
            chunks = list(src.transitions())
            o, o_next = np.vstack([c[0] for c in chunks]), np.vstack([c[1] for c in chunks])
            a = np.vstack([src.action_rows(c[2]) for c in chunks])
        else:
            data = np.load(path)
            f = data["frames"].reshape(data["frames"].shape[0], data["frames"].shape[1], -1)
            o, o_next = f[:, :-1].reshape(-1, f.shape[-1]), f[:, 1:].reshape(-1, f.shape[-1])
            a = data["actions"].reshape(-1, da)
        direct = lamfast.LinearLAM(dz=da).fit(o, o_next, a)
        # Compare subspaces through their projectors (eigenvectors are defined up to sign).
        P1, P2 = direct.components_.T @ direct.components_, lam.components_.T @ lam.components_
        same = np.allclose(P1, P2, atol=1e-8)
        print(f"LinearLAM.fit(o, o_next, a) finds the same latent directions: {same}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument(
        "--npz", help="an existing .npz: frames per episode, or the layout lamfast fit reads"
    )
    args = parser.parse_args()
    main(args.quick, args.npz)
