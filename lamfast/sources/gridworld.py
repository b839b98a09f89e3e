"""The paper's grid world as a built-in frame dataset, and its linear-LAM study.

World: 4 x 4 frames. A single lit cell (value 1) moves in the top 3 x 4 region under five
actions (0 up, 1 down, 2 left, 3 right, 4 stay), clipped at the borders. The bottom row holds
exogenous noise: each of its 4 pixels is ``intensity * Bernoulli(noise_p)``, drawn afresh every
frame. Policies: ``uniform`` (each action with probability 1/5) or ``correlated`` (with
probability ``p`` the action that follows a fixed snaking cycle through the 12 cells, otherwise a
uniform action). Both policies are doubly stochastic on the 12 cells, so the uniform start
distribution is stationary and the mean frame difference is zero.

Data are written in the ``.npz`` format users bring: ``frames`` (T x 4 x 4 float32), ``actions``
(T int64; ``actions[t]`` moves frame t to frame t + 1; the last action of each episode is unused)
and ``episode_starts`` (T bool).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._files import atomic_output, check_output
from ..errors import LamfastError

ACTIONS = ("up", "down", "left", "right", "stay")
MOVES = np.array([(-1, 0), (1, 0), (0, -1), (0, 1), (0, 0)], dtype=np.int64)
ROWS, COLS = 3, 4  # controllable region; row 3 is the noise row
SIZE = 4
NOISE_LEVELS = {"none": 0.0, "low": 0.3, "high": 1.0}
POLICIES = ("uniform", "correlated")

# A Hamiltonian cycle of the 3 x 4 region (a "snake"): along row 0, down column 3, back along
# rows 2 and 1 in a zig-zag, up column 0. SNAKE[r, c] is the action that follows it.
_CYCLE = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (2, 2), (1, 2), (1, 1), (2, 1),
          (2, 0), (1, 0)]  # fmt: skip
SNAKE = np.full((ROWS, COLS), -1, dtype=np.int64)
for _i, (_r, _c) in enumerate(_CYCLE):
    _nr, _nc = _CYCLE[(_i + 1) % len(_CYCLE)]
    SNAKE[_r, _c] = int(np.flatnonzero((MOVES == (_nr - _r, _nc - _c)).all(axis=1))[0])


def step(row, col, action):
    """Next cell after ``action`` from ``(row, col)``, clipped to the 3 x 4 region (vectorised)."""
    action = np.asarray(action)
    if np.any((action < 0) | (action >= len(ACTIONS))):
        raise LamfastError(f"actions must be ids 0..{len(ACTIONS) - 1}")
    r = np.clip(np.asarray(row) + MOVES[action, 0], 0, ROWS - 1)
    c = np.clip(np.asarray(col) + MOVES[action, 1], 0, COLS - 1)
    return r, c


def render(rows, cols, noise_row=None) -> np.ndarray:
    """Frames (T x 4 x 4 float32) with the lit cell at ``(rows[t], cols[t])`` and a noise row."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    T = rows.shape[0]
    frames = np.zeros((T, SIZE, SIZE), dtype=np.float32)
    frames[np.arange(T), rows, cols] = 1.0
    if noise_row is not None:
        frames[:, ROWS, :] = noise_row
    return frames


def trajectory(start, actions, noise_row=None) -> np.ndarray:
    """Frames of one episode: ``start`` cell, then one frame after each action."""
    r, c = [int(start[0])], [int(start[1])]
    for a in actions:
        nr, nc = step(r[-1], c[-1], int(a))
        r.append(int(nr))
        c.append(int(nc))
    return render(r, c, noise_row)


def simulate_gridworld(
    episodes: int = 2000,
    length: int = 50,
    *,
    noise: float = 0.0,
    noise_p: float = 0.5,
    policy: str = "uniform",
    p: float = 0.8,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Simulate ``episodes`` episodes of ``length`` frames.

    Parameters
    ----------
    noise : float
        Intensity of a lit noise pixel (0 = no noise).
    noise_p : float
        Probability that a noise pixel is lit.
    policy : {"uniform", "correlated"}
    p : float
        Correlated policy: probability of following the snake.

    Returns
    -------
    dict
        ``frames`` (T x 4 x 4 float32), ``actions`` (T int64), ``episode_starts`` (T bool),
        ``T = episodes * length``.

    Examples
    --------
    >>> d = simulate_gridworld(episodes=2, length=3, seed=1)
    >>> d["frames"].shape, d["episode_starts"].tolist()
    ((6, 4, 4), [True, False, False, True, False, False])
    """
    if policy not in POLICIES:
        raise LamfastError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if episodes < 1 or length < 2:
        raise LamfastError("need episodes >= 1 and length >= 2")
    if not (np.isfinite(noise) and noise >= 0):
        raise LamfastError(f"noise intensity must be >= 0, got {noise!r}")
    for name, value in (("noise_p", noise_p), ("p", p)):
        if not 0.0 <= value <= 1.0:
            raise LamfastError(f"{name} must be in [0, 1], got {value!r}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(4,)))
    E, L = int(episodes), int(length)
    rows = np.empty((E, L), dtype=np.int64)
    cols = np.empty((E, L), dtype=np.int64)
    acts = np.empty((E, L), dtype=np.int64)
    cell = rng.integers(0, ROWS * COLS, E)
    r, c = cell // COLS, cell % COLS
    for t in range(L):
        rows[:, t], cols[:, t] = r, c
        a = rng.integers(0, len(ACTIONS), E)
        if policy == "correlated":
            follow = rng.random(E) < p
            a = np.where(follow, SNAKE[r, c], a)
        acts[:, t] = a
        r, c = step(r, c, a)
    lit = rng.random((E * L, SIZE)) < noise_p
    noise_row = (noise * lit).astype(np.float32)
    frames = render(rows.ravel(), cols.ravel(), noise_row)
    starts = np.zeros((E, L), dtype=bool)
    starts[:, 0] = True
    return {"frames": frames, "actions": acts.ravel(), "episode_starts": starts.ravel()}


def write_gridworld(out, *, force: bool = False, **options) -> dict:
    """Simulate and write a grid-world dataset to ``out`` (``.npz``), atomically.

    An existing ``out`` is refused unless ``force``; missing folders are created.
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise LamfastError(f"the grid world is written as .npz, got {out}")
    check_output(out, force=force, create_folder=True)
    data = simulate_gridworld(**options)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **data)
    return {"out": str(out), "frames": int(data["frames"].shape[0]), **options}


# ============================================================================ the study
TOP = np.arange(ROWS * SIZE)  # flattened indices of the controllable region (rows 0..2)
BOTTOM = np.arange(ROWS * SIZE, SIZE * SIZE)  # the noise row
