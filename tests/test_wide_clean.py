"""Cleaning on the sketch path for wide frames (lamfast.experiments.fitwide: a second subspace
iteration on P M P in the same passes, a no-op basis from passes over the no-op transitions),
against the exact path and numpy on frames narrow enough for both."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.testing import assert_allclose

from lamfast import config
from lamfast.cli import cli
from lamfast.errors import LamfastError
from lamfast.experiments.fitframes import fit_frames
from lamfast.experiments.fitwide import NoopFrames, lifted_scores, noop_basis, subspace_moments
from lamfast.moments.sketch import SubspaceIteration
from lamfast.sources.frames.source import FrameSource
from lamfast.sources.frames.wide import thin_pass

from . import naive
from .test_wide import _rows as wide_rows
from .test_wide import write_walk

NA, NOOP, K, DZ = 5, 4, 3, 4
CLEAN_KEYS = ("recon_clean", "obs_mse_clean", "act_mse_clean")
# the sketch's columns: max(16, dz + 8) + SKETCH_OVERSAMPLE; of the no-op sketch: K + 16
COLUMNS = max(16, DZ + 8) + 16


@pytest.fixture
def noisy(tmp_path, rng):
    """The ``wide`` frames of tests/test_wide.py (16 x 32 = 512 values, actions with strong
    effects, weak iid pixel noise) with a fifth action that does nothing (the no-op) and a
    3-dimensional noise subspace ``N`` moving in every transition, stronger than any action
    (eigenvalues ~20 against ~9): the raw PCA's top directions are the noise, the no-op
    transitions reveal it (their top 3 eigenvalues ~20 against the 0.0025 floor)."""
    T, do = 6000, 512
    X = rng.standard_normal((do, NA)) * 0.3
    X[:, NOOP] = 0.0
    N, _ = np.linalg.qr(rng.standard_normal((do, K)))
    ids = rng.integers(0, NA, T)
    steps = (X[:, ids[:-1]].T + 4.5 * rng.standard_normal((T - 1, K)) @ N.T
             + 0.05 * rng.standard_normal((T - 1, do)))  # fmt: skip
    return write_walk(tmp_path / "w.npz", steps, ids), N


def _rows(path):
    return wide_rows(path, n_actions=NA)


def _rate(w, gap_at: int, columns: int, passes: int) -> float:
    """The subspace error of ``passes`` passes of subspace iteration with ``columns`` columns
    for the top ``gap_at`` eigenvectors of a spectrum ``w`` (descending): the angle decays
    like ``(lambda_{l+1} / lambda_k)^(p - 1)`` (Halko, Martinsson & Tropp 2011)."""
    return float((w[columns] / w[gap_at - 1]) ** (passes - 1))


def _spectra(path, U):
    """Descending eigenvalues of ``M`` and ``P M P`` (``P = I - U U^T``) from the rows."""
    delta = _rows(path)[:, 512:1024]
    M = delta.T @ delta / len(delta)
    P = np.eye(512) - U @ U.T
    return np.linalg.eigvalsh(M)[::-1], np.linalg.eigvalsh(P @ M @ P)[::-1], P, M


def test_clean_basis_equals_the_exact_path(noisy):
    path, N = noisy
    B = N @ np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 3.0]])  # not orthonormal
    exact, _ = fit_frames(path, DZ, method="exact", clean_basis=B)
    sketch, lam = fit_frames(path, DZ, method="sketch", clean_basis=B)
    assert lam is None and sketch["clean_dim"] == exact["clean_dim"] == K
    assert sketch["clean_from"] == exact["clean_from"] == "basis"
    # The cleaned iteration's error after p passes is eps = (lambda_{l+1} / lambda_dz)^(p - 1)
    # of P M P (5e-4 a pass here: the 4 action eigenvalues against the iid floor, ~1e-10 after
    # the default 4). The probes move to first order in the subspace error, recon (a sum of
    # eigenvalues) to second order: 10 eps on the scores leaves room for the constants while a
    # wrong direction (an O(1) error, the raw fit's act_mse differs by 0.75) fails.
    _, wc, _, _ = _spectra(path, N)
    eps = _rate(wc, DZ, COLUMNS, config.SKETCH_PASSES)
    assert eps < 1e-6
    for key in CLEAN_KEYS:
        assert sketch[key] == pytest.approx(exact[key], rel=10 * eps, abs=10 * eps), key
    assert sketch["act_acc_clean"] == exact["act_acc_clean"] == 1.0
    assert sketch["act_mse"] - sketch["act_mse_clean"] > 0.5  # the cleaning matters here
    assert max(sketch["sketch"]["clean"]["residuals"]) < 1e-8
    # the raw fit of the same passes: today's within rounding (bitwise when cleaning is off,
    # tests/test_wide.py and below)
    raw, _ = fit_frames(path, DZ, method="sketch")
    for key in ("recon", "obs_mse", "act_mse", "act_acc"):
        assert sketch[key] == pytest.approx(raw[key], rel=1e-12, abs=1e-15), key
    assert "clean" not in raw["sketch"]
    assert any("read 4 times" in n for n in sketch["notes"])  # the accuracies from kept rows


def test_noop_cleaning_equals_the_exact_path(noisy):
    path, N = noisy
    exact, _ = fit_frames(path, DZ, method="exact", noop_action=NOOP, clean_k=K)
    sketch, _ = fit_frames(path, DZ, method="sketch", noop_action=NOOP, clean_k=K)
    assert sketch["clean_dim"] == K and sketch["clean_from"] == "noop"
    # Two errors add up: the no-op basis U after p passes, eps_U = (mu_{l+1} / mu_K)^(p - 1)
    # of the no-op second moment (l = K + 16 columns), which perturbs P M P by ~eps_U
    # lambda_1(M) and so its top-dz space by that over the gap lambda_dz - lambda_{dz+1} of
    # P M P; and the cleaned iteration's own eps of test_clean_basis_equals_the_exact_path.
    rows = _rows(path)
    noop = rows[rows[:, 1024 + NOOP] == 1.0][:, 512:1024]
    mu = np.linalg.eigvalsh(noop.T @ noop / len(noop))[::-1]
    eps_u = _rate(mu, K, K + config.SKETCH_OVERSAMPLE, config.SKETCH_PASSES)
    w, wc, _, _ = _spectra(path, naive.top_eigh(noop.T @ noop / len(noop), K)[1])
    eps = _rate(wc, DZ, COLUMNS, config.SKETCH_PASSES) + eps_u * w[0] / (wc[DZ - 1] - wc[DZ])
    assert eps < 1e-6
    for key in CLEAN_KEYS:
        assert sketch[key] == pytest.approx(exact[key], rel=10 * eps, abs=10 * eps), key
    assert sketch["act_acc_clean"] == exact["act_acc_clean"]
    info = sketch["sketch"]["clean"]
    assert info["noop_transitions"] == len(noop) and info["noop_passes"] == config.SKETCH_PASSES
    reads = 2 * config.SKETCH_PASSES  # no accuracy pass: the last pass keeps its narrow rows
    assert any(f"read {reads} times" in n for n in sketch["notes"])


def test_cleaned_subspace_against_numpy(noisy):
    """Both iterations in the same passes (raw columns, then P Q_c, then U in the last) against
    numpy's top eigenvectors of M and of P M P; the no-op basis against numpy's top
    eigenvectors of E[delta delta^T] over the no-op rows."""
    path, N = noisy
    src = FrameSource(path)
    w, wc, P, M = _spectra(path, N)
    _, V = naive.top_eigh(M, DZ)
    _, Vc = naive.top_eigh(P @ M @ P, DZ)
    it = SubspaceIteration(512, DZ, 8, seed=0)
    itc = SubspaceIteration(512, DZ, 8, seed=0, projector=N)
    for _ in range(config.SKETCH_PASSES):
        thin = thin_pass(src, np.hstack([it.columns(), itc.columns(), N]))
        it.update(thin, at=0)
        itc.update(thin, at=it.l)
    # sin of the largest principal angle (see tests/test_wide.py); the margins as there
    for got, want, values in ((it, V, w), (itc, Vc, wc)):
        pairs = got.eigenpairs("M")
        assert_allclose(pairs.values, values[:DZ], rtol=1e-10)
        X = pairs.vectors
        assert np.linalg.norm(X - want @ (want.T @ X), 2) < 1e-8
    assert np.abs(N.T @ itc.eigenpairs("M").vectors).max() < 1e-13  # inside range(P)
    U, info = noop_basis(src, NOOP, K, config.SKETCH_PASSES, 16, 0, 512 - COLUMNS, False)
    rows = _rows(path)
    noop = rows[rows[:, 1024 + NOOP] == 1.0][:, 512:1024]
    _, Un = naive.top_eigh(noop.T @ noop / len(noop), K)
    assert np.linalg.norm(U - Un @ (Un.T @ U), 2) < 1e-8
    assert info["noop_transitions"] == len(noop)


def test_cleaned_learned_decoder_against_numpy(noisy):
    """A learned decoder on cleaned frames, fitted in the span of the cleaned sketch and lifted:
    its scores against the same LAM scored by numpy on the cleaned rows ``[o, P delta, a]``,
    and on fit_frames never better than the exact optimum over all the frames."""
    from lamfast.estimator import fit
    from lamfast.solvers.variant import Variant

    path, N = noisy
    src = FrameSource(path)
    it = SubspaceIteration(512, 16, 16, seed=0)
    itc = SubspaceIteration(512, 16, 16, seed=0, projector=N)
    for i in range(3):
        last = i == 2
        cols = np.hstack([it.columns(), itc.columns(), *([N] if last else [])])
        thin = thin_pass(src, cols, with_obs=last, with_actions=last, project_obs=last)
        it.update(thin, at=0)
        itc.update(thin, at=it.l)
    rows = _rows(path)
    o, delta, a = rows[:, :512], rows[:, 512:1024] @ (np.eye(512) - N @ N.T), rows[:, 1024:]
    clean_rows = np.hstack([o, delta, a])
    tr_c = float(np.mean(np.sum(delta**2, axis=1)))
    m = 20
    V = itc.last_basis() @ itc.ritz_map(m).T
    mm = subspace_moments(thin, itc, m, at=it.l)
    x = np.hstack([o @ V, delta @ V, a])
    assert_allclose(mm.mean, x.mean(0), rtol=1e-9, atol=1e-12)
    lam = fit(mm, DZ, Variant(decoder="learned"), solver="auto", seed=0)
    got, _ = lifted_scores(lam, thin, itc, mm, tr_c, at=it.l)
    A = np.eye(512) + V @ (lam.A - np.eye(m)) @ V.T
    B, C, D = V @ lam.B, lam.C @ V.T, lam.D @ V.T
    z = o @ (C + D).T + delta @ D.T
    # rows and moments sum the same values in other orders: ~1e-12 relative apart
    assert got["recon"] == pytest.approx(naive.lam_loss(clean_rows, 512, A, B, C, D), rel=1e-9)
    assert got["obs_mse"] == pytest.approx(naive.probe_mse(z, o), rel=1e-9, abs=1e-12)
    assert got["act_mse"] == pytest.approx(naive.probe_mse(z, a), rel=1e-9, abs=1e-12)
    variant = {"decoder": "learned"}
    exact, _ = fit_frames(path, DZ, method="exact", variant=variant, clean_basis=N)
    sketch, _ = fit_frames(path, DZ, method="sketch", variant=variant, clean_basis=N)
    assert exact["recon_clean"] <= sketch["recon_clean"] * (1 + 1e-9)
    assert sketch["act_acc_clean"] == exact["act_acc_clean"] == 1.0
    assert sketch["act_mse_clean"] == pytest.approx(exact["act_mse_clean"], abs=1e-4)
    assert sketch["subspace"]["clean"]["dim"] == COLUMNS
    assert any(n.startswith("subspace (clean):") for n in sketch["notes"])


def test_cleaning_bitwise_for_any_chunk_and_thread_count(noisy, monkeypatch):
    path, _ = noisy
    kw = dict(method="sketch", noop_action=NOOP, clean_k=K)
    ref, _ = fit_frames(path, DZ, **kw)
    for cf, threads in ((37, 2), (100_000, 1)):
        monkeypatch.setattr(config, "STREAM_THREADS", threads)
        got, _ = fit_frames(path, DZ, chunk_frames=cf, **kw)
        for key in (*CLEAN_KEYS, "act_acc_clean", "recon", "obs_mse", "act_mse", "sketch"):
            assert got[key] == ref[key], (key, cf)


def test_clean_basis_resumes_from_its_checkpoints(noisy, tmp_path):
    path, N = noisy
    ref, _ = fit_frames(path, DZ, method="sketch", clean_basis=N)
    ck = tmp_path / "run.npz"
    for _ in range(2):  # computed, then read back from the pass files
        got, _ = fit_frames(path, DZ, method="sketch", clean_basis=N, checkpoint=ck)
        for key in (*CLEAN_KEYS, "recon", "obs_mse", "act_mse", "sketch"):
            assert got[key] == ref[key], key
    assert sorted(p.name for p in tmp_path.glob("run.*.npz")) == [
        f"run.sketch{i}.clean.npz" for i in range(1, config.SKETCH_PASSES + 1)
    ]


def test_noop_view_yields_only_the_noop_transitions(noisy):
    path, _ = noisy
    src = FrameSource(path, chunk_frames=333)
    view = NoopFrames.of(src, NOOP)
    got = [acts for _, _, acts in view.transitions(progress=False)]
    assert all((a == NOOP).all() for a in got)
    rows = _rows(path)
    assert sum(len(a) for a in got) == int(rows[:, 1024 + NOOP].sum())
    assert sum(len(a) for _, _, a in src.transitions(progress=False)) == len(rows)  # untouched
    with pytest.raises(LamfastError, match="no index"):
        view.index()


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_hostile_cleaning_on_the_sketch(noisy, tmp_path):
    path, N = noisy
    limit = 512 - COLUMNS
    cases = [
        (dict(clean_basis=N[:500]), "has no axis of length do=512"),
        (dict(clean_basis=np.random.default_rng(1).standard_normal((512, limit + 1))),
         f"allows at most {limit}"),
        (dict(noop_action=NOOP, clean_k=limit + 1), rf"clean-k must be in \[1, {limit}\]"),
        (dict(noop_action=NOOP, clean_k=0), rf"clean-k must be in \[1, {limit}\]"),
        (dict(noop_action=5, n_actions=6), "no transitions with the noop action 5"),
        (dict(noop_action=9), "not an action id"),
        (dict(noop_action=NOOP, clean_basis=N), "not both"),
        (dict(noop_action=NOOP, checkpoint=tmp_path / "c.npz"), "drop --workers"),
    ]  # fmt: skip
    for kw, match in cases:
        with pytest.raises(LamfastError, match=match) as e:
            fit_frames(path, DZ, method="sketch", **kw)
        _one_line(e)
    assert not list(tmp_path.glob("c.*"))


def test_cli_sketch_cleaning(noisy, tmp_path):
    path, N = noisy
    np.save(tmp_path / "B.npy", N)
    args = ["fit", str(path), "--dz", str(DZ), "--method", "sketch"]
    run = CliRunner().invoke(cli, [*args, "--clean-basis", str(tmp_path / "B.npy")])
    assert run.exit_code == 0, run.output
    assert f"cleaned: {K} noise direction(s) from basis removed" in run.output
    assert "act_acc  1.000000   (was" in run.output
    run = CliRunner().invoke(
        cli, [*args, "--noop-action", str(NOOP), "--clean-k", str(K), "--json"]
    )
    assert run.exit_code == 0, run.output
    r = json.loads(run.output)
    assert r["clean_from"] == "noop" and r["clean_dim"] == K and r["act_acc_clean"] == 1.0
    run = CliRunner().invoke(
        cli, [*args, "--noop-action", str(NOOP), "--checkpoint", str(tmp_path / "c.npz")]
    )
    assert run.exit_code == 2 and "drop --workers / --scheduler / --checkpoint" in run.output


def test_supervision_in_the_subspace_weighs_labels_as_on_the_frames(noisy):
    """Action supervision fitted in the sketch's 32 coordinates weighs its labels against the
    reconstruction per frame value, as the exact fit does. Weighing the reconstruction per
    coordinate instead would make the labels worth w 32 / 512: the exact fit at that weight is
    the value the sketch must not give (0.2 to 0.3 above the right one here). The subspace
    holds the action and noise directions, so the sketch and the exact fit at the same weight
    agree to the noise floor's share (measured 1e-4; 1e-3 is far below the mis-weighting);
    cleaned, they agree too."""
    path, N = noisy
    v = {"label_fraction": 0.5}
    exact, _ = fit_frames(path, DZ, method="exact", variant=v, clean_basis=N)
    sketch, _ = fit_frames(path, DZ, method="sketch", variant=v, clean_basis=N)
    wrong, _ = fit_frames(path, DZ, method="exact", variant={"label_fraction": 0.5 * 32 / 512})
    for key in ("act_mse", "act_mse_clean", "recon", "recon_clean"):
        assert sketch[key] == pytest.approx(exact[key], abs=1e-3), key
    assert sketch["act_mse"] < wrong["act_mse"] - 0.1
    assert sketch["subspace"]["clean"]["dim"] == COLUMNS


def test_accuracies_from_kept_rows_are_those_of_a_pass(noisy, monkeypatch):
    """On frames where the raw latent's accuracy is neither chance nor 1 (the noise directions
    outrank the actions), the accuracies from the last pass's kept rows, raw (sketch columns
    from 0) and cleaned (from column l), are those of a pass over the frames."""
    path, N = noisy
    for variant in ({}, {"decoder": "learned"}):
        kept, _ = fit_frames(path, DZ, method="sketch", variant=variant, clean_basis=N)
        monkeypatch.setattr(config, "WIDE_KEPT_ROWS_BYTES", 0)
        passed, _ = fit_frames(path, DZ, method="sketch", variant=variant, clean_basis=N)
        monkeypatch.undo()
        assert kept["act_acc_chance"] + 0.1 < kept["act_acc"] < 0.95, kept["act_acc"]
        assert kept["act_acc"] == passed["act_acc"]
        assert kept["act_acc_clean"] == passed["act_acc_clean"]
        assert any("read 4 times" in n for n in kept["notes"])
        assert any("read 5 times" in n for n in passed["notes"])
