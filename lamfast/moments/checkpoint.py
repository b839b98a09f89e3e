"""Checkpoints of a streamed accumulation: the merge-tree stack, saved atomically, resumed exactly.

A checkpoint is a ``.npz`` file holding

- ``fingerprint``: a JSON string naming everything that defines the stream (the world, the number
  of rows, ``block_rows``, the joint layout, the lamfast version). A checkpoint is only ever
  resumed by a run with the same fingerprint;
- ``n_blocks``: how many blocks (a prefix ``0..n_blocks-1`` of the stream) are merged in;
- the :class:`~lamfast.moments.MergeTree` stack, entry ``i`` as ``entry{i}_blocks``,
  ``entry{i}_count``, ``entry{i}_mean``, ``entry{i}_com``.

Because the stack *is* the state of the fixed merge tree, pushing the remaining blocks into the
restored tree performs exactly the merges an uninterrupted run performs: the resumed result is
bitwise identical (tests/test_checkpoint.py::test_sigkill_resume_is_bitwise). Files are written
to a temporary file in the same directory and renamed over the target with :func:`os.replace`,
which is atomic on POSIX: a kill at any instant leaves either the previous or the new checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

from .. import config
from .._files import ARCHIVE_ERRORS, atomic_output, remove_stale_temporaries
from .._version import __version__
from ..errors import LamfastError
from .core import MergeTree

# 2: block co-moments by SYRK (2026-11-27): a checkpoint of the former GEMM kernel would resume
# into bits that match neither kernel, so it is refused as another configuration.
FORMAT = "lamfast-checkpoint-2"


def fingerprint(**fields) -> str:
    """Canonical JSON of the fields that define a stream (sorted keys, no whitespace)."""
    fields = {"format": FORMAT, "lamfast": __version__, **fields}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, tuple | np.ndarray):
        return list(value)
    raise TypeError(f"cannot put {type(value).__name__} in a checkpoint fingerprint")


def _differences(mine: dict, theirs: dict) -> str:
    """The first few fields that differ, as ``key file-value != run-value``."""
    out = []
    # "source" first: a file of another kind of stream is the likeliest mix-up, and says most
    for key in sorted(set(mine) | set(theirs), key=lambda k: (k != "source", k)):
        if mine.get(key) != theirs.get(key):
            was, now = repr(theirs.get(key)), repr(mine.get(key))
            # long values (the file list of a frame dataset) would swamp the one-line error
            out.append(f"{key} differ" if len(was) + len(now) > 80 else f"{key} {was} != {now}")
    return "; ".join(out[:3]) or "unknown difference"


class Checkpoint:
    """Periodic, atomic saves of a :class:`MergeTree` to ``path``, and its restoration.

    Parameters
    ----------
    path : str or PathLike
        The ``.npz`` file. Its directory must exist and be writable (checked here, before any
        work, so a bad path fails in milliseconds and leaves nothing behind).
    fingerprint : str
        From :func:`fingerprint`; a file with another fingerprint is refused.
    every_blocks, every_seconds : optional
        Save after this many new blocks or this many seconds, whichever comes first (defaults
        ``config.CHECKPOINT_BLOCKS`` and ``config.CHECKPOINT_SECONDS``).
    """

    def __init__(self, path, fingerprint: str, every_blocks=None, every_seconds=None):
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.every_blocks = int(every_blocks or config.CHECKPOINT_BLOCKS)
        self.every_seconds = float(
            config.CHECKPOINT_SECONDS if every_seconds is None else every_seconds
        )
        if self.every_blocks < 1 or not self.every_seconds > 0:
            raise LamfastError("checkpoint intervals must be positive")
        self._check_path()
        self.saved_blocks = 0
        self._saved_at = time.monotonic()

    # ------------------------------------------------------------------ path checks
    def _check_path(self) -> None:
        path = self.path
        if not path or path.endswith(os.sep):
            raise LamfastError(f"checkpoint path {path!r} is not a file name")
        if os.path.isdir(path):
            raise LamfastError(f"checkpoint path {path} is a directory")
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise LamfastError(f"checkpoint directory {folder} is not a directory")
        if not os.path.isdir(folder):
            raise LamfastError(f"checkpoint directory {folder} does not exist")
        if os.path.exists(path) and not os.path.isfile(path):
            raise LamfastError(f"checkpoint path {path} is not a regular file")
        # Probe writability the way saving will happen: a temporary file in the same directory.
        try:
            fd, probe = tempfile.mkstemp(prefix=".lamfast-probe-", dir=folder)
        except OSError as e:
            raise LamfastError(
                f"cannot write a checkpoint in {folder}: {e.strerror or e}"
            ) from None
        os.close(fd)
        os.unlink(probe)

    # ------------------------------------------------------------------ load
    def check(self) -> None:
        """Refuse, before any work, an existing file that cannot be resumed by this run.

        Raises :class:`LamfastError` (one line) for a file that is not a lamfast checkpoint, is
        truncated, or was written for another configuration. A missing file is fine.
        """
        if os.path.exists(self.path):
            self._read()

    def load(self, tree: MergeTree) -> int:
        """Restore ``tree`` from the file if it exists; returns the number of blocks restored.

        Raises like :meth:`check`.
        """
        self._remove_stale_temporaries()
        if not os.path.exists(self.path):
            return 0
        if tree.n_blocks:
            raise LamfastError("a checkpoint can only be loaded into an empty merge tree")
        data = self._read()
        damaged = f"checkpoint {self.path} is damaged; delete it to start over"
        n_entries = int(data.get("n_entries", -1))
        try:
            for i in range(n_entries):
                tree.push_subtree(
                    int(data[f"entry{i}_blocks"]),
                    float(data[f"entry{i}_count"]),
                    np.array(data[f"entry{i}_mean"], dtype=np.float64),
                    _load_com(data, i),
                )
        except (KeyError, ValueError, LamfastError):
            raise LamfastError(damaged) from None
        if n_entries < 0 or tree.n_blocks != int(data["n_blocks"]):
            raise LamfastError(damaged)
        self.saved_blocks = tree.n_blocks
        self._saved_at = time.monotonic()
        return tree.n_blocks

    def _read(self) -> dict:
        try:
            loaded = np.load(self.path, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded as f:
                    data = {key: f[key] for key in f.files}
            else:  # a .npy array, not an archive
                data = {}
        except ARCHIVE_ERRORS as e:
            raise LamfastError(
                f"checkpoint {self.path} is not a readable lamfast checkpoint "
                f"({type(e).__name__}); delete it to start over"
            ) from None
        if "fingerprint" not in data or "n_blocks" not in data:
            raise LamfastError(f"checkpoint {self.path} is not a lamfast checkpoint")
        theirs = str(data["fingerprint"])
        if theirs != self.fingerprint:
            try:
                diff = _differences(json.loads(self.fingerprint), json.loads(theirs))
            except ValueError:
                diff = "unreadable fingerprint"
            raise LamfastError(
                f"checkpoint {self.path} belongs to another configuration ({diff}); "
                "use another --checkpoint path or delete it"
            )
        return data

    def _remove_stale_temporaries(self) -> None:
        # A SIGKILL between creating the temporary file and renaming it leaves it behind.
        remove_stale_temporaries(self.path)

    # ------------------------------------------------------------------ save
    def due(self, tree: MergeTree) -> bool:
        """Whether enough blocks or seconds have passed since the last save."""
        return tree.n_blocks - self.saved_blocks >= self.every_blocks or (
            tree.n_blocks > self.saved_blocks
            and time.monotonic() - self._saved_at >= self.every_seconds
        )

    def maybe_save(self, tree: MergeTree) -> bool:
        """Save if :meth:`due`; returns whether it saved."""
        if self.due(tree):
            self.save(tree)
            return True
        return False

    def save(self, tree: MergeTree) -> None:
        """Write the tree atomically: a temporary file in the same directory, then a rename."""
        arrays = {
            "fingerprint": np.array(self.fingerprint),
            "n_blocks": np.array(tree.n_blocks, dtype=np.int64),
            "n_entries": np.array(len(tree.stack), dtype=np.int64),
        }
        for i, (n_blocks, count, mean, com) in enumerate(tree.entries()):
            arrays[f"entry{i}_blocks"] = np.array(n_blocks, dtype=np.int64)
            arrays[f"entry{i}_count"] = np.array(count, dtype=np.float64)
            arrays[f"entry{i}_mean"] = mean
            if isinstance(com, tuple):  # thin moments: cross, narrow co-moment, variances
                for j, part in enumerate(com):
                    arrays[f"entry{i}_com{j}"] = part
            else:
                arrays[f"entry{i}_com"] = com
        with atomic_output(self.path, what="checkpoint ") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        self.saved_blocks = tree.n_blocks
        self._saved_at = time.monotonic()


def _load_com(data: dict, i: int):
    """The co-moment of entry ``i``: one array, or the parts of a thin entry (``com0``, ...)."""
    if f"entry{i}_com" in data:
        return np.array(data[f"entry{i}_com"], dtype=np.float64)
    parts, j = [], 0
    while f"entry{i}_com{j}" in data:
        parts.append(np.array(data[f"entry{i}_com{j}"], dtype=np.float64))
        j += 1
    if not parts:
        raise KeyError(f"entry{i}_com")
    return tuple(parts)
