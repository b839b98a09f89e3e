"""Dask execution: bitwise identical to one process, whatever the workers and completion order.

One module-scoped ``LocalCluster`` (2 single-threaded worker processes) serves every test here:
starting one costs ~1-3 s on this machine.
"""

from __future__ import annotations

import sys

import pytest

import lamfast.moments.checkpoint as dist_checkpoint
import lamfast.moments.tree as dist_tree
import lamfast.sources.distributed as dist_distributed
from lamfast import LamfastError, LinearWorld, stream_moments
from lamfast.moments.core import MergeTree
from lamfast.sources.simulate import chunk_moments

from .helpers import assert_bitwise

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with dist_tree.dask_client(workers=2) as c:
        yield c


WORLDS = [
    LinearWorld(do=12, da=3, noise="gaussian", sigma=0.7, seed=11),
    LinearWorld(do=10, da=2, noise="uniform", sigma=0.3, chi=0.5, seed=5),
]


@pytest.mark.parametrize("world", WORLDS, ids=["gaussian", "uniform-chi"])
@pytest.mark.parametrize(("task_blocks", "window"), [(4, None), (1, 3), (32, 1)])
def test_two_workers_bitwise_equal_to_one_process(client, world, task_blocks, window):
    # 53 blocks (the last short): not a power of two, so the tail subtrees are exercised too.
    # window=3 with one-block tasks lets tasks finish out of order and wait to be merged.
    rows = 52 * 500 + 137
    ref = stream_moments(world, rows, block_rows=500)
    got = dist_distributed.stream_moments_dask(
        world, rows, client=client, block_rows=500, task_blocks=task_blocks, window=window
    )
    assert_bitwise(got, ref)
    assert got.source == "stream"


def test_dask_resumes_a_serial_checkpoint_bitwise(client, tmp_path, monkeypatch):
    from lamfast import config

    world, rows = WORLDS[0], 40 * 300 + 7
    ref = stream_moments(world, rows, block_rows=300)
    path = tmp_path / "run.npz"
    # A serial run stopped after 13 blocks (an odd count: tasks restart with 1, 2, 4, ... blocks).
    fp = dist_distributed.stream_fingerprint(world, rows, 300)
    tree = MergeTree(world.blocks)
    for count, mean, com in chunk_moments(world, 0, 13, rows, 300):
        tree.push(count, mean, com)
    dist_checkpoint.Checkpoint(path, fp).save(tree)
    monkeypatch.setattr(config, "CHECKPOINT_BLOCKS", 3)
    got = dist_distributed.stream_moments_dask(
        world, rows, client=client, block_rows=300, task_blocks=8, checkpoint=path
    )
    assert_bitwise(got, ref)


def test_local_cluster_from_workers_argument():
    # The --workers path end to end (its own one-worker cluster).
    world = LinearWorld(do=6, da=2, seed=2)
    got = dist_distributed.stream_moments_dask(world, 5000, workers=1, block_rows=1000)
    assert_bitwise(got, stream_moments(world, 5000, block_rows=1000))


def test_in_process_executor_bitwise_for_every_task_size():
    world, rows = WORLDS[1], 37 * 200 + 3
    ref = stream_moments(world, rows, block_rows=200)
    n, n_blocks, fn, _ = dist_distributed._stream_plan(world, rows, 200, None)
    for task_blocks in (1, 2, 8, 64):
        got = dist_tree.tree_moments(fn, n_blocks, world.blocks, task_blocks=task_blocks)
        assert_bitwise(got, ref)


def test_task_ranges_are_aligned_subtrees():
    for start in range(0, 40):
        for t in (1, 2, 4, 16):
            spans = list(dist_tree.task_ranges(start, 100, t))
            assert spans[0][0] == start and spans[-1][1] == 100
            for (_, b), (c, _) in zip(spans, spans[1:], strict=False):
                assert b == c
            for a, b in spans:
                assert 0 < b - a <= t
                assert a == 0 or b - a <= (a & -a)
    with pytest.raises(LamfastError, match="power of two"):
        list(dist_tree.task_ranges(0, 10, 3))


def test_missing_dask_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(LamfastError, match=r"pip install 'lamfast\[dask\]'"):
        dist_distributed.stream_moments_dask(WORLDS[0], 1000, workers=1)


def test_workers_and_scheduler_are_exclusive():
    with pytest.raises(LamfastError, match="not both"):
        dist_distributed.stream_moments_dask(
            WORLDS[0], 1000, workers=1, scheduler="tcp://127.0.0.1:1"
        )


# ------------------------------------------------------------------ any block source (frames later)
def _rows_chunk(X, block_rows, first, stop):
    """A chunk function over rows in memory, shifted by the first row like moments_from_rows."""
    from lamfast.moments.core import block_moments

    return [
        block_moments(X[k * block_rows : (k + 1) * block_rows] - X[0]) for k in range(first, stop)
    ]


def test_generic_chunk_function_with_shift_matches_moments_from_rows(client, rng):
    import functools

    from lamfast import moments_from_rows

    X = 1e6 + rng.standard_normal((23 * 64 + 5, 4))
    ref = moments_from_rows(X, block_rows=64)
    fn = functools.partial(_rows_chunk, X, 64)
    n_blocks = -(-X.shape[0] // 64)
    layout = (("x", 4),)
    for kw in ({}, {"client": client, "task_blocks": 4}):
        got = dist_tree.tree_moments(fn, n_blocks, layout, shift=X[0], source="rows", **kw)
        assert_bitwise(got, ref)


def test_client_holds_a_bounded_window_of_results(monkeypatch):
    # In-process workers (threads) so the chunk function can count task starts; the client must
    # never have more than `window` tasks started but not yet merged.
    import functools
    import threading

    world, rows, window = WORLDS[0], 40 * 100, 3
    started, merged, worst = [], [], []
    lock = threading.Lock()

    def counting_chunk(first, stop):
        with lock:
            started.append(first)
        return chunk_moments(world, first, stop, rows, 100)

    push = dist_tree._push_entries

    def counting_push(trees, entries, groups):
        merged.append(1)
        worst.append(len(started) - len(merged) + 1)
        return push(trees, entries, groups)

    monkeypatch.setattr(dist_tree, "_push_entries", counting_push)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=4, dashboard_address=":0"
    ) as c:
        got = dist_tree.tree_moments(
            functools.partial(counting_chunk),
            40,
            world.blocks,
            client=c,
            task_blocks=1,
            window=window,
        )
    assert_bitwise(got, stream_moments(world, rows, block_rows=100))
    assert len(merged) == 40 and max(worst) <= window


def test_cli_workers_prints_the_single_process_fit(tmp_path):

    from .conftest import fit_json

    args = ["fit", "--do", "6", "--da", "2", "--noise", "gaussian", "--sigma", "0.3"]
    args += ["--dz", "2", "--source", "stream", "--rows", "30000"]
    scaled = ["--workers", "1", "--checkpoint", str(tmp_path / "ck.npz")]
    assert fit_json(args) == fit_json(args + scaled)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def test_concurrent_runs_on_one_cluster_do_not_mix(client):
    # Two streams of different worlds at once on the same client: task keys are per run.
    from concurrent.futures import ThreadPoolExecutor

    rows = 20 * 300
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                dist_distributed.stream_moments_dask,
                w,
                rows,
                client=client,
                block_rows=300,
                task_blocks=1,
            )
            for w in WORLDS
        ]
        results = [f.result() for f in futures]
    for w, got in zip(WORLDS, results, strict=True):
        assert_bitwise(got, stream_moments(w, rows, block_rows=300))


def _needs_a_missing_module(first, stop):
    import lamfast_not_installed_here  # noqa: F401

    return []


def test_worker_without_lamfast_is_a_clear_error(client):
    with pytest.raises(LamfastError, match="cannot import lamfast_not_installed_here"):
        dist_tree.tree_moments(_needs_a_missing_module, 3, (("x", 1),), client=client)


def test_own_clusters_keep_dask_teardown_chatter_off_stderr():
    # distributed configures its logger at INFO on import; teardown then logs tracebacks at INFO
    import logging

    with dist_tree.dask_client(workers=1):
        assert logging.getLogger("distributed").getEffectiveLevel() >= logging.WARNING
