"""Image folders (lamfast.sources.frames.images): PNG / JPEG sequences against the same frames
in lamfast's .npz layout, bitwise; natural order; grey, resize, stride; chunk invariance; bad
input."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from lamfast.errors import LamfastError
from lamfast.sources.frames import images
from lamfast.sources.frames.formats import ReaderOptions, detect
from lamfast.sources.frames.source import FrameSource

iio = pytest.importorskip("imageio.v3")
Image = pytest.importorskip("PIL.Image")

SHAPE = (12, 10, 3)  # H, W, C
LENGTHS = (12, 5, 3)  # episode 0 has frame_1 ... frame_12: frame_10 must follow frame_9


def _frames(rng, n, shape=SHAPE):
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def _write_episode(folder, frames, suffix=".png", **kw):
    folder.mkdir(parents=True, exist_ok=True)
    # written in reverse, so the listing order of the file system is not the frame order
    for i in reversed(range(len(frames))):
        iio.imwrite(folder / f"frame_{i + 1}{suffix}", frames[i], **kw)


def _dataset(tmp_path, rng, lengths=LENGTHS, suffix=".png", **kw):
    """A folder of episode folders (ep_2 before ep_10: the folders are in natural order too),
    and the frames written, per episode in order."""
    root = tmp_path / "episodes"
    names = ["ep_2", "ep_10", "ep_11"][: len(lengths)]
    episodes = []
    for name, n in zip(names, lengths, strict=True):
        f = _frames(rng, n)
        _write_episode(root / name, f, suffix, **kw)
        episodes.append(f)
    return root, episodes


def _npz(tmp_path, episodes, actions=None, name="ref.npz"):
    """The same frames in lamfast's layout, built independently of the reader."""
    frames = np.concatenate(episodes)
    starts = np.zeros(len(frames), bool)
    starts[np.cumsum([0, *[len(e) for e in episodes[:-1]]])] = True
    arrays = {"frames": frames, "episode_starts": starts}
    if actions is not None:
        arrays["actions"] = actions
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def _assert_same(m, ref):
    assert m.count == ref.count
    assert_array_equal(m.mean, ref.mean)
    assert_array_equal(m.cov, ref.cov)


def _pil_ref(frame, grey=False, resize=None):
    """Naive reference of the options: Pillow's "L" conversion, then a bilinear resize."""
    im = Image.fromarray(frame)
    if grey:
        im = im.convert("L")
    if resize is not None:
        im = im.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
    return np.asarray(im)


# ------------------------------------------------------------------------------ order
def test_natural_key_orders_numbers_as_numbers():
    names = ["frame_10", "frame_9", "Frame_2", "frame_1", "frame_100", "frame_09b", "a", "frame_"]
    assert sorted(names, key=images.natural_key) == [
        "a",
        "frame_",
        "frame_1",
        "Frame_2",
        "frame_9",
        "frame_09b",
        "frame_10",
        "frame_100",
    ]
    assert images.natural_key("frame_007") == images.natural_key("frame_7")
    assert images.natural_key("x1y22z") == ("x", 1, "y", 22, "z")


def test_one_folder_is_one_episode_in_natural_order(tmp_path, rng):
    frames = _frames(rng, 12)
    folder = tmp_path / "one"
    _write_episode(folder, frames)
    (folder / "notes.txt").write_text("ignored")
    (folder / "._frame_5.png").write_bytes(b"macOS resource fork: hidden, ignored")
    assert detect(folder) == "images"
    src = FrameSource(folder)
    assert len(src.segments) == 1
    assert [p.name for p in src.segments[0].frames.files] == [
        f"frame_{i}.png" for i in range(1, 13)
    ]
    assert_array_equal(src.segments[0].frames.read(0, 12), frames)
    assert_array_equal(src.segments[0].frames.read(8, 11), frames[8:11])
    np.save(tmp_path / "ref.npy", frames)
    _assert_same(src.moments(), FrameSource(tmp_path / "ref.npy").moments())


def test_images_with_leading_zeros_mixed_suffixes(tmp_path, rng):
    frames = _frames(rng, 11)
    folder = tmp_path / "one"
    folder.mkdir()
    for i, f in enumerate(frames):  # frame_000 ... frame_010, .png and .PNG alternately
        iio.imwrite(folder / f"frame_{i:03d}{'.png' if i % 2 else '.PNG'}", f, extension=".png")
    src = FrameSource(folder)
    assert_array_equal(src.segments[0].frames.read(0, 11), frames)


# ------------------------------------------------------------------------------ bitwise
@pytest.mark.parametrize("kind", ["none", "discrete", "continuous"])
def test_png_episodes_equal_npz_bitwise(tmp_path, rng, kind):
    root, episodes = _dataset(tmp_path, rng)
    T = sum(LENGTHS)
    actions = {
        "none": None,
        "discrete": rng.integers(0, 4, T),
        "continuous": rng.standard_normal((T, 2)),
    }[kind]
    opts = {}
    if actions is not None:
        np.save(tmp_path / "actions.npy", actions)
        opts["actions_file"] = str(tmp_path / "actions.npy")
    assert detect(root) == "images"
    src = FrameSource(root, reader=ReaderOptions(**opts))
    ref = FrameSource(_npz(tmp_path, episodes, actions))
    assert [s.label for s in src.segments] == ["episodes/ep_2", "episodes/ep_10", "episodes/ep_11"]
    assert src.n_transitions == ref.n_transitions == T - len(LENGTHS)
    assert_array_equal(src.episode_lengths(), [n - 1 for n in LENGTHS])
    assert src.action_kind == ref.action_kind
    _assert_same(src.moments(), ref.moments())


def test_jpeg_equals_its_decoded_frames(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng, suffix=".jpg", quality=90)
    decoded = [
        np.stack([iio.imread(root / ep / f"frame_{i + 1}.jpg") for i in range(n)])
        for ep, n in zip(["ep_2", "ep_10", "ep_11"], LENGTHS, strict=True)
    ]
    src = FrameSource(root)
    _assert_same(src.moments(), FrameSource(_npz(tmp_path, decoded)).moments())


@pytest.mark.parametrize(
    "grey, resize, stride",
    [(True, None, 1), (False, (6, 7), 1), (False, None, 3), (True, (5, 4), 2), (True, (20, 16), 1)],
)
def test_grey_resize_stride_against_pillow(tmp_path, rng, grey, resize, stride):
    root, episodes = _dataset(tmp_path, rng)
    kept = [e[::stride] for e in episodes]
    ref_frames = [np.stack([_pil_ref(f, grey, resize) for f in e]) for e in kept]
    T = sum(len(e) for e in kept)
    actions = rng.integers(0, 3, T)  # one row per kept frame
    np.save(tmp_path / "a.npy", actions)
    opts = ReaderOptions(
        grey=grey, resize=resize, stride=stride, actions_file=str(tmp_path / "a.npy")
    )
    src = FrameSource(root, reader=opts)
    want = (*(resize or SHAPE[:2]), *(() if grey else SHAPE[2:]))
    assert src.frame_shape == want
    assert src.n_frames == T
    _assert_same(src.moments(), FrameSource(_npz(tmp_path, ref_frames, actions)).moments())


def test_grey_is_itu_601_luma(tmp_path, rng):
    frames = _frames(rng, 3)
    _write_episode(tmp_path / "g", frames)
    got = FrameSource(tmp_path / "g", reader=ReaderOptions(grey=True)).segments[0].frames
    luma = frames.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(got.read(0, 3).astype(float) - luma).max() <= 1.0  # fixed-point rounding


@pytest.mark.parametrize("opts", [{}, {"grey": True, "resize": (7, 5), "stride": 2}])
def test_chunk_frames_never_changes_the_bits(tmp_path, rng, opts):
    root, _ = _dataset(tmp_path, rng)
    T = sum(len(range(0, n, opts.get("stride", 1))) for n in LENGTHS)
    np.save(tmp_path / "a.npy", rng.integers(0, 5, T))
    reader = ReaderOptions(**opts, actions_file=str(tmp_path / "a.npy"))
    whole = FrameSource(root, reader=reader).moments(block_rows=4)
    for cf in (1, 2, 5):
        _assert_same(FrameSource(root, reader=reader, chunk_frames=cf).moments(block_rows=4), whole)


# ------------------------------------------------------------------------------ detection
def test_detect_claims_only_image_folders(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    assert images.detect(root) and images.detect(root / "ep_2")
    assert not images.detect(root / "ep_2" / "frame_1.png")  # a file is not a folder of images
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not images.detect(empty)
    npy = tmp_path / "npy"
    _write_episode(npy, _frames(rng, 2))
    np.save(npy / "frames_extra.npy", np.zeros((3, 2)))
    assert not images.detect(npy)  # numpy data, whatever else it holds
    assert detect(npy) == "numpy"
    other = tmp_path / "other"
    (other / "videos").mkdir(parents=True)
    (other / "videos" / "a.mp4").write_bytes(b"")
    (other / ".cache").mkdir()
    iio.imwrite(other / ".cache" / "frame_1.png", _frames(rng, 1)[0])
    assert not images.detect(other)  # hidden folders are not episodes


# ------------------------------------------------------------------------------ bad input
def test_corrupt_image(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    (root / "ep_10" / "frame_3.png").write_bytes(b"not a png at all")
    src = FrameSource(root)  # found when the image is read
    with pytest.raises(LamfastError, match=r"frame_3\.png: not a readable PNG or JPEG"):
        src.moments()


def test_truncated_image(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    f = root / "ep_2" / "frame_1.png"
    f.write_bytes(f.read_bytes()[:80])
    with pytest.raises(LamfastError, match=r"frame_1\.png: not a readable PNG or JPEG"):
        FrameSource(root)  # the first image is decoded when the dataset is opened


def test_images_of_different_sizes(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    iio.imwrite(root / "ep_11" / "frame_2.png", _frames(rng, 1, (12, 11, 3))[0])
    with pytest.raises(LamfastError, match=r"frame_2\.png: decodes to \(12, 11, 3\)") as e:
        FrameSource(root).moments()
    assert "\n" not in str(e.value)
    # resizing makes them one size
    FrameSource(root, reader=ReaderOptions(resize=(6, 5))).moments()


def test_images_of_different_modes(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    iio.imwrite(root / "ep_10" / "frame_4.png", _frames(rng, 1, (12, 10))[0])  # grey ("L")
    with pytest.raises(LamfastError, match=r"frame_4\.png: decodes to \(12, 10\) uint8"):
        FrameSource(root).moments()
    FrameSource(root, reader=ReaderOptions(grey=True)).moments()


@pytest.mark.parametrize("rows", [sum(LENGTHS) - 1, sum(LENGTHS) - len(LENGTHS), sum(LENGTHS) + 1])
def test_actions_file_with_wrong_rows(tmp_path, rng, rows):
    root, _ = _dataset(tmp_path, rng)
    np.save(tmp_path / "a.npy", np.zeros(rows, np.int64))
    with pytest.raises(LamfastError, match=rf"{rows} rows for {sum(LENGTHS)} kept frames of 3"):
        FrameSource(root, reader=ReaderOptions(actions_file=str(tmp_path / "a.npy")))


def test_actions_file_missing_or_not_npy(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    with pytest.raises(LamfastError, match="actions file .*no such file"):
        FrameSource(root, reader=ReaderOptions(actions_file=str(tmp_path / "none.npy")))
    (tmp_path / "a.csv").write_text("1,2\n")
    with pytest.raises(LamfastError, match="expected a .npy file"):
        FrameSource(root, reader=ReaderOptions(actions_file=str(tmp_path / "a.csv")))


def test_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    (empty / "ep_1").mkdir(parents=True)  # an episode folder without images
    with pytest.raises(LamfastError, match="no PNG or JPEG images"):
        images.open(empty, ReaderOptions())
    with pytest.raises(LamfastError, match="no .npy or .npz"):  # not claimed: numpy's message
        FrameSource(empty)


def test_missing_imageio(tmp_path, rng, monkeypatch):
    root, _ = _dataset(tmp_path, rng)
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v3", None)
    with pytest.raises(LamfastError) as e:
        FrameSource(root)
    assert str(e.value) == "reading image folders needs imageio: pip install 'lamfast[images]'"


def test_option_the_reader_does_not_take(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    with pytest.raises(LamfastError, match=r"--obs-key applies to .* not to .*\(images\)"):
        FrameSource(root, reader=ReaderOptions(obs_key="x"))
    with pytest.raises(LamfastError, match=r"--time-range applies to"):
        FrameSource(root, reader=ReaderOptions(time_range=(0.0, 1.0)))


@pytest.mark.parametrize("resize", [(0, 4), (3,), ("a", 2), (2.5, 3)])
def test_bad_resize(tmp_path, rng, resize):
    root, _ = _dataset(tmp_path, rng)
    with pytest.raises(LamfastError, match="resize must be two whole numbers"):
        FrameSource(root, reader=ReaderOptions(resize=resize))


def test_ambiguous_layouts(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    iio.imwrite(root / "stray.png", _frames(rng, 1)[0])
    with pytest.raises(LamfastError, match="holds images and subfolders of images"):
        FrameSource(root)
    one = tmp_path / "one"
    _write_episode(one, _frames(rng, 8))
    iio.imwrite(one / "frame_007.png", _frames(rng, 1)[0])
    with pytest.raises(LamfastError, match="frame_007.png and frame_7.png have one place"):
        FrameSource(one)
    (one / "frame_007.png").unlink()
    iio.imwrite(one / "frame_7.jpg", _frames(rng, 1)[0])
    with pytest.raises(LamfastError, match="frame_7.jpg and frame_7.png have one place"):
        FrameSource(one)


def test_numpy_file_in_an_episode_folder(tmp_path, rng):
    root, _ = _dataset(tmp_path, rng)
    np.save(root / "ep_10" / "actions.npy", np.zeros(5, np.int64))
    with pytest.raises(LamfastError, match=r"actions\.npy: an image episode folder holds a numpy"):
        FrameSource(root)


def test_fifo_among_the_images(tmp_path, rng):
    folder = tmp_path / "one"
    _write_episode(folder, _frames(rng, 3))
    import os

    os.mkfifo(folder / "frame_4.png")
    with pytest.raises(LamfastError, match="frame_4.png is a FIFO"):
        FrameSource(folder)


def test_numpy_file_beside_episode_folders_is_refused_unless_named(tmp_path):
    """An actions.npy beside the episode folders: neither read as frames by the numpy reader
    nor ignored (review)."""
    imageio = pytest.importorskip("imageio.v3")
    root = tmp_path / "imgs"
    for e in range(2):
        (root / f"ep{e}").mkdir(parents=True)
        for t in range(3):
            imageio.imwrite(root / f"ep{e}" / f"f{t}.png", np.full((4, 4), 10 * t, np.uint8))
    np.save(root / "actions.npy", np.arange(6))
    with pytest.raises(LamfastError, match="beside the image episode folders is not read"):
        FrameSource(root)
    src = FrameSource(root, reader=ReaderOptions(actions_file=str(root / "actions.npy")))
    assert src.n_transitions == 4 and src.action_kind == "discrete"
