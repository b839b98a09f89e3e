"""Checkpoint and resume: atomic saves, exact restoration, refusal of foreign checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from lamfast import LamfastError, LinearWorld, config, stream_moments
from lamfast.cli import cli
from lamfast.moments.checkpoint import Checkpoint
from lamfast.moments.core import MergeTree
from lamfast.sources.distributed import stream_fingerprint, stream_moments_checkpointed
from lamfast.sources.simulate import chunk_moments

from .helpers import assert_bitwise


def tree_of(path, world, rows, block_rows):
    tree = MergeTree(world.blocks)
    Checkpoint(path, stream_fingerprint(world, rows, block_rows)).load(tree)
    return tree


# ---------------------------------------------------------------------------------- SIGKILL
# The CLI run below: do=16, gaussian noise -> 52 joint columns; 600 blocks of 4096 rows, a couple
# of seconds of work, saved every 16 blocks.
KILL_ARGS = [
    "fit",
    "--do", "16", "--da", "4", "--noise", "gaussian", "--sigma", "0.5", "--seed", "7",
    "--source", "stream", "--rows", str(600 * 4096 - 1000), "--json",
]  # fmt: skip
KILL_WORLD = LinearWorld(do=16, da=4, noise="gaussian", sigma=0.5, seed=7)
KILL_ROWS = 600 * 4096 - 1000


def test_sigkill_resume_is_bitwise(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    args = [*KILL_ARGS, "--checkpoint", str(path)]
    script = (
        "import sys, lamfast.config as c; c.CHECKPOINT_BLOCKS = 16; "
        "from lamfast.cli import main; main(sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not path.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert running, "the run finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    n_blocks = -(-KILL_ROWS // 4096)
    killed_at = tree_of(path, KILL_WORLD, KILL_ROWS, 4096).n_blocks
    assert 0 < killed_at < n_blocks

    # The same command again resumes (in process, to keep the test short) ...
    monkeypatch.setattr(config, "CHECKPOINT_BLOCKS", 16)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    resumed = json.loads(result.stdout)
    # ... and ends with the moments of an uninterrupted run, bit for bit.
    ref = stream_moments(KILL_WORLD, KILL_ROWS)
    final = tree_of(path, KILL_WORLD, KILL_ROWS, 4096)
    assert final.n_blocks == n_blocks
    assert_bitwise(final.result("stream"), ref)
    assert not list(tmp_path.glob(".*.tmp"))
    # The fit printed from resumed moments equals the fit of the plain stream.
    from lamfast.experiments.fit import run_fit

    clean = run_fit(
        KILL_WORLD, {}, dz=8, source="stream", rows=KILL_ROWS
    )  # default fit flags of KILL_ARGS
    for key in ("act_mse", "obs_mse", "noi_mse", "recon", "llo", "spectrum"):
        assert resumed[key] == clean[key], key


# ---------------------------------------------------------------------------------- API
WORLD = LinearWorld(do=8, da=2, noise="exo", sigma=2.0, seed=3)
ROWS, BR = 45 * 100 + 9, 100


def test_every_stop_point_resumes_bitwise(tmp_path):
    ref = stream_moments(WORLD, ROWS, block_rows=BR)
    fp = stream_fingerprint(WORLD, ROWS, BR)
    n_blocks = -(-ROWS // BR)
    for stop in (1, 2, 3, 7, 16, 31, 45, n_blocks):
        path = tmp_path / f"stop{stop}.npz"
        tree = MergeTree(WORLD.blocks)
        for count, mean, com in chunk_moments(WORLD, 0, stop, ROWS, BR):
            tree.push(count, mean, com)
        Checkpoint(path, fp).save(tree)
        got = stream_moments_checkpointed(WORLD, ROWS, path, block_rows=BR)
        assert_bitwise(got, ref)


def test_periodic_saves_and_final_state(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CHECKPOINT_BLOCKS", 4)
    path = tmp_path / "run.npz"
    saves = []
    original = Checkpoint.save

    def spy(self, tree):
        saves.append(tree.n_blocks)
        original(self, tree)

    monkeypatch.setattr(Checkpoint, "save", spy)
    first = stream_moments_checkpointed(WORLD, ROWS, path, block_rows=BR)
    n_blocks = -(-ROWS // BR)
    # Every 4 blocks, and the final state (46 blocks).
    assert saves == [*range(4, n_blocks, 4), n_blocks]
    # Re-running a finished command merges nothing and returns the same bits at once.
    saves.clear()
    again = stream_moments_checkpointed(WORLD, ROWS, path, block_rows=BR)
    assert saves == []
    assert_bitwise(again, first)


def test_seconds_interval(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    ck = Checkpoint(path, "fp", every_blocks=10**9, every_seconds=0.01)
    tree = MergeTree((("x", 1),))
    assert not ck.due(tree)
    tree.push(1.0, np.zeros(1), np.zeros((1, 1)))
    time.sleep(0.02)
    assert ck.maybe_save(tree) and path.exists()
    assert not ck.due(tree)


def test_other_configuration_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    stream_moments_checkpointed(WORLD, ROWS, path, block_rows=BR)
    before = path.read_bytes()
    for world, rows, br, what in [
        (WORLD, ROWS + 1, BR, "rows"),
        (WORLD, ROWS, BR * 2, "block_rows"),
        (WORLD.replace(sigma=1.0), ROWS, BR, "world"),
    ]:
        with pytest.raises(LamfastError, match=f"another configuration.*{what}") as e:
            stream_moments_checkpointed(world, rows, path, block_rows=br)
        assert "\n" not in str(e.value)
    assert path.read_bytes() == before  # refused, not overwritten


def test_damaged_files_are_refused(tmp_path):
    path = tmp_path / "run.npz"
    stream_moments_checkpointed(WORLD, ROWS, path, block_rows=BR)
    good = path.read_bytes()
    for bad, match in [
        (b"not a zip file", "not a readable"),
        (good[: len(good) // 2], "not a readable"),
    ]:
        path.write_bytes(bad)
        with pytest.raises(LamfastError, match=match):
            stream_moments_checkpointed(WORLD, ROWS, path, block_rows=BR)
    np.savez(path, something=np.zeros(3))
    with pytest.raises(LamfastError, match="not a lamfast checkpoint"):
        stream_moments_checkpointed(WORLD, ROWS, path, block_rows=BR)


def test_stale_temporaries_are_removed(tmp_path):
    path = tmp_path / "run.npz"
    stale = tmp_path / ".run.npz.k3x9_q.tmp"  # the temporary name of lamfast._files
    stale.write_bytes(b"half a file")
    stream_moments_checkpointed(WORLD, ROWS, path, block_rows=BR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    ck = Checkpoint(path, "fp")
    tree = MergeTree((("x", 1),))
    tree.push(1.0, np.zeros(1), np.zeros((1, 1)))
    ck.save(tree)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    tree.push(1.0, np.ones(1), np.zeros((1, 1)))
    with pytest.raises(LamfastError, match="cannot write checkpoint"):
        ck.save(tree)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]
