"""LeRobot v3 datasets (lamfast.sources.frames.lerobot): a small v3-shaped folder written with
pyarrow and PyAV reads bitwise like an ``.npz`` of the same arrays; bad input fails in one
line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from lamfast.errors import LamfastError
from lamfast.sources.frames.formats import ReaderOptions, detect
from lamfast.sources.frames.source import FrameSource

from .helpers import assert_bitwise, assert_range_reads_match

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")

FPS = 10
H = W = 8
KEY = "observation.images.cam"
LENGTHS = (6, 9, 5, 7)  # episodes 0, 1 in data file 0 and video file 0; 2, 3 in file 1


def _frames(rng, T: int) -> np.ndarray:
    """A bright square moving across dim noise."""
    f = rng.integers(0, 40, (T, H, W, 3), dtype=np.uint8)
    for t in range(T):
        y, x = t % (H - 3), (2 * t) % (W - 3)
        f[t, y : y + 3, x : x + 3] = (200, 120 + t % 50, 60)
    return f


def _encode(path, frames: np.ndarray) -> None:
    """Lossless H.264 in RGB (libx264rgb, crf 0), B-frames and a GOP of 4."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "rgb24"
        s.options = {"crf": "0", "g": "4", "bf": "2"}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def _vectors(a: np.ndarray):
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def write_dataset(root, rng, *, discrete=False, version="v3.0", video_frames=None):
    """A LeRobot v3 folder: returns the arrays it holds (frames, state, actions, starts)."""
    n = sum(LENGTHS)
    ep = np.repeat(np.arange(len(LENGTHS)), LENGTHS)
    fi = np.concatenate([np.arange(L) for L in LENGTHS])
    state = rng.standard_normal((n, 3)).astype(np.float32)
    actions = (
        rng.integers(0, 4, n).astype(np.int64)
        if discrete
        else rng.standard_normal((n, 2)).astype(np.float32)
    )
    frames = _frames(rng, n)
    files = (0, 0, 1, 1)  # data and video file of each episode
    first = np.concatenate([[0], np.cumsum(LENGTHS)[:-1]])
    for k in (0, 1):
        rows = np.flatnonzero(np.isin(ep, [e for e, f in enumerate(files) if f == k]))
        table = pa.table(
            {
                "observation.state": _vectors(state[rows]),
                "action": pa.array(actions[rows]) if discrete else _vectors(actions[rows]),
                "timestamp": pa.array((fi[rows] / FPS).astype(np.float32)),
                "frame_index": pa.array(fi[rows]),
                "episode_index": pa.array(ep[rows]),
                "index": pa.array(rows.astype(np.int64)),
                "task_index": pa.array(np.zeros(len(rows), np.int64)),
            }
        )
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / "chunk-000" / f"file-{k:03d}.parquet")
        clip = frames[rows] if video_frames is None else video_frames(frames[rows])
        _encode(root / "videos" / KEY / "chunk-000" / f"file-{k:03d}.mp4", clip)
    # where each episode lies in its video file (several episodes a file)
    start_in_file = [0.0, LENGTHS[0] / FPS, 0.0, LENGTHS[2] / FPS]
    meta = pa.table(
        {
            "episode_index": pa.array(np.arange(len(LENGTHS))),
            "length": pa.array(np.array(LENGTHS, np.int64)),
            "dataset_from_index": pa.array(first.astype(np.int64)),
            "dataset_to_index": pa.array((first + LENGTHS).astype(np.int64)),
            "data/chunk_index": pa.array(np.zeros(4, np.int64)),
            "data/file_index": pa.array(np.array(files, np.int64)),
            f"videos/{KEY}/chunk_index": pa.array(np.zeros(4, np.int64)),
            f"videos/{KEY}/file_index": pa.array(np.array(files, np.int64)),
            f"videos/{KEY}/from_timestamp": pa.array(start_in_file),
            f"videos/{KEY}/to_timestamp": pa.array(
                [s + L / FPS for s, L in zip(start_in_file, LENGTHS, strict=True)]
            ),
        }
    )
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(meta, root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    scalar = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": version,
        "fps": FPS,
        "total_episodes": len(LENGTHS),
        "total_frames": n,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            KEY: {
                "dtype": "video",
                "shape": [H, W, 3],
                "names": ["height", "width", "channels"],
                "info": {"video.fps": FPS, "video.codec": "h264"},
            },
            "observation.state": {"dtype": "float32", "shape": [3], "names": None},
            "action": (scalar if discrete else {"dtype": "float32", "shape": [2], "names": None}),
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": scalar,
            "episode_index": scalar,
            "index": scalar,
            "task_index": scalar,
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    starts = fi == 0
    return frames, state, actions, starts


def _npz(path, frames, actions, starts):
    np.savez(path, frames=frames, actions=actions, episode_starts=starts)
    return path


@pytest.fixture
def dataset(tmp_path, rng):
    root = tmp_path / "robot"
    return root, write_dataset(root, rng)


def _keep(starts: np.ndarray, stride: int) -> np.ndarray:
    """Rows 0, stride, 2 * stride, ... of each episode."""
    first = np.flatnonzero(starts)
    pos = np.arange(len(starts)) - first[np.cumsum(starts) - 1]
    return pos % stride == 0


# ------------------------------------------------------------------------------ equal to .npz
def test_state_key_equals_npz(tmp_path, dataset):
    root, (_, state, actions, starts) = dataset
    assert detect(root) == "lerobot"
    src = FrameSource(root, reader=ReaderOptions(obs_key="observation.state"))
    assert len(src.segments) == len(LENGTHS)
    assert (src.action_kind, src.da, src.n_transitions) == ("continuous", 2, sum(LENGTHS) - 4)
    ref = FrameSource(_npz(tmp_path / "r.npz", state, actions, starts))
    assert_bitwise(src.moments(), ref.moments())


def test_video_key_is_the_default_and_equals_npz(tmp_path, dataset):
    root, (frames, _, actions, starts) = dataset
    src = FrameSource(root)  # obs_key: the first observation video
    assert src.frame_shape == (H, W, 3)
    ref = FrameSource(_npz(tmp_path / "r.npz", frames, actions, starts))
    assert_bitwise(src.moments(), ref.moments())


def test_discrete_actions(tmp_path, rng):
    root = tmp_path / "robot"
    frames, state, actions, starts = write_dataset(root, rng, discrete=True)
    for key, obs in ((KEY, frames), ("observation.state", state)):
        src = FrameSource(root, reader=ReaderOptions(obs_key=key))
        assert (src.action_kind, src.n_actions) == ("discrete", 4)
        ref = FrameSource(_npz(tmp_path / "r.npz", obs, actions, starts))
        assert_bitwise(src.moments(), ref.moments())


@pytest.mark.parametrize("key", [KEY, "observation.state"])
def test_stride_keeps_every_kth_row_of_each_episode(tmp_path, dataset, key):
    root, (frames, state, actions, starts) = dataset
    keep = _keep(starts, 3)
    obs = frames if key == KEY else state
    src = FrameSource(root, reader=ReaderOptions(obs_key=key, stride=3))
    ref = FrameSource(_npz(tmp_path / "r.npz", obs[keep], actions[keep], starts[keep]))
    assert_bitwise(src.moments(), ref.moments())


def test_grey_and_resize_equal_naive_decode(tmp_path, dataset):
    root, (_, _, actions, starts) = dataset
    want = []
    for k in (0, 1):  # the naive reference: decode the whole files, in episode order
        with av.open(str(root / "videos" / KEY / "chunk-000" / f"file-{k:03d}.mp4")) as c:
            for f in c.decode(c.streams.video[0]):
                want.append(f.to_ndarray(width=6, height=4, format="gray"))
    want = np.stack(want)
    src = FrameSource(root, reader=ReaderOptions(grey=True, resize=(4, 6)))
    assert src.frame_shape == (4, 6)
    assert_bitwise(
        src.moments(), FrameSource(_npz(tmp_path / "r.npz", want, actions, starts)).moments()
    )


@pytest.mark.parametrize("key", [KEY, "observation.state"])
def test_chunk_size_changes_nothing(dataset, key):
    root, _ = dataset
    opts = ReaderOptions(obs_key=key)
    whole = FrameSource(root, reader=opts).moments()
    assert_bitwise(FrameSource(root, reader=opts, chunk_frames=7).moments(), whole)
    assert_bitwise(FrameSource(root, reader=opts, chunk_frames=2).moments(), whole)


def test_indexed_reads_equal_the_stream(dataset):
    """Ranges read from a fresh source (as a Dask worker does) seek into the packed videos."""
    root, _ = dataset
    spans = [(0, 3), (4, 11), (12, 23), (20, 23)]
    assert_range_reads_match(lambda: FrameSource(root, chunk_frames=3), 4, spans)


# ------------------------------------------------------------------------------ bad input
def test_unknown_obs_key_lists_the_keys(dataset):
    root, _ = dataset
    with pytest.raises(
        LamfastError,
        match=r"obs_key 'observation.images.top' is not a feature of .*robot; it has: "
        r"observation.images.cam, observation.state, action$",
    ):
        FrameSource(root, reader=ReaderOptions(obs_key="observation.images.top"))


def test_unknown_action_key(dataset):
    root, _ = dataset
    with pytest.raises(LamfastError, match=r"action_key 'act' is not a feature"):
        FrameSource(root, reader=ReaderOptions(action_key="act"))


def test_missing_pyarrow(dataset, monkeypatch):
    root, _ = dataset
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(LamfastError, match=r"needs pyarrow: pip install 'lamfast\[lerobot\]'"):
        FrameSource(root, reader=ReaderOptions(obs_key="observation.state"))


def test_missing_pyav_for_a_video_key(dataset, monkeypatch):
    root, _ = dataset
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(LamfastError, match=r"needs PyAV: pip install 'lamfast\[lerobot\]'"):
        FrameSource(root)
    # a state key needs no PyAV
    FrameSource(root, reader=ReaderOptions(obs_key="observation.state"))


def test_options_that_do_not_apply(dataset):
    root, _ = dataset
    with pytest.raises(LamfastError, match=r"--time-range applies to video data, not to"):
        FrameSource(root, reader=ReaderOptions(time_range=(0.0, 1.0)))
    with pytest.raises(LamfastError, match=r"--grey applies to video observations"):
        FrameSource(root, reader=ReaderOptions(obs_key="observation.state", grey=True))


def test_video_shorter_than_its_episodes(tmp_path, rng):
    root = tmp_path / "robot"
    write_dataset(root, rng, video_frames=lambda f: f[:-2])
    with pytest.raises(LamfastError, match=r"episode 1, frame 7: no frame of .*file-000\.mp4"):
        FrameSource(root)


def test_truncated_video(dataset):
    root, _ = dataset
    v = root / "videos" / KEY / "chunk-000" / "file-001.mp4"
    v.write_bytes(v.read_bytes()[:200])
    with pytest.raises(LamfastError, match=r"file-001\.mp4: not a readable video"):
        FrameSource(root)


def test_older_versions_are_refused(tmp_path, rng):
    root = tmp_path / "robot"
    write_dataset(root, rng, version="v2.1")
    with pytest.raises(LamfastError, match=r"version v2\.1; only v3 datasets are read"):
        FrameSource(root)


def test_episode_rows_out_of_order(dataset):
    root, _ = dataset
    f = root / "data" / "chunk-000" / "file-001.parquet"
    t = pq.read_table(f)
    pq.write_table(t.take(np.r_[0:3, 4, 3, 5 : t.num_rows]), f)
    with pytest.raises(LamfastError, match=r"episode 2: frame_index goes from 2 to 4"):
        FrameSource(root, reader=ReaderOptions(obs_key="observation.state"))
