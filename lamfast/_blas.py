"""One BLAS thread inside block kernels: the bitwise-determinism guard (docs/architecture.md,
determinism).

OpenBLAS splits a matrix product among its threads, and the split changes which micro-kernel
(and so which rounding) computes some entries: the same block gives co-moments that differ in the
last bit with 1 and with 2 BLAS threads (measured: 5.6e-17 on a do=32 stream). Dask workers run
with one BLAS thread (Dask sets ``OPENBLAS_NUM_THREADS=1``), so a single process must too, or
"bitwise identical for any number of workers" fails. Parallelism comes from running blocks side by
side (Dask workers), never from inside one block's product. On this shared 2-core machine one BLAS
thread per block was also the faster choice (busy-waiting BLAS threads oversubscribe the cores).

The limit is applied around each unit of work with ``threadpoolctl`` (about 20 us per call) and
restored afterwards, so the rest of the process keeps its BLAS threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (numba's np.dot calls this BLAS: load it first)
from threadpoolctl import ThreadpoolController

_CONTROLLER = None


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


_LOCK = threading.Lock()
_DEPTH = 0
_LIMITER = None


@contextlib.contextmanager
def one_blas_thread():
    """Run the body with every loaded BLAS library limited to one thread.

    Re-entrant and thread-safe: the limit is set by the first of overlapping bodies (nested, or
    in concurrent threads of a threaded executor) and restored by the last, so no block ever
    runs while another thread restores the old thread count.
    """
    global _DEPTH, _LIMITER
    with _LOCK:
        if _DEPTH == 0:
            _LIMITER = _controller().limit(limits=1, user_api="blas")
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                _LIMITER.restore_original_limits()
                _LIMITER = None


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. a container's cpuset), not the host's."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return os.cpu_count() or 1


_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def thread_pool(threads: int | None = None):
    """A persistent pool of ``threads`` threads (default: one per usable core), one per count.

    The threads of lamfast's kernels (simulated blocks, frame blocks, split products) live here;
    they keep their thread-local scratch buffers between calls.
    """
    threads = int(threads or usable_cores())
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="lamfast")
        return pool


def parallel_matmul(A, B):
    """``A @ B`` with the rows of ``A`` split over all cores, one single-threaded BLAS call each.

    Call it inside :func:`one_blas_thread`. Each output row is computed by one GEMM call
    whatever the split, on the same kernel, so the result does not depend on the core count in
    practice; the threads are ours, so nothing spins while another process holds a core.
    """
    cores = usable_cores()
    n = A.shape[0]
    if cores == 1 or n < 256:
        return A @ B
    out = np.empty((n, B.shape[1]))
    edges = np.linspace(0, n, cores + 1).astype(int)

    def part(i):
        np.matmul(A[edges[i] : edges[i + 1]], B, out=out[edges[i] : edges[i + 1]])

    list(thread_pool(cores).map(part, range(cores)))
    return out
