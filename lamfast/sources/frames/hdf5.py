"""HDF5 frame datasets (optional extra ``h5py``): Minari, D4RL and one group per trajectory.

Layouts
-------
The reader looks at the file's top level and picks one of three layouts (``obs_key`` is the
observation dataset, default ``observations``, else ``obs``; ``action_key`` the actions, default
``actions``, optional):

- **flat (D4RL)**: the top level holds the observation dataset ``observations`` (``N x d`` or
  ``N x H x W [x C]``), ``actions`` (``N`` rows), ``terminals`` and ``timeouts`` (``N`` flags,
  either may be absent). One segment; step ``t`` ends an episode when
  ``terminals[t] | timeouts[t]``, read as the segment's ``dones`` (frame ``t + 1`` starts the
  next episode).
- **Minari**: the top level holds groups ``episode_0``, ``episode_1``, ... (in the order of their
  numbers; other top-level members are ignored), each with ``observations`` (``T + 1`` rows: the
  initial and the final observation are included), ``actions`` (``T`` rows), ``rewards``,
  ``terminations`` and ``truncations``. One segment per episode group; the episode is the group,
  so ``terminations`` / ``truncations`` are not read. With a ``Dict`` (or ``Tuple``) observation
  space ``observations`` is a group of named arrays (``_index_0``, ... for a ``Tuple``); choose
  one with a path, ``obs_key="observations/pixels"``. A group holding a single array is read as
  that array; a group of several is refused with one line listing them.
- **one group per trajectory** (e.g. LAOM's distracting-control data: groups ``"0"``, ``"1"``,
  ... each with ``obs`` (``T`` uint8 frames), ``states`` and ``actions`` (``T`` rows)): every
  top-level group is one trajectory (one segment) holding the observation dataset and
  optionally the actions; groups are taken in natural name order (``2`` before ``10``) and a
  group without the observation dataset is refused (naming the keys it has), so a trajectory
  is never dropped silently.

The layout is told by the top level: the observation dataset there means flat; else groups
``episode_<n>`` mean Minari; else a top level of groups only means one group per trajectory (a
top level that holds datasets but not the observations is a flat file missing its key, and is
refused listing what it holds).

Paths in ``obs_key`` / ``action_key`` are relative to the episode group (Minari, groups) or to
the file's root (flat).

Transitions
-----------
As for every frame file (:mod:`lamfast.sources.frames.source`): transition ``t`` goes from
observation ``t`` to observation ``t + 1`` with ``actions[t]``, inside one episode. A Minari
episode of ``T + 1`` observations and ``T`` actions therefore gives ``T`` transitions (the final
observation is the true outcome of the last action, also after a termination). A trajectory
group of ``T`` observations and ``T`` actions gives ``T - 1`` (its last action has no recorded
outcome and is not used). Actions must have ``T`` or ``T - 1`` rows.

D4RL and ``next_observations``: D4RL stores episodes back to back, so after a terminal or timeout
step ``t`` the row ``observations[t + 1]`` is the first observation of the next episode and
``t -> t + 1`` is not a real transition. It is dropped (``dones[t]``), as D4RL's own
``qlearning_dataset`` drops the last step of a timeout episode; an episode of ``L`` steps gives
``L - 1`` transitions. ``next_observations`` (where a file has it) is not read: the frames are
read once, and every transition kept is exactly ``observations[t] -> observations[t + 1]``.
The one outcome that is lost, ``next_observations[t]`` of a terminal step, can be kept by
converting the file to pairs data (``o``, ``o_next`` in an ``.npz``).

Dtypes and reads
----------------
Observations and actions may have any real dtype (bool, integers, floats); ``uint8`` pixels get
the usual ``1/255`` scale (:class:`~lamfast.sources.frames.preprocess.Preprocess`), strings and
compound types are refused. Integer 1-d actions are discrete ids, others continuous
(``FrameSource(actions=...)``). Every dataset is read by row ranges (h5py slicing reads only the
HDF5 chunks that hold those rows), so memory is one read chunk of frames, whatever the file size
or compression.

The file is opened once per :func:`open` (its members share the handle, and h5py serialises
calls on it). On Dask, or in any thread other than the one that made the source, the source is
rebuilt from :meth:`~lamfast.sources.frames.source.FrameSource.spec`, which calls :func:`open`
again: each thread reads through a handle of its own.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from ..._files import check_input
from ...errors import LamfastError
from .readers import _check_dtype, _check_segment, _Member, _Segment

NAME = "hdf5"
OPTIONS = ("obs_key", "action_key")

SUFFIXES = (".h5", ".hdf5", ".he5", ".hdf")
MAGIC = b"\x89HDF\r\n\x1a\n"
_OBS_DEFAULTS = ("observations", "obs")
_ACTION_DEFAULT = "actions"
_FLAG_KEYS = ("terminals", "timeouts")  # D4RL: an episode ends at terminals | timeouts
_EPISODE = re.compile(r"episode_(\d+)")
_MISSING_H5PY = "reading HDF5 needs h5py: pip install 'lamfast[hdf5]'"
_LISTED = 12  # keys named in an error message


def detect(path: Path) -> bool:
    """An HDF5 file: by suffix, or by the HDF5 signature at the start of a regular file."""
    path = Path(path)
    if path.suffix.lower() in SUFFIXES:
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never open a FIFO or a device
            return False
        with path.open("rb") as f:  # (this module's open() is the reader's)
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _h5py():
    try:
        import h5py
    except ImportError:
        raise LamfastError(_MISSING_H5PY) from None
    return h5py


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class _H5Member(_Member):
    """One HDF5 dataset, read by row ranges (h5py slicing reads only the chunks it needs)."""

    def __init__(self, dataset, path: Path, label: str):
        self._d, self.path, self.name = dataset, path, label
        self._file = dataset.file  # the open file lives as long as one of its members
        shape = dataset.shape
        if shape is None or len(shape) == 0:
            raise LamfastError(f"{label}: a scalar, not an array along a time axis")
        try:
            dtype = np.dtype(dataset.dtype)
        except TypeError:
            raise LamfastError(
                f"{label}: dtype {dataset.dtype} is not a real numeric type"
            ) from None
        if dtype.fields is not None or dtype.subdtype is not None:
            raise LamfastError(f"{label}: dtype {dtype} is not a real numeric type")
        _check_dtype(dtype, label)
        self.shape, self.dtype = tuple(int(n) for n in shape), dtype

    def read(self, start, stop):
        start, stop = max(int(start), 0), min(int(stop), len(self))
        if stop <= start:
            return np.empty((0, *self.shape[1:]), self.dtype)
        try:
            return np.asarray(self._d[start:stop])
        except Exception as e:  # a corrupt or missing chunk, a failed filter: many types
            raise LamfastError(
                f"{self.name}: cannot read rows {start}..{stop - 1} ({_first_line(e)})"
            ) from None


class _FlagsMember(_Member):
    """D4RL episode ends: ``terminals | timeouts`` (either may be absent), as booleans."""

    def __init__(self, members: list[_H5Member], label: str):
        self._m, self.name = members, label
        self.path = members[0].path
        self.shape, self.dtype = members[0].shape, np.dtype(bool)

    def read(self, start, stop):
        out = np.asarray(self._m[0].read(start, stop)) != 0
        for m in self._m[1:]:
            out |= np.asarray(m.read(start, stop)) != 0
        return out


def _natural(name: str):
    """Sort key: ``episode_2`` before ``episode_10``, ``"2"`` before ``"10"``."""
    return [int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", name))]


def _leaves(group, h5py, prefix: str = "") -> list[str]:
    """Paths of the datasets in ``group`` (recursively), in natural order."""
    out = []
    for key in sorted(group.keys(), key=_natural):
        try:
            obj = group[key]
        except Exception:  # a dangling soft or external link
            continue
        if isinstance(obj, h5py.Group):
            out += _leaves(obj, h5py, f"{prefix}{key}/")
        elif isinstance(obj, h5py.Dataset):
            out.append(f"{prefix}{key}")
    return out


def _listing(names: list[str]) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _LISTED else "")


def _lookup(group, key: str):
    """The object at ``key`` in ``group``, or None (missing, or a dangling link)."""
    try:
        return group.get(key) if key in group else None
    except Exception:
        return None


def _resolve(group, key: str, h5py, where: str, option: str):
    """The dataset at ``key`` in ``group``: a group holding a single dataset is that dataset;
    a group of several is refused, listing them."""
    key = key.strip("/")  # relative to the group ("/x" would be looked up at the root)
    obj = _lookup(group, key) if key else None
    if isinstance(obj, h5py.Group):
        leaves = _leaves(obj, h5py)
        if len(leaves) == 1:
            return obj[leaves[0]], f"{key}/{leaves[0]}"
        if not leaves:
            raise LamfastError(f"{where}: {key!r} is a group that holds no arrays")
        example = f"{key}/{leaves[0]}"
        raise LamfastError(
            f"{where}: {key!r} is a group of {len(leaves)} arrays ({_listing(leaves)}); choose "
            f"one with {option} (--{option.replace('_', '-')}), e.g. {example!r}"
        )
    if isinstance(obj, h5py.Dataset):
        return obj, key
    return None, key


def _member(group, key, h5py, path: Path, where: str, option: str) -> _H5Member | None:
    ds, full = _resolve(group, key, h5py, where, option)
    if ds is None:
        return None
    prefix = "" if group.name == "/" else group.name.lstrip("/") + "/"
    return _H5Member(ds, path, f"{path.name}[{prefix}{full}]")


def _obs_member(group, options, h5py, path: Path, where: str) -> _H5Member | None:
    keys = (options.obs_key,) if options.obs_key else _OBS_DEFAULTS
    for key in keys:
        m = _member(group, key, h5py, path, where, "obs_key")
        if m is not None:
            return m
    return None


def _action_member(group, options, h5py, path: Path, where: str) -> _H5Member | None:
    key = options.action_key or _ACTION_DEFAULT
    m = _member(group, key, h5py, path, where, "action_key")
    if m is None and options.action_key:
        raise LamfastError(
            f"{where}: no actions {key!r} (action_key); it holds {_listing(_leaves(group, h5py))}"
        )
    return m


def _missing_obs(where: str, group, options, h5py) -> LamfastError:
    want = repr(options.obs_key) if options.obs_key else "'observations' (or 'obs')"
    return LamfastError(
        f"{where}: no observations {want}; it holds {_listing(_leaves(group, h5py))} "
        "(choose one with obs_key, --obs-key)"
    )


def _flat(root, options, h5py, path: Path, frames: _H5Member) -> _Segment:
    seg = _Segment(path.name, frames=frames)
    seg.actions = _action_member(root, options, h5py, path, path.name)
    flags = {}
    for key in _FLAG_KEYS:
        obj = _lookup(root, key)
        if obj is None:
            continue
        if not isinstance(obj, h5py.Dataset):
            raise LamfastError(f"{path.name}[{key}]: a group, not a dataset of episode flags")
        m = _H5Member(obj, path, f"{path.name}[{key}]")
        if m.shape != (len(frames),):
            raise LamfastError(
                f"{m.name}: shape {m.shape} does not match {len(frames)} observations "
                f"(expected ({len(frames)},))"
            )
        flags[key] = m
    if flags:
        seg.dones = _FlagsMember(list(flags.values()), f"{path.name}[{'|'.join(flags)}]")
    _check_segment(seg)
    return seg


def _groups(root, options, h5py, path: Path) -> list[_Segment]:
    groups = {}
    for key in root.keys():
        obj = _lookup(root, key)
        if isinstance(obj, h5py.Group):
            groups[key] = obj
    episodes = sorted((k for k in groups if _EPISODE.fullmatch(k)), key=_natural)
    names = episodes or sorted(groups, key=_natural)  # Minari: only its episode groups
    if not names:
        raise _missing_obs(path.name, root, options, h5py)
    segments = []
    for name in names:
        group, where = groups[name], f"{path.name}[{name}]"
        frames = _obs_member(group, options, h5py, path, where)
        if frames is None:
            raise _missing_obs(where, group, options, h5py)
        seg = _Segment(where, frames=frames)
        seg.actions = _action_member(group, options, h5py, path, where)
        _check_segment(seg)
        segments.append(seg)
    return segments


def open(path: Path, options) -> list[_Segment]:
    """The segments of the HDF5 file at ``path`` (see the module docstring for the layouts).

    Validates names, shapes and dtypes; reads no data (only metadata).
    """
    h5py = _h5py()
    path = check_input(path, "frames")  # a regular file: never open a FIFO or a device
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # h5py raises OSError for foreign files, others for damaged ones
        raise LamfastError(f"{path}: not a readable HDF5 file ({_first_line(e)})") from None
    try:
        frames = _obs_member(f, options, h5py, path, path.name)
        if frames is not None:
            return [_flat(f, options, h5py, path, frames)]
        minari = any(_EPISODE.fullmatch(k) for k in f.keys())
        if not minari and any(isinstance(_lookup(f, k), h5py.Dataset) for k in f.keys()):
            raise _missing_obs(path.name, f, options, h5py)  # a flat file without its key
        return _groups(f, options, h5py, path)
    except LamfastError:
        f.close()
        raise
    except Exception as e:  # damaged metadata (a corrupt object header): many types
        f.close()
        raise LamfastError(f"{path}: damaged HDF5 file ({_first_line(e)})") from None
