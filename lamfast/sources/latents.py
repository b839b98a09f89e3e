"""A model's latents, one row per transition, read by row ranges in bounded memory.

Inputs
------
- ``.npy`` (memory-mapped), ``.npz`` (one member, or the member named by ``key``; members are
  streamed), a directory of ``.npy`` / ``.npz`` files read in natural name order (``ep2`` before
  ``ep10``, as every folder of episodes; one file per episode),
  or an array in memory (numpy, a memmap, anything with ``__array__`` such as a CPU torch
  tensor).
- **Continuous latents**: real arrays ``N x dz`` (float16/32/64; more axes are flattened).
- **Codes** (vector quantisation): integer arrays ``N`` (one codebook) or ``N x G`` (``G``
  codebooks), ids ``0 .. K - 1``. The codebook size ``K`` is given, taken from the codebook
  vectors, or inferred as ``max id + 1``.

Alignment
---------
Row ``i`` belongs to transition ``i`` of the dataset, in the order of
:meth:`lamfast.FrameSource.transitions` (episodes in file order, frame ``t`` to ``t + 1`` inside an
episode, never across an episode start). A model that skips transitions passes ``index``: the
sorted transition ids its rows belong to. A directory of per-episode files must hold one file per
episode with as many rows as that episode has transitions.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .. import config
from .._files import ARCHIVE_ERRORS, check_input
from ..errors import LamfastError
from .frames.readers import _ArrayMember, _Member, _NpyMember, _ZipMember, natural_sorted

KINDS = ("auto", "continuous", "codes")
_PREFERRED_KEYS = ("z", "latents", "latent", "codes", "code")


def _npz_member(path: Path, key: str | None, what: str) -> _Member:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".npy")]
    except ARCHIVE_ERRORS as e:
        raise LamfastError(f"{path}: not a readable .npz archive ({e})") from None
    keys = [n[:-4] for n in names]
    if key is None:
        if len(keys) == 1:
            key = keys[0]
        else:
            found = [k for k in _PREFERRED_KEYS if k in keys]
            key = found[0] if len(found) == 1 else None
            if key is None:
                raise LamfastError(
                    f"{path}: holds {len(keys)} arrays ({', '.join(keys) or 'none'}); name the "
                    f"{what} with --key"
                )
    if key not in keys:
        raise LamfastError(f"{path}: no array {key!r}; found {', '.join(keys) or 'none'}")
    return _ZipMember(path, f"{key}.npy", f"{path.name}[{key}]")


def _open_file(path: Path, key: str | None, what: str) -> _Member:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _NpyMember(path, path.name)
    if suffix == ".npz":
        return _npz_member(path, key, what)
    raise LamfastError(f"{path}: unsupported {what} file (use .npy, .npz or a directory of them)")


class RowArray:
    """Rows aligned with transitions, from one or several parts (files), read by global ranges.

    Parameters
    ----------
    data : str, Path or array_like
        A file, a directory of per-episode files, or an array (see the module docstring).
    name : str
        What the rows are, for messages (``latents``, ``noise``).
    key : str, optional
        Member of an ``.npz`` to read.
    kind : {"auto", "continuous", "codes"}
        ``auto``: integer arrays are codes, real arrays continuous.

    Examples
    --------
    >>> r = RowArray(np.arange(6).reshape(3, 2))
    >>> r.n, r.kind, r.width, r.read(1, 3).tolist()
    (3, 'codes', 2, [[2, 3], [4, 5]])
    """

    def __init__(self, data, *, name: str = "latents", key: str | None = None, kind="auto"):
        if kind not in KINDS:
            raise LamfastError(f"{name} kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.name = name
        self._spec = None
        if isinstance(data, str | Path):
            self._spec = {"data": str(Path(data).resolve()), "name": name, "key": key, "kind": kind}
            path = check_input(Path(data), name, folder_ok=True)
            if path.is_dir():
                files = natural_sorted(
                    check_input(p, name)
                    for p in path.iterdir()
                    if p.suffix.lower() in (".npy", ".npz") and not p.is_dir()
                )
                if not files:
                    raise LamfastError(f"{path}: directory holds no .npy or .npz files")
                self.parts = [_open_file(f, key, name) for f in files]
                self.per_episode = True
            else:
                self.parts = [_open_file(path, key, name)]
                self.per_episode = False
            self.label = str(path)
        else:
            self.parts = [_ArrayMember(data, name)]
            self.per_episode = False
            self.label = f"{name} (array)"
        first = self.parts[0]
        self.row_shape = tuple(first.shape[1:])
        self.dtype = first.dtype
        for part in self.parts[1:]:
            if tuple(part.shape[1:]) != self.row_shape or part.dtype.kind != self.dtype.kind:
                raise LamfastError(
                    f"{part.name}: rows of shape {tuple(part.shape[1:])} ({part.dtype}) differ "
                    f"from {self.row_shape} ({self.dtype}) of {first.name}"
                )
        integer = self.dtype.kind in "biu"
        if kind == "auto":
            kind = "codes" if integer else "continuous"
        if kind == "codes":
            if not integer:
                raise LamfastError(f"{first.name}: codes must be integers, got dtype {self.dtype}")
            if len(self.row_shape) > 1:
                raise LamfastError(
                    f"{first.name}: codes of shape {first.shape}; expected N (one codebook) or "
                    "N x G (G codebooks)"
                )
        self.kind = kind
        self.lengths = np.array([len(p) for p in self.parts], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.n = int(self.offsets[-1])
        if self.n < 1:
            raise LamfastError(f"{self.label}: no {name} rows")
        self.width = int(np.prod(self.row_shape)) if self.row_shape else 1

    def spec(self) -> dict:
        """Constructor arguments that reopen these rows (on a Dask worker)."""
        if self._spec is None:
            raise LamfastError(
                f"{self.name} in memory cannot be sent to Dask workers; save them as .npy and "
                "pass the file"
            )
        return dict(self._spec)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start .. stop - 1`` as ``(n, width)`` (codes as int64, others as float64).

        Refuses NaN or inf, naming the first bad row.
        """
        out = []
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos = start
        while pos < stop and i < len(self.parts):
            lo = pos - int(self.offsets[i])
            hi = min(stop, int(self.offsets[i + 1])) - int(self.offsets[i])
            if hi > lo:
                out.append(self.parts[i].read(lo, hi).reshape(hi - lo, self.width))
                pos = int(self.offsets[i]) + hi
            i += 1
        if pos < stop:
            raise LamfastError(f"{self.label}: rows {pos}..{stop - 1} are missing")
        rows = np.concatenate(out) if len(out) != 1 else out[0]
        if self.kind == "codes":
            return rows.astype(np.int64, copy=False)
        rows = np.asarray(rows, dtype=np.float64)
        if not np.isfinite(rows).all():
            bad = start + int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
            raise LamfastError(f"{self.label}: {self.name} row {bad} contains NaN or inf")
        return rows

    def chunks(self, step: int | None = None):
        """Yield ``(start, rows)`` over every row, ``step`` rows at a time."""
        step = int(step or config.FRAME_CHUNK)
        for s in range(0, self.n, step):
            yield s, self.read(s, min(self.n, s + step))


def codebook_sizes(codes: RowArray, given=None, codebook=None) -> list[int]:
    """The size ``K`` of each codebook: given (an int for all, or one per codebook), from the
    codebook vectors, or ``max id + 1`` (one pass over the codes); checks every id against it."""
    G = codes.width
    top = np.full(G, -1, dtype=np.int64)
    low = np.zeros(G, dtype=np.int64)
    for _, rows in codes.chunks(1 << 20):
        top = np.maximum(top, rows.max(axis=0))
        low = np.minimum(low, rows.min(axis=0))
    if (low < 0).any():
        g = int(np.flatnonzero(low < 0)[0])
        raise LamfastError(f"{codes.label}: negative code {int(low[g])} in codebook {g}")
    if codebook is not None:
        sizes = [int(cb.shape[0]) for cb in codebook]
    elif given is not None:
        sizes = [int(given)] * G if np.ndim(given) == 0 else [int(k) for k in given]
    else:
        sizes = [int(t) + 1 for t in top]
    if len(sizes) != G:
        raise LamfastError(f"{len(sizes)} codebook sizes given for {G} codebooks")
    for g, (k, t) in enumerate(zip(sizes, top, strict=True)):
        if k < 1:
            raise LamfastError(f"codebook size must be >= 1, got {k}")
        if t >= k:
            raise LamfastError(
                f"{codes.label}: code {int(t)} in codebook {g} is outside a codebook of {k} "
                f"codes (ids 0..{k - 1})"
            )
        if k > config.MAX_ACTIONS:
            raise LamfastError(
                f"codebook {g} has {k} codes, more than config.MAX_ACTIONS = "
                f"{config.MAX_ACTIONS} one-hot columns; pass the codebook vectors (--codebook)"
            )
    return sizes


def load_codebook(data, groups: int) -> list[np.ndarray]:
    """Codebook vectors: ``K x d`` (one codebook, or shared by all ``groups``) or ``G x K x d``."""
    if isinstance(data, str | Path):
        path = check_input(Path(data), "codebook")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise LamfastError(f"{path}: not a readable codebook .npy ({e})") from None
        if isinstance(arr, np.lib.npyio.NpzFile):
            raise LamfastError(f"{path}: the codebook must be a .npy (K x d or G x K x d)")
    else:
        arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise LamfastError(f"codebook must be real numbers, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise LamfastError("codebook contains NaN or inf")
    if arr.ndim == 2:
        return [arr] * groups
    if arr.ndim == 3 and arr.shape[0] == groups:
        return list(arr)
    raise LamfastError(
        f"codebook of shape {arr.shape}: expected K x d, or G x K x d with G = {groups} codebooks"
    )
