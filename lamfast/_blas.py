"""BLAS thread control (threadpoolctl), shared by the stream and the eigensolver."""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

_CONTROLLER = None
_LOCK = threading.Lock()


def _controller():
    global _CONTROLLER
    with _LOCK:
        if _CONTROLLER is None:
            import threadpoolctl

            _CONTROLLER = threadpoolctl.ThreadpoolController()
        return _CONTROLLER


@contextlib.contextmanager
def single_threaded_blas():
    """Run BLAS/LAPACK on one thread inside the block (process-wide, restored on exit).

    Used where lamfast supplies the parallelism itself (threads over stream blocks) and around
    small dense calls (QR of a d x 32 block, eigh of a 384 x 384 projected matrix) whose
    multi-threaded OpenBLAS versions were 100-1000x slower on the shared 2-core benchmark
    machine (bench/results: threads spin while the other core is busy).
    """
    try:
        controller = _controller()
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


def _pool():
    global _POOL
    with _LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="lamfast-blas")
        return _POOL


_POOL = None


def parallel_matmul(A, B):
    """``A @ B`` with the rows of ``A`` split over all cores, one single-threaded BLAS call each.

    Call it inside :func:`single_threaded_blas`. Each output row is computed by one GEMM call
    whatever the split, on the same kernel, so the result does not depend on the core count in
    practice; the threads are ours, so nothing spins while another process holds a core.
    """
    cores = os.cpu_count() or 1
    n = A.shape[0]
    if cores == 1 or n < 256:
        return A @ B
    out = np.empty((n, B.shape[1]))
    edges = np.linspace(0, n, cores + 1).astype(int)

    def part(i):
        np.matmul(A[edges[i] : edges[i + 1]], B, out=out[edges[i] : edges[i + 1]])

    list(_pool().map(part, range(cores)))
    return out
