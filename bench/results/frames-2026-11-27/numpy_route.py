"""The numpy route docs/frames.md compares `lamfast fit` with: python numpy_route.py data.npz"""

import sys

import numpy as np

d = np.load(sys.argv[1])
F = d["frames"].reshape(len(d["frames"]), -1).astype(np.float64) / 255.0
a, dones = d["actions"], d["dones"]
valid = ~dones[:-1]  # transition t -> t+1 unless an episode ended at t
o, o2 = F[:-1][valid], F[1:][valid]
A = np.eye(5)[a[:-1][valid]]
X = np.hstack([o, o2 - o, A])
C = np.cov(X, rowvar=False, bias=True)
print(X.shape, C.shape)
