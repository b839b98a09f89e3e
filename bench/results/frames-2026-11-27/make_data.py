# make_data.py: python make_data.py 3e5 data.npz
import sys

import numpy as np

T, out = int(float(sys.argv[1])), sys.argv[2]
rng = np.random.default_rng(123)
frames = np.zeros((T, 16, 16), np.uint8)
actions, dones = rng.integers(0, 5, T), np.zeros(T, bool)
moves = np.array([(-1, 0), (1, 0), (0, -1), (0, 1), (0, 0)])
y, x, t_end = 5, 7, rng.integers(100, 1000)
for t in range(T):
    frames[t, y : y + 2, x : x + 2] = 255
    if t == t_end:  # episode ends: respawn
        dones[t], y, x, t_end = (
            True,
            rng.integers(0, 11),
            rng.integers(0, 15),
            t + rng.integers(100, 1000),
        )
    else:
        dy, dx = moves[actions[t]]
        y, x = min(max(y + dy, 0), 10), min(max(x + dx, 0), 14)
frames[:, 12:, :] = (rng.random((T, 4, 16)) < 0.5) * 200  # the flickering TV strip
np.savez(out, frames=frames, actions=actions, dones=dones)
