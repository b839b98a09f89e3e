"""Tutorial part 4: scaling out on Dask.

Moments are the interface, and they merge: a stream of rows is cut into blocks, each block's
moments depend only on its index (its random stream is keyed by ``SeedSequence(seed,
spawn_key=(1, block))``), and block moments are merged by a fixed pairwise tree over block
indices. So blocks can be computed anywhere — threads, processes, a Dask cluster — and the merged
moments are bitwise identical to a single process.

This script does it by hand with ``dask.distributed`` and the same unit of work lamfast's own
executors use, ``lamfast.sources.simulate.chunk_moments``, then with the packaged executor
``lamfast.sources.distributed.stream_moments_dask`` (bounded client memory, checkpoint/resume; on
the command line ``lamfast fit --source stream --workers N`` or ``--scheduler ADDRESS``), and checks
the bitwise claim for both. Needs the ``dask``
extra (``pip install 'lamfast[dask]'``); without it the script says so and exits. Run:

    python examples/04_dask.py [--quick] [--scheduler tcp://host:8786]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import time

import numpy as np

import lamfast
from lamfast.moments import MergeTree
from lamfast.sources.simulate import chunk_moments, stream_moments


def main(quick: bool, scheduler: str | None) -> None:
    if importlib.util.find_spec("distributed") is None:
        print("dask.distributed is not installed: pip install 'lamfast[dask]' to run this example")
        return
    from dask.distributed import Client, LocalCluster

    # Dask logs connection teardown at INFO level with tracebacks ("Batched Comm Closed") when a
    # cluster shuts down: keep this example's output to what it found. Warnings stay.
    logging.getLogger("distributed").setLevel(logging.WARNING)

    do, da, rows, block_rows = (16, 4, 40_000, 1_000) if quick else (128, 8, 2_000_000, 4096)
    world = lamfast.LinearWorld(do=do, da=da, db=da, noise="exo", sigma=2.0, seed=3)
    n_blocks = -(-rows // block_rows)
    per_task = 8  # blocks per task: only a work-size knob, the result does not depend on it

    cluster = None
    if not scheduler:
        # Threads keep the quick run light; use processes=True (the default) for real work.
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=not quick,
            dashboard_address=":0",
            silence_logs=logging.ERROR,  # shutdown chatter (INFO, with tracebacks) stays quiet
        )
    # Close the client, then the cluster, in that order: a cluster left to the interpreter's
    # exit can log connection errors while it tears down under the closed client.
    with contextlib.ExitStack() as stack:
        if cluster is not None:
            stack.enter_context(cluster)
        client = stack.enter_context(Client(scheduler or cluster))
        start = time.perf_counter()
        futures = [
            client.submit(
                chunk_moments,
                world,
                first,
                min(first + per_task, n_blocks),
                rows,
                block_rows,
                pure=False,
            )
            for first in range(0, n_blocks, per_task)
        ]
        tree = MergeTree(world.blocks)
        for future in futures:  # in block order: the merge tree depends on nothing else
            for count, mean, com in future.result():
                tree.push(count, mean, com)
            future.release()  # the client holds O(p^2 log blocks) numbers, never all blocks
        m = tree.result("stream")
        seconds = time.perf_counter() - start
        workers = len(client.scheduler_info()["workers"])
        # The packaged executor: aligned subtrees per task, a bounded window of results on the
        # client, optional checkpoints (what `lamfast fit --workers/--scheduler` runs).
        from lamfast.sources.distributed import stream_moments_dask

        packaged = stream_moments_dask(world, rows, client=client, block_rows=block_rows)

    single = stream_moments(world, rows, block_rows=block_rows)
    same = np.array_equal(m.cov, single.cov) and np.array_equal(m.mean, single.mean)
    print(f"{rows:,} rows in {n_blocks} blocks on {workers} Dask workers: {seconds:.2f} s")
    print(f"bitwise identical to one process: {same}")
    same_packaged = np.array_equal(packaged.cov, single.cov)
    print(
        f"lamfast.sources.distributed.stream_moments_dask, bitwise identical too: {same_packaged}"
    )
    same = same and same_packaged
    lam = lamfast.LinearLAM(dz=da).fit(m)
    r = lamfast.probe_metrics(lam, m)
    print(
        f"LAM dz={da}: act_mse {r['act_mse']:.3f}, noi_mse {r['noi_mse']:.3f}, LLO {r['llo']:.3f}"
    )
    if not same:
        raise SystemExit("merged moments differ from the single-process stream")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    args = parser.parse_args()
    main(args.quick, args.scheduler)
