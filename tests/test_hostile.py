"""Hostile-input catalogue: every bad input fails with exit code 2 and one clear line.

Each case in ``CASES`` is a command line (``{tmp}`` is the test's scratch directory), a regular
expression the one-line message must match (it names the problem), and optionally a ``setup``
that prepares files in ``{tmp}`` first. For every case the test checks:

* exit status 2;
* stderr is exactly one line, ``Error: <message>``, and stdout is empty;
* no traceback anywhere;
* the scratch directory is unchanged: no partial output, no temporary file left behind.

To add a case (frame files, ``reproduce``, ``sweep`` ...), append a ``Case`` to ``CASES``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lamfast import LinearWorld, config
from lamfast.cli import cli


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    match: str  # regular expression, searched case-insensitively in the message
    setup: object = None  # callable(tmp: Path) -> None, prepares files before the run
    env: dict = field(default_factory=dict)  # config tunables set for the run


STREAM = ["fit", "--do", "8", "--da", "2", "--source", "stream", "--rows", "5000"]


# ------------------------------------------------------------------------------ file set-ups
def _foreign_checkpoint(tmp: Path) -> None:
    """A finished checkpoint of the same world with 6000 rows (the cases ask for 5000)."""
    from lamfast.sources.distributed import stream_moments_checkpointed

    stream_moments_checkpointed(LinearWorld(do=8, da=2), 6000, tmp / "ck.npz")


def _garbage_checkpoint(tmp: Path) -> None:
    (tmp / "ck.npz").write_bytes(b"\x00garbage, not a zip archive")


def _truncated_checkpoint(tmp: Path) -> None:
    _foreign_checkpoint(tmp)
    data = (tmp / "ck.npz").read_bytes()
    (tmp / "ck.npz").write_bytes(data[: len(data) // 3])


def _npz_without_fingerprint(tmp: Path) -> None:
    with open(tmp / "ck.npz", "wb") as f:
        np.savez(f, mean=np.zeros(3))


def _frames_at(name):
    def setup(tmp: Path) -> None:
        _frames(tmp, name=name)

    return setup


def _regular_file(tmp: Path) -> None:
    (tmp / "afile").write_text("I am a file, not a directory\n")


def _subdirectory(tmp: Path) -> None:
    (tmp / "sub").mkdir()


def _frames(tmp: Path, frames=None, name="f.npy", **kw) -> None:
    frames = np.random.default_rng(0).standard_normal((40, 6)) if frames is None else frames
    np.save(tmp / name, frames, **kw)


def _frames_with(value, row):
    def setup(tmp: Path) -> None:
        frames = np.random.default_rng(0).standard_normal((40, 6))
        frames[row, 3] = value
        _frames(tmp, frames)

    return setup


def _truncated_frames(tmp: Path) -> None:
    _frames(tmp)
    data = (tmp / "f.npy").read_bytes()
    (tmp / "f.npy").write_bytes(data[:-64])


def _frames_of_a_stream_checkpoint(tmp: Path) -> None:
    """Frames, and at --checkpoint a file left by a simulated stream (a reused file name)."""
    _frames(tmp)
    _foreign_checkpoint(tmp)


def _damaged_header(tmp: Path) -> None:
    """A .npy whose header dict does not parse (numpy raises a tokenizer error, not ValueError)."""
    _frames(tmp)
    data = bytearray((tmp / "f.npy").read_bytes())
    i = data.index(b"'shape': (") + len(b"'shape': (")
    data[i : i + 2] = b"(("
    (tmp / "f.npy").write_bytes(bytes(data))


def _patch_header(tmp: Path, old: bytes, new: bytes) -> None:
    _frames(tmp)
    data = (tmp / "f.npy").read_bytes()
    (tmp / "f.npy").write_bytes(data.replace(old, new.ljust(len(old)), 1))


def _frame_directory(tmp: Path) -> None:
    (tmp / "data").mkdir()
    _frames(tmp, name="data/a.npy")
    _frames(tmp, name="data/b.npy")


def _fig_csv_exists(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "fig3-middle.csv").write_text("a finished run\n")


def _grid(text: str):
    def setup(tmp: Path) -> None:
        (tmp / "grid.toml").write_text(text)

    return setup


def _nonempty_directory(tmp: Path) -> None:
    (tmp / "data").mkdir()
    (tmp / "data" / "keep.txt").write_text("someone's file\n")


# ------------------------------------------------------------------------------ outputs, special
# files, damaged archives and huge values (outputs never destroy inputs; inputs are what they
# claim; every error is one line)
def _all(*setups):
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)

    return setup


def _fifo(name="fifo"):
    def setup(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(tmp / name)  # a private FIFO: opening it for reading would block forever

    return setup


def _device(name, major, minor):
    """A private character device node in the scratch folder (never the real /dev entries):
    ``(1, 5)`` reads like /dev/zero, ``(1, 3)`` like /dev/null."""

    def setup(tmp: Path) -> None:
        os.mknod(tmp / name, 0o600 | stat.S_IFCHR, os.makedev(major, minor))

    return setup


def _symlink(name, target):
    def setup(tmp: Path) -> None:
        (tmp / name).symlink_to(tmp / target)

    return setup


def _file(name, data: bytes):
    def setup(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)

    return setup


def _a_fit(frames=None, name="fit.npz", source="f.npy"):
    """A real fit file of frames (written to ``source``, fitted, saved to ``name``)."""

    def setup(tmp: Path) -> None:
        from lamfast.experiments.fitframes import fit_frames, save_lam

        if frames is None:
            _frames(tmp, name=source)
        else:
            np.save(tmp / source, frames)
        _, lam = fit_frames(tmp / source, 2)
        save_lam(lam, tmp / name)

    return setup


def _edited_fit(edit):
    """A fit file whose ``meta`` (or arrays) ``edit(meta, arrays)`` damaged."""

    def setup(tmp: Path) -> None:
        import json

        _a_fit()(tmp)
        with np.load(tmp / "fit.npz") as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"]))
        text = edit(meta, arrays)
        arrays["meta"] = np.array(text if isinstance(text, str) else json.dumps(meta))
        with open(tmp / "fit.npz", "wb") as f:
            np.savez(f, **arrays)

    return setup


def _grid_world(tmp: Path) -> None:
    from lamfast.sources.gridworld import write_gridworld

    write_gridworld(tmp / "grid.npz", episodes=20, length=6)


def _npz(name="f.npz", compressed=False, **arrays):
    def setup(tmp: Path) -> None:
        save = np.savez_compressed if compressed else np.savez
        with open(tmp / name, "wb") as f:
            save(f, **arrays)

    return setup


def _patched_zip(name, patch):
    """An .npz of frames whose zip bytes ``patch(bytearray)`` changed."""

    def setup(tmp: Path) -> None:
        frames = np.random.default_rng(0).standard_normal((400, 6))
        with open(tmp / name, "wb") as f:
            np.savez_compressed(f, frames=frames, actions=np.zeros(400, dtype=np.int64))
        data = bytearray((tmp / name).read_bytes())
        patch(data)
        (tmp / name).write_bytes(bytes(data))

    return setup


def _zip_headers(data: bytearray, local_offset: int, central_offset: int, value: bytes):
    """Write ``value`` at an offset of every local (PK 3 4) and central (PK 1 2) header."""
    for sig, off in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        i = data.find(sig)
        while i >= 0:
            data[i + off : i + off + len(value)] = value
            i = data.find(sig, i + 4)


def _encrypted(data):  # general-purpose flag bit 0: "encrypted"
    _zip_headers(data, 6, 8, b"\x01\x00")


def _unknown_compression(data):  # compression method 99 (AES): not supported
    _zip_headers(data, 8, 10, b"\x63\x00")


def _corrupt_deflate(data):  # flip bytes in the middle of the first compressed member
    start = data.find(b"PK\x03\x04") + 30 + 200
    for k in range(start, start + 40):
        data[k] ^= 0xFF


def _zarr_last_chunk(tmp: Path) -> Path:
    """A zarr store of frames in chunks of 10 rows; the file of its last chunk."""
    import zarr

    a = zarr.open(str(tmp / "f.zarr"), mode="w", shape=(60, 6), chunks=(10, 6), dtype="f8")
    a[:] = np.random.default_rng(0).standard_normal((60, 6))
    return sorted(p for p in (tmp / "f.zarr").rglob("*") if p.is_file() and p.name == "0")[-1]


def _zarr_missing_chunk(tmp: Path) -> None:
    _zarr_last_chunk(tmp).unlink()


def _zarr_corrupt_chunk(tmp: Path) -> None:
    _zarr_last_chunk(tmp).write_bytes(b"\x00garbage" * 3)


def _huge_action_ids(tmp: Path) -> None:
    frames = np.random.default_rng(0).standard_normal((40, 6))
    actions = np.arange(40, dtype=np.int64) * 1_000_000
    with open(tmp / "f.npz", "wb") as f:
        np.savez(f, frames=frames, actions=actions)


def _not_a_fit(tmp: Path) -> None:
    _frames(tmp)
    np.savez(tmp / "junk.npz", weights=np.zeros(3))


FRAMES = ["fit", "{tmp}/f.npy", "--dz", "2"]
FRAMES_NPZ = ["fit", "{tmp}/f.npz", "--dz", "2"]

CASES = [
    # --- world flags
    Case("do-zero", ["fit", "--do", "0"], r"\bdo\b.*positive integer"),
    Case("da-above-do", ["fit", "--do", "4", "--da", "8"], r"da \(8\) must not exceed do"),
    Case("db-above-do", ["fit", "--do", "4", "--da", "2", "--noise", "exo", "--db", "9"], r"db"),
    Case("noise-unknown", ["fit", "--noise", "purple"], r"--noise"),
    Case("sigma-negative", ["fit", "--sigma", "-1"], r"sigma.*>= 0"),
    Case("sigma-nan", ["fit", "--sigma", "nan"], r"sigma"),
    Case("sigma-inf", ["fit", "--sigma", "inf"], r"sigma"),
    Case("sigma-text", ["fit", "--sigma", "lots"], r"--sigma"),
    Case("chi-above-one", ["fit", "--chi", "1.5"], r"chi must be in \[0, 1\]"),
    Case("chi-negative", ["fit", "--chi", "-0.1"], r"chi must be in \[0, 1\]"),
    Case("seed-negative", ["fit", "--seed", "-3"], r"seed"),
    # --- model flags
    Case("dz-zero", ["fit", "--dz", "0"], r"dz must be an integer in \[1, do=128\]"),
    Case(
        "dz-above-do", ["fit", "--do", "16", "--dz", "17"], r"dz must be an integer in \[1, do=16"
    ),
    Case("dz-text", ["fit", "--dz", "eight"], r"--dz"),
    Case("kappa-negative", ["fit", "--kappa", "-0.1"], r"kappa"),
    Case("label-fraction-above-one", ["fit", "--label-fraction", "1.5"], r"label_fraction"),
    Case("label-fraction-negative", ["fit", "--label-fraction", "-0.2"], r"label_fraction"),
    Case("solver-unknown", ["fit", "--solver", "adam"], r"--solver"),
    Case("decoder-unknown", ["fit", "--decoder", "mlp"], r"--decoder"),
    # --- sources and rows
    Case("source-unknown", ["fit", "--source", "tape"], r"--source"),
    Case("rows-text", ["fit", "--source", "stream", "--rows", "many"], r"--rows"),
    Case("rows-fraction", ["fit", "--source", "stream", "--rows", "1.5"], r"--rows.*whole"),
    Case("rows-one", ["fit", "--source", "stream", "--rows", "1"], r"--rows.*>= 2"),
    Case("rows-inf", ["fit", "--source", "wishart", "--rows", "inf"], r"--rows"),
    Case("wishart-uniform", ["fit", "--noise", "uniform", "--source", "wishart"], r"wishart"),
    # --- Dask
    Case("workers-zero", [*STREAM, "--workers", "0"], r"--workers"),
    Case("workers-not-stream", ["fit", "--workers", "2"], r"--workers only apply to --source"),
    Case(
        "workers-and-scheduler",
        [*STREAM, "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"],
        r"either --workers or --scheduler",
    ),
    Case("scheduler-malformed", [*STREAM, "--scheduler", "nowhere"], r"bad Dask scheduler address"),
    Case("scheduler-protocol", [*STREAM, "--scheduler", "inproc://x"], r"unsupported protocol"),
    Case(
        "scheduler-unreachable",
        [*STREAM, "--scheduler", "tcp://127.0.0.1:9"],
        r"cannot reach the Dask scheduler",
        env={"DASK_CONNECT_TIMEOUT": 0.5},
    ),
    # --- checkpoints (the only file fit writes)
    Case(
        "checkpoint-not-stream",
        ["fit", "--source", "wishart", "--checkpoint", "{tmp}/ck.npz"],
        r"--checkpoint only apply to --source stream",
    ),
    Case(
        "checkpoint-missing-directory",
        [*STREAM, "--checkpoint", "{tmp}/no/such/dir/ck.npz"],
        r"does not exist",
    ),
    Case(
        "checkpoint-under-a-file",
        [*STREAM, "--checkpoint", "{tmp}/afile/ck.npz"],
        r"not a directory",
        setup=_regular_file,
    ),
    Case(
        "checkpoint-is-a-directory",
        [*STREAM, "--checkpoint", "{tmp}/sub"],
        r"is a directory",
        setup=_subdirectory,
    ),
    Case(
        "checkpoint-unwritable",
        [*STREAM, "--checkpoint", "/proc/lamfast-ck.npz"],
        r"cannot write a checkpoint in /proc",
    ),
    Case(
        "checkpoint-other-configuration",
        [*STREAM, "--checkpoint", "{tmp}/ck.npz"],
        r"belongs to another configuration \(rows 6000 != 5000\)",
        setup=_foreign_checkpoint,
    ),
    Case(
        "checkpoint-other-configuration-on-dask",
        [*STREAM, "--workers", "2", "--checkpoint", "{tmp}/ck.npz"],
        r"belongs to another configuration",
        setup=_foreign_checkpoint,
    ),
    Case(
        "checkpoint-garbage",
        [*STREAM, "--checkpoint", "{tmp}/ck.npz"],
        r"not a readable lamfast checkpoint",
        setup=_garbage_checkpoint,
    ),
    Case(
        "checkpoint-truncated",
        [*STREAM, "--checkpoint", "{tmp}/ck.npz"],
        r"not a readable lamfast checkpoint",
        setup=_truncated_checkpoint,
    ),
    Case(
        "checkpoint-foreign-npz",
        [*STREAM, "--checkpoint", "{tmp}/ck.npz"],
        r"not a lamfast checkpoint",
        setup=_npz_without_fingerprint,
    ),
    # --- frame files
    Case("frames-nan", FRAMES, r"f\.npy: frame 17 contains NaN or inf", _frames_with(np.nan, 17)),
    Case("frames-inf", FRAMES, r"f\.npy: frame 3 contains NaN or inf", _frames_with(-np.inf, 3)),
    Case("frames-1d", FRAMES, r"frames need shape T x d", lambda t: _frames(t, np.zeros(9))),
    Case("frames-empty-file", FRAMES, r"not a readable \.npy", lambda t: (t / "f.npy").touch()),
    Case("frames-truncated-npy", FRAMES, r"f\.npy: file is truncated", _truncated_frames),
    Case(
        "frames-string-dtype",
        FRAMES,
        r"dtype <U1 is not a real numeric type",
        lambda t: _frames(t, np.array([["a", "b"], ["c", "d"]])),
    ),
    Case(
        "frames-object-dtype",
        FRAMES,
        r"dtype object is not a real numeric type",
        lambda t: _frames(t, np.array([[1, None]] * 3, dtype=object), allow_pickle=True),
    ),
    Case("frames-zero-frames", FRAMES, r"no transitions", lambda t: _frames(t, np.zeros((0, 4)))),
    Case(
        "frames-episodic-actions",
        FRAMES_NPZ,
        r"actions of shape \(4, 9, 2\); expected ids",
        lambda t: np.savez(
            t / "f.npz", frames=np.zeros((4, 10, 3, 3)), actions=np.zeros((4, 9, 2))
        ),
    ),
    Case(
        "frames-negative-shape-header",
        FRAMES,
        r"negative dimension in shape \(-5, 6\)",
        lambda t: _patch_header(t, b"(40, 6)", b"(-5, 6)"),
    ),
    Case("frames-damaged-header", FRAMES, r"f\.npy: not a readable \.npy file", _damaged_header),
    Case(
        "frames-checkpoint-inside-the-dataset",
        ["fit", "{tmp}/data", "--dz", "2", "--checkpoint", "{tmp}/data/ck.npz"],
        r"inside the dataset directory",
        _frame_directory,
    ),
    Case(
        "frames-one-frame",
        FRAMES,
        r"no transitions",
        lambda t: _frames(t, np.zeros((1, 4))),
    ),
    Case(
        "frames-unsupported-type",
        ["fit", "{tmp}/afile", "--dz", "2"],
        r"unsupported file type",
        setup=_regular_file,
    ),
    Case(
        "frames-dz-above-do", [*FRAMES[:3], "7"], r"dz must be an integer in \[1, do=6\]", _frames
    ),
    Case(
        "frames-world-flag",
        [*FRAMES, "--sigma", "1"],
        r"--sigma describes a simulated world",
        _frames,
    ),  # fmt: skip
    Case(
        "frames-labels-without-actions",
        [*FRAMES, "--label-fraction", "0.5"],
        r"needs actions in the data",
        _frames,
    ),  # fmt: skip
    Case(
        "frames-noop-without-actions",
        [*FRAMES, "--noop-action", "1"],
        r"--noop-action needs discrete actions",
        _frames,
    ),  # fmt: skip
    Case(
        "frames-crop-too-large",
        [*FRAMES, "--crop", "0:9,0:9"],
        r"crop|frames shaped",
        lambda t: _frames(t, np.zeros((5, 4, 4))),
    ),  # fmt: skip
    Case(
        "frames-out-unwritable",
        [*FRAMES, "--out", "/proc/lamfast-fit.npz"],
        r"cannot write /proc/lamfast-fit\.npz",
        _frames,
    ),
    Case(
        "frames-out-missing-directory",
        [*FRAMES, "--out", "{tmp}/no/fit.npz"],
        r"output directory .*/no does not exist",
        _frames,
    ),
    Case(
        "frames-checkpoint-other-configuration",
        [*FRAMES, "--checkpoint", "{tmp}/ck.npz"],
        r"belongs to another configuration \(.*source 'stream' != 'frames'",
        _frames_of_a_stream_checkpoint,
    ),
    Case(
        "frames-workers-zero",
        [*FRAMES, "--workers", "0"],
        r"--workers",
        _frames,
    ),
    Case(
        "encode-not-a-fit",
        ["encode", "{tmp}/junk.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"junk\.npz",
        _not_a_fit,
    ),
    # --- reproduce, sweep, simulate
    Case("reproduce-unknown-panel", ["reproduce", "fig9", "--out", "{tmp}/out"], r"fig9"),
    Case(
        "reproduce-existing-output",
        ["reproduce", "fig3-middle", "--quick", "--out", "{tmp}/out"],
        r"already holds fig3-middle\.csv; pass --force",
        _fig_csv_exists,
    ),
    Case(
        "reproduce-out-is-a-file", ["reproduce", "--out", "{tmp}/afile"], r"afile", _regular_file
    ),  # fmt: skip
    Case(
        "sweep-malformed-toml",
        ["sweep", "{tmp}/grid.toml", "--out", "{tmp}/s.csv"],
        r"grid\.toml",
        _grid("[grid\nsigma = [1, 2\n"),
    ),  # fmt: skip
    Case(
        "sweep-unknown-key",
        ["sweep", "{tmp}/grid.toml", "--out", "{tmp}/s.csv"],
        r"frobnicate",
        _grid("frobnicate = 3\n"),
    ),  # fmt: skip
    Case("sweep-missing-file", ["sweep", "{tmp}/none.toml", "--out", "{tmp}/s.csv"], r"none\.toml"),
    Case(
        "simulate-into-a-used-directory",
        ["simulate", "linear", "--rows", "100", "--out", "{tmp}/data"],
        r"data",
        _nonempty_directory,
    ),
    Case("simulate-rows-zero", ["simulate", "linear", "--rows", "0", "--out", "{tmp}/d"], r"rows"),
    # --- outputs never destroy inputs
    Case(
        "out-is-the-dataset",
        ["fit", "{tmp}/f.npy", "--dz", "2", "--out", "{tmp}/f.npy"],
        r"is the dataset",
        _frames,
    ),
    Case(
        "out-is-a-link-to-the-dataset",
        ["fit", "{tmp}/f.npy", "--dz", "2", "--out", "{tmp}/link.npz"],
        r"is the dataset",
        _all(_frames, _symlink("link.npz", "f.npy")),
    ),
    Case(
        "out-inside-the-dataset-folder",
        ["fit", "{tmp}/data", "--dz", "2", "--out", "{tmp}/data/fit.npz"],
        r"inside the dataset",
        _frame_directory,
    ),
    Case(
        "out-is-the-checkpoint",
        [
            "fit",
            "{tmp}/f.npy",
            "--dz",
            "2",
            "--checkpoint",
            "{tmp}/ck.npz",
            "--out",
            "{tmp}/ck.npz",
        ],
        r"is the checkpoint",
        _frames,
    ),
    Case(
        "out-is-a-fifo",
        ["fit", "{tmp}/f.npy", "--dz", "2", "--out", "{tmp}/fifo"],
        r"is a FIFO",
        _all(_frames, _fifo()),
    ),
    Case(
        "out-exists-without-force",
        ["fit", "{tmp}/f.npy", "--dz", "2", "--out", "{tmp}/o.npz"],
        r"exists; pass --force",
        _all(_frames, _file("o.npz", b"someone's results")),
    ),
    Case(
        "encode-out-is-the-frames",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/f.npy"],
        r"is the frames",
        _a_fit(),
    ),
    Case(
        "encode-out-is-the-fit",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/fit.npz"],
        r"is the fit file",
        _a_fit(),
    ),
    Case(
        "checkpoint-is-the-dataset",
        ["fit", "{tmp}/f.npy", "--dz", "2", "--checkpoint", "{tmp}/f.npy"],
        r"is the dataset",
        _frames,
    ),
    Case("checkpoint-is-a-fifo", [*STREAM, "--checkpoint", "{tmp}/fifo"], r"is a FIFO", _fifo()),
    Case(
        "checkpoint-is-a-npy-array",
        [*STREAM, "--checkpoint", "{tmp}/x.npy"],
        r"not a lamfast checkpoint",
        _frames_at("x.npy"),
    ),
    Case(
        "sweep-out-is-the-grid",
        ["sweep", "{tmp}/grid.toml", "--out", "{tmp}/grid.toml"],
        r"is the grid",
        _grid("[axes]\ndo = 8\nda = 2\ndz = 2\n"),
    ),
    Case(
        "sweep-existing-out-not-utf8",
        ["sweep", "{tmp}/grid.toml", "--out", "{tmp}/s.csv"],
        r"not UTF-8",
        _all(_grid("[axes]\ndo = 8\nda = 2\ndz = 2\n"), _file("s.csv", b"\xff\xfe\x00")),
    ),
    Case(
        "reproduce-out-under-a-file",
        ["reproduce", "fig3-right", "--quick", "--out", "{tmp}/afile/sub"],
        r"not a folder",
        _regular_file,
    ),
    Case(
        "reproduce-output-is-a-fifo",
        ["reproduce", "fig3-right", "--quick", "--out", "{tmp}/rep", "--force"],
        r"is a FIFO",
        _fifo("rep/fig3-right.csv"),
    ),
    Case(
        "simulate-npz-exists",
        ["simulate", "gridworld", "--out", "{tmp}/g.npz"],
        r"exists; pass --force",
        _file("g.npz", b"someone's dataset"),
    ),
    Case(
        "simulate-folder-uncreatable",
        ["simulate", "linear", "--rows", "100", "--out", "/proc/lamfast-nowhere/data"],
        r"cannot write",
    ),
    Case(
        "bench-markdown-uncreatable",
        ["bench", "--quick", "--markdown", "/proc/lamfast-x.md"],
        r"cannot write",
    ),
    Case(
        "bench-json-is-the-markdown",
        ["bench", "--quick", "--markdown", "{tmp}/t.md", "--json", "{tmp}/t.md"],
        r"is the --markdown",
    ),
    Case(
        "out-is-a-device-node",
        ["fit", "{tmp}/f.npy", "--dz", "2", "--out", "{tmp}/null"],
        r"is a character device",
        _all(_frames, _device("null", 1, 3)),
    ),
    Case(
        "reproduce-folder-uncreatable",
        ["reproduce", "fig3-right", "--quick", "--out", "/proc/lamfast-nowhere/out"],
        r"cannot write",
    ),
    Case(
        "checkpoint-through-a-link-into-the-dataset",
        ["fit", "{tmp}/data", "--dz", "2", "--checkpoint", "{tmp}/link/ck.npz"],
        r"inside the dataset directory",
        _all(_frame_directory, _symlink("link", "data")),
    ),
    Case(
        "out-is-the-noop-checkpoint",
        [
            "fit",
            "{tmp}/grid.npz",
            "--dz",
            "2",
            "--noop-action",
            "0",
            "--checkpoint",
            "{tmp}/gck.npz",
            "--out",
            "{tmp}/gck.noop.npz",
        ],
        r"is the no-op checkpoint",
        lambda tmp: _grid_world(tmp),
    ),
    # --- inputs are only what they claim
    Case(
        "fifo-among-episode-files",
        ["fit", "{tmp}/data", "--dz", "2"],
        r"is a FIFO",
        _all(_frame_directory, _fifo("data/c.npy")),
    ),
    Case(
        "continuous-actions-too-wide",
        ["fit", "{tmp}/f.npz", "--dz", "2"],
        r"GiB",
        _npz(frames=np.zeros((10, 4)), actions=np.zeros((10, 500))),
        env={"MAX_MOMENT_BYTES": 8 * 100**2},
    ),
    Case(
        "frames-are-a-zero-device",
        ["fit", "{tmp}/zero", "--dz", "2"],
        r"is a character device",
        _device("zero", 1, 5),
    ),
    Case(
        "frames-link-to-a-zero-device",
        ["fit", "{tmp}/frames.npy", "--dz", "2"],
        r"is a character device",
        _all(_device("zero", 1, 5), _symlink("frames.npy", "zero")),
    ),
    Case("frames-are-a-fifo", ["fit", "{tmp}/fifo", "--dz", "2"], r"is a FIFO", _fifo()),
    Case(
        "frames-member-is-a-fifo",
        ["fit", "{tmp}/data", "--dz", "2"],
        r"is a FIFO",
        _fifo("data/frames.npy"),
    ),
    Case(
        "clean-basis-is-a-fifo",
        ["fit", "{tmp}/f.npy", "--dz", "2", "--clean-basis", "{tmp}/fifo"],
        r"is a FIFO",
        _all(_frames, _fifo()),
    ),
    Case(
        "fit-file-is-a-fifo",
        ["encode", "{tmp}/fifo", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"is a FIFO",
        _all(_frames, _fifo()),
    ),
    Case("grid-is-a-fifo", ["sweep", "{tmp}/fifo", "--out", "{tmp}/s.csv"], r"is a FIFO", _fifo()),
    Case(
        "grid-not-utf8",
        ["sweep", "{tmp}/grid.toml", "--out", "{tmp}/s.csv"],
        r"not UTF-8",
        _file("grid.toml", b"[axes]\ndo = \xff\xfe\n"),
    ),
    Case(
        "npy-header-shape-overflows",
        ["fit", "{tmp}/f.npy", "--dz", "2"],
        r"truncated",
        lambda tmp: _patch_header(tmp, b"(40, 6)", b"(4611686018427387904, 8)"),
    ),
    Case(
        "npz-member-name-lost-a-byte",
        ["fit", "{tmp}/f.npz", "--dz", "2"],
        r"damaged 'actions'",
        _npz(frames=np.zeros((10, 4)), actons=np.zeros(10, np.int64)),
    ),
    Case(
        "npz-episode-flags-name-damaged",
        ["fit", "{tmp}/f.npz", "--dz", "2"],
        r"damaged 'episode_starts'",
        _npz(frames=np.zeros((10, 4)), episode_stars=np.zeros(10, bool)),
    ),
    Case(
        "npz-corrupt-deflate-stream",
        ["fit", "{tmp}/f.npz", "--dz", "2"],
        r"f\.npz",
        _patched_zip("f.npz", _corrupt_deflate),
    ),
    Case(
        "npz-encrypted",
        ["fit", "{tmp}/f.npz", "--dz", "2"],
        r"encrypted",
        _patched_zip("f.npz", _encrypted),
    ),
    Case(
        "npz-unsupported-compression",
        ["fit", "{tmp}/f.npz", "--dz", "2"],
        r"compression",
        _patched_zip("f.npz", _unknown_compression),
    ),
    Case(
        "zarr-missing-chunk",
        ["fit", "{tmp}/f.zarr", "--dz", "2"],
        r"chunks are missing",
        _zarr_missing_chunk,
    ),
    Case(
        "zarr-corrupt-chunk",
        ["fit", "{tmp}/f.zarr", "--dz", "2"],
        r"corrupt zarr chunk",
        _zarr_corrupt_chunk,
    ),
    Case(
        "discrete-action-ids-in-the-millions",
        ["fit", "{tmp}/f.npz", "--dz", "2"],
        r"MAX_ACTIONS",
        _huge_action_ids,
    ),
    Case(
        "frames-mix-uint8-and-float",
        ["fit", "{tmp}/data", "--dz", "2"],
        r"scaled differently",
        _all(
            _file("data/.keep", b""),
            lambda tmp: np.save(tmp / "data/a.npy", np.zeros((20, 4), np.uint8)),
            lambda tmp: np.save(tmp / "data/b.npy", np.zeros((20, 4))),
        ),
    ),
    # --- fit files carry what encoding needs
    Case(
        "encode-frames-of-another-shape",
        ["encode", "{tmp}/fit.npz", "{tmp}/g.npy", "--out", "{tmp}/z.npy"],
        r"fit was made on frames of shape 4x6",
        _all(
            _a_fit(np.random.default_rng(0).standard_normal((30, 4, 6))),
            lambda tmp: np.save(tmp / "g.npy", np.zeros((30, 6, 4))),
        ),
    ),
    Case(
        "encode-frames-of-another-scale",
        ["encode", "{tmp}/fit.npz", "{tmp}/g.npy", "--out", "{tmp}/z.npy"],
        r"scaled by 1, but the fit scaled its uint8 frames by 0\.00392",
        _all(
            _a_fit(np.random.default_rng(0).integers(0, 255, (30, 8)).astype(np.uint8)),
            lambda tmp: np.save(tmp / "g.npy", np.zeros((30, 8))),
        ),
    ),
    Case(
        "fit-file-meta-not-json",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"meta is not JSON",
        _edited_fit(lambda m, a: "{not json"),
    ),
    Case(
        "fit-file-missing-keys",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"lacks 'dz'",
        _edited_fit(lambda m, a: m.pop("dz") and None),
    ),
    Case(
        "fit-file-newer-format",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"format 'lamfast-fit-9'",
        _edited_fit(lambda m, a: m.update(format="lamfast-fit-9")),
    ),
    Case(
        "fit-file-unknown-variant-key",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"bad meta",
        _edited_fit(lambda m, a: m["variant"].update(frob=1)),
    ),
    Case(
        "fit-file-wrong-shapes",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"inconsistent shapes",
        _edited_fit(lambda m, a: a.update(B=np.zeros((3, 3)))),
    ),
    Case(
        "fit-file-bad-preprocessing",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"bad preprocessing",
        _edited_fit(lambda m, a: m["frames"].update(preprocess={"bogus": 2})),
    ),
    Case(
        "fit-file-bad-frame-shape",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"bad frame shape",
        _edited_fit(lambda m, a: m["frames"].update(frame_shape=16)),
    ),
    Case(
        "fit-file-bad-scale",
        ["encode", "{tmp}/fit.npz", "{tmp}/f.npy", "--out", "{tmp}/z.npy"],
        r"bad pixel scale",
        _edited_fit(lambda m, a: m["frames"].update(scale="abc")),
    ),
    # --- huge values: sizes are checked before anything is allocated
    Case(
        "wishart-rows-1e30",
        ["fit", "--do", "8", "--da", "2", "--source", "wishart", "--rows", "1e30"],
        r"2\^53",
    ),
    Case("observation-dim-a-million", ["fit", "--do", "1000000"], r"GiB"),
    Case("workers-a-billion", [*STREAM, "--workers", "1000000000"], r"local cluster"),
    # --- the command line itself
    Case("command-unknown", ["fitt"], r"No such command 'fitt'"),
    Case("option-unknown", ["fit", "--frobnicate"], r"No such option"),
    Case("info-extra-argument", ["info", "extra"], r"unexpected extra argument"),
]


def _snapshot(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case, tmp_path, monkeypatch):
    if case.id == "checkpoint-unwritable" and not os.path.isdir("/proc"):
        pytest.skip("needs a directory nobody can write: /proc")
    if "--scheduler" in case.args and importlib.util.find_spec("distributed") is None:
        pytest.skip("scheduler-address checks need the dask extra (missing-dask has its own case)")
    if case.setup is not None:
        case.setup(tmp_path)
    for name, value in case.env.items():
        monkeypatch.setattr(config, name, value)
    before = _snapshot(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]

    def hang(signum, frame):  # a FIFO opened for reading would block forever
        raise TimeoutError(f"{case.id} did not finish in 60 s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # not an escaped exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert re.search(case.match, lines[0], re.IGNORECASE), lines[0]
    assert "Traceback" not in result.output
    assert _snapshot(tmp_path) == before


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    # the README quotes the size of this table: keep it true
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"a table of {len(CASES)} cases" in readme


def test_missing_dask_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    result = CliRunner().invoke(cli, [*STREAM, "--workers", "2"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: Dask is not installed; run: pip install 'lamfast[dask]'"
    )


def test_real_process_one_line_exit_2(tmp_path):
    # One case through the real entry point: what a user's shell sees.
    _foreign_checkpoint(tmp_path)
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", "from lamfast.cli import main; main()", *STREAM]
        + ["--checkpoint", str(tmp_path / "ck.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "another configuration" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(tmp_path) == before


def test_two_runs_into_one_output_folder(tmp_path):
    """While one reproduce writes into a folder, a second one into the same folder is refused
    (one line, exit 2) instead of silently replacing the first one's files."""
    from lamfast._files import output_lock

    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out / ".lamfast-reproduce.lock", f"into {out}"):
        result = CliRunner().invoke(cli, ["reproduce", "fig3-right", "--quick", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: another lamfast run is writing into")
    assert sorted(p.name for p in out.iterdir()) == [] or sorted(p.name for p in out.iterdir()) == [
        ".lamfast-reproduce.lock"
    ]
    # once the first run is done the folder is free again
    result = CliRunner().invoke(cli, ["reproduce", "fig3-right", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / ".lamfast-reproduce.lock").exists()


def test_two_sweeps_into_one_csv(tmp_path):
    from lamfast._files import output_lock

    (tmp_path / "g.toml").write_text("[axes]\ndo = 8\nda = 2\ndz = 2\n")
    out = tmp_path / "s.csv"
    with output_lock(tmp_path / ".s.csv.lock", f"the sweep {out}"):
        result = CliRunner().invoke(cli, ["sweep", str(tmp_path / "g.toml"), "--out", str(out)])
    assert result.exit_code == 2 and "another lamfast run" in result.stderr
    assert not out.exists()


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in text:
            out.append(int(status.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_worker_processes_die_with_a_killed_parent(tmp_path):
    """kill -9 of ``reproduce -j 2`` leaves no worker process computing on."""
    import time

    proc = subprocess.Popen(
        [sys.executable, "-c", "from lamfast.cli import main; main()", "reproduce", "fig4-left",
         "--out", str(tmp_path / "out"), "-j", "2", "--no-plot"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(workers) < 2:
        # the spawned pool: children of the run that are not its resource tracker
        workers = [
            c for c in _children(proc.pid)
            if "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
        ]  # fmt: skip
        time.sleep(0.2)
    assert len(workers) == 2, workers
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in alive:  # never leave them running, even when the test fails
        os.kill(w, signal.SIGKILL)
    assert alive == []


def test_lock_is_retaken_when_its_file_was_replaced(tmp_path, monkeypatch):
    """A lock taken on a lock file that another run removed meanwhile guards nothing: the lock
    is taken again on the file now at the path (no two runs may both hold it)."""
    from lamfast import _files

    path = tmp_path / ".lock"
    real_stat, calls = os.stat, []

    def stat_once_gone(p, *a, **kw):
        if Path(p) == path and not calls:
            calls.append(1)
            raise FileNotFoundError(p)  # as if the previous holder removed it after our open
        return real_stat(p, *a, **kw)

    monkeypatch.setattr(_files.os, "stat", stat_once_gone)
    before = len(os.listdir("/proc/self/fd"))
    with _files.output_lock(path, "a test"):
        assert calls == [1] and path.exists()
    assert len(os.listdir("/proc/self/fd")) == before  # the first descriptor was closed
    assert not path.exists()
