"""Writing output files: the one atomic writer every command uses.

Every output of lamfast (CSV, PNG, Markdown, fitted LAMs, encoded latents, datasets, checkpoints,
benchmark tables) is written to a temporary file in the target's own folder, flushed to disk and
renamed over the target with :func:`os.replace`, which is atomic on POSIX: a reader, or a run
killed at any instant, sees the previous file or the complete new one, never half of it.

Temporary files made by :mod:`tempfile` have mode 0600; the finished output gets the mode a
plain ``open(path, "w")`` would give, ``0o666 & ~umask`` (``0o777 & ~umask`` for a folder), so
that outputs respect the user's umask whatever the command (tests/test_files.py).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import LamfastError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """Permissions of a new file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Permissions of a new folder under the current umask (``0o777 & ~umask``)."""
    return 0o777 & ~_umask()


def _fail(path: Path, e: OSError, what: str = "") -> LamfastError:
    return LamfastError(f"cannot write {what}{path}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, what: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it becomes ``path`` atomically.

    The caller writes the whole output to the yielded path (by name, e.g. ``np.save``,
    ``savefig``); on a clean exit the file is flushed to disk, given the umask's mode and
    renamed over ``path``. On any error the temporary file is removed and ``path`` is untouched.
    OS errors become one-line :class:`LamfastError` messages (``what`` names the kind of file).
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _fail(path, e, what) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as e:
        raise _fail(path, e, what) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_output` for a folder: fill the yielded folder, then it becomes ``path``.

    ``path`` must not exist (a folder cannot replace another atomically).
    """
    path = Path(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as e:
        raise _fail(path, e) from None
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        os.replace(tmp, path)
    except OSError as e:
        raise _fail(path, e) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Remove the temporary files that killed writes of ``path`` left behind."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def atomic_write_text(path: str | os.PathLike, text: str, *, what: str = "") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, what=what) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(text)


def check_output(out: str | os.PathLike) -> Path:
    """Refuse, before any work, an output file that cannot be written (one-line error)."""
    out = Path(out)
    folder = out.parent
    if out.is_dir():
        raise LamfastError(f"output {out} is a directory")
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise LamfastError(f"output directory {folder} {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise _fail(out, e) from None
    os.close(fd)
    os.unlink(probe)
    return out
