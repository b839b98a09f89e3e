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
import fcntl
import glob
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from .errors import LamfastError

# What reading a damaged, foreign or unsupported archive (.npz, zip) or .npy file can raise:
# caught where such files are read and turned into one line naming the file.
ARCHIVE_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    RuntimeError,  # zipfile: "File is encrypted, password required"
    NotImplementedError,  # zipfile: an unsupported compression method
)


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


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_input(path: str | os.PathLike, what: str = "input", *, folder_ok: bool = False) -> Path:
    """``path`` if it is a regular file (or, with ``folder_ok``, a folder), else one error.

    FIFOs, devices and sockets are refused before anything opens them: reading one would block
    forever or never end (``/dev/zero``). Symbolic links are followed.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LamfastError(f"{what} {path}: no such file or directory") from None
    except OSError as e:
        raise LamfastError(f"{what} {path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISREG(st.st_mode) or (folder_ok and stat.S_ISDIR(st.st_mode)):
        return path
    kind = _kind(st)
    want = "a file or a folder" if folder_ok else "a regular file"
    raise LamfastError(f"{what} {path} is {kind}, not {want}")


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _clash(out: Path, inputs, inside: bool = True) -> str | None:
    """How ``out`` would destroy one of ``inputs`` (same file, or inside an input folder)."""
    real = _real(out)
    for name, inp in inputs:
        if inp is None:
            continue
        other = _real(inp)
        if real == other or (
            os.path.exists(out) and os.path.exists(inp) and os.path.samefile(out, inp)
        ):
            return f"is the {name} of this run ({inp})"
        if inside and other.is_dir() and other in real.parents:
            return f"is inside the {name} {inp}, which this run reads"
    return None


def check_output(
    out: str | os.PathLike,
    *,
    inputs=(),
    force: bool = False,
    flag: str = "--out",
    overwrite_ok: bool = False,
    create_folder: bool = False,
    checkpoint: bool = False,
) -> Path:
    """Refuse, before any work, an output file that cannot or must not be written (one line).

    Refused: an output that is one of ``inputs`` (``(name, path)`` pairs, compared after resolving
    symbolic links) or lies inside an input folder; an existing path that is not a regular file
    (a folder, a FIFO, a device: writing as root would replace a device with a file); an existing
    file unless ``force`` (or ``overwrite_ok``, for outputs that are meant to be rewritten, such as
    checkpoints); a folder that does not exist (unless ``create_folder``: then it must be
    creatable, and the writer creates it) or cannot be written.

    ``checkpoint``: the output is a checkpoint, rewritten by design (``overwrite_ok``), allowed
    inside an input folder (the frame reader decides what it would read) and probed for
    writability by :class:`~lamfast.moments.checkpoint.Checkpoint` itself.
    """
    out = Path(out)
    overwrite_ok = overwrite_ok or checkpoint
    clash = _clash(out, inputs, inside=not checkpoint)
    if clash:
        raise LamfastError(f"{flag} {out} {clash}; choose another output path")
    if os.path.lexists(out):
        try:
            st = os.stat(out)
        except OSError as e:  # a dangling link, or a path we may not stat
            raise LamfastError(f"{flag} {out}: cannot use it ({e.strerror or e})") from None
        if stat.S_ISDIR(st.st_mode):
            raise LamfastError(f"output {out} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise LamfastError(f"{flag} {out} exists and is {_kind(st)}, not a regular file")
        if not (force or overwrite_ok):
            raise LamfastError(f"{flag} {out} exists; pass --force to overwrite it")
    folder = out.parent
    if checkpoint:
        return out
    if create_folder and not os.path.lexists(folder):
        check_output_folder(folder, flag=flag)
        return out
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


def check_output_folder(out: str | os.PathLike, *, inputs=(), flag: str = "--out") -> Path:
    """Refuse, before any work, an output folder that cannot be created or written (one line).

    The folder may exist (it must be a folder) or not (its nearest existing parent must be a
    writable folder); it must not be, or lie inside, one of ``inputs``. Nothing is created.
    """
    out = Path(out)
    clash = _clash(out, inputs)
    if clash:
        raise LamfastError(f"{flag} {out} {clash}; choose another output folder")
    base = out
    while not os.path.lexists(base):
        if base.parent == base:
            break
        base = base.parent
    try:
        st = os.stat(base)
    except OSError as e:
        raise LamfastError(f"{flag} {out}: cannot use {base} ({e.strerror or e})") from None
    if not stat.S_ISDIR(st.st_mode):
        where = "exists and is" if base == out else f"needs the folder {base}, which is"
        raise LamfastError(f"{flag} {out} {where} {_kind(st)}, not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".lamfast-probe-", dir=base)
    except OSError as e:
        raise LamfastError(f"{flag} {out}: cannot write into {base} ({e.strerror or e})") from None
    os.rmdir(probe)
    return out


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a hidden lock file) while one run writes ``what``.

    A second run that writes the same outputs fails at once instead of silently replacing the
    first one's files. The lock is the kernel's (``flock``): it dies with its process, so a killed
    run never leaves a stale lock behind.
    """
    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as e:
            raise LamfastError(f"cannot lock {what}: {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LamfastError(
                f"another lamfast run is writing {what} (lock {path}); wait for it to finish or "
                "choose another output"
            ) from None
        # The lock file is removed when its run ends: a lock taken on a file that was removed
        # meanwhile (another run opened it before the removal) guards nothing; take a new one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)
