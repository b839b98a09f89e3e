"""Every reader from the command line: hostile files fail in one ``Error:`` line with exit 2
and write nothing; partial labels and label budgets work through HDF5, LeRobot and videos."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lamfast.cli import cli

from .test_readers_hdf5 import d4rl
from .test_readers_lerobot import KEY, write_dataset
from .test_readers_video import _encode, _frames

h5py = pytest.importorskip("h5py")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")


def _refused(args, out):
    run = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert run.exit_code == 2, run.output
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.output
    assert "Traceback" not in run.output
    assert not out.exists()
    return lines[0]


def test_truncated_hdf5(tmp_path, rng):
    h5, *_ = d4rl(tmp_path, rng, obs="pixels")
    cut = tmp_path / "cut.h5"
    cut.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    line = _refused(["fit", str(cut), "--dz", "2"], tmp_path / "f.npz")
    assert "cut.h5" in line


def test_lerobot_parquet_without_its_action_column(tmp_path, rng):
    root = tmp_path / "robot"
    write_dataset(root, rng)
    for f in (root / "data").rglob("*.parquet"):
        table = pq.read_table(f)
        pq.write_table(table.drop_columns(["action"]), f)
    line = _refused(["fit", str(root), "--dz", "2", "--actions", "continuous"], tmp_path / "f.npz")
    assert "action" in line


def test_lerobot_episode_table_that_does_not_match(tmp_path, rng):
    import pyarrow as pa

    root = tmp_path / "robot"
    write_dataset(root, rng)
    meta = next((root / "meta" / "episodes").rglob("*.parquet"))
    table = pq.read_table(meta)
    name = f"videos/{KEY}/to_timestamp"
    stop = table.column(name).to_numpy().copy()
    stop[1] -= 0.3  # the table's span of episode 1 ends before its last frames
    i = table.schema.get_field_index(name)
    pq.write_table(table.set_column(i, name, pa.array(stop)), meta)
    line = _refused(["fit", str(root), "--dz", "2"], tmp_path / "f.npz")
    assert "episode 1" in line


def test_truncated_video_from_the_command_line(tmp_path, rng):
    path = tmp_path / "clip.mp4"
    _encode(path, _frames(rng, 30))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    line = _refused(["fit", str(cut), "--dz", "2"], tmp_path / "f.npz")
    assert "cut.mp4" in line


def test_hdf5_with_missing_actions_is_a_supervised_fit(tmp_path, rng):
    h5, *_ = d4rl(tmp_path, rng, obs="pixels", acts="discrete")
    with h5py.File(h5, "r+") as f:
        a = f["actions"][()]
        del f["actions"]
        a[rng.random(len(a)) < 0.6] = -1
        f["actions"] = a
    run = CliRunner().invoke(cli, ["fit", str(h5), "--dz", "2", "--json"])
    assert run.exit_code == 0, run.output
    r = json.loads(run.output)
    assert r["labels"] == "partial" and 0 < r["labelled_transitions"] < r["transitions"]


def test_label_budget_on_lerobot(tmp_path, rng):
    root = tmp_path / "robot"
    write_dataset(root, rng)
    args = ["fit", str(root), "--dz", "2", "--json", "--label-budget", "0.25"]
    r = json.loads(CliRunner().invoke(cli, [*args, "--label-unit", "episode"]).output)
    assert r["labels"] == "partial"
    assert r["label_budget"] == {"fraction": 0.25, "unit": "episode", "seed": 0}
