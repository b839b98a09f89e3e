"""lamfast probe throughput: latents of LAMFAST_BENCH_PROBE_ROWS (default 1e6) transitions of
16 x 16 uint8 frames, side by side with one sequential read of the same data (the baseline the
ratios are against) and the moments pass of ``lamfast fit``.

Run: ``pytest bench/test_bench_probe.py --benchmark-enable``. The dataset is written once into a
temporary folder (frames as a memory-mapped ``.npy`` in the unpacked-``.npz`` layout, episodes
of 100 frames, 5 actions, a distractor in the bottom rows); each case's peak resident memory is
measured in a fresh process (``test_probe_memory``) and is bounded by the chunk, not the data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lamfast

ROWS = int(float(os.environ.get("LAMFAST_BENCH_PROBE_ROWS", "1e6")))
SIDE, EPISODE = 16, 100
_data: dict = {}


def _make(folder) -> dict:
    """Frames o_{t+1} = o_t + (action move) + distractor, as uint8, written chunk by chunk."""
    folder.mkdir(parents=True, exist_ok=True)
    n = ROWS + ROWS // (EPISODE - 1) + 1  # frames so that there are >= ROWS transitions
    frames = np.lib.format.open_memmap(folder / "frames.npy", "w+", np.uint8, (n, SIDE, SIDE))
    actions = np.lib.format.open_memmap(folder / "actions.npy", "w+", np.int64, (n,))
    starts = np.lib.format.open_memmap(folder / "episode_starts.npy", "w+", bool, (n,))
    rng = np.random.default_rng(0)
    moves = rng.normal(size=(5, SIDE * SIDE)) * 6
    step = 100_000
    for s in range(0, n, step):
        e = min(n, s + step)
        a = rng.integers(0, 5, e - s)
        t = np.arange(s, e) % EPISODE
        walk = 128 + np.cumsum(moves[a], axis=0) % 60
        f = walk.reshape(-1, SIDE, SIDE)
        f[:, -3:, :] = rng.integers(0, 255, (e - s, 3, SIDE))  # exogenous rows
        frames[s:e] = np.clip(f, 0, 255).astype(np.uint8)
        actions[s:e] = a
        starts[s:e] = t == 0
    for m in (frames, actions, starts):
        m.flush()
    src = lamfast.FrameSource(folder)
    ids = np.concatenate([acts for _, _, acts in src.transitions()])
    z = (np.eye(5)[ids] @ rng.normal(size=(5, 8)) + rng.normal(size=(len(ids), 8))).astype(
        np.float32
    )
    np.save(folder.parent / "z.npy", z)
    return {"data": folder, "z": folder.parent / "z.npy", "transitions": len(ids)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    if not _data:
        _data.update(_make(tmp_path_factory.mktemp("probe") / "frames"))
    return _data


def _read(path):
    n = 0
    for o, _, _ in lamfast.FrameSource(path).transitions():
        n += o.shape[0]
    return n


CASES = {
    "read once (baseline)": lambda d: _read(d["data"]),
    "fit moments pass": lambda d: lamfast.FrameSource(d["data"]).moments(),
    "probe, scores only": lambda d: lamfast.probe_latents(
        d["z"], d["data"], references=False, accuracy=False, noise_region="13:16,0:16"
    ),
    "probe, full report": lambda d: lamfast.probe_latents(
        d["z"], d["data"], noise_region="13:16,0:16"
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_probe_throughput(bench, data, case):
    b = bench.benchmark
    b.group = f"lamfast probe, {data['transitions']} transitions of {SIDE}x{SIDE} uint8 frames"
    bench(lambda: CASES[case](data), rounds=3)
    rate = data["transitions"] / b.stats.stats.median
    b.extra_info.update(transitions=data["transitions"], rows_per_s=rate)


# VmHWM, the peak resident set of this process image: unlike getrusage's ru_maxrss, which a
# child keeps from the parent it was forked from (here pytest, over 1 GB), it starts afresh at
# exec. It counts the pages of the memory-mapped frames that were touched, as a user sees them.
_PEAK = """
import json, sys
import lamfast
from bench.test_bench_probe import CASES
CASES[sys.argv[1]]({"data": sys.argv[2], "z": sys.argv[3]})
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps(int(hwm.split()[1]) * 1024))
"""


@pytest.mark.parametrize("case", ["read once (baseline)", "probe, full report"])
def test_probe_memory(data, case, record_property):
    """Peak RSS of one case in a fresh process, beside the size of the frames it reads: the
    probe holds one chunk of frames, the blocks in flight and one co-moment per fold."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, case, str(data["data"]), str(data["z"])],
        capture_output=True, text=True, cwd=root, check=True,
    )  # fmt: skip
    peak = json.loads(out.stdout.strip().splitlines()[-1])
    size = data["transitions"] * SIDE**2
    record_property("peak_rss_bytes", peak)
    print(f"{case}: peak RSS {peak / 2**20:.0f} MiB, frames {size / 2**20:.0f} MiB as uint8")
    assert peak < 2**30, "memory must stay bounded by chunks and blocks, not the data"
