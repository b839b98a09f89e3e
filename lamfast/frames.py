"""Real frames: stream recorded frame files into ``[o, delta, a]`` moments (DESIGN 3.1, item 4).

Formats
-------
- ``.npy`` (memory-mapped): frames shaped ``T x d`` or ``T x H x W [x C]``, any real dtype; one
  trajectory.
- ``.npz`` (streamed member by member, compressed or not): key ``frames`` and optionally
  ``actions`` and ``episode_starts`` (or ``dones``); or pairs data ``o`` / ``o_next`` (and
  optionally ``actions``).
- a directory holding ``frames.npy`` or ``o.npy`` + ``o_next.npy`` (an unpacked ``.npz``: the
  layout ``lamfast simulate linear`` writes); any other directory is read as its ``.npy`` /
  ``.npz`` files in name order, each file starting a new episode.
- zarr (optional extra): an array of frames or a group with the ``.npz`` keys.

Transitions
-----------
Transition ``t`` goes from frame ``t`` to frame ``t + 1`` with action ``actions[t]`` (so
``actions`` has ``T`` or ``T - 1`` rows). It exists unless frame ``t + 1`` starts an episode
(``episode_starts[t + 1]``, or ``dones[t]``); frame differences therefore never cross an episode
boundary, and frames are read in chunks with the last frame (and action and done flag) of a chunk
carried into the next, so chunk edges change nothing.

Determinism
-----------
Valid transitions are numbered globally in file order; block ``k`` holds transitions
``k * block_rows ... (k + 1) * block_rows - 1`` and block moments are merged by
:class:`~lamfast.moments.MergeTree`. The read chunk size is therefore invisible in the result: any
``chunk_frames`` gives bitwise-identical moments (tests/test_frames.py). Memory is bounded by one
chunk of frames, the blocks in flight (one per thread, at most ``config.FRAME_INFLIGHT_BYTES``;
each holds its rows, their centred copy and a co-moment) and ``log2(blocks)`` co-moment matrices.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import config
from ._blas import thread_pool, usable_cores
from ._files import atomic_output
from ._progress import Progress
from .errors import LamfastError
from .moments import Blocks, MergeTree, Moments, block_moments

ACTION_KINDS = ("auto", "discrete", "continuous", "none")
_FRAME_KEYS = ("frames", "o", "o_next", "actions", "episode_starts", "dones")


# ============================================================================ array members
class _Member:
    """A named array read by ranges of its first axis (``read(start, stop)``)."""

    name: str
    shape: tuple
    dtype: np.dtype

    def __len__(self) -> int:
        return int(self.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class _NpyMember(_Member):
    """A ``.npy`` file, memory-mapped."""

    def __init__(self, path: Path, label: str):
        self.name, self.path = label, Path(path)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = _read_header(f, version)
                offset = f.tell()
        except (ValueError, OSError, EOFError) as e:
            raise LamfastError(f"{label}: not a readable .npy file ({e})") from None
        _check_shape(shape, label)
        _check_dtype(dtype, label)
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        have = os.path.getsize(path) - offset
        if have < need:
            raise LamfastError(
                f"{label}: file is truncated ({have} of {need} data bytes for shape {shape})"
            )
        if fortran and len(shape) > 1:
            raise LamfastError(f"{label}: Fortran-ordered arrays are not supported; save C order")
        self.shape, self.dtype = tuple(shape), dtype
        self._map = (
            np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
            if need > 0
            else np.empty(shape, dtype)
        )

    def read(self, start, stop):
        return np.asarray(self._map[start:stop])


class _ZipMember(_Member):
    """One ``.npy`` member of a ``.npz``, read sequentially (works for compressed archives)."""

    def __init__(self, path: Path, member: str, label: str):
        self.path, self.member, self.name = path, member, label
        self._f = None
        self._pos = 0
        f = self._open()
        try:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = _read_header(f, version)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise LamfastError(f"{label}: not a readable .npy member ({e})") from None
        finally:
            f.close()
        _check_shape(shape, label)
        _check_dtype(dtype, label)
        if fortran and len(shape) > 1:
            raise LamfastError(f"{label}: Fortran-ordered arrays are not supported; save C order")
        self.shape, self.dtype = tuple(shape), dtype
        self._row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def _open(self):
        try:
            with zipfile.ZipFile(self.path) as z:  # the member keeps the file open until closed
                return z.open(self.member)
        except (zipfile.BadZipFile, OSError, KeyError) as e:
            raise LamfastError(f"{self.name}: cannot open ({e})") from None

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def __del__(self):
        self.close()

    def _rewind(self):
        self.close()
        self._f = self._open()
        version = np.lib.format.read_magic(self._f)
        _read_header(self._f, version)
        self._pos = 0

    def read(self, start, stop):
        stop = min(stop, len(self))
        if self._f is None or start < self._pos:
            self._rewind()
        try:
            if start > self._pos:  # skip forward (sequential readers rarely need this)
                _read_exact(self._f, (start - self._pos) * self._row_bytes, self.name)
                self._pos = start
            n = max(stop - start, 0)
            buf = _read_exact(self._f, n * self._row_bytes, self.name)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            raise LamfastError(f"{self.name}: corrupt or truncated archive ({e})") from None
        self._pos = start + n
        return np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:]))


def _read_header(f, version):
    """Shape, Fortran flag and dtype of an ``.npy`` header (``version`` from ``read_magic``)."""
    fmt = np.lib.format
    reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    try:
        return reader(f, max_header_size=1 << 20)
    except (ValueError, OSError, EOFError):
        raise
    except Exception as e:  # a damaged header trips numpy's parser in other ways (tokenize...)
        raise ValueError(f"damaged header ({type(e).__name__})") from None


def _read_exact(f, nbytes: int, label: str) -> bytes:
    buf = f.read(nbytes)
    if len(buf) != nbytes:
        raise LamfastError(f"{label}: file is truncated (read {len(buf)} of {nbytes} bytes)")
    return buf


class _ZarrMember(_Member):
    def __init__(self, array, label: str):
        self._a, self.name = array, label
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)
        _check_dtype(self.dtype, label)

    def read(self, start, stop):
        return np.asarray(self._a[start:stop])


def _check_shape(shape, label: str):
    if any(int(n) < 0 for n in shape):
        raise LamfastError(f"{label}: damaged header (negative dimension in shape {tuple(shape)})")


def _check_dtype(dtype: np.dtype, label: str):
    if dtype.kind not in "biuf":
        raise LamfastError(f"{label}: dtype {dtype} is not a real numeric type")


# ============================================================================ opening datasets
@dataclasses.dataclass
class _Segment:
    """One file's worth of transitions: a trajectory set (``frames``) or pairs (``o``)."""

    label: str
    frames: _Member | None = None
    o: _Member | None = None
    o_next: _Member | None = None
    actions: _Member | None = None
    starts: _Member | None = None
    dones: _Member | None = None

    @property
    def kind(self) -> str:
        return "frames" if self.frames is not None else "pairs"

    @property
    def first(self) -> _Member:
        return self.frames if self.frames is not None else self.o


def _segment_from_members(members: dict[str, _Member], label: str) -> _Segment:
    if "frames" in members:
        seg = _Segment(label, frames=members["frames"])
        if "episode_starts" in members:
            seg.starts = members["episode_starts"]
        elif "dones" in members:
            seg.dones = members["dones"]
    elif "o" in members or "o_next" in members:
        for key in ("o", "o_next"):
            if key not in members:
                raise LamfastError(f"{label}: pairs data needs keys 'o' and 'o_next'; no {key!r}")
        seg = _Segment(label, o=members["o"], o_next=members["o_next"])
        if seg.o.shape != seg.o_next.shape:
            raise LamfastError(
                f"{label}: 'o' has shape {seg.o.shape} but 'o_next' has {seg.o_next.shape}"
            )
    else:
        raise LamfastError(
            f"{label}: missing key 'frames' (or 'o' and 'o_next'); found {sorted(members)}"
        )
    seg.actions = members.get("actions")
    _check_segment(seg)
    return seg


def _check_segment(seg: _Segment):
    first = seg.first
    if len(first.shape) < 2:
        raise LamfastError(f"{first.name}: frames need shape T x d or T x H x W [x C]")
    T = len(first)
    kind = seg.kind
    if seg.actions is not None:
        n = len(seg.actions)
        ok = (T, T - 1) if kind == "frames" else (T,)
        if len(seg.actions.shape) > 2:
            raise LamfastError(
                f"{seg.actions.name}: actions of shape {seg.actions.shape}; expected ids (T,) or "
                "vectors (T, da) along one time axis (flatten episodes and mark episode_starts)"
            )
        if n not in ok:
            want = f"{T} or {T - 1}" if kind == "frames" else f"{T}"
            raise LamfastError(
                f"{seg.actions.name}: {n} actions do not match {T} frames (expected {want} rows)"
            )
    for flags in (seg.starts, seg.dones):
        if flags is not None and (len(flags) != T or len(flags.shape) != 1):
            raise LamfastError(f"{flags.name}: shape {flags.shape} does not match {T} frames")


def _open_npz(path: Path) -> _Segment:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise LamfastError(f"{path}: not a readable .npz archive ({e})") from None
    members = {}
    for name in names:
        key = name[:-4] if name.endswith(".npy") else name
        if key in _FRAME_KEYS:
            members[key] = _ZipMember(path, name, f"{path.name}[{key}]")
    return _segment_from_members(members, path.name)


def _open_member_dir(path: Path) -> _Segment:
    members = {}
    for key in _FRAME_KEYS:
        f = path / f"{key}.npy"
        if f.exists():
            members[key] = _NpyMember(f, f"{path.name}/{f.name}")
    return _segment_from_members(members, path.name)


def _open_zarr(path: Path) -> list[_Segment]:
    try:
        import zarr
    except ImportError:
        raise LamfastError(
            "reading zarr needs the zarr package: pip install 'lamfast[zarr]'"
        ) from None
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # zarr raises many types for unreadable stores
        raise LamfastError(f"{path}: not a readable zarr store ({e})") from None
    if hasattr(node, "shape"):
        return [_segment_from_members({"frames": _ZarrMember(node, path.name)}, path.name)]
    members = {k: _ZarrMember(node[k], f"{path.name}/{k}") for k in _FRAME_KEYS if k in node}
    return [_segment_from_members(members, path.name)]


def _open_file(path: Path) -> list[_Segment]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        member = _NpyMember(path, path.name)
        return [_segment_from_members({"frames": member}, path.name)]
    if suffix == ".npz":
        return [_open_npz(path)]
    raise LamfastError(f"{path}: unsupported file type (use .npy, .npz, a directory or zarr)")


def open_segments(path) -> list[_Segment]:
    """The segments (files) of a frame dataset, in order; validates shapes without reading data."""
    path = Path(path)
    if not path.exists():
        raise LamfastError(f"{path}: no such file or directory")
    if path.suffix.lower() == ".zarr" or (path.is_dir() and (path / ".zgroup").exists()):
        return _open_zarr(path)
    if path.is_dir() and (path / "zarr.json").exists():
        return _open_zarr(path)
    if path.is_dir():
        if (path / "frames.npy").exists() or (path / "o.npy").exists():
            return [_open_member_dir(path)]
        files = sorted(
            p for p in path.iterdir() if p.suffix.lower() in (".npy", ".npz") and p.is_file()
        )
        if not files:
            raise LamfastError(f"{path}: directory holds no .npy or .npz files")
        segments = []
        for f in files:
            segments += _open_file(f)
        return segments
    return _open_file(path)


# ============================================================================ preprocessing
def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """Parse ``"y0:y1,x0:x1"`` into a crop box (``None`` passes through)."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*(\d+):(\d+)\s*,\s*(\d+):(\d+)\s*", str(text))
    if not m:
        raise LamfastError(f"crop must look like 'y0:y1,x0:x1', got {text!r}")
    y0, y1, x0, x1 = (int(g) for g in m.groups())
    if y1 <= y0 or x1 <= x0:
        raise LamfastError(f"crop {text!r} is empty")
    return (y0, y1, x0, x1)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Frame preprocessing: crop (rows y0:y1, columns x0:x1), block-average downsampling, scale.

    ``scale=None`` means 1/255 for ``uint8`` frames and 1 otherwise. Frames are flattened to
    vectors of float64 (in C order: row, column, channel).
    """

    crop: tuple[int, int, int, int] | None = None
    downsample: int = 1
    scale: float | None = None

    def __post_init__(self):
        if isinstance(self.crop, str):
            object.__setattr__(self, "crop", parse_crop(self.crop))
        if self.crop is not None:
            object.__setattr__(self, "crop", tuple(int(c) for c in self.crop))
        if int(self.downsample) < 1:
            raise LamfastError(f"downsample must be a whole number >= 1, got {self.downsample!r}")
        object.__setattr__(self, "downsample", int(self.downsample))
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise LamfastError(f"scale must be a positive number, got {self.scale!r}")

    def scale_for(self, dtype: np.dtype) -> float:
        if self.scale is not None:
            return float(self.scale)
        return 1.0 / 255.0 if np.dtype(dtype) == np.uint8 else 1.0

    def out_shape(self, frame_shape: tuple, label: str) -> tuple:
        """Shape of one frame after crop and downsampling."""
        shape = tuple(frame_shape)
        if self.crop is None and self.downsample == 1:
            return shape
        if len(shape) < 2:
            raise LamfastError(f"{label}: crop/downsample need frames shaped T x H x W [x C]")
        H, W = shape[0], shape[1]
        y0, y1, x0, x1 = self.crop if self.crop else (0, H, 0, W)
        if y1 > H or x1 > W:
            raise LamfastError(f"{label}: crop {self.crop} exceeds the frame size {H} x {W}")
        h, w = (y1 - y0) // self.downsample, (x1 - x0) // self.downsample
        if h < 1 or w < 1:
            raise LamfastError(f"{label}: downsample {self.downsample} leaves an empty frame")
        return (h, w, *shape[2:])

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Chunk of raw frames (n x ...) to float64 rows (n x d)."""
        x = raw
        if self.crop is not None or self.downsample > 1:
            H, W = x.shape[1], x.shape[2]
            y0, y1, x0, x1 = self.crop if self.crop else (0, H, 0, W)
            f = self.downsample
            h, w = (y1 - y0) // f, (x1 - x0) // f
            x = x[:, y0 : y0 + h * f, x0 : x0 + w * f]
            if f > 1:
                x = x.reshape(x.shape[0], h, f, w, f, *x.shape[3:]).astype(np.float64)
                x = x.mean(axis=(2, 4))
        out = np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float64)
        s = self.scale_for(raw.dtype)
        if s != 1.0:
            out *= s
        return out

    def to_dict(self) -> dict:
        return {
            "crop": list(self.crop) if self.crop else None,
            "downsample": self.downsample,
            "scale": self.scale,
        }


# ============================================================================ the source
class FrameSource:
    """A frame dataset on disk, read as a stream of transitions ``(o, o', action)``.

    Parameters
    ----------
    path : str or Path
        ``.npy``, ``.npz``, a directory, or a zarr store (see the module docstring).
    preprocess : Preprocess, optional
        Crop, downsample, scale.
    actions : {"auto", "discrete", "continuous", "none"}
        ``auto``: integer 1-d actions are discrete (one-hot), real ones continuous.
    n_actions : int, optional
        Number of discrete actions; inferred as ``max id + 1`` when not given.
    chunk_frames : int, optional
        Frames read per chunk (default ``config.FRAME_CHUNK``); never changes a result.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "f.npy")
    >>> np.save(p, np.arange(12.0).reshape(6, 2))
    >>> src = FrameSource(p)
    >>> src.do, src.n_transitions
    (2, 5)
    """

    def __init__(
        self,
        path,
        *,
        preprocess: Preprocess | None = None,
        actions: str = "auto",
        n_actions: int | None = None,
        chunk_frames: int | None = None,
    ):
        self.path = Path(path)
        self.preprocess = preprocess or Preprocess()
        if actions not in ACTION_KINDS:
            raise LamfastError(f"actions must be one of {', '.join(ACTION_KINDS)}, got {actions!r}")
        self.chunk_frames = int(chunk_frames or config.FRAME_CHUNK)
        if self.chunk_frames < 1:
            raise LamfastError("chunk_frames must be >= 1")
        self.segments = open_segments(self.path)
        first = self.segments[0].first
        self.frame_shape = tuple(first.shape[1:])
        self.raw_dtype = first.dtype
        for seg in self.segments:
            for m in (seg.frames, seg.o, seg.o_next):
                if m is not None and tuple(m.shape[1:]) != self.frame_shape:
                    raise LamfastError(
                        f"{m.name}: frame shape {tuple(m.shape[1:])} differs from "
                        f"{self.frame_shape} of {first.name}"
                    )
        self.shape = self.preprocess.out_shape(self.frame_shape, first.name)
        self.do = int(np.prod(self.shape))
        if self.do > config.FRAMES_MAX_DIM:
            raise LamfastError(
                f"frames have {self.do} values after preprocessing (max {config.FRAMES_MAX_DIM}: "
                "the co-moment is (2d)^2 floats); use --downsample or --crop"
            )
        self._setup_actions(actions, n_actions)

    # ------------------------------------------------------------------ actions
    def _setup_actions(self, kind: str, n_actions):
        acts = [seg.actions for seg in self.segments]
        have = [a is not None for a in acts]
        if kind == "none" or not any(have):
            if kind in ("discrete", "continuous") and not any(have):
                raise LamfastError(f"{self.path}: --actions {kind} but the data have no actions")
            self.action_kind, self.da, self.n_actions = None, 0, None
            for seg in self.segments:
                seg.actions = None
            return
        if not all(have):
            missing = [s.label for s, h in zip(self.segments, have, strict=True) if not h]
            raise LamfastError(f"{missing[0]}: has no actions while other files do")
        dtypes = {a.dtype.kind for a in acts}
        ndims = {len(a.shape) for a in acts}
        if kind == "auto":
            kind = "discrete" if dtypes <= set("biu") and ndims == {1} else "continuous"
        if kind == "discrete":
            if ndims != {1}:
                raise LamfastError(f"{acts[0].name}: discrete actions must be a 1-d array of ids")
            if not dtypes <= set("biu"):
                raise LamfastError(f"{acts[0].name}: discrete actions must be integers")
            if n_actions is None:  # one cheap pass over the ids (never the frames)
                top = -1
                for a in acts:
                    for s in range(0, len(a), 1 << 20):
                        ids = a.read(s, s + (1 << 20))
                        if ids.size:
                            top = max(top, int(ids.max()))
                n_actions = top + 1
            if int(n_actions) < 1:
                raise LamfastError("n_actions must be >= 1")
            self.action_kind, self.n_actions, self.da = "discrete", int(n_actions), int(n_actions)
        else:
            if n_actions is not None:
                raise LamfastError("n_actions applies to discrete actions only")
            widths = {1 if len(a.shape) == 1 else a.shape[1] for a in acts}
            if len(widths) != 1:
                raise LamfastError(f"action widths differ between files: {sorted(widths)}")
            self.action_kind, self.n_actions, self.da = "continuous", None, widths.pop()

    # ------------------------------------------------------------------ layout
    @property
    def blocks(self) -> Blocks:
        """Joint layout: ``[o, delta]`` plus ``a`` when the data have actions."""
        layout = [("o", self.do), ("delta", self.do)]
        if self.da:
            layout.append(("a", self.da))
        return tuple(layout)

    @property
    def n_frames(self) -> int:
        return sum(len(seg.first) for seg in self.segments)

    @property
    def n_transitions(self) -> int:
        """Number of valid transitions (reads only the episode flags)."""
        total = 0
        for seg in self.segments:
            T = len(seg.first)
            if seg.kind == "pairs":
                total += T
                continue
            starts = 1  # frame 0 always starts an episode
            # frame t >= 1 starts one when episode_starts[t], or when dones[t - 1]
            if seg.starts is not None:
                flags, first, last = seg.starts, 1, T
            elif seg.dones is not None:
                flags, first, last = seg.dones, 0, T - 1
            else:
                flags, first, last = None, 0, 0
            step = 1 << 20
            for s in range(first, last, step):
                starts += int(np.count_nonzero(flags.read(s, min(last, s + step))))
            total += T - starts
        return total

    def _check_actions(self, acts: np.ndarray, rows: np.ndarray, member: _Member) -> None:
        """Validate the actions of valid transitions (``rows``: their indices in ``member``).

        Only actions that label a transition are checked, so padding in the unused last action
        of an episode (NaN, -1) is harmless.
        """
        if self.action_kind == "continuous":
            bad = ~np.isfinite(acts.reshape(len(acts), -1)).all(axis=1)
            what = "contains NaN or inf"
        else:
            bad = (acts < 0) | (acts >= self.n_actions)
            what = f"is not an action id in 0..{self.n_actions - 1} (n_actions={self.n_actions})"
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = "" if self.action_kind == "continuous" else f" = {int(acts[i])}"
            raise LamfastError(f"{member.name}: action {int(rows[i])}{value} {what}")

    def action_rows(self, raw: np.ndarray) -> np.ndarray:
        """Action ids or vectors (n,) / (n, da) to rows of the ``a`` block (one-hot if discrete)."""
        if self.action_kind == "discrete":
            ids = raw.astype(np.int64, copy=False)
            out = np.zeros((ids.shape[0], self.da))
            out[np.arange(ids.shape[0]), ids] = 1.0
            return out
        return np.asarray(raw, dtype=np.float64).reshape(raw.shape[0], self.da)

    # ------------------------------------------------------------------ streaming
    def _frames(self, member: _Member, start: int, stop: int) -> np.ndarray:
        x = self.preprocess.apply(member.read(start, stop))
        if not np.isfinite(x).all():
            bad = start + int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise LamfastError(f"{member.name}: frame {bad} contains NaN or inf")
        return x

    def transitions(self, progress: bool | None = None, label: str = "frames") -> Iterator[tuple]:
        """Yield chunks ``(o, o_next, actions)`` of valid transitions, in global order.

        ``actions`` is the raw id / vector array of the chunk's transitions, or None.
        """
        with Progress(total=self.n_frames, label=label, enabled=progress) as bar:
            for seg in self.segments:
                if seg.kind == "pairs":
                    yield from self._pairs(seg, bar)
                else:
                    yield from self._trajectories(seg, bar)

    def _pairs(self, seg: _Segment, bar, start: int = 0):
        T, cf = len(seg.o), self.chunk_frames
        for s in range(start, T, cf):
            e = min(T, s + cf)
            o, o2 = self._frames(seg.o, s, e), self._frames(seg.o_next, s, e)
            acts = None
            if seg.actions is not None:
                acts = seg.actions.read(s, e)
                self._check_actions(acts, np.arange(s, e), seg.actions)
            bar.update(e - s)
            yield o, o2, acts

    @staticmethod
    def _boundary(seg: _Segment, s: int, e: int) -> np.ndarray:
        """``boundary[i]``: frame ``s + i`` starts an episode, so no transition ends there.

        Stateless (reads ``dones[s - 1]`` itself), so a read can start at any frame.
        """
        if seg.starts is not None:
            b = np.asarray(seg.starts.read(s, e), dtype=bool).copy()
        elif seg.dones is not None:
            d = np.asarray(seg.dones.read(max(s - 1, 0), e - 1), dtype=bool)
            b = np.concatenate([[True], d]) if s == 0 else d.copy()
        else:
            b = np.zeros(e - s, dtype=bool)
        if s == 0:
            b[0] = True  # there is no transition into frame 0
        return b

    def _trajectories(self, seg: _Segment, bar, start: int = 0):
        T, cf = len(seg.frames), self.chunk_frames
        n_act = len(seg.actions) if seg.actions is not None else 0
        carry_frame = carry_act = None
        if start > 0:  # an indexed read starting mid-file: frame and action before it
            carry_frame = self._frames(seg.frames, start - 1, start)[0]
            if seg.actions is not None:
                carry_act = seg.actions.read(start - 1, start)
        for s in range(start, T, cf):
            e = min(T, s + cf)
            F = self._frames(seg.frames, s, e)
            boundary = self._boundary(seg, s, e)
            if carry_frame is None:
                carry_frame = F[0]  # only read when boundary[0] is True (s == 0)
            prev = np.concatenate([carry_frame[None, :], F[:-1]])
            valid = ~boundary
            acts = None
            if seg.actions is not None:
                A = seg.actions.read(s, min(e, n_act))
                lead = A[:1] if carry_act is None else carry_act
                if len(lead) == 0:  # no action at all (one frame, T - 1 = 0 actions)
                    lead = np.zeros((1, *A.shape[1:]), A.dtype)
                prev_a = np.concatenate([lead, A])[: e - s]
                if len(A) == e - s:
                    carry_act = A[-1:]
                acts = prev_a[valid]
                self._check_actions(acts, np.arange(s - 1, e - 1)[valid], seg.actions)
            carry_frame = F[-1]
            bar.update(e - s)
            if valid.all():
                yield prev, F, acts
            elif valid.any():
                yield prev[valid], F[valid], acts

    # ------------------------------------------------------------------ indexed reads
    def index(self, noop_action: int | None = None, stride: int | None = None) -> TransitionIndex:
        """Where the transitions are, so that any range of them can be read directly.

        Reads only the episode flags (and, with ``noop_action``, the action ids): counts the
        valid transitions (those with action ``noop_action``) ending in each run of ``stride``
        frames. Used by executors that compute blocks out of order (Dask, resumed runs).
        """
        stride = int(stride or config.FRAME_CHUNK)
        if stride < 1:
            raise LamfastError("stride must be >= 1")
        if noop_action is not None:
            self._check_noop(noop_action)
        counts, offsets = [], [0]
        for seg in self.segments:
            T = len(seg.first)
            per = []
            for s in range(0, T, stride):
                e = min(T, s + stride)
                if seg.kind == "pairs":
                    sel = np.ones(e - s, dtype=bool)
                    if noop_action is not None:
                        sel &= np.asarray(seg.actions.read(s, e)).astype(np.int64) == noop_action
                else:
                    sel = ~self._boundary(seg, s, e)
                    if noop_action is not None:
                        # transition ending at frame j carries actions[j - 1]; j = 0 is invalid
                        a = np.asarray(seg.actions.read(max(s - 1, 0), e - 1)).astype(np.int64)
                        if s == 0:
                            a = np.concatenate([[-1], a])
                        sel &= a == noop_action
                per.append(int(np.count_nonzero(sel)))
            counts.append(np.concatenate([[0], np.cumsum(per, dtype=np.int64)]))
            offsets.append(offsets[-1] + int(counts[-1][-1]))
        return TransitionIndex(stride, np.asarray(offsets, dtype=np.int64), tuple(counts))

    def read_from(self, index: TransitionIndex, first: int, noop_action=None):
        """Yield chunks ``(o, o_next, actions)`` of the transitions of ``index`` from ``first``
        to the end: the same rows, in the same order, as :meth:`transitions` yields (filtered to
        ``noop_action`` when the index was built with it)."""
        if not 0 <= first < index.total:
            return
        seg_i, start, skip = index.locate(first)
        bar = Progress(total=0, enabled=False)
        for seg in self.segments[seg_i:]:
            if seg.kind == "pairs":
                chunks = self._pairs(seg, bar, start)
            else:
                chunks = self._trajectories(seg, bar, start)
            for o, o2, acts in chunks:
                if noop_action is not None:
                    sel = acts.astype(np.int64) == noop_action
                    o, o2, acts = o[sel], o2[sel], acts[sel]
                n = o.shape[0]
                if skip >= n:
                    skip -= n
                    continue
                if skip:
                    o, o2, acts = o[skip:], o2[skip:], (None if acts is None else acts[skip:])
                    skip = 0
                yield o, o2, acts
            start = 0

    def read_range(self, index: TransitionIndex, first: int, stop: int, noop_action=None):
        """Yield chunks of transitions ``first..stop-1`` of ``index`` (see :meth:`read_from`)."""
        need = int(min(stop, index.total)) - int(first)
        if need > 0:
            yield from _Cursor(self, index, int(first), noop_action).take(need)

    def spec(self) -> dict:
        """Constructor arguments that reopen this source (on a Dask worker) without a scan."""
        return {
            "path": str(self.path.resolve()),  # workers may run in another directory
            "preprocess": self.preprocess,
            "actions": self.action_kind or "none",
            "n_actions": self.n_actions,
            "chunk_frames": self.chunk_frames,
        }

    def files(self) -> list[list]:
        """``[path, size, mtime_ns]`` of every file the dataset is read from (a checkpoint's
        identity; other files beside them, such as the checkpoint itself, do not count)."""
        paths = set()
        for seg in self.segments:
            for m in (seg.frames, seg.o, seg.o_next, seg.actions, seg.starts, seg.dones):
                if isinstance(m, _NpyMember | _ZipMember):
                    paths.add(m.path.resolve())
                elif m is not None:  # zarr: the whole store
                    paths.update(f.resolve() for f in self.path.rglob("*") if f.is_file())
        out = []
        for f in sorted(paths):
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
        return out

    def shift(self) -> np.ndarray:
        """The first frame: subtracted from the ``o`` rows before accumulating, added back to the
        mean, so a large common offset costs no precision (as in ``moments_from_rows``)."""
        for seg in self.segments:
            if len(seg.first):
                return self._frames(seg.first, 0, 1)[0]
        return np.zeros(self.do)  # no frames at all: moments() reports "no transitions"

    def joint_rows(self, o, o2, acts, shift) -> np.ndarray:
        """Rows ``[o - shift, o_next - o, (a)]`` of the joint layout (:attr:`blocks`)."""
        cols = [o - shift, o2 - o]
        if self.da:
            cols.append(self.action_rows(acts))
        return np.hstack(cols)

    def would_read(self, path) -> bool:
        """Whether a file at ``path`` would be read as part of this dataset (a directory of
        ``.npy``/``.npz`` files reads every such file at its top level)."""
        path = Path(os.path.abspath(path))
        if not self.path.is_dir() or path.parent != Path(os.path.abspath(self.path)):
            return False
        if (self.path / "frames.npy").exists() or (self.path / "o.npy").exists():
            # an unpacked .npz directory (open_segments): only its known members are read
            return path.suffix.lower() == ".npy" and path.stem in _FRAME_KEYS
        return path.suffix.lower() in (".npy", ".npz")

    def _check_noop(self, noop_action) -> None:
        if self.action_kind != "discrete":
            raise LamfastError("--noop-action needs discrete actions")
        if not 0 <= noop_action < self.n_actions:
            raise LamfastError(
                f"noop action {noop_action} is not an action id (0..{self.n_actions - 1})"
            )

    # ------------------------------------------------------------------ moments
    def moments(
        self,
        *,
        block_rows: int | None = None,
        noop_action: int | None = None,
        progress: bool | None = None,
        workers: int | None = None,
        scheduler: str | None = None,
        client=None,
        checkpoint=None,
    ) -> Moments | tuple[Moments, Moments | None]:
        """Moments of ``[o, delta, (a)]`` over every valid transition.

        With ``noop_action`` also returns the moments of ``delta`` over the transitions whose
        (discrete) action is ``noop_action`` (None when there are none).

        ``workers`` / ``scheduler`` / ``client`` compute the blocks on Dask and ``checkpoint``
        (a ``.npz`` path) makes the run resumable; both read block ranges through
        :meth:`index` and give the same bits as the single sequential pass
        (``lamfast.distributed.frame_moments_tree``).
        """
        block_rows = int(block_rows or config.BLOCK_ROWS)
        if block_rows < 1:
            raise LamfastError("block_rows must be >= 1")
        if noop_action is not None:
            self._check_noop(noop_action)
        if any(x is not None for x in (workers, scheduler, client, checkpoint)):
            from .distributed import frame_moments_tree

            return frame_moments_tree(
                self,
                block_rows=block_rows,
                noop_action=noop_action,
                progress=progress,
                workers=workers,
                scheduler=scheduler,
                client=client,
                checkpoint=checkpoint,
            )
        # Blocks are computed on threads while the next chunk is read (same bits for any count),
        # as many as the cores this process may use and the in-flight memory budget allow.
        p = sum(size for _, size in self.blocks)
        per_block = block_rows * p * 16 + p * p * 8
        threads = int(config.STREAM_THREADS) or usable_cores()
        threads = max(1, min(threads, int(config.FRAME_INFLIGHT_BYTES) // per_block))
        acc = _BlockAccumulator(self.blocks, block_rows, threads=threads)
        noop = (  # the smaller no-op side stream is computed in this thread
            _BlockAccumulator((("delta", self.do),), block_rows)
            if noop_action is not None
            else None
        )
        shift = self.shift()
        for o, o2, acts in self.transitions(progress=progress):
            acc.add(self.joint_rows(o, o2, acts, shift))
            if noop is not None:
                sel = acts.astype(np.int64) == noop_action
                if sel.any():
                    noop.add(o2[sel] - o[sel])
        if acc.added == 0:
            raise LamfastError(f"{self.path}: no transitions (every frame starts an episode?)")
        m = acc.result("frames")
        m = Moments(m.count, m.mean + self.full_shift(shift), m.cov, m.blocks, m.source)
        if noop is None:
            return m
        return m, (noop.result("frames") if noop.added else None)

    def full_shift(self, shift: np.ndarray) -> np.ndarray:
        """``shift`` padded to the joint layout (only the ``o`` block is shifted)."""
        return np.concatenate([shift, np.zeros(self.do + self.da)])


@dataclasses.dataclass(frozen=True)
class TransitionIndex:
    """Selected transitions of a :class:`FrameSource` counted per run of ``stride`` frames.

    ``offsets[i]`` is the global number of the first transition of segment ``i`` (the last
    entry is the total); ``counts[i][c]`` the number of segment ``i``'s transitions ending
    before frame ``c * stride`` (pair ``c * stride`` for pairs data).
    """

    stride: int
    offsets: np.ndarray
    counts: tuple

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def locate(self, g: int) -> tuple[int, int, int]:
        """``(segment, start frame, transitions to skip from there)`` of transition ``g``."""
        if not 0 <= g < self.total:
            raise IndexError(f"transition {g} outside 0..{self.total - 1}")
        seg = int(np.searchsorted(self.offsets, g, side="right")) - 1
        local = g - int(self.offsets[seg])
        cum = self.counts[seg]
        c = int(np.searchsorted(cum, local, side="right")) - 1
        return seg, c * self.stride, local - int(cum[c])


class _Cursor:
    """A position in the transition stream of an index: ``take(n)`` yields the next ``n`` rows
    (in chunks) and leaves the cursor after them, so consecutive ranges read the files once."""

    def __init__(self, source: FrameSource, index: TransitionIndex, first: int, noop_action):
        self.chunks = source.read_from(index, first, noop_action)
        self.pos, self.pending, self.path = first, None, source.path

    def take(self, n: int):
        while n > 0:
            if self.pending is None:
                self.pending = next(self.chunks, None)
                if self.pending is None:
                    raise LamfastError(
                        f"{self.path}: fewer transitions than indexed (files changed?)"
                    )
            o, o2, acts = self.pending
            k = min(n, o.shape[0])
            yield o[:k], o2[:k], (None if acts is None else acts[:k])
            rest = None if acts is None else acts[k:]
            self.pending = (o[k:], o2[k:], rest) if k < o.shape[0] else None
            self.pos += k
            n -= k


class FrameChunks:
    """``chunk_fn(first, stop)`` of frame blocks, for :func:`lamfast.distributed.tree_moments`.

    Block ``k`` holds transitions ``k * block_rows ...`` of ``index`` (so the blocks are those
    of :meth:`FrameSource.moments`). Pickles to the source's constructor arguments and the
    index; each thread that runs it (a Dask worker may run several tasks at once) opens the
    files itself, since readers of ``.npz`` members keep a position. A call that starts where
    the thread's previous call stopped continues the same read, so an in-process run (resumable
    with a checkpoint) reads every file once, in order.
    """

    def __init__(self, source: FrameSource, index: TransitionIndex, block_rows: int, noop_action):
        self.spec = source.spec()
        self.index, self.block_rows, self.noop_action = index, int(block_rows), noop_action
        self.blocks = source.blocks if noop_action is None else (("delta", source.do),)
        self.shift = None if noop_action is not None else source.shift()
        self._owner = (threading.get_ident(), source)  # the creating thread reuses its source
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_owner"] = state["_local"] = None  # open files and memory maps stay behind
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    @property
    def n_blocks(self) -> int:
        return -(-self.index.total // self.block_rows)

    def _thread_state(self):
        local = self._local
        if not hasattr(local, "source"):
            if self._owner is not None and self._owner[0] == threading.get_ident():
                local.source = self._owner[1]
            else:
                spec = dict(self.spec)
                local.source = FrameSource(spec.pop("path"), **spec)
            local.cursor = None
        return local

    def __call__(self, first: int, stop: int) -> list:
        state = self._thread_state()
        src = state.source
        g0 = first * self.block_rows
        g1 = min(stop * self.block_rows, self.index.total)
        if state.cursor is None or state.cursor.pos != g0:
            state.cursor = _Cursor(src, self.index, g0, self.noop_action)
        out = []
        acc = _BlockAccumulator(self.blocks, self.block_rows, sink=out.append)
        for o, o2, acts in state.cursor.take(max(g1 - g0, 0)):
            acc.add(o2 - o if self.shift is None else src.joint_rows(o, o2, acts, self.shift))
        acc.flush()
        return out


class _BlockAccumulator:
    """Cut a stream of row chunks into fixed blocks of ``block_rows`` rows and merge them.

    Each block's ``(count, mean, co-moment)`` goes to ``sink`` (default: a :class:`MergeTree`),
    in block order. With ``threads > 1`` full blocks are computed on the shared thread pool
    while the caller reads on (``block_moments`` releases the GIL); the results are the same
    bits, since each block is computed alone with one BLAS thread.
    """

    def __init__(self, blocks: Blocks, block_rows: int, sink=None, threads: int = 1):
        self.tree = MergeTree(blocks)
        self.sink = sink or (lambda block: self.tree.push(*block))
        self.p = sum(s for _, s in blocks)
        self.rows = int(block_rows)
        self.threads = max(int(threads), 1)
        self.free: list[np.ndarray] = []
        self.pending: collections.deque = collections.deque()  # (future, buffer)
        self.buf = np.empty((self.rows, self.p))
        self.fill = 0
        self.added = 0  # rows so far (blocks may still be computing)

    def add(self, rows: np.ndarray):
        n, i = rows.shape[0], 0
        self.added += n
        cap = self.buf.shape[0]
        while i < n:
            k = min(cap - self.fill, n - i)
            self.buf[self.fill : self.fill + k] = rows[i : i + k]
            self.fill += k
            i += k
            if self.fill == cap:
                self._block(self.buf)
                self.fill = 0

    def _block(self, X: np.ndarray):
        if self.threads == 1:
            self.sink(block_moments(X))
            return
        self.pending.append((thread_pool(self.threads).submit(block_moments, X), X))
        # one block per thread in flight (each holds its rows and their centred copy: memory
        # stays a few blocks whatever the dataset); the next buffer is one no block still uses
        while len(self.pending) > self.threads:
            self._drain_one()
        self.buf = self.free.pop() if self.free else np.empty((self.rows, self.p))

    def _drain_one(self):
        future, X = self.pending.popleft()
        self.sink(future.result())
        if X.shape[0] == self.rows:
            self.free.append(X)

    def flush(self):
        if self.fill:
            self._block(self.buf[: self.fill])
            self.fill = 0
        while self.pending:
            self._drain_one()

    def result(self, source: str) -> Moments:
        self.flush()
        return self.tree.result(source)


def frame_moments(
    path,
    *,
    block_rows: int | None = None,
    progress=None,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    checkpoint=None,
    **source_options,
):
    """Moments ``[o, delta, (a)]`` of a frame dataset (see :class:`FrameSource` for options).

    ``workers`` / ``scheduler`` / ``client`` (Dask) and ``checkpoint`` as in
    :meth:`FrameSource.moments`: the same bits, computed elsewhere or resumably.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "f.npz")
    >>> np.savez(p, frames=np.arange(8.0).reshape(4, 2), actions=np.array([0, 1, 0, 1]))
    >>> m = frame_moments(p)
    >>> m.blocks, m.count
    ((('o', 2), ('delta', 2), ('a', 2)), 3.0)
    """
    return FrameSource(path, **source_options).moments(
        block_rows=block_rows,
        progress=progress,
        workers=workers,
        scheduler=scheduler,
        client=client,
        checkpoint=checkpoint,
    )


# ============================================================================ cleaning
def orthonormal_basis(U: np.ndarray, do: int, label: str = "basis") -> np.ndarray:
    """Orthonormal columns spanning ``U`` (given as do x k or k x do)."""
    U = np.asarray(U, dtype=np.float64)
    if U.ndim == 1:
        U = U[:, None]
    if U.ndim != 2 or do not in U.shape:
        raise LamfastError(f"{label}: shape {U.shape} has no axis of length do={do}")
    if U.shape[0] != do:
        U = U.T
    if not np.isfinite(U).all():
        raise LamfastError(f"{label}: contains NaN or inf")
    Q, R = np.linalg.qr(U)
    keep = np.abs(np.diag(R)) > config.pinv_rtol(do) * max(
        np.abs(np.diag(R)).max(initial=0), 1e-300
    )
    if not keep.any():
        raise LamfastError(f"{label}: spans nothing")
    return Q[:, keep]


def noise_basis_from_noop(noop: Moments, k: int) -> np.ndarray:
    """Top-``k`` principal directions of ``E[delta delta^T]`` over no-op transitions."""
    from .eigen import top_eigh

    do = noop.size("delta")
    if not 1 <= k <= do:
        raise LamfastError(f"clean-k must be in [1, {do}], got {k}")
    _, V = top_eigh(noop.second_moment("delta"), k)
    return V


def clean_moments(m: Moments, U: np.ndarray) -> Moments:
    """Moments after projecting ``delta`` off ``span(U)``: ``delta -> (I - U U^T) delta``.

    Cleaning is linear, so it acts on moments directly (no second pass over the rows).
    """
    i = m.index("delta")
    T = np.eye(m.dim)
    T[i, i] -= U @ U.T
    cov = T @ m.cov @ T.T
    return Moments(m.count, T @ m.mean, 0.5 * (cov + cov.T), m.blocks, m.source + "+clean")


def compose_cleaning(lam, U: np.ndarray):
    """The same latent as a function of raw ``(o, o')``: ``z = C o + D (o + P delta)``.

    A LAM fitted on cleaned moments sees ``o'' = o + P delta`` with ``P = I - U U^T``; its latent
    on raw frames is ``(C + D - D P) o + D P o'``. Returned as a new fitted ``LinearLAM``.
    """
    import copy

    P = np.eye(U.shape[0]) - U @ U.T
    out = copy.copy(lam)
    DP = lam.D_ @ P
    out.C_, out.D_ = lam.C_ + lam.D_ - DP, DP
    out.draws_ = tuple(compose_cleaning(d, U) for d in lam.draws_)
    return out


# ============================================================================ probes on frames
def linear_probe(W: np.ndarray, m: Moments, target: str = "a") -> tuple[np.ndarray, np.ndarray]:
    """Weights ``G`` and intercept ``h`` of the least-squares probe ``y ~ G (W x) + h``."""
    from .lam import _pinv_psd

    iy = m.index(target)
    Szz = W @ m.cov @ W.T
    G = (W @ m.cov[:, iy]).T @ _pinv_psd(Szz)
    h = m.mean[iy] - G @ (W @ m.mean)
    return G, h


def probe_accuracy(source: FrameSource, probes: list, progress=None) -> list[float]:
    """Argmax accuracy of linear action probes, in one more streaming pass.

    ``probes`` is a list of ``(W, G, h)``: latent map on the joint vector, probe weights and
    intercept; the predicted action of a transition is ``argmax(G W x + h)``.
    """
    if source.action_kind != "discrete":
        raise LamfastError("probe accuracy needs discrete actions")
    do = source.do
    hits = np.zeros(len(probes))
    total = 0
    for o, o2, acts in source.transitions(progress=progress, label="accuracy"):
        ids = acts.astype(np.int64)
        delta = o2 - o
        for j, (W, G, h) in enumerate(probes):
            # W acts on [o, delta, a]; the latent never reads the a block (latent_map)
            z = o @ W[:, :do].T + delta @ W[:, do : 2 * do].T
            pred = np.argmax(z @ G.T + h, axis=1)
            hits[j] += np.count_nonzero(pred == ids)
        total += ids.shape[0]
    return (hits / max(total, 1)).tolist()


def delta_spectrum(m: Moments, k: int) -> np.ndarray:
    """Top-``k`` eigenvalues of the frame-difference covariance ``Cov(delta)``."""
    from .eigen import top_eigh

    w, _ = top_eigh(m.block_cov("delta"), k)
    return np.clip(w, 0.0, None)


# ============================================================================ fit
def fit_frames(
    path,
    dz: int,
    variant=None,
    *,
    solver: str = "eig",
    seed: int = 0,
    preprocess: Preprocess | None = None,
    actions: str = "auto",
    n_actions: int | None = None,
    chunk_frames: int | None = None,
    block_rows: int | None = None,
    clean_basis=None,
    noop_action: int | None = None,
    clean_k: int | None = None,
    accuracy: bool = True,
    progress=None,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
) -> tuple[dict, object]:
    """Fit a linear LAM to recorded frames and probe its latent.

    Parameters
    ----------
    path : str or Path
        Frame dataset (see :class:`FrameSource`).
    dz : int
        Latent dimension.
    variant : Variant or dict, optional
        LAM variant (default: identity decoder, tied encoder).
    clean_basis : array or path, optional
        Noise directions (do x k) removed from ``delta`` before fitting.
    noop_action : int, optional
        Estimate the noise basis as the top ``clean_k`` directions of no-op frame differences.
    accuracy : bool
        For discrete actions, run a second pass for the argmax accuracy of the action probe
        (always in this process).
    workers, scheduler, checkpoint
        Compute the moments on Dask and / or resumably (see :meth:`FrameSource.moments`); the
        result is the same bit for bit.

    Returns
    -------
    (dict, LinearLAM)
        JSON-ready results and the fitted LAM (cleaning composed into its encoder).
    """
    from .lam import Variant, fit, recon_loss
    from .probes import latent_map, probe_mse

    start = time.perf_counter()
    variant = variant if isinstance(variant, Variant) else Variant(**(variant or {}))
    source = FrameSource(
        path, preprocess=preprocess, actions=actions, n_actions=n_actions, chunk_frames=chunk_frames
    )
    do = source.do
    if isinstance(dz, bool) or not isinstance(dz, int | np.integer) or not 1 <= dz <= do:
        raise LamfastError(f"dz must be an integer in [1, do={do}], got {dz!r}")
    if clean_basis is not None and noop_action is not None:
        raise LamfastError("give either a clean basis or a noop action, not both")
    scale = dict(workers=workers, scheduler=scheduler, checkpoint=checkpoint, progress=progress)
    if noop_action is not None:
        m, noop = source.moments(block_rows=block_rows, noop_action=noop_action, **scale)
        if noop is None:
            raise LamfastError(f"no transitions with the noop action {noop_action}")
        U = noise_basis_from_noop(noop, int(clean_k or 1))
    else:
        m = source.moments(block_rows=block_rows, **scale)
        U = None
        if clean_basis is not None:
            if isinstance(clean_basis, str | os.PathLike):
                clean_basis = load_basis(clean_basis)
            U = orthonormal_basis(clean_basis, do, "clean basis")
    if variant.label_fraction > 0 and not m.has("a"):
        raise LamfastError("action supervision (--label-fraction) needs actions in the data")

    lam = fit(m, int(dz), variant, solver=solver, seed=seed)
    fits = [("raw", lam, m)]
    if U is not None:
        mc = clean_moments(m, U)
        lam_c = fit(mc, int(dz), variant, solver=solver, seed=seed)
        fits.append(("clean", compose_cleaning(lam_c, U), mc))
        recon_clean = recon_loss(lam_c, mc)

    k = min(do, max(16, dz + 8))
    result = {
        "path": str(path),
        "frames": source.n_frames,
        "transitions": int(m.count),
        "frame_shape": list(source.frame_shape),
        "do": do,
        "da": source.da,
        "actions": source.action_kind,
        "dz": int(dz),
        "variant": dataclasses.asdict(variant),
        "solver": solver,
        "delta_spectrum": delta_spectrum(m, k).tolist(),
        "delta_total_variance": float(np.trace(m.block_cov("delta"))),
        "recon": recon_loss(lam, m),
    }
    probes = []
    for tag, one, _ in fits:
        lams = (one, *one.draws_) if one.draws_ else (one,)
        suffix = "" if tag == "raw" else "_clean"
        obs = [probe_mse(latent_map(x, m), m, "o") for x in lams]
        result["obs_mse" + suffix] = float(np.mean(obs))
        if m.has("a"):
            acts = [probe_mse(latent_map(x, m), m, "a") for x in lams]
            result["act_mse" + suffix] = float(np.mean(acts))
            W = latent_map(one, m)
            probes.append((W, *linear_probe(W, m, "a")))
    if U is not None:
        result["recon_clean"] = recon_clean
        result["clean_dim"] = int(U.shape[1])
        result["clean_from"] = "noop" if noop_action is not None else "basis"
    if m.has("a"):
        result["act_mse_chance"] = 1.0
    if source.action_kind == "discrete":
        freq = m.block_mean("a")
        result["action_freq"] = freq.tolist()
        result["act_acc_chance"] = float(freq.max())
        if accuracy:
            accs = probe_accuracy(source, probes, progress=progress)
            result["act_acc"] = accs[0]
            if U is not None:
                result["act_acc_clean"] = accs[1]
    result["notes"] = list(lam.notes_)
    result["seconds"] = time.perf_counter() - start
    final = fits[-1][1]
    final.frames_meta_ = {
        "preprocess": source.preprocess.to_dict(),
        "frame_shape": list(source.frame_shape),
        "do": do,
        "actions": source.action_kind,
        "n_actions": source.n_actions,
        "cleaned": U is not None,
    }
    return result, final


def load_basis(path) -> np.ndarray:
    """A noise basis from ``.npy`` (or the first array of a ``.npz``)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise LamfastError(f"{path}: cannot read the clean basis ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if not data.files:
                raise LamfastError(f"{path}: empty archive")
            return np.asarray(data[data.files[0]])
    return np.asarray(data)


# ============================================================================ save / load / encode
def save_lam(lam, out) -> Path:
    """Save a fitted ``LinearLAM`` (and its frame preprocessing) to ``.npz``, atomically."""
    lam._check_fitted()
    meta = {
        "dz": int(lam.dz),
        "variant": dataclasses.asdict(lam.variant),
        "solver": lam.solver,
        "seed": int(lam.seed),
        "loss": float(lam.loss_),
        "notes": list(lam.notes_),
        "frames": getattr(lam, "frames_meta_", None),
    }
    arrays = {"A": lam.A_, "B": lam.B_, "C": lam.C_, "D": lam.D_, "spectrum": lam.spectrum_}
    if lam.E_ is not None:
        arrays["E"], arrays["h"] = lam.E_, lam.h_
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    return Path(out)


def load_lam(path):
    """Load a ``LinearLAM`` saved by :func:`save_lam` (with ``frames_meta_``)."""
    from .lam import LinearLAM, Variant

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise LamfastError(f"{path}: not a lamfast fit file ({e})") from None
    missing = [k for k in ("meta", "A", "B", "C", "D") if k not in arrays]
    if missing:
        raise LamfastError(f"{path}: not a lamfast fit file (missing {', '.join(missing)})")
    meta = json.loads(str(arrays["meta"]))
    lam = LinearLAM._fitted(
        meta["dz"],
        Variant(**meta["variant"]),
        meta["solver"],
        meta["seed"],
        arrays["A"],
        arrays["B"],
        arrays["C"],
        arrays["D"],
        arrays.get("spectrum", np.empty(0)),
        loss=meta.get("loss", float("nan")),
        E=arrays.get("E"),
        h=arrays.get("h"),
        notes=meta.get("notes", ()),
    )
    lam.frames_meta_ = meta.get("frames")
    return lam


def encode_frames(fit_path, frames_path, out, *, chunk_frames=None, progress=None) -> dict:
    """Encode the transitions of ``frames_path`` with a saved LAM into ``out`` (n x dz ``.npy``).

    The preprocessing stored with the fit is applied; episode rules are those of
    :class:`FrameSource`. The output is written to a temporary file and renamed when complete.
    """
    lam = load_lam(fit_path)
    meta = lam.frames_meta_ or {}
    pre = Preprocess(**(meta.get("preprocess") or {}))
    source = FrameSource(frames_path, preprocess=pre, actions="none", chunk_frames=chunk_frames)
    if source.do != lam.C_.shape[1]:
        raise LamfastError(
            f"{frames_path}: frames have {source.do} values after preprocessing but the fit "
            f"expects {lam.C_.shape[1]}"
        )
    n = source.n_transitions
    with atomic_output(out) as tmp:
        Z = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(n, lam.dz))
        i = 0
        for o, o2, _ in source.transitions(progress=progress, label="encode"):
            Z[i : i + o.shape[0]] = lam.encode(o, o2)
            i += o.shape[0]
        Z.flush()
        del Z
        if i != n:  # pragma: no cover - guards the counting pass against the streaming pass
            raise LamfastError(f"internal: counted {n} transitions but streamed {i}")
    return {"out": str(out), "transitions": n, "dz": int(lam.dz)}
