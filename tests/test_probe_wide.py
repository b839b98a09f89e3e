"""lamfast probe on frames too wide for the full moments: the thin path (per-fold thin moments,
grouped thin moments in lamfast.moments.accumulate, lamfast.probes.thin) against the full-moment
path on the same data, naive least squares on the rows, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.testing import assert_allclose

from lamfast import config
from lamfast.cli import cli
from lamfast.experiments.probe import probe_latents, to_json
from lamfast.moments.accumulate import BlockAccumulator
from lamfast.moments.thin import ThinReducer
from lamfast.probes.latents import _fold_of_unit, score_latents
from lamfast.sources.frames.source import FrameSource
from lamfast.sources.latents import RowArray

from . import naive

DA, H, W, L = 4, 16, 32, 60  # actions, frame shape (do = 512), frames per episode
REGION = "0:2,0:6"  # the exogenous pixels: rows 0-1, columns 0-5 of the frame
PIXELS = np.r_[0:6, 32:38]
# The two paths compute the same quantities (probe errors from means, covariances, cross terms
# and variances) from float64 sums of the same float32 frames in another order (blocks of 4096
# rows against 128, co-moments of other layouts, the target o'_R as its own values against
# o_R + delta_R): rounding of order 1e-15 relative per sum, grown by the conditioning of small
# (<= 10 columns) well-posed least-squares problems and by the cancellation in an error that
# is a difference of traces, so 1e-9 relative (and 1e-12 absolute, for scores near 0) is a wide
# margin (the largest difference seen here is 7e-15 relative).
RTOL, ATOL = 1e-9, 1e-12


@pytest.fixture
def frames(tmp_path, rng):
    """16 x 32 float32 frames near 100 (a large common offset): 4 actions with strong effects
    on a decaying state, iid exogenous pixels in rows 0-1, 50 episodes of 60 frames."""
    T, do = 50 * L, H * W
    X = rng.standard_normal((do, DA)) * 0.3
    ids = rng.integers(0, DA, T)
    F = np.empty((T, do))
    for t in range(T):
        if t % L == 0:
            F[t] = rng.standard_normal(do)
        else:
            F[t] = 0.8 * F[t - 1] + X[:, ids[t - 1]] + 0.05 * rng.standard_normal(do)
    F[:, PIXELS] = rng.standard_normal((T, len(PIXELS)))  # exogenous: o' does not follow o
    frames = (100.0 + F).reshape(T, H, W).astype(np.float32)
    starts = np.arange(T) % L == 0
    path = tmp_path / "w.npz"
    np.savez(path, frames=frames, actions=ids, episode_starts=starts)
    return path


def _rows(path):
    data = np.load(path)
    rows = naive.frame_rows(data["frames"], actions=data["actions"], n_actions=DA,
                            episode_starts=data["episode_starts"])  # fmt: skip
    ids = np.argmax(rows[:, -DA:], axis=1)
    return rows, ids, np.repeat(np.arange(50), L - 1)


def _latent(rows, ids, rng):
    """A latent with some of the action, some of the next exogenous pixels, and nonsense."""
    do = H * W
    o, delta = rows[:, :do], rows[:, do : 2 * do]
    noise_next = (o + delta)[:, PIXELS[:3]]
    noisy = np.eye(DA)[ids] + 0.5 * rng.standard_normal((len(ids), DA))
    return np.hstack([noisy, noise_next, np.tanh(delta[:, 200:202])]).astype(np.float32)


@pytest.fixture
def narrow(monkeypatch):
    """Runs the full-moment path (the frames fit under config.FRAMES_MAX_DIM)."""

    def run(*args, fn=probe_latents, **kw):
        monkeypatch.setattr(config, "FRAMES_MAX_DIM", 4096)
        try:
            return fn(*args, **kw)
        finally:
            monkeypatch.setattr(config, "FRAMES_MAX_DIM", 256)

    monkeypatch.setattr(config, "FRAMES_MAX_DIM", 256)  # 512 values: the thin path
    monkeypatch.setattr(config, "WIDE_BLOCK_BYTES", 8 * 600 * 128)  # 128-row blocks: 23 of them
    return run


def _same_scores(wide, full, skip=("leak",)):
    """Every score of the thin path equals the full path's within RTOL (the leakage: NaN)."""
    assert sorted(wide["scores"]) == sorted(full["scores"]) == ["chance", "latent"]
    for name, metrics in full["scores"].items():
        assert sorted(wide["scores"][name]) == sorted(metrics)
        for metric, want in metrics.items():
            got = wide["scores"][name][metric]
            if metric in skip:
                assert np.isnan(got["in_sample"]) and np.isnan(got["folds"]).all()
                continue
            for key in ("in_sample", "mean", "sd", "folds"):
                assert_allclose(got[key], want[key], rtol=RTOL, atol=ATOL,
                                err_msg=f"{name} {metric} {key}")  # fmt: skip


def test_wide_scores_are_the_full_path_and_naive_least_squares(frames, narrow, rng):
    rows, ids, episode = _rows(frames)
    Z = _latent(rows, ids, rng)
    kw = dict(noise_region=REGION, folds=4, seed=3, references=False)
    wide = probe_latents(Z, frames, **kw)
    full = narrow(Z, frames, **kw)
    _same_scores(wide, full)
    assert set(wide) == set(full)
    for key in ("transitions", "episodes", "folds", "fold_unit", "ref_dz", "actions", "codes"):
        assert wide[key] == full[key], key
    assert wide["noise_variance"] == pytest.approx(full["noise_variance"], rel=RTOL)
    assert any("leakage" in w and "not scored" in w for w in wide["warnings"])
    assert not any("leakage" in w for w in full["warnings"])
    assert "future exogenous" not in wide["verdict"]  # no leak sentence from a NaN
    # per fold against lstsq on the rows, with the same seeded draw of episodes to folds
    do = H * W
    Z = Z.astype(np.float64)
    o, delta, a = rows[:, :do], rows[:, do : 2 * do], rows[:, 2 * do :]
    noise_next = (o + delta)[:, PIXELS]
    fold = _fold_of_unit(50, 4, 3)[episode]
    got = wide["scores"]["latent"]
    for f in range(4):
        tr, te = fold != f, fold == f
        act, pred = naive.heldout_probe(Z[tr], a[tr], Z[te], a[te])
        obs = naive.heldout_probe(Z[tr], o[tr], Z[te], o[te])[0]
        noi = naive.heldout_probe(Z[tr], noise_next[tr], Z[te], noise_next[te])[0]
        # lstsq on rows near 100 against moments: rounding of 10-column problems
        assert got["act_mse"]["folds"][f] == pytest.approx(act, rel=1e-8)
        assert got["obs_mse"]["folds"][f] == pytest.approx(obs, rel=1e-8)
        assert got["noi_mse"]["folds"][f] == pytest.approx(noi, rel=1e-8)
        acc = np.mean(np.argmax(pred, axis=1) == ids[te])
        assert got["accuracy"]["folds"][f] == pytest.approx(acc, abs=1e-15)
        chance = wide["scores"]["chance"]["obs_mse"]["folds"][f]
        mu = o[tr].mean(0)
        want = np.sum((o[te] - mu) ** 2) / np.sum((o[te] - o[te].mean(0)) ** 2)
        assert chance == pytest.approx(want, rel=1e-9)
    assert got["obs_mse"]["in_sample"] == pytest.approx(naive.probe_mse(Z, o), rel=1e-9)
    assert got["noi_mse"]["in_sample"] == pytest.approx(naive.probe_mse(Z, noise_next), rel=1e-9)
    assert 0.2 < got["noi_mse"]["mean"] < 0.9 and got["act_mse"]["mean"] < 0.3  # not trivial


def test_codes_index_and_noise_arrays_on_wide_frames(frames, narrow, rng):
    """Codes (one-hot columns and the contingency table), a latent of some transitions only
    (--index) and noise arrays: the full path's scores and counts."""
    rows, ids, _ = _rows(frames)
    noisy = np.where(rng.random(len(ids)) < 0.3, rng.integers(0, 5, len(ids)), ids)
    codes = np.stack([noisy, rng.integers(0, 3, len(ids))], axis=1)
    wide = probe_latents(codes, frames, noise_columns="0:6,32:38", folds=3, references=False)
    full = narrow(codes, frames, noise_columns="0:6,32:38", folds=3, references=False)
    _same_scores(wide, full)
    assert wide["codes"] == full["codes"] and wide["latent"] == full["latent"]
    keep = np.flatnonzero(np.arange(len(ids)) % 3 != 1)
    Z = _latent(rows, ids, rng)[keep]
    wide = probe_latents(Z, frames, index=keep, folds=2, references=False, accuracy=False)
    full = narrow(Z, frames, index=keep, folds=2, references=False, accuracy=False)
    _same_scores(wide, full)
    assert wide["transitions"] == len(keep) and wide["warnings"] == full["warnings"]
    # no actions and no exogenous part: the thin layout is [o | z]
    Z = _latent(rows, ids, rng)
    wide = probe_latents(Z, frames, actions="none", folds=2, references=False)
    full = narrow(Z, frames, actions="none", folds=2, references=False)
    _same_scores(wide, full)
    assert np.isnan(wide["scores"]["latent"]["act_mse"]["mean"]) and wide["warnings"] == []
    # noise arrays saved with the data (here: rows of anything beside the transitions)
    Z = RowArray(Z)
    b = RowArray(rows[:, 3:5] + 0.1 * rng.standard_normal((len(ids), 2)), name="noise")
    kw = dict(noise=b, folds=3, references=False)
    wide = score_latents(Z, FrameSource(frames), **kw)
    full = narrow(Z, FrameSource(frames), fn=score_latents, **kw)
    _same_scores(wide, full)
    assert wide["noise_variance"] == pytest.approx(full["noise_variance"], rel=RTOL)


def test_wide_bitwise_for_any_chunk_and_thread_count(frames, narrow, monkeypatch, rng):
    rows, ids, _ = _rows(frames)
    np.save(frames.parent / "z.npy", _latent(rows, ids, rng))
    runs = []
    for chunk, threads in ((7, 1), (500, 2), (4096, 1), (64, 2)):
        monkeypatch.setattr(config, "STREAM_THREADS", threads)
        src = FrameSource(frames, chunk_frames=chunk)
        r = probe_latents(frames.parent / "z.npy", src, noise_region=REGION, references=False)
        runs.append(json.dumps(r["scores"]))
    assert all(r == runs[0] for r in runs[1:])


def test_grouped_thin_accumulator_against_numpy(rng):
    """Thin moments per group of rows (a group left empty) against numpy, bitwise for any
    chunking and thread count, and merged groups against the moments of the union."""
    n, pw, q = 1000, 37, 5
    X = rng.standard_normal((n, pw + q)) + 50.0
    g = rng.integers(0, 3, n)
    g[g == 1] = 2  # group 1 stays empty
    blocks = (("w", pw), ("y", q))
    reducer = ThinReducer(pw, (("y", q),))
    results = []
    for chunk, threads in ((1, 1), (37, 2), (1000, 1)):
        acc = BlockAccumulator(blocks, 64, threads=threads, shift=X[0], groups=3, reducer=reducer)
        for s in range(0, n, chunk):
            acc.add(X[s : s + chunk], g[s : s + chunk])
        results.append(acc.result("rows"))
    for other in results[1:]:
        for a, b in zip(results[0][::2], other[::2], strict=True):
            for name in ("mean", "cross", "cov_y", "var_w"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert results[0][1] is None
    for k in (0, 2):
        m, R = results[0][k], X[g == k]
        Rc = R - R.mean(0)
        assert m.count == len(R)
        assert_allclose(m.mean, R.mean(0), rtol=1e-14)
        assert_allclose(m.cross, Rc[:, :pw].T @ Rc[:, pw:] / len(R), rtol=1e-9, atol=1e-13)
        assert_allclose(m.cov_y, Rc[:, pw:].T @ Rc[:, pw:] / len(R), rtol=1e-9, atol=1e-13)
        assert_allclose(m.var_w, (Rc[:, :pw] ** 2).mean(0), rtol=1e-9)
    both = results[0][0].merge(results[0][2])
    Xc = X - X.mean(0)
    assert both.count == n
    assert_allclose(both.mean, X.mean(0), rtol=1e-14)
    assert_allclose(both.cross, Xc[:, :pw].T @ Xc[:, pw:] / n, rtol=1e-9, atol=1e-13)
    assert_allclose(both.cov_y, Xc[:, pw:].T @ Xc[:, pw:] / n, rtol=1e-9, atol=1e-13)
    assert_allclose(both.var_w, (Xc[:, :pw] ** 2).mean(0), rtol=1e-9)


def test_wide_path_holds_no_square_of_the_frames(frames, narrow, monkeypatch, rng):
    """With room for less than one co-moment of the full path's rows, the full path refuses and
    the thin path (per fold log2(blocks) thin moments of (do + 12) x 13 values) runs."""
    rows, ids, _ = _rows(frames)
    Z = _latent(rows, ids, rng)
    monkeypatch.setattr(config, "MAX_MOMENT_BYTES", 4 * 2**20)  # (2 do)^2 floats: 8 MiB
    with pytest.raises(ValueError, match="joint vector of 1028 values: its co-moment alone"):
        narrow(Z, frames, noise_region=REGION, references=False)
    r = probe_latents(Z, frames, noise_region=REGION, references=False)
    assert r["scores"]["latent"]["obs_mse"]["mean"] > 0
    monkeypatch.setattr(config, "MAX_MOMENT_BYTES", 2**16)
    with pytest.raises(ValueError, match="thin moments of 524 x 13 cross terms"):
        probe_latents(Z, frames, noise_region=REGION, references=False)


# ------------------------------------------------------------------------------ the command
def _run(args):
    return CliRunner().invoke(cli, args)


def test_cli_on_wide_frames(frames, narrow, rng):
    rows, ids, _ = _rows(frames)
    z = frames.parent / "z.npy"
    np.save(z, _latent(rows, ids, rng))
    args = ["probe", str(z), "--data", str(frames), "--noise-region", REGION, "--no-references"]
    r = _run([*args, "--folds", "3"])
    assert r.exit_code == 0, r.output
    assert "your latent" in r.output and "chance" in r.output
    table = r.output.splitlines()
    assert not any(line.startswith("future-exogenous leakage") for line in table)  # NaN: no row
    assert any(line.startswith("noi_mse") for line in table)
    assert "warning: frames of 512 values are probed from thin moments" in r.output
    j = _run([*args, "--folds", "3", "--json", "--out", str(frames.parent / "rep")])
    assert j.exit_code == 0, j.output
    want = probe_latents(z, frames, noise_region=REGION, references=False, folds=3)
    assert json.loads(j.output)["scores"] == json.loads(to_json(want))["scores"]
    report = json.loads((frames.parent / "rep" / "scores.json").read_text())
    assert report["scores"]["latent"]["leak"]["mean"] is None  # NaN as null


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "pass --no-references (references=False) to score the latent beside chance"),
        (["--no-references", "--workers", "1"], "in process only; drop --workers / --scheduler"),
    ],
)
def test_cli_refusals_on_wide_frames_are_one_line(frames, narrow, rng, extra, message):
    rows, ids, _ = _rows(frames)
    z = frames.parent / "z.npy"
    np.save(z, _latent(rows, ids, rng))
    r = _run(["probe", str(z), "--data", str(frames), *extra])
    assert r.exit_code == 2, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert message in lines[0] and "frames of 512 values are too wide" in lines[0]
    assert r.stdout == ""


def test_wide_scores_bitwise_for_any_blas_thread_count(tmp_path, rng):
    """64 x 64 RGB frames (do = 12,288): the scores' products over the frame values run on one
    BLAS thread (on two, OpenBLAS rounded a held-out obs_mse differently in its last bit)."""
    from threadpoolctl import threadpool_limits

    T = 300
    walk = np.cumsum(rng.integers(-3, 4, (T, 64, 64, 3)), axis=0) // 2
    frames = np.clip(walk + 128, 0, 255).astype(np.uint8)
    starts = np.zeros(T, bool)
    starts[::60] = True
    path = tmp_path / "rgb.npz"
    np.savez(path, frames=frames, actions=rng.integers(0, 5, T), episode_starts=starts)
    z = rng.standard_normal((T - 5, 7))
    got = []
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            r = probe_latents(z, path, references=False, noise_region="0:8,0:8")
            got.append(to_json(r))
    assert got[0] == got[1]
