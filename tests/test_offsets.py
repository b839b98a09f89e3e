"""Frame offsets: transitions (o_t, o_{t+K}) within episodes, one gap or several in one read
(lamfast.sources.frames.source), and ``lamfast fit --offset``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.testing import assert_allclose

from lamfast.cli import cli
from lamfast.errors import LamfastError
from lamfast.sources.frames.source import FrameSource

from . import naive
from .conftest import RTOL
from .helpers import assert_bitwise, assert_range_reads_match

# as in test_frames: float64 sums of <= 1e3 O(1) rows, far below RTOL; a wrong row is O(1e-3)
ATOL = 1e-12


def _dataset(tmp_path, rng, T=500, n_actions=3):
    frames = rng.standard_normal((T, 2, 3)).astype(np.float32)
    ids = rng.integers(0, n_actions, T)
    starts = np.zeros(T, bool)
    # episodes of 1, 2, 3 frames (shorter than some gaps) and long ones, starts at chunk edges
    starts[[0, 40, 41, 43, 46, 64, 128, 300, 301]] = True
    path = tmp_path / "d.npz"
    np.savez(path, frames=frames, actions=ids, episode_starts=starts)
    return path, frames, ids, starts


@pytest.mark.parametrize("K", [1, 2, 3, 8])
def test_offset_equals_hand_built_pairs(tmp_path, rng, K):
    path, frames, ids, starts = _dataset(tmp_path, rng)
    rows = naive.offset_rows(frames, ids, starts, K, n_actions=3)
    src = FrameSource(path, offset=K)
    assert src.n_transitions == len(rows) == src.episode_lengths().sum()
    m = src.moments(block_rows=16)
    n, mean, cov = naive.moments(rows)
    assert m.count == n
    assert_allclose(m.mean, mean, rtol=RTOL[np.float64], atol=ATOL)
    assert_allclose(m.cov, cov, rtol=RTOL[np.float64], atol=ATOL)
    for cf in (1, 5, 64, 10_000):  # chunk edges inside and between episodes
        assert_bitwise(FrameSource(path, offset=K, chunk_frames=cf).moments(block_rows=16), m)
    assert_bitwise(src.moments(block_rows=16, checkpoint=tmp_path / f"r{K}.npz"), m)
    assert_range_reads_match(
        lambda: FrameSource(path, offset=K, chunk_frames=7), 9, [(0, 5), (3, 60), (100, 400)]
    )


def test_several_offsets_in_one_read(tmp_path, rng):
    path, frames, ids, starts = _dataset(tmp_path, rng)
    unl = rng.random(len(ids)) < 0.5
    np.savez(tmp_path / "p.npz", frames=frames, actions=np.where(unl, -1, ids))
    for p in (path, tmp_path / "p.npz"):
        src = FrameSource(p, n_actions=3, chunk_frames=33)
        got = src.offset_moments((1, 2, 4, 8), block_rows=16)
        for K, (m, mL) in zip((1, 2, 4, 8), got, strict=True):
            ref, refL = FrameSource(p, n_actions=3, offset=K).moments(block_rows=16, labelled=True)
            assert_bitwise(m, ref)
            assert_bitwise(mL, refL)


def test_hostile_offsets(tmp_path, rng):
    path, *_ = _dataset(tmp_path, rng)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(LamfastError, match="offset must be"):
            FrameSource(path, offset=bad)
    np.savez(tmp_path / "pairs.npz", o=np.zeros((5, 2)), o_next=np.ones((5, 2)))
    with pytest.raises(LamfastError, match="pairs data"):
        FrameSource(tmp_path / "pairs.npz", offset=2)
    with pytest.raises(LamfastError, match="no transitions at offset 600"):
        FrameSource(path).offset_moments((1, 600))


def test_cli_offsets_table(tmp_path, rng):
    path, *_ = _dataset(tmp_path, rng)
    run = CliRunner().invoke(cli, ["fit", str(path), "--dz", "2", "--offset", "1,2,4", "--json"])
    assert run.exit_code == 0, run.output
    r = json.loads(run.output)
    assert [row["offset"] for row in r["offsets"]] == [1, 2, 4]
    for row in r["offsets"]:
        assert 0 <= row["action_share"] <= 1 and "act_mse" in row
    single = CliRunner().invoke(cli, ["fit", str(path), "--dz", "2", "--offset", "4", "--json"])
    assert json.loads(single.output)["act_mse"] == pytest.approx(r["offsets"][2]["act_mse"])
    text = CliRunner().invoke(cli, ["fit", str(path), "--dz", "2", "--offset", "1,2,4"]).output
    assert "offset" in text and "action share" in text
    for bad in ("0", "1,1", "a", "2,-3"):
        run = CliRunner().invoke(cli, ["fit", str(path), "--dz", "2", "--offset", bad])
        assert run.exit_code == 2, (bad, run.output)
    run = CliRunner().invoke(
        cli, ["fit", str(path), "--dz", "2", "--offset", "1,2", "--out", str(tmp_path / "f.npz")]
    )
    assert run.exit_code == 2 and "one offset" in run.output
    assert not (tmp_path / "f.npz").exists()
