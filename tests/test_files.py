"""Every output file respects the umask (one atomic writer, lamfast._files)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lamfast import _files

UMASK = 0o027  # files 0640, folders 0750: neither mkstemp's 0600 nor a default 0644


@pytest.fixture
def umask():
    old = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def invoke():
    from click.testing import CliRunner

    from lamfast.cli import cli

    def run(args):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        return result

    return run


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_modes_follow_the_umask(umask):
    assert _files.file_mode() == 0o640
    assert _files.dir_mode() == 0o750


def test_atomic_output_writes_with_the_umask_and_leaves_nothing_on_error(umask, tmp_path):
    out = tmp_path / "a.txt"
    _files.atomic_write_text(out, "hello")
    assert out.read_text() == "hello" and _mode(out) == 0o640
    with pytest.raises(RuntimeError), _files.atomic_output(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_every_command_output_respects_the_umask(umask, tmp_path, invoke):
    grid = tmp_path / "grid.npz"
    invoke(["simulate", "gridworld", "--out", str(grid), "--episodes", "20", "--length", "6"])
    fit = tmp_path / "fit.npz"
    invoke(["fit", str(grid), "--dz", "2", "--out", str(fit), "--no-accuracy"])
    enc = tmp_path / "z.npy"
    invoke(["encode", str(fit), str(grid), "--out", str(enc)])
    data_dir = tmp_path / "data"
    linear = ["simulate", "linear", "--do", "4", "--da", "2", "--rows", "100", "--out"]
    invoke([*linear, str(data_dir)])
    data_npz = tmp_path / "data.npz"
    invoke([*linear, str(data_npz)])
    ckpt = tmp_path / "run.npz"
    invoke(["fit", "--do", "8", "--da", "2", "--dz", "2", "--source", "stream", "--rows", "1e4",
            "--checkpoint", str(ckpt)])  # fmt: skip
    out = tmp_path / "rep"
    invoke(["reproduce", "fig3-right", "--quick", "--out", str(out), "-j", "1"])
    toml = tmp_path / "g.toml"
    toml.write_text("[axes]\ndo = 8\nda = 2\ndz = [1, 2]\n")
    sweep = tmp_path / "s.csv"
    invoke(["sweep", str(toml), "--out", str(sweep), "-j", "1"])
    files = [grid, fit, enc, data_npz, ckpt, sweep, *data_dir.iterdir(), *out.iterdir()]
    assert len(files) > 10
    assert {str(f): _mode(f) for f in files} == {str(f): 0o640 for f in files}
    assert _mode(data_dir) == 0o750
    assert np.load(enc).shape[1] == 2
