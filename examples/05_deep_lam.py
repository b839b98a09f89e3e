"""Tutorial part 5: a small nonlinear latent action model on the grid world, saved for probing.

Beyond the linear theory: a deep LAM in PyTorch (the setting of section 5 of "What Do Latent Action
Models Actually Learn?"). A convolutional inverse dynamics model (IDM) encodes a transition
(o, o') of the 4 x 4 grid world into a latent of dimension d, a VQ bottleneck with 5 codes (one per
action, if it learns the actions) quantises it, and an MLP forward dynamics model (FDM) predicts o'
from o and the code. Three settings:

    default      no noise in the bottom row
    high-noise   bottom row: 4 pixels lit at random every frame (intensity 1)
    labels-1pct  high noise, plus cross-entropy from the code to the true action on a fixed 1%
                 of the transitions

Per setting, ``OUT/<setting>/`` gets ``grid.npz`` (the dataset, lamfast's grid-world layout),
``codes.npy`` (N code ids), ``latents.npy`` (N x d, before quantisation) and ``codebook.npy``
(5 x d). Row j belongs to transition j: the transitions in file order, frame t to t + 1 inside an
episode (an episode of L frames gives L - 1 of them), whose action is ``actions[t]``. The script
prints, per setting, how often each code is used, its purity (the fraction of transitions whose
code's most frequent action is the true one) and the reconstruction error. Run:

    python examples/05_deep_lam.py --quick            # seconds (used by the test suite)
    python examples/05_deep_lam.py --out runs/deep    # 2000 episodes x 20 frames, a few minutes
    python examples/05_deep_lam.py --settings high-noise --steps 5000 --out runs/deep --force

Without ``--out`` the results go to a fresh temporary folder, whose path is printed. Needs PyTorch
(``pip install torch``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import lamfast
from lamfast.sources.gridworld import ACTIONS, NOISE_LEVELS, ROWS, SIZE, simulate_gridworld

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # torch is in lamfast's test extra, not in its dependencies
    raise SystemExit("examples/05_deep_lam.py needs PyTorch: pip install torch") from None

SETTINGS = {  # setting: (noise level of the bottom row, fraction of transitions with labels)
    "default": ("none", 0.0),
    "high-noise": ("high", 0.0),
    "labels-1pct": ("high", 0.01),
}
CODES = len(ACTIONS)  # one code per action: enough for the actions, too few for the noise too
LATENT = 8  # d, the dimension of the pre-quantisation latent
HIDDEN = 128
BETA = 0.25  # commitment weight, as in VQ-VAE
LABEL_WEIGHT = 1.0
BATCH = 256
LR = 1e-3
SEED = 0


def make_data(noise: str, quick: bool, seed: int = SEED) -> dict[str, np.ndarray]:
    """The grid world (``simulate_gridworld``'s dict) and its transitions, in file order.

    Adds ``o``, ``o_next`` (N x 4 x 4) and ``a`` (N): transition j goes from frame ``t[j]`` to
    ``t[j] + 1`` and never crosses an episode start. The same seed for every noise level gives the
    same trajectories and actions: only the bottom row differs between settings.
    """
    episodes, length = (200, 20) if quick else (2000, 20)
    data = simulate_gridworld(episodes, length, noise=NOISE_LEVELS[noise], seed=seed)
    frames, starts = data["frames"], data["episode_starts"]
    # Frame t has a successor in its episode unless frame t + 1 starts a new one (or t is last).
    t = np.flatnonzero(~starts[1:])
    return {**data, "t": t, "o": frames[t], "o_next": frames[t + 1], "a": data["actions"][t]}


class DeepLAM(nn.Module):
    """IDM (conv + MLP) -> VQ with ``CODES`` codes -> FDM (MLP), plus an optional action head."""

    def __init__(self, latent: int = LATENT, codes: int = CODES, hidden: int = HIDDEN):
        super().__init__()
        pixels = SIZE * SIZE
        # o and o' as two channels: the convolution sees where the lit cell was and went.
        self.idm = nn.Sequential(
            nn.Conv2d(2, 16, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * pixels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, latent),
        )
        self.codebook = nn.Embedding(codes, latent)
        # VQ-VAE's initialisation; no dead-code re-initialisation, so that collapse can show.
        self.codebook.weight.data.uniform_(-1.0 / codes, 1.0 / codes)
        self.fdm = nn.Sequential(
            nn.Linear(pixels + latent, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, pixels),
        )
        self.head = nn.Linear(latent, len(ACTIONS))  # used only when some labels are given

    def encode(self, o, o_next):
        """Pre-quantisation latent z_e (B x d)."""
        return self.idm(torch.stack([o, o_next], dim=1))

    def quantise(self, z_e):
        """Nearest code ids (B) and their codebook vectors z_q (B x d)."""
        codes = torch.cdist(z_e, self.codebook.weight).argmin(dim=1)
        return codes, self.codebook(codes)

    def forward(self, o, o_next):
        z_e = self.encode(o, o_next)
        codes, z_q = self.quantise(z_e)
        # The codebook moves towards the encoder outputs; the commitment term keeps the encoder
        # near its codes. Neither pulls on the other (detach), as in VQ-VAE.
        vq_loss = F.mse_loss(z_q, z_e.detach()) + BETA * F.mse_loss(z_e, z_q.detach())
        # Straight-through: the forward pass uses z_q, the gradient flows to z_e unchanged.
        z = z_e + (z_q - z_e).detach()
        pred = self.fdm(torch.cat([o.flatten(1), z], dim=1)).view_as(o_next)
        return pred, z, z_e, codes, vq_loss


def build_model(seed: int = SEED) -> DeepLAM:
    """A freshly initialised model; the same seed gives the same weights in every setting."""
    torch.manual_seed(seed)
    return DeepLAM()


def train(model: DeepLAM, data: dict, steps: int, label_fraction: float, seed: int = SEED):
    """Adam on random minibatches of transitions; returns the final minibatch losses."""
    rng = np.random.default_rng(seed)
    o = torch.from_numpy(data["o"])
    o_next = torch.from_numpy(data["o_next"])
    a = torch.from_numpy(data["a"])
    n = len(a)
    # The labelled transitions: a fixed, seeded subset (at least one row when any are asked for).
    labelled = np.zeros(n, dtype=bool)
    if label_fraction > 0:
        labelled[rng.choice(n, max(1, round(label_fraction * n)), replace=False)] = True
    labelled = torch.from_numpy(labelled)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, n, BATCH))
        pred, z, _, _, vq_loss = model(o[idx], o_next[idx])
        recon = F.mse_loss(pred, o_next[idx])
        loss = recon + vq_loss
        # The action loss is averaged over the labelled rows of the batch (the paper's scripts);
        # with 1% labels most batches hold a few of them, and the other rows get no action loss.
        mask = labelled[idx]
        action_loss = torch.zeros(())
        if mask.any():
            action_loss = F.cross_entropy(model.head(z[mask]), a[idx][mask])
            loss = loss + LABEL_WEIGHT * action_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"recon": recon.item(), "vq": vq_loss.item(), "action": action_loss.item()}


@torch.no_grad()
def encode(model: DeepLAM, data: dict, chunk: int = 8192) -> dict[str, np.ndarray]:
    """Codes, pre-quantisation latents and FDM predictions of every transition, in order."""
    model.eval()
    codes, latents, preds = [], [], []
    for start in range(0, len(data["a"]), chunk):
        o = torch.from_numpy(data["o"][start : start + chunk])
        o_next = torch.from_numpy(data["o_next"][start : start + chunk])
        pred, _, z_e, c, _ = model(o, o_next)
        codes.append(c.numpy())
        latents.append(z_e.numpy())
        preds.append(pred.numpy())
    return {
        "codes": np.concatenate(codes).astype(np.int64),
        "latents": np.concatenate(latents).astype(np.float32),
        "codebook": model.codebook.weight.detach().numpy().astype(np.float32).copy(),
        "pred": np.concatenate(preds),
    }


def _majority_share(keys: np.ndarray, actions: np.ndarray) -> float:
    """Fraction of rows whose action is the most frequent one among the rows of the same key."""
    group = np.unique(keys, axis=0, return_inverse=True)[1].ravel()
    counts = np.zeros((group.max() + 1, len(ACTIONS)), dtype=np.int64)
    np.add.at(counts, (group, actions), 1)
    return counts.max(axis=1).sum() / len(actions)


def summarize(data: dict, enc: dict) -> dict:
    """Code usage, purities and reconstruction errors, with numpy only."""
    codes, actions = enc["codes"], data["a"]
    n = len(codes)
    o_top = data["o"][:, :ROWS].reshape(n, -1)  # the controllable rows; row ROWS is the noise
    o_next_top = data["o_next"][:, :ROWS].reshape(n, -1)
    err = (enc["pred"] - data["o_next"]) ** 2
    return {
        "usage": np.bincount(codes, minlength=CODES),
        # Each code votes for its most frequent action.
        "purity": _majority_share(codes[:, None], actions),
        # The FDM also sees o, so a code need not mean the same action everywhere ("up" in one
        # cell, "left" in another): here each (controllable rows of o, code) votes separately.
        # In-sample, so it can pass the ceiling by a hair when the codes split the data finely.
        "given_o": _majority_share(np.hstack([o_top, codes[:, None]]), actions),
        # The best any function of (o, o') can do: bumping into a wall looks like "stay".
        "ceiling": _majority_share(np.hstack([o_top, o_next_top]), actions),
        "recon": err.mean(),
        "recon_noise_row": err[:, ROWS].mean(),  # 0.25 for high noise if the codes ignore it
    }


def save(folder: Path, data: dict, enc: dict, force: bool) -> None:
    """Write the setting's files into a hidden sibling folder, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.savez(tmp / "grid.npz", **{k: data[k] for k in ("frames", "actions", "episode_starts")})
        for name in ("codes", "latents", "codebook"):
            np.save(tmp / f"{name}.npy", enc[name])
        if folder.exists() and force:
            shutil.rmtree(folder)
        os.rename(tmp, folder)  # fails, rather than merges, if the folder appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run(out, settings, steps: int | None = None, quick: bool = False, force: bool = False):
    """Train one model per setting and save its latents; returns {setting: folder}."""
    torch.set_num_threads(2)
    out = Path(out)
    steps = steps if steps is not None else (300 if quick else 3000)
    folders = {s: out / s for s in settings}
    # Refuse before any training, not after minutes of it.
    taken = [str(f) for f in folders.values() if f.exists() and not force]
    if taken:
        raise SystemExit(f"{', '.join(taken)} exists; pass --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for setting, folder in folders.items():
        noise, label_fraction = SETTINGS[setting]
        start = time.perf_counter()
        data = make_data(noise, quick)
        model = build_model()
        losses = train(model, data, steps, label_fraction)
        enc = encode(model, data)
        save(folder, data, enc, force)
        results[setting] = summarize(data, enc)
        print(
            f"{setting}: {len(data['a'])} transitions, {steps} steps, "
            f"{time.perf_counter() - start:.1f} s (last batch: recon {losses['recon']:.4f}, "
            f"vq {losses['vq']:.4f}, action {losses['action']:.3f}) -> {folder}"
        )
    print(f"\n{'setting':<12} {'code usage':<30} purity  given o  ceiling   recon  noise row")
    for setting, r in results.items():
        usage = " ".join(str(int(u)) for u in r["usage"])
        print(
            f"{setting:<12} {usage:<30} {r['purity']:6.3f}  {r['given_o']:7.3f}  "
            f"{r['ceiling']:7.3f}  {r['recon']:6.4f}  {r['recon_noise_row']:9.4f}"
        )
    return folders


def score(folders: dict) -> dict:
    """Score every setting's codes and pre-quantisation latents with lamfast probe (held-out
    linear probes, beside the linear LAM of the same size, the supervised ceiling and chance);
    the same as ``lamfast probe OUT/<setting>/codes.npy --data OUT/<setting>/grid.npz
    --noise-region 3:4,0:4``."""
    print(
        f"\nlamfast probe (held-out, 5 folds of episodes):\n{'setting':<12} {'latent':<8} "
        "action R2  accuracy  noise held  leakage  | linear LAM R2  ceiling R2"
    )
    reports = {}
    for setting, folder in folders.items():
        for name in ("codes", "latents"):
            r = lamfast.probe_latents(
                folder / f"{name}.npy", folder / "grid.npz", noise_region=f"{ROWS}:{SIZE},0:{SIZE}"
            )
            s = r["scores"]
            mean = {k: {m: v["mean"] for m, v in s[k].items()} for k in s}
            held = 1 - mean["latent"]["noi_mse"]
            print(
                f"{setting:<12} {name:<8} {mean['latent']['act_r2']:9.3f}  "
                f"{mean['latent']['accuracy']:8.3f}  {held:10.3f}  {mean['latent']['leak']:7.3f}  "
                f"| {mean['linear_lam']['act_r2']:13.3f}  {mean['ceiling']['act_r2']:10.3f}"
            )
            reports[(setting, name)] = r
    for (setting, name), r in reports.items():
        if name == "codes":
            print(f"\n{setting}, codes: {r['verdict']}")
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--out", help="output folder (default: a fresh temporary folder)")
    parser.add_argument("--steps", type=int, help="training steps (default 3000, --quick 300)")
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing OUT/<setting>")
    args = parser.parse_args()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        parser.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    out = args.out or tempfile.mkdtemp(prefix="lamfast-deep-lam-")
    print(f"output: {out}")
    folders = run(out, settings, args.steps, args.quick, args.force)
    score(folders)
    print(
        "\npurity near the ceiling: each code is one action. Only 'given o' near it: the codes\n"
        "carry the action but their meaning changes with the cell. Both near 0.2 (chance): the\n"
        "codes went to the noise (with high noise, a noise row error below 0.25) or collapsed\n"
        "(see the usage)."
    )


if __name__ == "__main__":
    main()
