"""The block executor: blocks are tasks, merged by the same fixed tree, in process or on Dask.

How bitwise determinism survives distribution
---------------------------------------------
:class:`~lamfast.moments.MergeTree` merges block moments like a binary counter. A run of blocks
``[a, b)`` with ``b - a <= lowbit(a)`` (the largest power of two dividing ``a``; any length when
``a = 0``) never merges with anything outside the run until the run's own subtrees are complete:
every partial result on the global stack at block ``a`` covers at least ``lowbit(a)`` blocks. So
a task that pushes blocks ``a..b-1`` into a fresh local tree ends with exactly the stack entries
the global tree would have built for them, and the client adds them with
:meth:`MergeTree.push_subtree`. :func:`task_ranges` cuts the stream into such runs (at most
``task_blocks`` long, a power of two). The client merges task results in block order, whatever
order they finish in, hence the same floating-point operations on the same operands as the
single-process :func:`lamfast.sources.simulate.stream_moments`: the result is identical bit for bit
for
any number of workers (tests/test_distributed.py).

Memory on the client is bounded: at most ``window`` tasks are in flight or finished-but-unmerged
(each returns one co-moment per stack entry, ``p^2`` floats), plus the tree's ``log2(blocks)``
stack.

The executor is generic: :func:`tree_moments` takes any picklable ``chunk_fn(first, stop)``
returning the ``(count, mean, co-moment)`` of blocks ``first..stop-1`` (the contract of
:func:`lamfast.sources.simulate.chunk_moments`), so sources of real frames can run on Dask, with
checkpoints, by supplying their own chunk function.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator

import numpy as np

from .. import config
from .._blas import usable_cores
from .._progress import Progress
from .._version import __version__
from ..errors import LamfastError
from .checkpoint import Checkpoint
from .core import FULL, MergeTree, Moments

INSTALL_HINT = "pip install 'lamfast[dask]'"


# ------------------------------------------------------------------------------------ tasks
def task_ranges(start: int, n_blocks: int, task_blocks: int) -> Iterator[tuple[int, int]]:
    """Cut blocks ``start..n_blocks-1`` into runs ``[a, b)`` that are aligned merge subtrees.

    Each run has ``b - a <= min(task_blocks, lowbit(a))``, so its local merge tree is a piece of
    the global one (module docstring). After a resume at an odd block the runs start short and
    double until they reach ``task_blocks``.

    Examples
    --------
    >>> list(task_ranges(0, 11, 4))
    [(0, 4), (4, 8), (8, 11)]
    >>> list(task_ranges(5, 16, 8))
    [(5, 6), (6, 8), (8, 16)]
    """
    _check_task_blocks(task_blocks)
    a = int(start)
    while a < n_blocks:
        size = task_blocks if a == 0 else min(task_blocks, a & -a)
        b = min(a + size, n_blocks)
        yield a, b
        a = b


def _check_task_blocks(task_blocks) -> int:
    t = int(task_blocks)
    if t < 1 or t & (t - 1):
        raise LamfastError(f"task_blocks must be a power of two >= 1, got {task_blocks!r}")
    return t


def subtree_task(chunk_fn: Callable, first: int, stop: int) -> list:
    """The work of one task: blocks ``first..stop-1`` merged into a local tree; its entries.

    Runs on a Dask worker (or in process). Blocks are computed ``config.CHUNK_BLOCKS`` at a time
    so a long task never holds more than that many block co-moments at once. A chunk function
    with ``groups = k`` returns, per block, one entry per group (held-out folds): the task then
    keeps ``k`` trees and returns the entries of each.
    """
    groups = int(getattr(chunk_fn, "groups", 0))
    reducer = getattr(chunk_fn, "reducer", None)  # what a block holds (default: full moments)
    trees = [MergeTree((), reducer) for _ in range(max(groups, 1))]
    step = max(int(config.CHUNK_BLOCKS), 1)
    for lo in range(first, stop, step):
        for block in chunk_fn(lo, min(lo + step, stop)):
            for tree, entry in zip(trees, block if groups else [block], strict=True):
                tree.push(*entry)
    return [t.entries() for t in trees] if groups else trees[0].entries()


def _push_entries(trees: list[MergeTree], entries, groups: int) -> float:
    rows = 0.0
    for tree, part in zip(trees, entries if groups else [entries], strict=True):
        for n_blocks, count, mean, com in part:
            tree.push_subtree(n_blocks, count, mean, com)
            rows += count
    return rows


# ------------------------------------------------------------------------------------ executor
def tree_moments(
    chunk_fn: Callable,
    n_blocks: int,
    blocks,
    *,
    client=None,
    task_blocks: int | None = None,
    window: int | None = None,
    checkpoint: Checkpoint | None = None,
    progress: bool | None = None,
    total_rows: float | None = None,
    source: str = "stream",
    shift=None,
) -> Moments:
    """Merged moments of blocks ``0..n_blocks-1`` computed by ``chunk_fn``, in process or on Dask.

    Parameters
    ----------
    chunk_fn : callable
        ``chunk_fn(first, stop)`` returns a list of ``(count, mean, co-moment)``, one per block;
        picklable when ``client`` is given (e.g. a :func:`functools.partial` of a module-level
        function).
    n_blocks : int
        Number of blocks of the stream.
    blocks : tuple of (name, size)
        Joint layout of the result.
    client : distributed.Client, optional
        Run tasks on this Dask client; in process when None.
    task_blocks : int, optional
        Blocks per task, a power of two (default ``config.DASK_TASK_BLOCKS``). No effect on
        the result.
    window : int, optional
        Tasks in flight or awaiting their turn to merge (default
        ``config.DASK_TASKS_PER_WORKER`` per worker thread). Bounds client memory.
    checkpoint : Checkpoint, optional
        Resume from it if its file exists, and save to it periodically and at the end.
    progress : bool, optional
        Progress bar on stderr.
    total_rows : float, optional
        Rows in the stream, for the progress bar.
    source : str
        ``Moments.source`` of the result.
    shift : ndarray, optional
        Added to the merged mean: for sources whose ``chunk_fn`` accumulates rows minus a fixed
        shift (e.g. the first frame), which keeps large offsets exact (see
        :func:`lamfast.moments.moments_from_rows`).
    """
    if task_blocks is None and client is None:
        # In process a task is only a unit of progress: small enough to honour the checkpoint
        # interval (the largest power of two <= it), at most CHUNK_BLOCKS.
        limit = min(int(config.CHUNK_BLOCKS), checkpoint.every_blocks if checkpoint else 1 << 30)
        task_blocks = 1 << (max(limit, 1).bit_length() - 1)
    task_blocks = _check_task_blocks(task_blocks or config.DASK_TASK_BLOCKS)
    groups = int(getattr(chunk_fn, "groups", 0))
    if groups and checkpoint is not None:
        raise LamfastError("grouped moments (held-out folds) cannot be checkpointed")
    reducer = getattr(chunk_fn, "reducer", None)
    trees = [MergeTree(blocks, reducer) for _ in range(max(groups, 1))]
    tree = trees[0]
    if checkpoint is not None:
        checkpoint.load(tree)
        if tree.n_blocks > n_blocks:
            raise LamfastError("checkpoint holds more blocks than the stream has")
    ranges = task_ranges(tree.n_blocks, n_blocks, task_blocks)
    with Progress(total=total_rows or n_blocks, label=source, enabled=progress) as bar:
        bar.done = sum(entry[1] for entry in tree.stack) if total_rows else tree.n_blocks
        if client is None:
            for first, stop in ranges:
                rows = _push_entries(trees, subtree_task(chunk_fn, first, stop), groups)
                bar.update(rows if total_rows else stop - first)
                if checkpoint is not None:
                    checkpoint.maybe_save(tree)
        else:
            _run_on_dask(client, chunk_fn, ranges, trees, window, checkpoint, bar, total_rows)
    if tree.n_blocks != n_blocks:  # pragma: no cover - guards the task bookkeeping
        raise LamfastError(f"merged {tree.n_blocks} of {n_blocks} blocks")
    if checkpoint is not None and checkpoint.saved_blocks != tree.n_blocks:
        # The final state too: re-running a finished command returns at once, same bits.
        checkpoint.save(tree)
    if groups:  # one Moments per group, None where a group has no rows
        return [
            _shifted(t.result(source), shift, t.reducer) if any(e[1] > 0 for e in t.stack) else None
            for t in trees
        ]
    return _shifted(tree.result(source), shift, tree.reducer)


def _shifted(m, shift, reducer=FULL):
    if shift is None:
        return m
    return reducer.shifted(m, np.asarray(shift, dtype=np.float64))


def _run_on_dask(client, chunk_fn, ranges, trees, window, checkpoint, bar, total_rows):
    groups = int(getattr(chunk_fn, "groups", 0))
    distributed = _import_distributed()
    if window is None:
        threads = sum(client.nthreads().values()) or 1
        window = max(2, int(config.DASK_TASKS_PER_WORKER) * threads)
    window = int(window)
    if window < 1:
        raise LamfastError(f"window must be >= 1, got {window}")
    # Ship the chunk function (it holds the world and its source map) once, not once per task.
    fn = client.scatter(chunk_fn, broadcast=True, hash=False)
    ranges = iter(ranges)
    queue = distributed.as_completed(loop=client.loop)
    index_of = {}  # future -> task number
    done = {}  # task number -> entries, finished but waiting for an earlier task
    submitted = merged = 0
    # Keys unique to this run: two runs sharing a cluster must never share a task result.
    run = uuid.uuid4().hex[:12]

    def submit_more():
        nonlocal submitted
        while submitted - merged < window:
            span = next(ranges, None)
            if span is None:
                return
            future = client.submit(
                subtree_task,
                fn,
                span[0],
                span[1],
                pure=False,
                key=f"lamfast-subtree-{run}-{span[0]}",
            )
            index_of[future] = (submitted, span)
            queue.add(future)
            submitted += 1

    submit_more()
    try:
        for future in queue:
            number, span = index_of.pop(future)
            try:
                entries = future.result()
            except ImportError as e:  # a remote worker without lamfast (or its dependencies)
                raise LamfastError(
                    f"a Dask worker cannot import {e.name or 'lamfast'}: install lamfast "
                    f"{__version__} on every worker"
                ) from None
            done[number] = (span, entries)
            future.release()
            while merged in done:
                span, entries = done.pop(merged)
                rows = _push_entries(trees, entries, groups)
                bar.update(rows if total_rows else span[1] - span[0])
                merged += 1
                if checkpoint is not None:
                    checkpoint.maybe_save(trees[0])
            submit_more()
    finally:
        for future in list(index_of):
            future.cancel()


# ------------------------------------------------------------------------------------ clients
def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise LamfastError(f"Dask is not installed; run: {INSTALL_HINT}") from None
    return distributed


def _check_address(address) -> None:
    """Refuse a malformed scheduler address before Dask tries (and retries) to connect."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(str(address))
        if scheme not in ("tcp", "tls", "ws", "wss", "ucx"):
            raise ValueError(f"unsupported protocol {scheme!r}")
        parse_host_port(location)
    except (ValueError, TypeError) as e:
        raise LamfastError(
            f"bad Dask scheduler address {address!r} ({e}); expected e.g. tcp://10.0.0.1:8786"
        ) from None


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None):
    """A Dask client: on a new ``LocalCluster`` of ``workers`` processes, or on ``scheduler``.

    Each local worker is a process with one thread (Dask then pins BLAS to one thread too), so
    ``workers`` is the number of cores used. The cluster is shut down on exit.
    """
    if workers is not None and scheduler is not None:
        raise LamfastError("give either --workers or --scheduler, not both")
    distributed = _import_distributed()
    # Dask logs connection teardown at INFO level, with tracebacks ("Batched Comm Closed"),
    # when the cluster made here shuts down; that reads as a failure. Set after the import,
    # which configures the "distributed" logger. Warnings stay.
    log = logging.getLogger("distributed")
    log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
    if scheduler is not None:
        _check_address(scheduler)
        try:
            client = distributed.Client(
                scheduler, timeout=config.DASK_CONNECT_TIMEOUT, set_as_default=False
            )
        except (OSError, TimeoutError, ValueError) as e:
            raise LamfastError(
                f"cannot reach the Dask scheduler at {scheduler!r} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no reply'})"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    n = usable_cores() if workers is None else int(workers)
    if n < 1:
        raise LamfastError(f"workers must be >= 1, got {workers!r}")
    most = config.MAX_WORKERS_PER_CORE * usable_cores()
    if n > most:
        raise LamfastError(
            f"--workers {n}: a local cluster of more than {most} single-threaded processes "
            f"({config.MAX_WORKERS_PER_CORE} per usable core) only costs memory; for more "
            "machines start a scheduler and pass --scheduler"
        )
    with (
        distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: never collides with another cluster
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client
