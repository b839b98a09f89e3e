"""HDF5 frame files (lamfast.sources.frames.hdf5): the Minari, D4RL and one-group-per-trajectory
layouts give bitwise the moments of the same arrays in lamfast's own ``.npz``; bad input fails
with one line."""

from __future__ import annotations

import pickle
import sys
import threading

import numpy as np
import pytest

from lamfast.errors import LamfastError
from lamfast.sources.frames import hdf5
from lamfast.sources.frames.distributed import frame_moments_tree
from lamfast.sources.frames.formats import ReaderOptions, detect
from lamfast.sources.frames.index import FrameChunks
from lamfast.sources.frames.source import FrameSource

from .helpers import assert_bitwise

h5py = pytest.importorskip("h5py")

LENGTHS = (5, 9, 1, 7)  # steps per episode (one of a single step)


def _obs(rng, n, kind):
    if kind == "pixels":
        return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    return rng.standard_normal((n, 6)).astype(np.float32)


def _actions(rng, n, kind):
    if kind == "discrete":
        return rng.integers(0, 4, n)
    return rng.standard_normal((n, 2))


def _npz(path, frames, actions, starts):
    """lamfast's own layout: one row per frame; the action of an episode's last frame is padding
    that labels no transition."""
    frames, actions, starts = (np.concatenate(x) for x in (frames, actions, starts))
    np.savez(path, frames=frames, actions=actions, episode_starts=starts)
    return path


def _starts(n):
    s = np.zeros(n, bool)
    s[0] = True
    return s


# ------------------------------------------------------------------------------ fixtures
def minari(tmp_path, rng, obs="pixels", acts="discrete", dict_obs=True):
    """Minari: ``episode_<i>`` groups of T + 1 observations (a Dict space: a group of named
    arrays), T actions, rewards, terminations, truncations. Returns (h5, npz, options)."""
    frames, actions, starts = [], [], []
    with h5py.File(tmp_path / "minari.hdf5", "w") as f:
        # written out of order: the reader sorts by episode number (2 before 10)
        order = list(range(len(LENGTHS)))[::-1]
        data = {}
        for i, T in enumerate(LENGTHS):
            data[i] = (_obs(rng, T + 1, obs), _actions(rng, T, acts))
        for i in order:
            o, a = data[i]
            g = f.create_group(f"episode_{i}")
            g.attrs["id"], g.attrs["total_steps"] = i, len(a)
            if dict_obs:
                g["observations/pixels"] = o
                g["observations/state"] = rng.standard_normal((len(o), 3))
            else:
                g["observations"] = o
            g["actions"] = a
            g["rewards"] = rng.standard_normal(len(a))
            term = np.zeros(len(a), bool)
            term[-1] = True
            g["terminations"], g["truncations"] = term, np.zeros(len(a), bool)
    for i in range(len(LENGTHS)):
        o, a = data[i]
        frames.append(o)
        actions.append(np.concatenate([a, np.zeros((1, *a.shape[1:]), a.dtype)]))
        starts.append(_starts(len(o)))
    npz = _npz(tmp_path / "minari_ref.npz", frames, actions, starts)
    options = ReaderOptions(obs_key="observations/pixels" if dict_obs else None)
    return tmp_path / "minari.hdf5", npz, options


def d4rl(tmp_path, rng, obs="states", acts="continuous", flags=("terminals", "timeouts")):
    """D4RL: flat N-row observations, actions, rewards, terminals, timeouts (and
    next_observations, infos/ and metadata/ groups, which are not read)."""
    N = 40
    o, a = _obs(rng, N, obs), _actions(rng, N, acts)
    terminals = np.zeros(N, bool)
    timeouts = np.zeros(N, bool)
    terminals[[6, 7, 20]] = True  # 7: an episode of one step
    timeouts[[13, 30, N - 1]] = True
    with h5py.File(tmp_path / "d4rl.h5", "w") as f:
        f["observations"], f["actions"] = o, a
        f["next_observations"] = rng.standard_normal(o.shape).astype(o.dtype)
        f["rewards"] = rng.standard_normal(N)
        if "terminals" in flags:
            f["terminals"] = terminals.astype(np.float32)  # old D4RL files store floats
        if "timeouts" in flags:
            f["timeouts"] = timeouts
        f["infos/qpos"] = rng.standard_normal((N, 3))
        f["metadata/algorithm"] = "SAC"
    ends = np.zeros(N, bool)
    if "terminals" in flags:
        ends |= terminals
    if "timeouts" in flags:
        ends |= timeouts
    starts = np.concatenate([[True], ends[:-1]])  # frame t + 1 starts an episode after a done
    npz = _npz(tmp_path / "d4rl_ref.npz", [o], [a], [starts])
    return tmp_path / "d4rl.h5", npz, ReaderOptions()


def groups(tmp_path, rng, obs="pixels", acts="continuous", n=12):
    """LAOM-style: top-level groups "0", "1", ... each with T ``obs`` (uint8 frames), ``states``
    and T ``actions`` (the last labels no transition). Twelve groups: "10" sorts after "9"."""
    frames, actions, starts = [], [], []
    with h5py.File(tmp_path / "laom.h5", "w") as f:
        f.attrs["domain_name"] = "cheetah"
        for i in range(n):
            T = 2 + (3 * i) % 7
            o, a = _obs(rng, T, obs), _actions(rng, T, acts)
            a = a.astype(np.float32) if acts == "continuous" else a
            g = f.create_group(str(i))
            g["obs"], g["states"], g["actions"] = o, rng.standard_normal((T, 4)), a
            frames.append(o)
            actions.append(a)
            starts.append(_starts(T))
    npz = _npz(tmp_path / "laom_ref.npz", frames, actions, starts)
    return tmp_path / "laom.h5", npz, ReaderOptions()


LAYOUTS = {"minari": minari, "d4rl": d4rl, "groups": groups}


# ------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("acts", ["discrete", "continuous"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_equals_npz_bitwise(tmp_path, rng, layout, acts):
    h5, npz, options = LAYOUTS[layout](tmp_path, rng, acts=acts)
    src, ref = FrameSource(h5, reader=options), FrameSource(npz)
    assert src.action_kind == ref.action_kind == acts
    assert src.n_transitions == ref.n_transitions
    np.testing.assert_array_equal(src.episode_lengths(), ref.episode_lengths())
    assert_bitwise(src.moments(block_rows=16), ref.moments(block_rows=16))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_chunk_invariance(tmp_path, rng, layout):
    h5, _, options = LAYOUTS[layout](tmp_path, rng)
    whole = FrameSource(h5, reader=options).moments(block_rows=8)
    for cf in (3, 7):
        chunked = FrameSource(h5, reader=options, chunk_frames=cf)
        assert_bitwise(chunked.moments(block_rows=8), whole)


def test_transition_counts_per_layout(tmp_path, rng):
    """Minari: T per episode (T + 1 observations); D4RL: one less per episode (the step at a
    terminal or timeout leads into the next episode); groups: T - 1 (T observations)."""
    h5, _, opt = minari(tmp_path, rng)
    src = FrameSource(h5, reader=opt)
    assert list(src.episode_lengths()) == list(LENGTHS)
    assert src.scale == 1 / 255  # uint8 pixels
    h5, _, opt = d4rl(tmp_path, rng)
    # episodes end after steps 6, 7, 13, 20, 30, 39: lengths 7, 1, 6, 7, 10, 9 steps
    assert list(FrameSource(h5, reader=opt).episode_lengths()) == [6, 0, 5, 6, 9, 8]
    h5, _, opt = groups(tmp_path, rng, n=3)
    assert list(FrameSource(h5, reader=opt).episode_lengths()) == [1, 4, 7]


def test_minari_plain_observations_and_d4rl_partial_flags(tmp_path, rng):
    h5, npz, opt = minari(tmp_path, rng, obs="states", dict_obs=False)
    assert_bitwise(FrameSource(h5, reader=opt).moments(), FrameSource(npz).moments())
    for flags in (("terminals",), ("timeouts",), ()):
        h5, npz, opt = d4rl(tmp_path, rng, flags=flags)
        assert_bitwise(FrameSource(h5, reader=opt).moments(), FrameSource(npz).moments())


def test_obs_key_and_action_key_choose_datasets(tmp_path, rng):
    """obs_key picks another dataset (LAOM's ``states``); a group with a single array is that
    array; action_key picks another action dataset."""
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f["episode_0/observations/only"] = o = rng.standard_normal((6, 3))
        f["episode_0/acts"] = a = rng.integers(0, 3, 5)
    np.savez(tmp_path / "k.npz", frames=o, actions=np.r_[a, 0])
    src = FrameSource(tmp_path / "k.h5", reader=ReaderOptions(action_key="acts"))
    assert_bitwise(src.moments(), FrameSource(tmp_path / "k.npz").moments())
    assert FrameSource(tmp_path / "k.h5").action_kind is None  # no "actions": none

    h5, _, _ = groups(tmp_path, rng, n=3)
    src = FrameSource(h5, reader=ReaderOptions(obs_key="states"))
    assert src.frame_shape == (4,) and src.raw_dtype == np.float64


def test_detect_by_suffix_and_signature(tmp_path, rng):
    h5, _, _ = d4rl(tmp_path, rng)
    other = tmp_path / "data.bin"
    other.write_bytes(h5.read_bytes())
    assert hdf5.detect(h5) and hdf5.detect(other) and detect(other) == "hdf5"
    np.save(tmp_path / "f.npy", np.zeros((3, 2)))
    assert not hdf5.detect(tmp_path / "f.npy") and not hdf5.detect(tmp_path)
    assert_bitwise(FrameSource(other).moments(), FrameSource(h5).moments())


# ------------------------------------------------------------------------------ threads, Dask
def test_chunks_reopen_the_file_in_another_thread(tmp_path, rng):
    """A pickled chunk function (what a Dask worker gets) reopens the file through spec();
    blocks read in a new thread equal those of the creating thread."""
    h5, _, opt = minari(tmp_path, rng)
    src = FrameSource(h5, reader=opt, chunk_frames=4)
    fn = FrameChunks(src, src.index(), 4, None)
    again = pickle.loads(pickle.dumps(fn))
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("blocks", again(0, fn.n_blocks)))
    t.start()
    t.join()
    mine = fn(0, fn.n_blocks)
    assert len(out["blocks"]) == len(mine)
    for a, b in zip(out["blocks"], mine, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_tree_and_checkpoint_bitwise(tmp_path, rng):
    h5, _, opt = d4rl(tmp_path, rng)
    src = FrameSource(h5, reader=opt)
    ref = src.moments(block_rows=8)
    assert_bitwise(frame_moments_tree(src, block_rows=8, checkpoint=tmp_path / "ck.npz"), ref)


def test_dask_threads_bitwise(tmp_path, rng):
    distributed = pytest.importorskip("distributed")
    h5, _, opt = groups(tmp_path, rng)
    src = FrameSource(h5, reader=opt, chunk_frames=5)
    ref = src.moments(block_rows=8)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=3, processes=True, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as c:  # fmt: skip
        got = frame_moments_tree(src, block_rows=8, client=c, task_blocks=1, window=6)
    assert_bitwise(got, ref)


# ------------------------------------------------------------------------------ bad input
def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)


def test_not_an_hdf5_file(tmp_path, rng):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(LamfastError, match="not a readable HDF5 file") as e:
        FrameSource(bad)
    _one_line(e)


def test_unknown_obs_key_lists_the_keys(tmp_path, rng):
    h5, _, _ = minari(tmp_path, rng)
    with pytest.raises(LamfastError, match=r"no observations 'pix'.*observations/pixels") as e:
        FrameSource(h5, reader=ReaderOptions(obs_key="pix"))
    _one_line(e)
    h5, _, _ = d4rl(tmp_path, rng)
    with pytest.raises(LamfastError, match=r"no observations 'x'.*observations, rewards") as e:
        FrameSource(h5, reader=ReaderOptions(obs_key="x"))
    _one_line(e)
    with pytest.raises(LamfastError, match=r"no actions 'acts'.*actions") as e:
        FrameSource(h5, reader=ReaderOptions(action_key="acts"))
    _one_line(e)


def test_observation_group_of_several_arrays_lists_them(tmp_path, rng):
    h5, _, _ = minari(tmp_path, rng)
    with pytest.raises(LamfastError, match=r"group of 2 arrays \(pixels, state\).*obs_key") as e:
        FrameSource(h5)
    _one_line(e)


def test_a_group_without_observations_is_refused(tmp_path, rng):
    h5, _, _ = groups(tmp_path, rng, n=3)
    with h5py.File(h5, "a") as f:
        f["extra/pixels"] = np.zeros((4, 2))
    with pytest.raises(LamfastError, match=r"laom.h5\[extra\]: no observations.*pixels"):
        FrameSource(h5)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_actions_of_the_wrong_length(tmp_path, rng, layout):
    h5, _, options = LAYOUTS[layout](tmp_path, rng)
    with h5py.File(h5, "a") as f:
        g = f if layout == "d4rl" else f[sorted(k for k in f)[0]]
        n = len(g["actions"])
        del g["actions"]
        g["actions"] = np.zeros(n + 2, np.int64)
    with pytest.raises(LamfastError, match="actions do not match") as e:
        FrameSource(h5, reader=options)
    _one_line(e)


def test_d4rl_flags_of_the_wrong_length(tmp_path, rng):
    h5, _, _ = d4rl(tmp_path, rng)
    with h5py.File(h5, "a") as f:
        del f["timeouts"]
        f["timeouts"] = np.zeros(3, bool)
    with pytest.raises(LamfastError, match=r"d4rl.h5\[timeouts\]: shape \(3,\) does not match"):
        FrameSource(h5)


def test_missing_h5py(tmp_path, rng, monkeypatch):
    h5, _, _ = d4rl(tmp_path, rng)
    monkeypatch.setitem(sys.modules, "h5py", None)  # the import raises ImportError
    with pytest.raises(
        LamfastError, match=r"^reading HDF5 needs h5py: pip install 'lamfast\[hdf5\]'$"
    ):
        FrameSource(h5)


def test_an_option_the_reader_does_not_take(tmp_path, rng):
    h5, _, _ = d4rl(tmp_path, rng)
    with pytest.raises(LamfastError, match=r"--resize applies to .*\(hdf5\)") as e:
        FrameSource(h5, reader=ReaderOptions(resize=(4, 4)))
    _one_line(e)


def test_nan_frames(tmp_path, rng):
    h5, _, _ = d4rl(tmp_path, rng)
    with h5py.File(h5, "a") as f:
        f["observations"][17, 2] = np.nan
    src = FrameSource(h5)
    with pytest.raises(LamfastError, match=r"d4rl.h5\[observations\]: frame 17 contains NaN") as e:
        src.moments()
    _one_line(e)


def test_non_numeric_datasets_are_refused(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["observations"] = np.array([b"a", b"b", b"c"])
    with pytest.raises(LamfastError, match="not a real numeric type"):
        FrameSource(tmp_path / "s.h5")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["observations"] = np.zeros(4, dtype=[("x", "f4"), ("y", "f4")])
    with pytest.raises(LamfastError, match="not a real numeric type"):
        FrameSource(tmp_path / "c.h5")
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f.attrs["note"] = "empty"
    with pytest.raises(LamfastError, match="no observations"):
        FrameSource(tmp_path / "e.h5")
