"""Readers of frame files: arrays read by ranges of their first axis (``.npy`` memory maps,
``.npz`` members streamed, zarr arrays), grouped into segments (one file each).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from ..._files import ARCHIVE_ERRORS, check_input
from ...errors import LamfastError

_FRAME_KEYS = ("frames", "o", "o_next", "actions", "label_mask", "episode_starts", "dones")
_DIGITS = re.compile(r"([0-9]+)")


def natural_key(name: str) -> tuple:
    """The sort key of the natural order: ``"frame_10"`` -> ``("frame_", 10, "")``, so
    ``episode_2`` comes before ``episode_10``. Every folder of episodes (numpy files, videos,
    image folders, per-episode latents) is read in this order, ties broken by the name.

    Runs alternate text, number, text... (``re.split`` with a group), so keys of any two names
    compare element by element between values of one type.
    """
    runs = _DIGITS.split(name)
    return tuple(int(r) if i % 2 else r.casefold() for i, r in enumerate(runs))


def natural_sorted(paths) -> list:
    """Paths in the natural order of their names."""
    return sorted(paths, key=lambda p: (natural_key(Path(p).name), Path(p).name))


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
        self.name, self.path = label, check_input(path, "frames")
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = _read_header(f, version)
                offset = f.tell()
        except (ValueError, OSError, EOFError) as e:
            raise LamfastError(f"{label}: not a readable .npy file ({e})") from None
        _check_shape(shape, label)
        _check_dtype(dtype, label)
        need = math.prod(int(n) for n in shape) * dtype.itemsize  # Python ints: no overflow
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
            header = f.tell()
        except ARCHIVE_ERRORS as e:
            raise LamfastError(f"{label}: not a readable .npy member ({e})") from None
        finally:
            f.close()
        _check_shape(shape, label)
        _check_dtype(dtype, label)
        if fortran and len(shape) > 1:
            raise LamfastError(f"{label}: Fortran-ordered arrays are not supported; save C order")
        self.shape, self.dtype = tuple(shape), dtype
        self._row_bytes = math.prod(int(n) for n in shape[1:]) * dtype.itemsize
        # A header may claim any shape: check it against the member's real size before reading.
        need = self._row_bytes * int(shape[0]) if shape else dtype.itemsize
        size = self._size
        if size - header < need:
            raise LamfastError(
                f"{label}: damaged or truncated member (its header claims shape {tuple(shape)}, "
                f"{need} bytes, but the member holds {max(size - header, 0)})"
            )

    def _open(self):
        try:
            with zipfile.ZipFile(self.path) as z:  # the member keeps the file open until closed
                self._size = z.getinfo(self.member).file_size
                return z.open(self.member)
        except ARCHIVE_ERRORS as e:
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
        except ARCHIVE_ERRORS as e:
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
    def __init__(self, array, label: str, frames: bool = True):
        self._a, self.name = array, label
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)
        _check_dtype(self.dtype, label)
        # zarr reads a missing chunk as its fill value: a deleted chunk of frames would enter
        # the moments as zeros. Refuse it for frames (o, o_next). Episode flags and action ids
        # are mostly their fill value (False, 0), and zarr 3 does not write such chunks by
        # default (write_empty_chunks=False), so a missing chunk there is the data.
        if not frames:
            return
        try:
            have, want = int(array.nchunks_initialized), int(array.nchunks)
        except Exception as e:  # zarr raises many types for damaged stores
            raise LamfastError(f"{label}: unreadable zarr array ({type(e).__name__})") from None
        if have < want:
            raise LamfastError(
                f"{label}: {want - have} of {want} zarr chunks are missing (they would read as "
                "the fill value); restore them, or rewrite the array with write_empty_chunks=True"
            )

    def read(self, start, stop):
        try:
            return np.asarray(self._a[start:stop])
        except Exception as e:  # a corrupt chunk: codec errors of many types
            raise LamfastError(
                f"{self.name}: corrupt zarr chunk in rows {start}..{stop - 1} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from None


class _ArrayMember(_Member):
    """An array in memory (or a memmap, or anything with ``__array__``), read by row ranges."""

    def __init__(self, array, label: str):
        try:
            a = array if isinstance(array, np.ndarray) else np.asarray(array)
        except Exception:  # a CUDA tensor, a tensor that requires grad
            raise LamfastError(
                f"{label} could not be converted to a numpy array ({type(array).__name__}); "
                "pass a CPU array, e.g. tensor.detach().cpu()"
            ) from None
        if a.ndim == 0:
            raise LamfastError(f"{label} must be an array along a time axis, got a scalar")
        _check_dtype(a.dtype, label)
        self._a, self.name = a, label
        self.shape, self.dtype = tuple(a.shape), a.dtype

    def read(self, start, stop):
        return np.asarray(self._a[start:stop])


def open_arrays(arrays) -> list[_Segment]:
    """One segment of in-memory arrays: a mapping with the keys of an ``.npz`` (``frames`` and
    optionally ``actions``, ``episode_starts`` or ``dones``; or ``o``, ``o_next``)."""
    unknown = sorted(set(arrays) - set(_FRAME_KEYS))
    if unknown:
        raise LamfastError(f"unknown array key {unknown[0]!r}; known: {', '.join(_FRAME_KEYS)}")
    members = {k: _ArrayMember(v, f"arrays[{k}]") for k, v in arrays.items() if v is not None}
    return [_segment_from_members(members, "arrays")]


def _check_shape(shape, label: str):
    if len(shape) == 0:
        raise LamfastError(f"{label}: a scalar, not an array along a time axis")
    if any(int(n) < 0 for n in shape):
        raise LamfastError(f"{label}: damaged header (negative dimension in shape {tuple(shape)})")


def _check_dtype(dtype: np.dtype, label: str):
    if dtype.kind not in "biuf":
        raise LamfastError(f"{label}: dtype {dtype} is not a real numeric type")


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
    # label_mask: which action rows are labelled (partial labels; True or 1 = labelled)
    mask: _Member | None = None
    # a label budget's draw (FrameSource): action rows kept labelled, in memory
    budget: np.ndarray | None = None

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
    seg.mask = members.get("label_mask")
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
    if seg.mask is not None:
        if seg.actions is None:
            raise LamfastError(f"{seg.mask.name}: a label mask without actions")
        if seg.mask.shape != (len(seg.actions),) or seg.mask.dtype.kind not in "biu":
            raise LamfastError(
                f"{seg.mask.name}: a label mask must be {len(seg.actions)} booleans (one per "
                f"action row), got shape {seg.mask.shape} of {seg.mask.dtype}"
            )
    for flags in (seg.starts, seg.dones):
        if flags is not None and (len(flags) != T or len(flags.shape) != 1):
            raise LamfastError(f"{flags.name}: shape {flags.shape} does not match {T} frames")


def _open_npz(path: Path) -> _Segment:
    check_input(path, "frames")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except ARCHIVE_ERRORS as e:
        raise LamfastError(f"{path}: not a readable .npz archive ({e})") from None
    _refuse_damaged_names(path, [n[:-4] if n.endswith(".npy") else n for n in names])
    members = {}
    for name in names:
        key = name[:-4] if name.endswith(".npy") else name
        if key in _FRAME_KEYS:
            members[key] = _ZipMember(path, name, f"{path.name}[{key}]")
    return _segment_from_members(members, path.name)


def _refuse_damaged_names(path: Path, keys: list[str]) -> None:
    """Refuse a member whose name is a near miss of a known key that is absent (``actons``
    beside ``frames``): read as it is, the archive would silently lose its actions or its
    episode boundaries."""
    for key in keys:
        if key in _FRAME_KEYS:
            continue
        close = difflib.get_close_matches(key, _FRAME_KEYS, n=1, cutoff=0.75)
        if close and close[0] not in keys:
            raise LamfastError(
                f"{path}: member {key!r} looks like a damaged {close[0]!r} (known members: "
                f"{', '.join(_FRAME_KEYS)}); rename it, or remove it if it is not meant as one"
            )


def _open_member_dir(path: Path) -> _Segment:
    _refuse_damaged_names(path, [f.stem for f in path.glob("*.npy")])
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
    members = {
        k: _ZarrMember(node[k], f"{path.name}/{k}", frames=k in ("frames", "o", "o_next"))
        for k in _FRAME_KEYS
        if k in node
    }
    return [_segment_from_members(members, path.name)]


def _open_file(path: Path) -> list[_Segment]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        member = _NpyMember(path, path.name)
        return [_segment_from_members({"frames": member}, path.name)]
    if suffix == ".npz":
        return [_open_npz(path)]
    raise LamfastError(
        f"{path}: unsupported file type (use .npy, .npz, zarr, a video, HDF5, or a folder of "
        "them, of images, or a LeRobot dataset)"
    )


def open_segments(path) -> list[_Segment]:
    """The segments (files) of a frame dataset, in order; validates shapes without reading data."""
    path = check_input(path, "frames", folder_ok=True)  # never open a FIFO or a device
    if path.suffix.lower() == ".zarr" or (path.is_dir() and (path / ".zgroup").exists()):
        return _open_zarr(path)
    if path.is_dir() and (path / "zarr.json").exists():
        return _open_zarr(path)
    if path.is_dir():
        if (path / "frames.npy").exists() or (path / "o.npy").exists():
            return [_open_member_dir(path)]
        files = natural_sorted(
            check_input(p, "frames")  # a FIFO or device among the episodes: refused, not skipped
            for p in path.iterdir()
            if p.suffix.lower() in (".npy", ".npz") and not p.is_dir()
        )
        if not files:
            raise LamfastError(f"{path}: directory holds no .npy or .npz files")
        segments = []
        for f in files:
            segments += _open_file(f)
        return segments
    return _open_file(path)
