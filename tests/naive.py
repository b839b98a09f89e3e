"""Slow, obviously-correct references (docs/architecture.md, conventions).

Plain numpy/scipy on materialised rows. One reference per public lamfast function, same name and
arguments where that makes sense. References never import lamfast internals: they use only the
documented public attributes of a ``LinearWorld`` (its bases X, Y, P and parameters) and the
documented stream rule (block k draws from ``SeedSequence(seed, spawn_key=(1, k))``).
"""

from __future__ import annotations

import numpy as np


# ------------------------------------------------------------------------------ rows and moments
def world_rows(world, rows: int, block_rows: int) -> np.ndarray:
    """Materialise the joint rows [o, delta, a, (b | eps)] of a world, block by block."""
    out = []
    for k, start in enumerate(range(0, rows, block_rows)):
        m = min(block_rows, rows - start)
        g = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(world.seed, spawn_key=(1, k)))
        )
        extra = {"none": 0, "exo": world.db, "gaussian": world.do, "uniform": 0}[world.noise]
        s = g.standard_normal((m, world.do + world.da + extra))
        o = s[:, : world.do]
        e = s[:, world.do : world.do + world.da]
        a = world.chi * o @ world.P.T + (1 - world.chi) * e
        q = a @ world.X.T
        cols = [o]
        if world.noise == "none":
            delta, noise = q, None
        elif world.noise == "exo":
            b = s[:, world.do + world.da :]
            delta, noise = q + world.sigma * b @ world.Y.T, b
        elif world.noise == "gaussian":
            eps = world.sigma * s[:, world.do + world.da :]
            delta, noise = q + eps, eps
        else:
            eps = world.sigma * g.random((m, world.do))
            delta, noise = q + eps, eps
        cols += [delta, a] + ([noise] if noise is not None else [])
        out.append(np.hstack(cols))
    return np.vstack(out)


def moments(X) -> tuple[float, np.ndarray, np.ndarray]:
    """(count, mean, covariance with 1/n) of rows, via np.cov in float64."""
    X = np.asarray(X, dtype=np.float64)
    return float(X.shape[0]), X.mean(axis=0), np.atleast_2d(np.cov(X, rowvar=False, bias=True))


def population_moments(world) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of [o, delta, a, noise] written out block by block from the model."""
    do, da = world.do, world.da
    c = world.chi
    I_o = np.eye(do)
    # Cov(o, o) = I; a = c P o + (1 - c) e
    Saa = c**2 * world.P @ world.P.T + (1 - c) ** 2 * np.eye(da)
    Sao = c * world.P
    if world.noise == "exo":
        Sn = world.sigma**2 * world.Y @ world.Y.T
        noise_cov, noise_delta = np.eye(world.db), world.sigma * world.Y.T  # Cov(b), Cov(b, delta)
        mean_eps = np.zeros(do)
    elif world.noise == "gaussian":
        Sn = world.sigma**2 * I_o
        noise_cov, noise_delta = Sn, Sn
        mean_eps = np.zeros(do)
    elif world.noise == "uniform":
        Sn = world.sigma**2 / 12 * I_o
        noise_cov, noise_delta = Sn, Sn
        mean_eps = np.full(do, world.sigma / 2)
    else:
        Sn, noise_cov, noise_delta, mean_eps = np.zeros((do, do)), None, None, np.zeros(do)
    X = world.X
    Sdd = X @ Saa @ X.T + Sn
    Sdo = X @ Sao
    Sda = X @ Saa
    blocks = [[I_o, Sdo.T, Sao.T], [Sdo, Sdd, Sda], [Sao, Sda.T, Saa]]
    mean = [np.zeros(do), mean_eps, np.zeros(da)]
    if noise_cov is not None:
        nd = noise_cov.shape[0]
        blocks[0].append(np.zeros((do, nd)))
        blocks[1].append(noise_delta.T)
        blocks[2].append(np.zeros((da, nd)))
        blocks.append([np.zeros((nd, do)), noise_delta, np.zeros((nd, da)), noise_cov])
        mean.append(mean_eps[:nd] if world.noise != "exo" else np.zeros(nd))
    return np.concatenate(mean), np.block(blocks)


# ------------------------------------------------------------------------------ eigen
def top_eigh(C, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of a symmetric matrix with np.linalg.eigh, descending (signs arbitrary)."""
    w, V = np.linalg.eigh(np.asarray(C, dtype=np.float64))
    return w[::-1][:k], V[:, ::-1][:, :k]


# ------------------------------------------------------------------------------ probes
def probe_mse(Z, Y) -> float:
    """In-sample MSE of the least-squares probe with intercept from rows Z to rows Y,
    normalised by the total variance of Y."""
    Z1 = np.hstack([Z, np.ones((Z.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(Z1, Y, rcond=None)
    resid = Y - Z1 @ coef
    total = np.sum((Y - Y.mean(axis=0)) ** 2)
    return float(np.sum(resid**2) / total)


def projector(V) -> np.ndarray:
    """Orthogonal projector on span(V)."""
    Q, _ = np.linalg.qr(V)
    return Q @ Q.T


# ------------------------------------------------------------------------------ linear LAMs
def split(rows, do, da=None):
    """(o, delta, a) views of joint rows [o, delta, a, ...]."""
    o, delta = rows[:, :do], rows[:, do : 2 * do]
    a = rows[:, 2 * do : 2 * do + da] if da else None
    return o, delta, a


def lam_loss(rows, do, A, B, C, D) -> float:
    """LAM loss per coordinate, E||A o + B (C o + D o') - o'||^2 / do, on materialised rows."""
    o, delta, _ = split(rows, do)
    o_next = o + delta
    pred = o @ A.T + (o @ C.T + o_next @ D.T) @ B.T
    return float(np.mean(np.sum((pred - o_next) ** 2, axis=1)) / do)


def pca_lam(rows, do, dz):
    """Identity-decoder LAM: top-dz eigenvectors of the second moment of delta (np.linalg.eigh)."""
    _, delta, _ = split(rows, do)
    w, V = top_eigh(delta.T @ delta / len(delta), dz)
    return np.eye(do), V, -V.T, V.T


def innovation_lam(rows, do, dz):
    """Learned decoder, tied encoder: regress delta on o (lstsq), PCA of the residual r."""
    o, delta, _ = split(rows, do)
    Kt, *_ = np.linalg.lstsq(o, delta, rcond=None)
    r = delta - o @ Kt
    _, V = top_eigh(r.T @ r / len(r), dz)
    A = np.eye(do) + (np.eye(do) - V @ V.T) @ Kt.T
    return A, V, -V.T, V.T


def supervised_objective(rows, do, da, K, w) -> float:
    """E||delta - B K delta||^2 / do + w E||a - E K delta - h||^2 / da with the best B (no bias)
    and the best head (with bias), both by lstsq on materialised rows."""
    _, delta, a = split(rows, do, da)
    z = delta @ K.T
    Bt, *_ = np.linalg.lstsq(z, delta, rcond=None)
    recon = np.mean(np.sum((delta - z @ Bt) ** 2, axis=1)) / do
    z1 = np.hstack([z, np.ones((len(z), 1))])
    Et, *_ = np.linalg.lstsq(z1, a, rcond=None)
    act = np.mean(np.sum((a - z1 @ Et) ** 2, axis=1)) / da
    return float(recon + w * act)


def principal_angles(U, V) -> np.ndarray:
    """Principal angles via the SVD of Q_U^T Q_V (ascending)."""
    Qu, _ = np.linalg.qr(U)
    Qv, _ = np.linalg.qr(V)
    s = np.clip(np.linalg.svd(Qu.T @ Qv, compute_uv=False), -1.0, 1.0)
    return np.sort(np.arccos(s))


# ------------------------------------------------------------------------------ frames
def frame_rows(frames, actions=None, episode_starts=None, dones=None, n_actions=None, scale=1.0):
    """Rows [o, delta, (a)] of every within-episode transition t -> t+1, one at a time.

    Frames are flattened and scaled; discrete (integer 1-d) actions are one-hot with n_actions
    columns (max id + 1 when None); transition t uses actions[t].
    """
    F = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1) * scale
    rows = []
    for t in range(len(F) - 1):
        if episode_starts is not None and episode_starts[t + 1]:
            continue
        if dones is not None and dones[t]:
            continue
        row = [F[t], F[t + 1] - F[t]]
        if actions is not None:
            a = np.asarray(actions)
            if a.dtype.kind in "iu" and a.ndim == 1:
                n = int(a.max()) + 1 if n_actions is None else n_actions
                onehot = np.zeros(n)
                onehot[a[t]] = 1.0
                row.append(onehot)
            else:
                row.append(np.atleast_1d(np.asarray(a[t], dtype=np.float64)))
        rows.append(np.concatenate(row))
    return np.array(rows)


def probe_accuracy(Z, ids, n_actions: int) -> float:
    """Argmax accuracy of the in-sample least-squares probe (with intercept) to one-hot ids."""
    Y = np.eye(n_actions)[np.asarray(ids)]
    Z1 = np.hstack([Z, np.ones((Z.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(Z1, Y, rcond=None)
    return float(np.mean(np.argmax(Z1 @ coef, axis=1) == np.asarray(ids)))


# ------------------------------------------------------------------------------ estimator (API)
def transition_rows(o, o_next, a=None, noise=None) -> np.ndarray:
    """Materialised joint rows [o, o_next - o, a, noise], differences taken in float64."""
    o = np.asarray(o, dtype=np.float64).reshape(len(o), -1)
    o_next = np.asarray(o_next, dtype=np.float64).reshape(len(o_next), -1)
    cols = [o, o_next - o]
    for x in (a, noise):
        if x is not None:
            x = np.asarray(x, dtype=np.float64)
            cols.append(x.reshape(len(x), -1))
    return np.hstack(cols)


def frame_diff_pca(o, o_next, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of the uncentred second moment of frame differences, E[delta delta^T],
    by np.linalg.eigh on the materialised rows: the linear LAM with A = I, C = -D (docs/theory.md,
    closed forms).
    Returns (eigenvalues descending, components (k x do), signs arbitrary)."""
    delta = np.asarray(o_next, dtype=np.float64) - np.asarray(o, dtype=np.float64)
    M = delta.T @ delta / delta.shape[0]
    w, V = np.linalg.eigh(M)
    return w[::-1][:k], V[:, ::-1][:, :k].T


def lam_recon(A, B, C, D, o, o_next) -> float:
    """The LAM loss per coordinate on rows: mean ||A o + B (C o + D o') - o'||^2 / do."""
    o = np.asarray(o, dtype=np.float64)
    o_next = np.asarray(o_next, dtype=np.float64)
    z = o @ C.T + o_next @ D.T
    r = o @ A.T + z @ B.T - o_next
    return float(np.mean(np.sum(r**2, axis=1)) / o.shape[1])


def llo(Z, a, o, noise=None) -> float:
    """The paper's LLO from rows: -act_mse + obs_mse + noi_mse (no noise -> noi_mse = 1)."""
    noi = 1.0 if noise is None else probe_mse(Z, noise)
    return -probe_mse(Z, a) + probe_mse(Z, o) + noi


# ------------------------------------------------------------------------------ LAM objectives
def lam_loss_rows(rows, do: int, A, B, C, D) -> float:
    """Plain LAM loss on rows [o, delta, ...]: mean of ||A o + B (C o + D o') - o'||^2 / do."""
    o = rows[:, :do]
    o_next = o + rows[:, do : 2 * do]
    z = o @ C.T + o_next @ D.T
    pred = o @ A.T + z @ B.T
    return float(np.mean(np.sum((pred - o_next) ** 2, axis=1)) / do)


def lam_objective(mean, cov, do: int, da: int, A, B, C, D, kappa=0.0, w=0.0, E=None, h=None):
    """Population objective of the augmented, supervised LAM written from the model itself.

    The model (docs/theory.md): z = C(o + k1) + D(o' + k1), o^' = A(o + k2) + B z - k2, head
    a^ = E z + h, with k1, k2 ~ N(0, kappa^2 I) independent. Each error is a linear map of the
    vector u = [o, delta, a, k1, k2, 1], whose second moment is assembled from (mean, cov) of
    [o, delta, a] and the augmentation law; E||T u||^2 = tr(T E[u u^T] T^T). Nothing is derived
    by hand: the maps T are the model's equations.
    """
    eye = np.eye(do)
    p = 2 * do + da
    M = np.zeros((p + 2 * do + 1, p + 2 * do + 1))
    M[:p, :p] = cov[:p, :p] + np.outer(mean[:p], mean[:p])
    M[:p, -1] = M[-1, :p] = mean[:p]
    M[-1, -1] = 1.0
    M[p : p + 2 * do, p : p + 2 * do] = kappa**2 * np.eye(2 * do)

    def blocks(o, d, a, k1, k2, c):
        return np.hstack([o, d, a, k1, k2, c])

    Z = np.zeros
    # z = (C + D) o + D delta + (C + D) k1
    Tz = blocks(C + D, D, Z((C.shape[0], da)), C + D, Z(C.shape), Z((C.shape[0], 1)))
    # o^' - o' = A o + A k2 + B z - k2 - o - delta
    Tr = blocks(A - eye, -eye, Z((do, da)), Z((do, do)), A - eye, Z((do, 1))) + B @ Tz
    total = float(np.trace(Tr @ M @ Tr.T)) / do
    if w > 0:
        # a - a^ = a - E z - h
        Ta = blocks(Z((da, do)), Z((da, do)), np.eye(da), Z((da, do)), Z((da, do)), -h[:, None])
        Ta = Ta - E @ Tz
        total += w * float(np.trace(Ta @ M @ Ta.T)) / da
    return total


def lam_minibatch_loss(o, o_next, a, k1, k2, mask, A, B, C, D, E=None, h=None, batch=True):
    """One minibatch of the paper's protocol, written as the model reads (docs/theory.md table).

    z = C(o + k1) + D(o' + k1); o^' = A(o + k2) + B z - k2; reconstruction averaged over rows;
    the head E z + h is scored on the rows where ``mask`` is True, averaged over those rows
    (``batch=True``) or summed and divided by the batch size.
    """
    n, do = o.shape
    z = (o + k1) @ C.T + (o_next + k1) @ D.T
    pred = (o + k2) @ A.T + z @ B.T - k2
    loss = np.sum((pred - o_next) ** 2) / (n * do)
    if E is not None and mask.any():
        r = (z @ E.T + h - a)[mask]
        loss += np.sum(r**2) / (a.shape[1] * (mask.sum() if batch else n))
    return float(loss)


# ------------------------------------------------------------------------------ exact references
def moments_two_pass(X) -> tuple[float, np.ndarray, np.ndarray]:
    """(count, mean, covariance with 1/n), two-pass in float64 with exactly rounded means.

    ``math.fsum`` makes each column mean the correctly rounded mean of the float64 data, so the
    centring ``X - mean`` is exact near a large offset (Sterbenz) and the only rounding left is
    in the products and their sum. ``np.cov`` computes the mean by plain summation instead, whose
    error (~1e-8 at offset 1e6, n = 2e5) would swamp a 1e-10 comparison.
    """
    import math

    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    mean = np.array([math.fsum(col) for col in X.T]) / n
    Xc = X - mean
    return float(n), mean, Xc.T @ Xc / n


# ------------------------------------------------------------------------------ probing latents
def heldout_probe(Z_train, Y_train, Z_test, Y_test) -> tuple[float, np.ndarray]:
    """Least-squares probe with intercept fitted on the training rows, scored on the test rows:
    (sum of squared test errors / total test variance about the test mean, test predictions)."""
    Z1 = np.hstack([Z_train, np.ones((Z_train.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(Z1, Y_train, rcond=None)
    pred = np.hstack([Z_test, np.ones((Z_test.shape[0], 1))]) @ coef
    total = np.sum((Y_test - Y_test.mean(axis=0)) ** 2)
    return float(np.sum((Y_test - pred) ** 2) / total), pred


def contingency(codes, actions, K: int, n_actions: int) -> np.ndarray:
    """Code x action counts, one transition at a time."""
    table = np.zeros((K, n_actions), dtype=np.int64)
    for k, a in zip(codes, actions, strict=True):
        table[int(k), int(a)] += 1
    return table


def balanced_accuracy(y, pred) -> float:
    """Mean recall over the classes present in y."""
    y, pred = np.asarray(y), np.asarray(pred)
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def offset_rows(frames, actions, episode_starts, K: int, n_actions: int) -> np.ndarray:
    """Rows [o_t, o_{t+K} - o_t, onehot(a_t)] of every pair K frames apart inside one episode,
    built one at a time."""
    F = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
    episode = np.cumsum(episode_starts)
    rows = []
    for t in range(len(F) - K):
        if episode[t + K] != episode[t]:
            continue
        onehot = np.zeros(n_actions)
        onehot[actions[t]] = 1.0
        rows.append(np.concatenate([F[t], F[t + K] - F[t], onehot]))
    return np.array(rows)


def partial_label_rows(frames, actions, missing, episode_starts, n_actions: int):
    """All rows [o, delta] and the labelled rows [o, delta, onehot(a)] of within-episode
    transitions t -> t + 1 (``missing[t]``: transition t has no label), one at a time."""
    everything, labelled = [], []
    F = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
    for t in range(len(F) - 1):
        if episode_starts[t + 1]:
            continue
        everything.append(np.concatenate([F[t], F[t + 1] - F[t]]))
        if not missing[t]:
            onehot = np.zeros(n_actions)
            onehot[actions[t]] = 1.0
            labelled.append(np.concatenate([everything[-1], onehot]))
    return np.array(everything), np.array(labelled)


# ------------------------------------------------------------------------------ supervision
def supervised_rows_loss(theta, delta, delta_lab, a_lab, dz: int, w: float):
    """Row-level supervised LAM loss and its gradient in theta = [K, B, E, h] (flat).

    mean over all rows of ||delta - B K delta||^2 / do  +  w * mean over the labelled rows of
    ||a - E K delta - h||^2 / da: the bias-free LAM with an identity decoder and a tied encoder
    (z = K delta), and an action head with intercept h trained on the labelled rows only.
    """
    n, do = delta.shape
    nl, da = a_lab.shape
    K, B, E, h = _unpack_supervised(theta, do, da, dz)
    z = delta @ K.T
    r1 = delta - z @ B.T
    zl = delta_lab @ K.T
    r2 = a_lab - zl @ E.T - h
    loss = np.sum(r1**2) / (n * do) + w * np.sum(r2**2) / (nl * da)
    c1, c2 = -2.0 / (n * do), -2.0 * w / (nl * da)
    dB = c1 * r1.T @ z
    dK = c1 * (r1 @ B).T @ delta + c2 * (r2 @ E).T @ delta_lab
    dE = c2 * r2.T @ zl
    dh = c2 * r2.sum(axis=0)
    return float(loss), np.concatenate([dK.ravel(), dB.ravel(), dE.ravel(), dh])


def _unpack_supervised(theta, do, da, dz):
    sizes = [dz * do, do * dz, da * dz, da]
    K, B, E, h = np.split(np.asarray(theta, dtype=np.float64), np.cumsum(sizes)[:-1])
    return K.reshape(dz, do), B.reshape(do, dz), E.reshape(da, dz), h


def fit_supervised_rows(delta, delta_lab, a_lab, dz: int, w: float, starts: int = 6, seed=0):
    """The minimum of :func:`supervised_rows_loss` over free K, B, E, h: BFGS (scipy) on every
    parameter from ``starts`` Gaussian random starts, the lowest end point kept.
    Returns (loss, K, B, E, h)."""
    import scipy.optimize

    do, da = delta.shape[1], a_lab.shape[1]
    rng = np.random.default_rng(seed)
    size = 2 * dz * do + da * dz + da
    best = None
    for _ in range(starts):
        res = scipy.optimize.minimize(
            supervised_rows_loss,
            rng.standard_normal(size) / np.sqrt(do),
            args=(delta, delta_lab, a_lab, dz, w),
            jac=True,
            method="BFGS",
            options={"gtol": 1e-11, "maxiter": 20_000},
        )
        if best is None or res.fun < best.fun:
            best = res
    return (float(best.fun), *_unpack_supervised(best.x, do, da, dz))
