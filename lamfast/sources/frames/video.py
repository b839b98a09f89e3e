"""Video files and folders of videos, decoded with PyAV (optional extra ``lamfast[video]``).

Formats
-------
- one video file (``.mp4``, ``.webm``, ``.avi``, ``.mkv``): its first video stream is one
  episode, unless ``episodes_file`` says where episodes start;
- a folder of such files: read in natural name order, each file an episode (and, with
  ``episodes_file``, split further). The folder may also hold the ``.npy`` files named by
  ``actions_file`` / ``episodes_file``; any other ``.npy`` / ``.npz`` file beside the videos is
  refused (which dataset was meant would be a guess).

Frames are ``uint8`` arrays ``T x H x W x 3`` (RGB) or ``T x H x W`` (``grey``).

Options (:class:`~lamfast.sources.frames.formats.ReaderOptions`)
----------------------------------------------------------------
``time_range=(t0, t1)``
    keep the frames whose presentation time (``pts`` x the stream's time base, rounded to a
    float, in seconds) satisfies ``t0 <= time < t1``; decoding stops at the first frame at or
    after ``t1``.
``stride=k``
    then keep every ``k``-th of those frames (the first, the ``k + 1``-th, ...), per file.
``resize=(h, w)``
    scale every frame to ``h x w`` when it is converted (PyAV ``reformat``, its default
    interpolation).
``grey``
    convert to one grey channel (PyAV's ``gray`` format: the luma) instead of ``rgb24``.
``episodes_file``
    a ``.npy`` of integer frame indices where episodes start, numbered like the kept frames
    (after ``time_range`` and ``stride``) of all files in order; every file also starts one.
``actions_file``
    a ``.npy`` with ONE ROW PER KEPT FRAME of all files in order (``T_total`` rows): integer
    ids ``(T_total,)`` (discrete) or vectors ``(T_total, da)`` (continuous). Row ``t`` is the
    action of the transition from frame ``t`` to ``t + 1``, as for ``.npz`` files; the row of
    the last frame of each episode labels no transition and is never used (any value).

Cost
----
Opening a file decodes it once, without converting pixels, to count and time-stamp its frames:
the frame count of a stream header is not reliable (``0`` in Matroska/WebM, a guess in some
MP4s), and the count is needed before the first read. Reading then decodes again: about twice
the decoding of one pass, for exact frame counts. The timestamps of the kept frames (8 bytes a
frame) are kept, and every decoded frame is checked against them, so a file that decodes
differently later (changed on disk) is an error, never a silent shift. Reads are sequential:
the decoder stays open between reads and is reopened only to go backwards, or, to go far
forwards (an indexed read on a Dask worker), after a seek to the keyframe before the target
(checked; if a seek lands wrong, an earlier one, then the file start, is used). Memory is one
chunk of converted frames.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..._files import check_input
from ...errors import LamfastError
from .readers import _ArrayMember, _check_segment, _Member, _NpyMember, _Segment, natural_sorted

NAME = "video"
OPTIONS = ("stride", "time_range", "resize", "grey", "actions_file", "episodes_file")
SUFFIXES = (".mp4", ".webm", ".avi", ".mkv")

# A forward read this many kept frames ahead of the decoder seeks instead of decoding through.
SEEK_AHEAD = 256


def _import_av(hint: str = "pip install 'lamfast[video]'"):
    try:
        import av
    except ImportError:
        raise LamfastError(f"reading video needs PyAV: {hint}") from None
    return av


def _is_video(p: Path) -> bool:
    return p.suffix.lower() in SUFFIXES and not p.is_dir()


def detect(path: Path) -> bool:
    """A video file, or a folder holding video files at its top level."""
    if path.is_dir():
        try:
            return any(_is_video(p) for p in path.iterdir())
        except OSError:
            return False
    return path.suffix.lower() in SUFFIXES


def _frame_time(pts: int, time_base) -> float:
    return float(Fraction(pts) * Fraction(time_base))


def _open_container(av, path: Path, label: str):
    """An open container and its first video stream (one error line if there is none)."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise LamfastError(f"{label}: not a readable video ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise LamfastError(f"{label}: holds no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # threads change nothing in the decoded frames
    return container, stream


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _VideoMember(_Member):
    """The kept frames of one video stream, decoded sequentially by ranges.

    ``keys``: the presentation timestamps (``by_pts``) or the decoding ordinals of the kept
    frames, increasing; ``first_key``: the key of the file's first frame; ``size``: the
    ``(height, width)`` frames are converted to.
    """

    def __init__(self, path: Path, label: str, keys, *, by_pts, first_key, size, grey, hint):
        self.path, self.name = path, label
        self._keys = np.asarray(keys, dtype=np.int64)
        self._by_pts, self._first_key = bool(by_pts), int(first_key)
        self._h, self._w = (int(n) for n in size)
        self._format = "gray" if grey else "rgb24"
        self._hint = hint
        shape = (len(self._keys), self._h, self._w)
        self.shape = shape if grey else (*shape, 3)
        self.dtype = np.dtype(np.uint8)
        self._container = None
        self._frames = None  # (key, frame) iterator of the open decoder
        self._pos = 0  # index of the next kept frame the decoder yields

    def close(self):
        if self._container is not None:
            self._container.close()
        self._container = self._frames = None

    def __del__(self):
        self.close()

    def __getstate__(self):  # an open decoder does not travel; it is reopened where needed
        state = self.__dict__.copy()
        state["_container"] = state["_frames"] = None
        state["_pos"] = 0
        return state

    def _start(self, av, start: int):
        """Open the decoder so that it yields kept frame ``start`` next (or earlier frames)."""
        self.close()
        target = int(self._keys[start]) if start < len(self._keys) else None
        seek = self._by_pts and target is not None and target > self._first_key
        if not seek:
            self._container, stream = _open_container(av, self.path, self.name)
            self._frames = self._keyed(stream, self._container.decode(stream))
            self._pos = 0
            return
        back = 0
        while True:
            container, stream = _open_container(av, self.path, self.name)
            at = target - back
            if at <= self._first_key:  # the seeks landed wrong: decode from the start
                self._container, self._pos = container, 0
                self._frames = self._keyed(stream, container.decode(stream))
                return
            try:
                container.seek(at, stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
                first = next(frames, None)
            except (av.FFmpegError, OSError):
                first = None
            # a seek must land on a keyframe at or before the target: anything else (a frame
            # decoded without its references, a keyframe past the target) retries earlier
            if first is not None and first.key_frame and first.pts is not None:
                if first.pts <= target:
                    self._container, self._pos = container, start
                    self._frames = self._keyed(stream, itertools.chain([first], frames))
                    return
            container.close()
            second = int(1 / Fraction(stream.time_base)) if stream.time_base else 1
            back = max(2 * back, second, 1)

    def _keyed(self, stream, frames):
        for ordinal, frame in enumerate(frames):
            yield (frame.pts if self._by_pts else ordinal), frame

    def read(self, start, stop):
        T = len(self)
        stop = min(int(stop), T)
        start = min(max(int(start), 0), stop)
        out = np.empty((stop - start, *self.shape[1:]), dtype=np.uint8)
        if stop == start:
            return out
        av = _import_av(self._hint)
        if (
            self._frames is None
            or start < self._pos
            or (self._by_pts and start - self._pos > SEEK_AHEAD)
        ):
            self._start(av, start)
        try:
            for key, frame in self._frames:
                want = int(self._keys[self._pos])
                if key is None or key > want:
                    got = "no timestamp" if key is None else f"key {key}"
                    raise LamfastError(
                        f"{self.name}: kept frame {self._pos} (key {want}) is missing when "
                        f"decoded again ({got}); was the file changed while it was read?"
                    )
                if key < want:
                    continue  # a frame dropped by time_range or stride, or before the target
                if self._pos >= start:
                    out[self._pos - start] = frame.to_ndarray(
                        width=self._w, height=self._h, format=self._format
                    )
                self._pos += 1
                if self._pos == stop:
                    break
        except (av.FFmpegError, OSError) as e:
            self.close()
            raise LamfastError(
                f"{self.name}: corrupt video near kept frame {self._pos} ({_reason(e)})"
            ) from None
        except LamfastError:
            self.close()
            raise
        if self._pos < stop:
            n = self._pos
            self.close()
            raise LamfastError(
                f"{self.name}: the video ended after {n} of {T} frames when decoded again; "
                "was the file changed while it was read?"
            )
        if self._pos == T:
            self.close()  # release the file: a dataset may have thousands of members
        return out


def _scan(av, path: Path, label: str, options) -> dict:
    """Decode ``path`` once (no pixel conversion): the keys of its kept frames, and more."""
    container, stream = _open_container(av, path, label)
    t0, t1 = options.time_range if options.time_range is not None else (None, None)
    pts, size = [], None
    try:
        time_base = stream.time_base
        for frame in container.decode(stream):
            if size is None:
                size = (frame.height, frame.width)
            pts.append(frame.pts)
            if t1 is not None and frame.pts is not None and time_base is not None:
                if _frame_time(frame.pts, time_base) >= t1:
                    pts.pop()
                    break
    except (av.FFmpegError, OSError) as e:
        raise LamfastError(f"{label}: corrupt or truncated video ({_reason(e)})") from None
    finally:
        container.close()
    if not pts:
        raise LamfastError(f"{label}: the video holds no frames (corrupt or truncated?)")
    known = all(p is not None for p in pts) and time_base is not None
    by_pts = known and all(a < b for a, b in itertools.pairwise(pts))
    keys = np.asarray(pts if by_pts else range(len(pts)), dtype=np.int64)
    if t0 is not None:
        if by_pts:
            times = np.array([_frame_time(p, time_base) for p in pts])
        else:  # no usable timestamps: the nominal frame rate
            rate = stream.average_rate or stream.base_rate
            if not rate:
                raise LamfastError(
                    f"{label}: frames carry no timestamps and no frame rate; time_range "
                    "cannot be applied"
                )
            times = np.arange(len(pts)) / float(rate)
        keep = (times >= t0) & (times < t1)
        keys = keys[keep]
    keys = keys[:: options.stride]
    if len(keys) == 0:
        raise LamfastError(
            f"{label}: no frame in time_range {tuple(options.time_range)} "
            f"({len(pts)} frames decoded)"
        )
    first = pts[0] if by_pts else 0
    return {"keys": keys, "by_pts": by_pts, "first_key": first, "size": size}


def check_options(options, what: str = "video") -> None:
    """Refuse malformed ``resize`` and ``time_range`` values (one line)."""
    if options.resize is not None:
        try:
            h, w = (int(n) for n in options.resize)
            ok = (h, w) == tuple(options.resize) and h >= 1 and w >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LamfastError(
                f"resize must be two whole numbers >= 1 (height, width), got {options.resize!r}"
            )
    if options.time_range is not None:
        try:
            t0, t1 = (float(t) for t in options.time_range)
            ok = 0 <= t0 < t1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LamfastError(
                f"time_range must be seconds (start, stop) with 0 <= start < stop, got "
                f"{options.time_range!r}"
            )


def open_member(path: Path, label: str, options, hint: str = "pip install 'lamfast[video]'"):
    """The kept frames of one video file (decodes it once to count them)."""
    av = _import_av(hint)
    scan = _scan(av, path, label, options)
    size = tuple(options.resize) if options.resize is not None else scan["size"]
    return _VideoMember(
        path,
        label,
        scan["keys"],
        by_pts=scan["by_pts"],
        first_key=scan["first_key"],
        size=size,
        grey=options.grey,
        hint=hint,
    )


class _RowsMember(_Member):
    """Rows ``offset .. offset + n - 1`` of another member (one file's share of a table)."""

    def __init__(self, base: _Member, offset: int, n: int, label: str):
        self._base, self._offset, self.name = base, int(offset), label
        self.path = getattr(base, "path", None)  # the file read (a checkpoint's identity)
        self.shape, self.dtype = (int(n), *base.shape[1:]), base.dtype

    def read(self, start, stop):
        stop = min(int(stop), len(self))
        start = min(max(int(start), 0), stop)
        return self._base.read(self._offset + start, self._offset + stop)


def _files(path: Path, options) -> list[Path]:
    if not path.is_dir():
        return [check_input(path, "video")]
    named = set()
    for f in (options.actions_file, options.episodes_file):
        if f is not None:
            named.add(Path(f).resolve())
    stray = sorted(
        p.name
        for p in path.iterdir()
        if p.suffix.lower() in (".npy", ".npz") and p.resolve() not in named
    )
    if stray:
        raise LamfastError(
            f"{path}: holds videos and {stray[0]} ({len(stray)} .npy/.npz files): name it "
            "with --actions-file or --episodes-file, or move it out of the folder"
        )
    return [check_input(p, "video") for p in natural_sorted(path.iterdir()) if _is_video(p)]


def _episode_flags(options, total: int) -> np.ndarray | None:
    if options.episodes_file is None:
        return None
    f = check_input(options.episodes_file, "episodes file")
    try:
        starts = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise LamfastError(f"episodes file {f}: not a readable .npy file ({e})") from None
    if not isinstance(starts, np.ndarray) or starts.ndim != 1 or starts.dtype.kind not in "iu":
        raise LamfastError(
            f"episodes file {f}: expected a 1-d array of integer start frames, got "
            f"{getattr(starts, 'dtype', '?')} of shape {getattr(starts, 'shape', '?')}"
        )
    bad = (starts < 0) | (starts >= total)
    if bad.any():
        raise LamfastError(
            f"episodes file {f}: start frame {int(starts[bad][0])} is outside the {total} kept "
            "frames (numbered after time_range and stride)"
        )
    flags = np.zeros(total, dtype=bool)
    flags[starts.astype(np.int64)] = True
    return flags


def open(path: Path, options) -> list[_Segment]:
    """One segment per video file, in natural name order (see the module docstring)."""
    check_options(options)
    _import_av()  # before listing anything: a missing extra is the first thing to say
    files = _files(Path(path), options)
    if not files:
        raise LamfastError(f"{path}: folder holds no video files ({', '.join(SUFFIXES)})")
    base = f"{Path(path).name}/" if Path(path).is_dir() else ""
    members = [open_member(f, base + f.name, options) for f in files]
    total = sum(len(m) for m in members)
    actions = None
    if options.actions_file is not None:
        actions = _NpyMember(
            check_input(options.actions_file, "actions file"), Path(options.actions_file).name
        )
        if len(actions) != total:
            counts = " + ".join(str(len(m)) for m in members)
            raise LamfastError(
                f"actions file {options.actions_file}: {len(actions)} rows, but the videos have "
                f"{total} kept frames ({counts}); give one action per kept frame"
            )
    flags = _episode_flags(options, total)
    segments, offset = [], 0
    for m in members:
        n = len(m)
        seg = _Segment(m.name, frames=m)
        if actions is not None:
            seg.actions = _RowsMember(actions, offset, n, f"{actions.name}[{offset}:{offset + n}]")
        if flags is not None:
            seg.starts = _ArrayMember(flags[offset : offset + n], f"episodes of {m.name}")
            seg.starts.path = Path(options.episodes_file)  # the file read
        _check_segment(seg)
        segments.append(seg)
        offset += n
    return segments
