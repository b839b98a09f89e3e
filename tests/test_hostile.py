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
    result = CliRunner().invoke(cli, args)
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
