"""Video files and folders of videos (lamfast.sources.frames.video): bitwise equal to the same
frames in an ``.npz``, options against a naive PyAV decode, chunk invariance, bad input."""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import pytest

from lamfast.errors import LamfastError
from lamfast.sources.frames import video
from lamfast.sources.frames.formats import ReaderOptions, detect
from lamfast.sources.frames.source import FrameSource

from .helpers import assert_bitwise, assert_range_reads_match

av = pytest.importorskip("av")

H = W = 8
RATE = 10  # frames a second: frame i is shown at i / 10 s

# Lossless encodes that round-trip bit-exactly with PyAV (checked by test_lossless_round_trip):
# H.264 in RGB at crf 0 (with B-frames and short GOPs, so that seeks are exercised), FFV1 in
# Matroska, PNG in AVI, and VP9 lossless (in RGB planes) in WebM.
CODECS = {
    "mp4": ("libx264rgb", "rgb24", {"crf": "0", "g": "5", "bf": "2"}),
    "mkv": ("ffv1", "bgr0", {}),
    "avi": ("png", "rgb24", {}),
    "webm": ("libvpx-vp9", "gbrp", {"lossless": "1", "g": "6"}),
}


def _frames(rng, T: int, phase: int = 0) -> np.ndarray:
    """A bright square moving across dim noise: structure that frame differences see."""
    f = rng.integers(0, 40, (T, H, W, 3), dtype=np.uint8)
    for t in range(T):
        y, x = (t + phase) % (H - 3), (2 * t + phase) % (W - 3)
        f[t, y : y + 3, x : x + 3] = (200 + 5 * (t % 10), 120, 60 + 3 * t % 100)
    return f


def _encode(path, frames: np.ndarray, ext: str | None = None) -> None:
    codec, pix_fmt, options = CODECS[ext or path.suffix[1:]]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=RATE)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        s.options = options
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def _decode(path, *, size=None, grey=False, time_range=None, stride=1) -> np.ndarray:
    """The naive reference: decode every frame, select by time, then stride."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            t = float(Fraction(f.pts) * s.time_base)
            if time_range is not None and not time_range[0] <= t < time_range[1]:
                continue
            h, w = size or (f.height, f.width)
            out.append(f.to_ndarray(width=w, height=h, format="gray" if grey else "rgb24"))
    return np.stack(out)[::stride]


def _npz(path, frames, actions=None, starts=None):
    arrays = {"frames": frames}
    if actions is not None:
        arrays["actions"] = actions
    if starts is not None:
        arrays["episode_starts"] = starts
    np.savez(path, **arrays)
    return path


@pytest.fixture
def clip(tmp_path, rng):
    """A 30-frame lossless mp4 and its frames."""
    frames = _frames(rng, 30)
    path = tmp_path / "clip.mp4"
    _encode(path, frames)
    return path, frames


# ------------------------------------------------------------------------------ lossless
@pytest.mark.parametrize("ext", sorted(CODECS))
def test_lossless_round_trip(tmp_path, rng, ext):
    frames = _frames(rng, 12)
    path = tmp_path / f"v.{ext}"
    _encode(path, frames)
    np.testing.assert_array_equal(_decode(path), frames)
    assert detect(path) == "video"


@pytest.mark.parametrize("ext", sorted(CODECS))
def test_moments_equal_npz_bitwise(tmp_path, rng, ext):
    frames = _frames(rng, 20)
    path = tmp_path / f"v.{ext}"
    _encode(path, frames)
    assert_bitwise(
        FrameSource(path).moments(), FrameSource(_npz(tmp_path / "f.npz", frames)).moments()
    )


def test_actions_and_episodes_files(tmp_path, clip, rng):
    path, frames = clip
    T = len(frames)
    acts = rng.integers(0, 4, T)
    starts = np.array([0, 9, 10, 22])
    flags = np.zeros(T, bool)
    flags[starts] = True
    np.save(tmp_path / "a.npy", acts)
    np.save(tmp_path / "e.npy", starts)
    opts = ReaderOptions(
        actions_file=str(tmp_path / "a.npy"), episodes_file=str(tmp_path / "e.npy")
    )
    src = FrameSource(path, reader=opts)
    assert (src.action_kind, src.n_transitions) == ("discrete", T - 4)
    ref = FrameSource(_npz(tmp_path / "f.npz", frames, acts, flags))
    assert_bitwise(src.moments(), ref.moments())


def test_continuous_actions(tmp_path, clip, rng):
    path, frames = clip
    acts = rng.standard_normal((len(frames), 2))
    np.save(tmp_path / "a.npy", acts)
    src = FrameSource(path, reader=ReaderOptions(actions_file=str(tmp_path / "a.npy")))
    assert (src.action_kind, src.da) == ("continuous", 2)
    assert_bitwise(src.moments(), FrameSource(_npz(tmp_path / "f.npz", frames, acts)).moments())


def test_folder_one_episode_per_file(tmp_path, rng):
    folder = tmp_path / "videos"
    folder.mkdir()
    parts = [_frames(rng, n, phase=3 * i) for i, n in enumerate((11, 7, 9))]
    for name, ext, f in zip(("a", "b", "c"), ("mp4", "mkv", "avi"), parts, strict=True):
        _encode(folder / f"{name}.{ext}", f)
    frames = np.concatenate(parts)
    starts = np.zeros(len(frames), bool)
    starts[[0, 11, 18]] = True
    acts = rng.integers(0, 3, len(frames))
    np.save(tmp_path / "acts.npy", acts)
    assert detect(folder) == "video"
    opts = ReaderOptions(actions_file=str(tmp_path / "acts.npy"))
    src = FrameSource(folder, reader=opts)
    assert [s.label for s in src.segments] == ["videos/a.mp4", "videos/b.mkv", "videos/c.avi"]
    ref = FrameSource(_npz(tmp_path / "f.npz", frames, acts, starts))
    assert_bitwise(src.moments(), ref.moments())
    # episodes_file numbers the kept frames of all files in order; files still start episodes
    np.save(tmp_path / "e.npy", np.array([5, 14]))
    starts[[5, 14]] = True
    opts = ReaderOptions(
        actions_file=str(tmp_path / "acts.npy"), episodes_file=str(tmp_path / "e.npy")
    )
    ref = FrameSource(_npz(tmp_path / "g.npz", frames, acts, starts))
    assert_bitwise(FrameSource(folder, reader=opts).moments(), ref.moments())


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "kw",
    [
        {"stride": 3},
        {"grey": True},
        {"resize": (8, 12)},
        {"time_range": (0.55, 2.25)},
        {"time_range": (0.25, 2.0), "stride": 2, "grey": True, "resize": (12, 8)},
    ],
    ids=["stride", "grey", "resize", "time_range", "all"],
)
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_options_equal_naive_decode(tmp_path, rng, kw, ext):
    frames = _frames(rng, 30)
    path = tmp_path / f"v.{ext}"
    _encode(path, frames)
    want = _decode(
        path,
        size=kw.get("resize"),
        grey=kw.get("grey", False),
        time_range=kw.get("time_range"),
        stride=kw.get("stride", 1),
    )
    acts = rng.integers(0, 5, len(want))
    np.save(tmp_path / "a.npy", acts)
    src = FrameSource(path, reader=ReaderOptions(actions_file=str(tmp_path / "a.npy"), **kw))
    assert src.frame_shape == want.shape[1:]
    assert_bitwise(src.moments(), FrameSource(_npz(tmp_path / "f.npz", want, acts)).moments())


def test_time_range_keeps_frames_by_presentation_time(clip):
    path, frames = clip
    src = FrameSource(path, reader=ReaderOptions(time_range=(1.0, 1.5)))  # frames 10..14
    np.testing.assert_array_equal(src.segments[0].frames.read(0, 99), frames[10:15])


# ------------------------------------------------------------------------------ reads
def test_chunk_size_changes_nothing(tmp_path, rng):
    folder = tmp_path / "videos"
    folder.mkdir()
    parts = [_frames(rng, n, phase=i) for i, n in enumerate((23, 17))]
    _encode(folder / "a.mp4", parts[0])
    _encode(folder / "b.webm", parts[1])
    np.save(tmp_path / "a.npy", rng.standard_normal((40, 3)))
    np.save(tmp_path / "e.npy", np.array([6, 7, 30]))
    opts = ReaderOptions(
        actions_file=str(tmp_path / "a.npy"), episodes_file=str(tmp_path / "e.npy")
    )
    whole = FrameSource(folder, reader=opts).moments()
    assert_bitwise(FrameSource(folder, reader=opts, chunk_frames=7).moments(), whole)
    assert_bitwise(FrameSource(folder, reader=opts, chunk_frames=3).moments(), whole)


@pytest.mark.parametrize("seek_ahead", [0, 256])
def test_reads_in_any_order(clip, monkeypatch, seek_ahead):
    """Backwards reads reopen, far forward reads seek to a keyframe (B-frames, GOP of 5)."""
    monkeypatch.setattr(video, "SEEK_AHEAD", seek_ahead)
    path, frames = clip
    m = video.open_member(path, "clip.mp4", ReaderOptions())
    for a, b in [(0, 4), (17, 23), (6, 9), (9, 12), (29, 40), (3, 3), (0, 30), (28, 30)]:
        np.testing.assert_array_equal(m.read(a, b), frames[a:b])
    m = video.open_member(path, "clip.mp4", ReaderOptions(stride=2, time_range=(0.3, 2.6)))
    want = frames[3:26:2]
    for a, b in [(5, 7), (0, 2), (11, 12), (1, 12)]:
        np.testing.assert_array_equal(m.read(a, b), want[a:b])


def test_indexed_reads_equal_the_stream(clip, monkeypatch):
    """Ranges of transitions read from a fresh source (as a Dask worker does) start with a
    seek into the video, and give the rows of the sequential stream."""
    monkeypatch.setattr(video, "SEEK_AHEAD", 0)
    path, _ = clip
    spans = [(0, 5), (13, 20), (7, 29), (26, 29)]
    assert_range_reads_match(lambda: FrameSource(path, chunk_frames=4), 6, spans)


# ------------------------------------------------------------------------------ bad input
def test_truncated_video(tmp_path, clip):
    path, _ = clip
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LamfastError, match=r"cut\.mp4: not a readable video"):
        FrameSource(cut)


def test_corrupt_video(tmp_path, rng):
    bad = tmp_path / "noise.mkv"
    bad.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(LamfastError, match=r"noise\.mkv: not a readable video"):
        FrameSource(bad)


def test_actions_file_with_wrong_rows(tmp_path, clip):
    path, frames = clip
    np.save(tmp_path / "a.npy", np.zeros(len(frames) - 1, dtype=np.int64))
    with pytest.raises(LamfastError, match=r"29 rows, but the videos have 30 kept frames"):
        FrameSource(path, reader=ReaderOptions(actions_file=str(tmp_path / "a.npy")))


def test_episodes_file_out_of_range(tmp_path, clip):
    path, _ = clip
    np.save(tmp_path / "e.npy", np.array([0, 30]))
    with pytest.raises(LamfastError, match=r"start frame 30 is outside the 30 kept frames"):
        FrameSource(path, reader=ReaderOptions(episodes_file=str(tmp_path / "e.npy")))


def test_empty_time_range(clip):
    path, _ = clip
    with pytest.raises(LamfastError, match=r"no frame in time_range"):
        FrameSource(path, reader=ReaderOptions(time_range=(50.0, 60.0)))
    with pytest.raises(LamfastError, match=r"time_range must be seconds"):
        FrameSource(path, reader=ReaderOptions(time_range=(2.0, 1.0)))


def test_missing_pyav(clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(LamfastError, match=r"needs PyAV: pip install 'lamfast\[video\]'"):
        FrameSource(clip[0])


def test_option_the_reader_does_not_take(clip):
    with pytest.raises(LamfastError, match=r"--obs-key applies to .* not to .*clip\.mp4 \(video\)"):
        FrameSource(clip[0], reader=ReaderOptions(obs_key="frames"))


def test_folder_with_stray_arrays(tmp_path, rng):
    folder = tmp_path / "videos"
    folder.mkdir()
    _encode(folder / "a.mkv", _frames(rng, 5))
    np.save(folder / "ep0.npy", np.zeros((5, 2)))
    with pytest.raises(LamfastError, match=r"holds videos and ep0\.npy"):
        FrameSource(folder)
    # named as the actions file, it is read as such
    np.save(folder / "ep0.npy", np.arange(5))
    src = FrameSource(folder, reader=ReaderOptions(actions_file=str(folder / "ep0.npy")))
    assert src.action_kind == "discrete"
