"""Frame files -> moments, probes, cleaning, save/encode, bad input (lamfast.sources.frames,
CLI)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from lamfast import LinearWorld, stream_moments
from lamfast.cli import cli
from lamfast.errors import LamfastError
from lamfast.experiments.fitframes import fit_frames, load_lam, save_lam
from lamfast.probes.closed import latent_map
from lamfast.sources.export import read_spec, write_world
from lamfast.sources.frames.preprocess import Preprocess
from lamfast.sources.frames.source import FrameSource, frame_moments
from lamfast.sources.gridworld import simulate_gridworld

from . import naive
from .conftest import RTOL

# Moments from rows are sums of n products of O(1) numbers; float64 summation error is at most
# ~n * eps relative in the worst case and ~sqrt(n) * eps typically: for n <= 1e3, 1e-12 relative
# bounds it with margin, so RTOL (1e-7) leaves five orders of room while any logic error (a
# transition too many or too few changes the moments by O(1/n) = 1e-3) is caught.
ATOL = 1e-12


def _traj(rng, T=600, shape=(3, 4), n_actions=5, dtype=np.float32):
    frames = rng.standard_normal((T, *shape)).astype(dtype)
    actions = rng.integers(0, n_actions, T)
    return frames, actions


def _check_moments(m, rows):
    n, mean, cov = naive.moments(rows)
    assert m.count == n
    assert_allclose(m.mean, mean, rtol=RTOL[np.float64], atol=ATOL)
    assert_allclose(m.cov, cov, rtol=RTOL[np.float64], atol=ATOL)


# ------------------------------------------------------------------------------ chunking
@pytest.mark.parametrize("flag", ["episode_starts", "dones"])
def test_chunked_equals_whole_with_boundaries_at_chunk_edges(tmp_path, rng, flag):
    frames, actions = _traj(rng)
    T = len(frames)
    # episode starts exactly at multiples of 50 and 7 (chunk edges below) plus one elsewhere;
    # with dones, frame t + 1 starts an episode when dones[t]
    starts = np.zeros(T, bool)
    starts[[0, 49, 50, 100, 343, 350, 351, 599]] = True
    if flag == "episode_starts":
        kw = {"episode_starts": starts}
    else:
        kw = {"dones": np.r_[starts[1:], False]}
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions, **kw)
    np.savez_compressed(tmp_path / "c.npz", frames=frames, actions=actions, **kw)
    rows = naive.frame_rows(frames, actions, episode_starts=starts)
    results = []
    for cf in (1, 7, 50, 64, T, 10 * T):
        for name in ("d.npz", "c.npz"):
            m = frame_moments(tmp_path / name, chunk_frames=cf, block_rows=64)
            results.append(m)
    _check_moments(results[0], rows)
    assert FrameSource(tmp_path / "c.npz").n_transitions == len(rows)
    for m in results[1:]:  # bitwise: blocks are keyed by global transition index
        assert np.array_equal(m.mean, results[0].mean)
        assert np.array_equal(m.cov, results[0].cov)


def test_npy_directory_and_pairs(tmp_path, rng):
    frames, _ = _traj(rng, T=200, shape=(6,), dtype=np.float64)
    d = tmp_path / "dir"
    d.mkdir()
    np.save(d / "a.npy", frames[:120])
    np.save(d / "b.npy", frames[120:])
    rows = np.vstack([naive.frame_rows(frames[:120]), naive.frame_rows(frames[120:])])
    for cf in (1, 13, 500):
        _check_moments(frame_moments(d, chunk_frames=cf, block_rows=32), rows)
    # pairs: o / o_next
    np.savez(tmp_path / "p.npz", o=frames[:-1], o_next=frames[1:])
    _check_moments(frame_moments(tmp_path / "p.npz", chunk_frames=17), naive.frame_rows(frames))


def test_uint8_scale_crop_downsample(tmp_path, rng):
    frames = rng.integers(0, 256, (90, 8, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "f.npy", frames)
    m = frame_moments(tmp_path / "f.npy", preprocess=Preprocess(crop="1:7,2:6", downsample=2))
    x = frames[:, 1:7, 2:6].astype(np.float64) / 255.0
    ref = x.reshape(90, 3, 2, 2, 2, 3).mean(axis=(2, 4))
    _check_moments(m, naive.frame_rows(ref))
    assert m.size("o") == 3 * 2 * 3


def test_zarr_group(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    frames, actions = _traj(rng, T=100)
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    g.create_array("frames", data=frames, chunks=(16, 3, 4))
    g.create_array("actions", data=actions, chunks=(16,))
    m = frame_moments(tmp_path / "d.zarr", chunk_frames=9)
    _check_moments(m, naive.frame_rows(frames, actions))


# ------------------------------------------------------------------------------ probes
def test_one_hot_probe_mse_and_accuracy_match_lstsq(tmp_path, rng):
    T, n_actions = 800, 4
    frames = rng.standard_normal((T, 10))
    actions = rng.integers(0, n_actions, T)
    # make the action visible in the frame difference along a few directions, plus noise
    effect = rng.standard_normal((n_actions, 10))
    for t in range(T - 1):
        frames[t + 1] = frames[t] + effect[actions[t]] + 0.8 * rng.standard_normal(10)
    starts = np.zeros(T, bool)
    starts[[0, 300, 301]] = True
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions, episode_starts=starts)
    res, lam = fit_frames(tmp_path / "d.npz", 3, chunk_frames=37, block_rows=100)
    rows = naive.frame_rows(frames, actions, episode_starts=starts)
    o, delta, onehot = rows[:, :10], rows[:, 10:20], rows[:, 20:]
    ids = onehot.argmax(axis=1)
    Z = lam.encode(o, o + delta)
    # Schur-complement MSE vs lstsq residuals: both exact in float64 for a well-conditioned
    # 3-column design; the difference is rounding, O(cond * eps) ~ 1e-13.
    assert_allclose(res["act_mse"], naive.probe_mse(Z, onehot), rtol=RTOL[np.float64])
    assert_allclose(res["obs_mse"], naive.probe_mse(Z, o), rtol=RTOL[np.float64])
    # continuous frames: no two probe scores tie, so argmax agrees exactly
    assert res["act_acc"] == naive.probe_accuracy(Z, ids, n_actions)
    assert res["act_acc"] > res["act_acc_chance"] + 0.2
    assert res["act_acc_chance"] == pytest.approx(np.bincount(ids).max() / len(ids))
    assert res["transitions"] == len(rows)


def test_given_action_count(tmp_path, rng):
    frames, actions = _traj(rng, T=50, n_actions=3)
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions)
    m = frame_moments(tmp_path / "d.npz", n_actions=6)
    _check_moments(m, naive.frame_rows(frames, actions, n_actions=6))
    bad = int(np.flatnonzero(actions[:-1] >= 2)[0])
    with pytest.raises(LamfastError, match=f"action {bad} = {actions[bad]} is not an action id"):
        frame_moments(tmp_path / "d.npz", n_actions=2, chunk_frames=7)
    # padding in the unused last action of an episode is harmless
    actions[-1] = -1
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions)
    m = frame_moments(tmp_path / "d.npz", n_actions=6)
    _check_moments(m, naive.frame_rows(frames, actions, n_actions=6))


# ------------------------------------------------------------------------------ cleaning
def _grid(tmp_path, noise, name):
    data = simulate_gridworld(episodes=300, length=30, noise=noise, seed=7)
    np.savez(tmp_path / name, **data)
    return tmp_path / name


def test_cleaning_with_exact_noise_subspace_recovers_noise_free_fit(tmp_path):
    # the same moves (same seed; the noise row is drawn after them), with and without noise
    noisy, clean = _grid(tmp_path, 1.0, "noisy.npz"), _grid(tmp_path, 0.0, "clean.npz")
    U = np.eye(16)[:, 12:]  # the noise row: pixels 12..15
    np.save(tmp_path / "U.npy", U)
    dz = 8
    ref, lam_ref = fit_frames(clean, dz)
    raw, _ = fit_frames(noisy, dz)
    got, lam = fit_frames(noisy, dz, clean_basis=tmp_path / "U.npy")
    # without cleaning the noise row takes 4 of the 8 latent directions: a different latent
    assert abs(raw["act_mse"] - ref["act_mse"]) > 1e-3
    # cleaned delta equals the noise-free delta exactly, so the fit is the noise-free fit; the
    # remaining difference is the rounding of (I - UU^T) Sigma (I - UU^T): ~1e-15.
    assert_allclose(got["act_mse_clean"], ref["act_mse"], rtol=1e-9)
    assert_allclose(got["act_acc_clean"], ref["act_acc"], rtol=0, atol=0)
    assert_allclose(got["recon_clean"] * 16, ref["recon"] * 16, rtol=1e-9, atol=1e-12)
    assert_allclose(lam.B @ lam.B.T, lam_ref.B @ lam_ref.B.T, atol=1e-9)
    # the no-op ("stay") transitions change only the noise row, so their top-4 directions are
    # exactly the noise subspace: the same result from --noop-action
    via_noop, _ = fit_frames(noisy, dz, noop_action=4, clean_k=4)
    assert_allclose(via_noop["act_mse_clean"], ref["act_mse"], rtol=1e-9)
    assert via_noop["act_mse_clean"] < via_noop["act_mse"]
    with pytest.raises(LamfastError, match=r"clean-k must be in \[1, 16\], got 0"):
        fit_frames(noisy, dz, noop_action=4, clean_k=0)  # never read as the default 1


# ------------------------------------------------------------------------------ save / encode
def test_save_load_encode_roundtrip(tmp_path, rng):
    frames, actions = _traj(rng, T=120)
    starts = np.zeros(120, bool)
    starts[[0, 60]] = True
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions, episode_starts=starts)
    _, lam = fit_frames(tmp_path / "d.npz", 3, variant={"decoder": "learned"})
    save_lam(lam, tmp_path / "fit.npz")
    back = load_lam(tmp_path / "fit.npz")
    for name in "ABCD":
        assert np.array_equal(getattr(back, name), getattr(lam, name))
    r = CliRunner().invoke(
        cli,
        [
            "encode",
            str(tmp_path / "fit.npz"),
            str(tmp_path / "d.npz"),
            "--out",
            str(tmp_path / "z.npy"),
        ],  # fmt: skip
    )
    assert r.exit_code == 0, r.output
    rows = naive.frame_rows(frames, episode_starts=starts)
    o, delta = rows[:, :12], rows[:, 12:24]
    assert_allclose(np.load(tmp_path / "z.npy"), o @ lam.C.T + (o + delta) @ lam.D.T, atol=1e-12)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("suffix", ["", ".npz"])
def test_simulate_linear_then_fit_equals_stream(tmp_path, suffix):
    world = LinearWorld(do=8, da=3, db=2, noise="exo", sigma=1.5, chi=0.3, seed=5)
    out = tmp_path / f"data{suffix}"
    r = CliRunner().invoke(
        cli,
        ["simulate", "linear", "--do", "8", "--da", "3", "--db", "2", "--noise", "exo",
         "--sigma", "1.5", "--chi", "0.3", "--seed", "5", "--rows", "3000", "--block-rows",
         "512", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert read_spec(out)["world"] == world.to_dict()
    m_file = frame_moments(out, chunk_frames=333)
    m_stream = stream_moments(world, 3000, block_rows=512).select(["o", "delta", "a"])
    # the file stores o' = o + delta and the reader recomputes delta = o' - o: each entry moves
    # by at most one ulp of |o'| (< 1e-14 here), so moments agree to ~1e-13 absolute.
    assert m_file.count == m_stream.count
    assert_allclose(m_file.mean, m_stream.mean, rtol=1e-10, atol=1e-12)
    assert_allclose(m_file.cov, m_stream.cov, rtol=1e-10, atol=1e-12)
    r = CliRunner().invoke(cli, ["fit", str(out), "--dz", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["transitions"] == 3000


def test_write_world_refuses_existing_dir(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(LamfastError, match="exists"):
        write_world(LinearWorld(do=4, da=2), 10, tmp_path / "x")


# ------------------------------------------------------------------------------ bad files
def _bad(tmp_path, rng, kind):
    frames, actions = _traj(rng, T=40)
    p = tmp_path / "bad.npz"
    if kind == "truncated":
        p = tmp_path / "bad.npy"
        np.save(p, frames)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) - 100])
        return p, "truncated"
    if kind == "truncated-npz":
        np.savez(p, frames=frames)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        return p, "npz"
    if kind == "missing":
        np.savez(p, images=frames, actions=actions)
        return p, "missing key 'frames'"
    if kind == "count":
        np.savez(p, frames=frames, actions=actions[:30])
        return p, "30 actions do not match 40 frames"
    if kind == "nan":
        frames[23, 1, 2] = np.nan
        np.savez(p, frames=frames, actions=actions)
        return p, "frame 23 contains NaN"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "truncated-npz", "missing", "count", "nan"])
def test_bad_files_one_line_error(tmp_path, rng, kind):
    path, phrase = _bad(tmp_path, rng, kind)
    r = CliRunner().invoke(cli, ["fit", str(path), "--dz", "2", "--out", str(tmp_path / "f.npz")])
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert phrase in lines[0]
    assert not (tmp_path / "f.npz").exists()


def test_world_flags_rejected_with_frames(tmp_path, rng):
    frames, _ = _traj(rng, T=10)
    np.save(tmp_path / "f.npy", frames)
    r = CliRunner().invoke(cli, ["fit", str(tmp_path / "f.npy"), "--noise", "exo"])
    assert r.exit_code == 2 and "simulated world" in r.stderr


def test_cli_fit_text_and_json(tmp_path):
    data = simulate_gridworld(episodes=50, length=20, noise=1.0, seed=1)
    np.savez(tmp_path / "g.npz", **data)
    args = ["fit", str(tmp_path / "g.npz"), "--dz", "6", "--noop-action", "4", "--clean-k", "4"]
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "fit.npz")])
    assert r.exit_code == 0, r.stderr
    assert "act_acc" in r.stdout and "chance" in r.stdout and "cleaned" in r.stdout
    assert zipfile.is_zipfile(tmp_path / "fit.npz")
    r = CliRunner().invoke(cli, ["fit", str(tmp_path / "g.npz"), "--dz", "6", "--json"])
    out = json.loads(r.stdout)
    assert out["actions"] == "discrete" and out["da"] == 5 and 0 <= out["act_acc"] <= 1
    assert len(out["delta_spectrum"]) == 16


def test_latent_map_ignores_actions(tmp_path, rng):
    # probe_accuracy evaluates z from (o, delta) only; that relies on latent_map's a-columns = 0
    frames, actions = _traj(rng, T=60)
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions)
    m = frame_moments(tmp_path / "d.npz")
    _, lam = fit_frames(tmp_path / "d.npz", 2)
    assert not latent_map(lam, m)[:, m.index("a")].any()


def test_continuous_actions_and_bad_action_values(tmp_path, rng):
    frames, _ = _traj(rng, T=70)
    actions = rng.standard_normal((69, 2))  # T - 1 rows: one per transition
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions)
    m = frame_moments(tmp_path / "d.npz", chunk_frames=8)
    _check_moments(m, naive.frame_rows(frames, actions))
    assert m.size("a") == 2
    actions[41, 1] = np.inf
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions)
    with pytest.raises(LamfastError, match="action 41 contains NaN or inf"):
        frame_moments(tmp_path / "d.npz", chunk_frames=8)


def test_encode_rejects_frames_of_another_size(tmp_path, rng):
    frames, _ = _traj(rng, T=30)
    np.save(tmp_path / "a.npy", frames)
    np.save(tmp_path / "b.npy", frames[:, :2])
    _, lam = fit_frames(tmp_path / "a.npy", 2)
    save_lam(lam, tmp_path / "fit.npz")
    args = ["encode", str(tmp_path / "fit.npz"), str(tmp_path / "b.npy")]
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "z.npy")])
    assert r.exit_code == 2 and "fit was made on frames of shape" in r.stderr
    assert not (tmp_path / "z.npy").exists()


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(2, 60),
    cut=st.lists(st.integers(1, 59), max_size=8),
    chunk=st.integers(1, 70),
    block=st.integers(1, 40),
)
def test_property_chunking_matches_naive(tmp_path_factory, T, cut, chunk, block):
    # any episode layout, chunk size and block size: the transitions are exactly the naive ones
    rng = np.random.default_rng(T * 1000 + chunk)
    frames = rng.standard_normal((T, 3))
    starts = np.zeros(T, bool)
    starts[[c for c in cut if c < T]] = True
    starts[0] = True
    if starts.sum() == T:
        return  # no transitions: covered by the error test below
    d = tmp_path_factory.mktemp("p")
    np.savez(d / "f.npz", frames=frames, episode_starts=starts)
    m = frame_moments(d / "f.npz", chunk_frames=chunk, block_rows=block)
    _check_moments(m, naive.frame_rows(frames, episode_starts=starts))
    whole = frame_moments(d / "f.npz", chunk_frames=T, block_rows=block)
    assert np.array_equal(m.cov, whole.cov) and np.array_equal(m.mean, whole.mean)


def test_no_transitions_is_an_error(tmp_path):
    np.savez(tmp_path / "f.npz", frames=np.ones((3, 2)), episode_starts=np.ones(3, bool))
    with pytest.raises(LamfastError, match="no transitions"):
        frame_moments(tmp_path / "f.npz")


def test_zarr3_store_with_unwritten_flag_chunks_fits(tmp_path, rng):
    """zarr 3 does not write chunks equal to the fill value: the all-False chunks of
    episode_starts (and all-zero action chunks) are missing by design and read as such; only
    missing chunks of the frames are refused."""
    zarr = pytest.importorskip("zarr")
    frames = rng.standard_normal((1000, 4))
    starts = np.zeros(1000, bool)
    starts[[0, 500]] = True
    actions = np.zeros(1000, np.int64)
    actions[::7] = 1
    g = zarr.open_group(str(tmp_path / "z.zarr"), mode="w")
    for name, x in (("frames", frames), ("episode_starts", starts), ("actions", actions)):
        g.create_array(name, shape=x.shape, chunks=(100, *x.shape[1:]), dtype=x.dtype)[:] = x
    np.savez(tmp_path / "same.npz", frames=frames, episode_starts=starts, actions=actions)
    a = FrameSource(tmp_path / "z.zarr").moments()
    b = FrameSource(tmp_path / "same.npz").moments()
    assert np.array_equal(a.cov, b.cov) and a.count == b.count == 998


def test_chunk_without_transitions_and_2d_continuous_actions(tmp_path):
    """A read chunk may hold no transition (chunk_frames=1 at an episode start); 2-d continuous
    actions of such a chunk used to fail to reshape."""
    frames = np.random.default_rng(0).standard_normal((12, 3))
    starts = np.zeros(12, dtype=bool)
    starts[[0, 5, 6]] = True
    np.savez(tmp_path / "f.npz", frames=frames, actions=np.ones((12, 2)), episode_starts=starts)
    a = FrameSource(tmp_path / "f.npz", chunk_frames=1).moments(block_rows=4)
    b = FrameSource(tmp_path / "f.npz").moments(block_rows=4)
    np.testing.assert_array_equal(a.cov, b.cov)
    assert a.count == 9
