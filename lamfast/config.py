"""Tunables (STYLE 5). Module constants; :func:`_reset` restores the defaults.

Each constant states why it has the value it has.
"""

from __future__ import annotations

import os

import numpy as np

_DEFAULTS: dict[str, object] = {}


def _default(name: str, value):
    _DEFAULTS[name] = value
    return value


# Rows per simulated block. Randomness is keyed by block index, so this is part of the definition
# of a stream: changing it changes the sampled rows (but never the law). 4096 rows of a do=128
# joint vector are 9 MiB of float64: large enough to amortise BLAS calls, small enough for L3.
BLOCK_ROWS = _default("BLOCK_ROWS", 4096)

# Blocks handed to one kernel call. Purely a work-size knob: results are bitwise identical for any
# value (tests/test_simulate.py::test_stream_bitwise_across_chunks).
CHUNK_BLOCKS = _default("CHUNK_BLOCKS", 16)

# Threads over blocks in the simulated stream (0 = all cores). Blocks are independent and each
# one's moments are computed the same way on any thread, so this never changes a result
# (tests/test_perf_paths.py::test_stream_bitwise_across_threads). LAMFAST_THREADS overrides it.
STREAM_THREADS = _default("STREAM_THREADS", int(os.environ.get("LAMFAST_THREADS", "0") or 0))

# Dense LAPACK subset driver up to this dimension, ARPACK above it (when k is small).
EIGH_DENSE_MAX = _default("EIGH_DENSE_MAX", 1024)

# top_eigh(method="auto") uses the block-Krylov solver when d >= EIGH_KRYLOV_MIN_D and
# k <= d / EIGH_KRYLOV_MAX_K_FRACTION, LAPACK's subset driver otherwise. Crossover measured with
# `python -m bench.eigen_policy` (bench/results/eigen_policy.json, 2-core EPYC, 2026-11-26): at
# d = 1024, k = 16 on the hard sampled spectrum the subset driver (one thread) took 0.06 s and
# Krylov 0.26 s (Krylov won at k = 4 and on population spectra); at d = 2048 Krylov took 0.13 s
# (k = 4) and 0.78 s (k = 16) against 1.1 s and 16 s for the subset driver and 0.28 s and 3.2 s
# for ARPACK. At d = 4096 see the README's Performance table.
EIGH_KRYLOV_MIN_D = _default("EIGH_KRYLOV_MIN_D", 2048)
EIGH_KRYLOV_MAX_K_FRACTION = _default("EIGH_KRYLOV_MAX_K_FRACTION", 16)
# Block size k + max(k, oversample) and basis size in blocks of the Krylov solver.
EIGH_KRYLOV_OVERSAMPLE = _default("EIGH_KRYLOV_OVERSAMPLE", 16)
# 12 blocks: on the hard sampled d = 4096 spectrum (bench/results) 12 and 20 blocks needed the
# same ~50 block products, and the smaller basis halves the orthogonalisation cost.
EIGH_KRYLOV_MAX_BLOCKS = _default("EIGH_KRYLOV_MAX_BLOCKS", 12)
# Rayleigh-Ritz convergence checks every this many block products (each costs an eigh of the
# projected matrix, up to 384 x 384).
EIGH_KRYLOV_CHECK_EVERY = _default("EIGH_KRYLOV_CHECK_EVERY", 6)
# Dense LAPACK (dense, subset) runs on one BLAS thread up to this dimension: on the shared 2-core
# benchmark machine a 384 x 384 eigh took 7 ms on one OpenBLAS thread and 0.5 s on two (threads
# spin while another process holds the second core; see bench/results/eigen_policy.json).
# At d = 2048 the two-thread subset driver took 16 s (bench/results/eigen_policy.json).
EIGH_LAPACK_ONE_THREAD_MAX_D = _default("EIGH_LAPACK_ONE_THREAD_MAX_D", 2048)

# Residual rule of the Krylov solver: ||C v - lambda v|| <= EIGH_TOL * ||C|| (the target;
# LAPACK's own residuals are ~ d eps ||C||, 1e-13 at d = 4096).
EIGH_TOL = _default("EIGH_TOL", 1e-9)

# Two eigenvalues are "tied" when they differ by less than TIE_RTOL * lambda_max. LAPACK's
# symmetric eigensolvers are backward stable: eigenvalue errors are O(d * eps * ||C||), about
# 3e-14 at d = 128. 1e-9 is five orders above that and far below any sampling gap (O(1/sqrt(n))
# at n <= 1e12).
TIE_RTOL = _default("TIE_RTOL", 1e-9)

# Random rotations drawn inside a tied eigenvalue block, over which probe metrics are averaged.
TIE_DRAWS = _default("TIE_DRAWS", 8)

# Pseudo-inverse cut-off, relative to the largest eigenvalue: numpy's pinv convention
# (max dimension * machine epsilon) times a safety factor of 10 for the extra rounding of the
# moment computations that precede it.
PINV_RCOND_FACTOR = _default("PINV_RCOND_FACTOR", 10.0)

# o is treated as uncorrelated with (delta, a) when the normalised cross second moment is below
# this. Exact population moments give zero up to rounding (~1e-16); any finite sample gives
# O(1/sqrt(n)) >= 1e-6 for n <= 1e12, so the two cases never mix.
INDEPENDENCE_RTOL = _default("INDEPENDENCE_RTOL", 1e-10)

# Minibatch size of the authors' training scripts; sets the "batch" label weighting
# w = 1 - (1 - m)^BATCH_SIZE (DESIGN 1.1 item 4).
BATCH_SIZE = _default("BATCH_SIZE", 128)

# Seconds of work before a progress bar is shown on stderr.
PROGRESS_AFTER_SECONDS = _default("PROGRESS_AFTER_SECONDS", 2.0)


def pinv_rtol(dim: int) -> float:
    """Relative eigenvalue cut-off used by every pseudo-inverse in lamfast."""
    return PINV_RCOND_FACTOR * max(int(dim), 1) * np.finfo(np.float64).eps


def _reset() -> None:
    """Restore every tunable to its default (tests use this after monkeypatching)."""
    g = globals()
    for name, value in _DEFAULTS.items():
        g[name] = value
