"""Image folders: PNG and JPEG sequences (extracted video frames), read as frame segments.

Layout
------
- A folder whose files include PNG or JPEG images (``.png``, ``.jpg``, ``.jpeg``, any case) is
  one episode: its images, in the order below, are its frames.
- A folder without images of its own whose subfolders hold them is one episode per subfolder
  (subfolders in the order below; subfolders holding no image are skipped). Only this one level
  is read: subfolders of an episode folder are not.
- A folder holding both images and subfolders of images is refused (which is the episode?), and
  so is an ``.npy`` / ``.npz`` file inside an episode folder (it would be silently ignored: give
  actions with ``actions_file``). Other files (``.json``, ``.txt``...) and hidden entries (names
  starting with ``.``, e.g. macOS ``._frame_1.png``) are ignored.
- :func:`detect` claims a folder only when it holds images, or subfolders of images, and no
  ``.npy`` / ``.npz`` file and no zarr marker (those folders are numpy or zarr data).

Order
-----
Names are sorted in natural order (:func:`natural_key`): an image's stem (its name without the
suffix) is split into runs of ASCII digits and runs of other characters; digit runs compare as
whole numbers (``frame_9`` < ``frame_10``, and ``frame_007`` = ``frame_7``), other runs compare
case-insensitively (``str.casefold``), run by run from the left; signs and decimal points are
text. Two images of one episode whose stems compare equal (``frame_7.png`` and ``frame_007.png``,
or ``frame_7.png`` and ``frame_7.jpg``) are refused: they would be one frame twice, or a frame
whose place is a guess. Subfolders are sorted by the same key on their whole name, ties broken by
the name itself (code point order).

Options (:class:`~lamfast.sources.frames.formats.ReaderOptions`)
----------------------------------------------------------------
- ``stride``: keep images ``0, k, 2k, ...`` of each episode (in the order above).
- ``grey``: one channel, Pillow's ``"L"`` conversion (ITU-R 601-2 luma,
  ``L = R * 299/1000 + G * 587/1000 + B * 114/1000``).
- ``resize=(h, w)``: scale every image to ``h`` rows and ``w`` columns with Pillow's bilinear
  filter (antialiased when shrinking), after the grey conversion.
- ``actions_file``: a ``.npy`` of actions (ids ``(T,)`` or vectors ``(T, da)``), one row per kept
  frame of all episodes in order, so ``T`` is the number of kept frames; row ``t`` labels the
  transition from frame ``t`` to frame ``t + 1`` of its episode, and the last row of each episode
  is unused.

Images are decoded by imageio's Pillow plugin (the first image of a file; palettes applied,
16-bit PNGs as ``uint16``, no EXIF rotation); ``read(start, stop)`` decodes only those images,
so memory is one chunk of frames. Every image of a dataset must decode (after ``grey`` and
``resize``) to the shape and dtype of the first one, channels included: a mismatch is refused,
naming the file, when that image is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..._files import check_input
from ...errors import LamfastError
from .readers import _check_dtype, _check_segment, _Member, _NpyMember, _Segment, natural_key

NAME = "images"
OPTIONS = ("stride", "resize", "grey", "actions_file")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_NUMPY_SUFFIXES = (".npy", ".npz")
_MISSING = "reading image folders needs imageio: pip install 'lamfast[images]'"


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _imageio():
    try:
        import imageio.v3 as iio
    except ImportError:
        raise LamfastError(_MISSING) from None
    return iio


# ------------------------------------------------------------------------------ detection
def detect(path: Path) -> bool:
    """Whether ``path`` is a folder of images, or of subfolders of images (and not numpy or zarr
    data). Reads folder listings only (no image, and no imageio)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr" or not path.is_dir():
        return False
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    names = {e.name for e in entries}
    if ".zgroup" in names or "zarr.json" in names:
        return False
    numpy_here = any(os.path.splitext(n)[1].lower() in _NUMPY_SUFFIXES for n in names)
    if any(_is_image(n) for n in names):
        return not numpy_here
    # subfolders of images claim the folder even beside numpy files (an actions.npy): open()
    # refuses those unless they are the --actions-file, rather than the numpy reader taking
    # them for frames
    for e in sorted(entries, key=lambda e: (natural_key(e.name), e.name)):
        if e.name.startswith("."):
            continue
        try:
            if e.is_dir() and any(_is_image(n) for n in os.listdir(e.path)):
                return True
        except OSError:
            continue
    return False


# ------------------------------------------------------------------------------ listing
def _listing(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Image files, (non-hidden) subfolders and numpy files of ``folder``, unsorted."""
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise LamfastError(f"image folder {folder}: cannot list ({e.strerror or e})") from None
    images, folders, numpy_files = [], [], []
    for e in entries:
        if e.name.startswith("."):
            continue
        p = Path(e.path)
        if _is_image(e.name):
            images.append(check_input(p, "image"))  # a FIFO or device: refused, not skipped
        elif os.path.splitext(e.name)[1].lower() in _NUMPY_SUFFIXES:
            numpy_files.append(p)
        elif e.is_dir():
            folders.append(p)
    return images, folders, numpy_files


def _in_order(folder: Path, images: list[Path], numpy_files: list[Path]) -> list[Path]:
    """``images`` of one episode folder in natural order; refuses ties and numpy files."""
    if numpy_files:
        raise LamfastError(
            f"{min(numpy_files)}: an image episode folder holds a numpy file, which is not read; "
            "give actions as one .npy with --actions-file (one row per kept frame, all episodes)"
        )
    keyed = sorted((natural_key(p.stem), p.name, p) for p in images)
    for (k1, n1, _), (k2, n2, _) in zip(keyed, keyed[1:], strict=False):
        if k1 == k2:
            raise LamfastError(
                f"{folder}: images {n1} and {n2} have one place in the natural order (their "
                "names differ only in case, leading zeros or suffix); remove or rename one"
            )
    return [p for _, _, p in keyed]


def _episodes(path: Path, actions_file=None) -> list[tuple[str, list[Path]]]:
    """``(label, image files in order)`` of each episode of the dataset at ``path``."""
    images, folders, numpy_files = _listing(path)
    named = None if actions_file is None else Path(actions_file).resolve()
    stray = [f for f in numpy_files if f.resolve() != named]
    if stray and not images:
        raise LamfastError(
            f"{min(stray)}: a numpy file beside the image episode folders is not read; give "
            "actions with --actions-file (one row per kept frame, all episodes), or move it"
        )
    subs = []
    for f in sorted(folders, key=lambda f: (natural_key(f.name), f.name)):
        inner, _, inner_numpy = _listing(f)
        if inner:
            subs.append((f, inner, inner_numpy))
    if images and subs:
        raise LamfastError(
            f"{path}: holds images and subfolders of images ({subs[0][0].name}); put every "
            "episode in a subfolder of its own, or point at one episode folder"
        )
    if images:
        return [(path.name, _in_order(path, images, numpy_files))]
    if not subs:
        raise LamfastError(
            f"{path}: holds no PNG or JPEG images, nor subfolders of them (one episode each)"
        )
    return [(f"{path.name}/{f.name}", _in_order(f, inner, nf)) for f, inner, nf in subs]


# ------------------------------------------------------------------------------ decoding
def _resize_to(options) -> tuple[int, int] | None:
    if options.resize is None:
        return None
    try:
        h, w = (int(v) for v in options.resize)
        ok = h >= 1 and w >= 1 and all(float(v) == int(v) for v in options.resize)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LamfastError(
            f"resize must be two whole numbers (height, width) >= 1, got {options.resize!r}"
        )
    return h, w


def _decode(path: Path, grey: bool, size: tuple[int, int] | None) -> np.ndarray:
    """One image as an array: decoded by imageio's Pillow plugin, grey, then resized."""
    iio = _imageio()
    check_input(path, "image")
    try:
        a = iio.imread(path, plugin="pillow", index=0, mode="L" if grey else None)
        if size is not None:
            try:
                from PIL import Image
            except ImportError:
                raise LamfastError(_MISSING) from None
            bilinear = getattr(Image, "Resampling", Image).BILINEAR
            a = np.asarray(Image.fromarray(a).resize((size[1], size[0]), bilinear))
    except LamfastError:
        raise
    except Exception as e:  # Pillow raises many types for damaged files (OSError, SyntaxError..)
        msg = str(e).splitlines()[0] if str(e) else ""
        raise LamfastError(
            f"image {path}: not a readable PNG or JPEG ({type(e).__name__}: {msg})"
        ) from None
    return a


class _ImageMember(_Member):
    """The kept images of one episode, decoded ``start..stop-1`` on each read."""

    def __init__(self, files, label, grey, size, like: np.ndarray, like_file: Path):
        self.files, self.name = list(files), label
        self.grey, self.size = grey, size
        self.shape = (len(self.files), *like.shape)
        self.dtype = like.dtype
        self.like_file = like_file

    def read(self, start, stop):
        stop = min(int(stop), len(self))
        start = min(max(int(start), 0), stop)
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        for i in range(start, stop):
            a = _decode(self.files[i], self.grey, self.size)
            if a.shape != self.shape[1:] or a.dtype != self.dtype:
                raise LamfastError(
                    f"image {self.files[i]}: decodes to {a.shape} {a.dtype}, but "
                    f"{self.like_file.name} to {self.shape[1:]} {self.dtype}; all images need "
                    "one size and mode (--resize H W and --grey make them so)"
                )
            out[i - start] = a
        return out


class _ActionRows(_NpyMember):
    """Rows of one episode of the actions file, read from its memory map (an ``_NpyMember`` so
    that :meth:`FrameSource.files` counts the file in a checkpoint's identity)."""

    def __init__(self, whole: _NpyMember, start: int, stop: int, label: str):
        self.path, self.name, self.dtype = whole.path, label, whole.dtype
        self._whole, self._start = whole, start
        self.shape = (stop - start, *whole.shape[1:])

    def read(self, start, stop):
        stop = min(int(stop), len(self))
        start = min(max(int(start), 0), stop)
        return self._whole.read(self._start + start, self._start + stop)


def _actions(options, total: int, n_episodes: int) -> _NpyMember | None:
    if options.actions_file is None:
        return None
    p = check_input(Path(options.actions_file), "actions file")
    if p.suffix.lower() != ".npy":
        raise LamfastError(f"actions file {p}: expected a .npy file (np.save)")
    whole = _NpyMember(p, p.name)
    if len(whole.shape) not in (1, 2):
        raise LamfastError(
            f"actions file {p}: shape {whole.shape}; expected ids (T,) or vectors (T, da)"
        )
    if len(whole) != total:
        raise LamfastError(
            f"actions file {p}: {len(whole)} rows for {total} kept frames of {n_episodes} "
            "episode(s) (one row per kept frame of all episodes, in order)"
        )
    return whole


# ------------------------------------------------------------------------------ open
def open(path: Path, options) -> list[_Segment]:
    """One segment per episode of the image folder at ``path`` (see the module docstring)."""
    _imageio()  # one line now if imageio is missing, before any listing
    path = check_input(path, "frames", folder_ok=True)
    if not path.is_dir():
        raise LamfastError(f"{path}: an image dataset is a folder of images (or of folders)")
    size = _resize_to(options)
    grey = bool(options.grey)
    episodes = [
        (label, files[:: options.stride]) for label, files in _episodes(path, options.actions_file)
    ]
    like_file = episodes[0][1][0]
    like = _decode(like_file, grey, size)
    _check_dtype(like.dtype, f"image {like_file}")
    total = sum(len(files) for _, files in episodes)
    actions = _actions(options, total, len(episodes))
    segments, row = [], 0
    for label, files in episodes:
        seg = _Segment(label, frames=_ImageMember(files, label, grey, size, like, like_file))
        if actions is not None:
            seg.actions = _ActionRows(actions, row, row + len(files), f"{actions.name}[{label}]")
        row += len(files)
        _check_segment(seg)
        segments.append(seg)
    return segments
