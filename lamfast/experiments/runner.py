"""Computing grid points in parallel: worker processes with one BLAS thread each, output order
fixed by the grid whatever the completion order.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence

from .._blas import one_blas_thread, usable_cores
from .._procs import die_with_parent
from .._progress import Progress
from ..errors import LamfastError
from . import warmup
from .points import Point, compute_points


def _run_group(points: Sequence[Point]) -> tuple[list[dict], float]:
    # Worker entry point (picklable, top level): rows and the CPU seconds they took.
    start = time.process_time()
    rows = compute_points(points)
    return rows, time.process_time() - start


def _groups(points: Sequence[Point]) -> list[list[int]]:
    """Indices of points grouped by shared moments, in first-appearance order.

    ``eig`` fits cost about as much as their moments, so points sharing a world are one task.
    Iterative solvers cost far more than exact or Wishart moments: each of their points is its own
    task, so that the slow ones spread over the workers (streamed moments stay shared).
    """
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        key = p.task_key()
        if p.solver != "eig" and p.source != "stream":
            key = (*key, p.dz)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


# Environment of worker processes: one BLAS / numba thread each, so that `jobs` processes use
# `jobs` cores without oversubscription, and every grid point is computed with the same thread
# count (BLAS reductions can round differently with a different number of threads).
_WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


@contextlib.contextmanager
def _worker_environment():
    saved = {k: os.environ.get(k) for k in _WORKER_ENV}
    os.environ.update(_WORKER_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_points(
    points: Sequence[Point],
    jobs: int | None = None,
    progress: bool | None = None,
    label: str = "points",
    on_rows: Callable[[list[int], list[dict]], None] | None = None,
    cpu_seconds: dict | None = None,
) -> list[list[dict]]:
    """Compute grid points, in parallel across processes; result ``i`` holds point ``i``'s rows.

    Points that share a world (they differ only in ``dz``) form one task. With ``jobs > 1`` tasks
    run in ``spawn``-ed worker processes with one BLAS thread each; the output order is the order
    of ``points`` whatever the completion order. ``on_rows(indices, rows)`` is called in the main
    process as each task finishes, ``rows[k]`` the rows of point ``indices[k]`` (sweeps append
    finished rows to their checkpoint there, reproduce draws a finished panel's figure).
    ``cpu_seconds``, if given, accumulates the CPU seconds of the tasks of each panel.
    """
    points = list(points)
    jobs = usable_cores() if jobs is None else int(jobs)
    if jobs < 1:
        raise LamfastError(f"jobs must be >= 1, got {jobs}")
    groups = _groups(points)
    # Heaviest tasks first (moment-gd and sgd iterate; eig is one eigendecomposition), so that the
    # last task to finish is a short one.
    weight = {"eig": 1, "moment-gd": 50, "sgd": 200, "moment-gd-paper": 1000}
    order = sorted(
        range(len(groups)),
        key=lambda g: -sum(weight.get(points[i].solver, 1) for i in groups[g]),
    )
    results: list[list[dict] | None] = [None] * len(points)

    def finished(g: int, rows: list[dict], seconds: float):
        if cpu_seconds is not None:
            panel = points[groups[g][0]].panel
            cpu_seconds[panel] = cpu_seconds.get(panel, 0.0) + seconds
        idx = groups[g]
        per_point: dict[int, list[dict]] = {i: [] for i in idx}
        k = 0
        for i in idx:
            n = len(points[i].evals)
            per_point[i] = rows[k : k + n]
            k += n
        for i in idx:
            results[i] = per_point[i]
        if on_rows is not None:
            on_rows(idx, [per_point[i] for i in idx])
        bar.update(len(idx))

    # Kernels of the run missing from numba's on-disk cache (an empty cache: the first run) are
    # compiled once, by one process, before the points that need them start (warmup.py).
    kinds = [frozenset().union(*(warmup.kinds(points[i]) for i in grp)) for grp in groups]
    serial = jobs == 1 or len(groups) <= 1
    cold = warmup.missing(frozenset().union(*kinds), in_process=serial)
    warm_points = warmup.examples(points, cold) if cold else []

    with Progress(total=len(points), label=label, enabled=progress) as bar:

        def say(text: str):
            if bar.enabled:
                newline = "\n" if bar.shown and not bar.plain else ""  # after a redrawn bar
                bar.stream.write(f"{newline}{label}: {text}\n")
                bar.stream.flush()

        if warm_points:
            say(f"compiling kernels (first run): {', '.join(cold)} ...")
        if serial:
            with one_blas_thread():
                if warm_points:
                    seconds, _ = warmup.warm_up(warm_points)
                    say(f"compiled kernels in {seconds:.1f} s")
                for g in order:
                    start = time.process_time()
                    rows = compute_points([points[i] for i in groups[g]])
                    finished(g, rows, time.process_time() - start)
        else:
            held = cold if warm_points else []
            _run_pool(points, groups, order, kinds, held, warm_points, jobs, finished, say)
    return [r if r is not None else [] for r in results]


_WARM_UP = -1  # the task id of the warm-up in _run_pool


def _run_pool(points, groups, order, kinds, cold, warm_points, jobs, finished, say):
    """Tasks ``order`` (indices into ``groups``) in spawned worker processes.

    With kernels missing from the cache (``cold``), the first task compiles them
    (:func:`warmup.warm_up`); until it is done only tasks that need none of them are
    handed out, a few at a time (so that the held ones keep their place in ``order``), then
    all the rest.
    """
    ctx = multiprocessing.get_context("spawn")
    workers = min(jobs, len(groups))
    futures: dict = {}
    todo = list(order)
    held = set(cold)
    # The environment must hold while workers start: the executor spawns them lazily, on submit.
    with _worker_environment():
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=die_with_parent,  # no orphans after a kill -9 of this process
            initargs=(os.getpid(),),
        )

        def submit(g: int):
            futures[pool.submit(_run_group, [points[i] for i in groups[g]])] = g

        def hand_out():
            if not held:
                for g in todo:
                    submit(g)
                todo.clear()
                return
            # One queued task beyond the workers: a worker never waits for this process.
            k = 0
            while len(futures) <= workers and k < len(todo):
                if kinds[todo[k]] & held:
                    k += 1
                else:
                    submit(todo.pop(k))

        try:
            if held:
                futures[pool.submit(warmup.warm_up, warm_points)] = _WARM_UP
            hand_out()
            while futures:
                done, _ = concurrent.futures.wait(
                    futures, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for fut in done:
                    g = futures.pop(fut)
                    if g == _WARM_UP:
                        # A failed warm-up is not fatal: the tasks then compile what they need
                        # themselves (and raise any real error).
                        if fut.exception() is None:
                            say(f"compiled kernels in {fut.result()[0]:.1f} s")
                        held.clear()
                    else:
                        finished(g, *fut.result())
                hand_out()
        except BaseException:
            for fut in futures:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
