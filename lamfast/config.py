"""Tunables (docs/architecture.md, conventions). Module constants; :func:`_reset` restores the
defaults.

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

# Frames read from disk per chunk (lamfast.sources.frames): at most FRAME_CHUNK, and fewer for
# wide frames so that one chunk as float64 stays within FRAME_CHUNK_BYTES. A pure I/O knob:
# moments are keyed by global transition index, so any value gives bitwise-identical results
# (tests/test_frames.py). 8 MiB arrays stay below glibc's mmap threshold and are reused; larger
# ones are mapped and zero-filled anew each chunk: reading 64 x 64 RGB frames took 8.0 s per
# 3e4 transitions in chunks of 4096 frames and 1.1 s in chunks of 64 (2-core Xeon, 2026-12-02).
FRAME_CHUNK = _default("FRAME_CHUNK", 4096)
FRAME_CHUNK_BYTES = _default("FRAME_CHUNK_BYTES", 8 * 2**20)
# Bytes that blocks computed on threads by the sequential frame pass may hold at once (each holds
# its rows, their centred copy and a p x p co-moment). Caps the threads for wide frames, so memory
# stays bounded on many-core hosts: at 16x16 frames (p = 517) a block is 36 MB, at 64x64 (p ~ 8k)
# 1 GB, and then the pass runs one block at a time.
FRAME_INFLIGHT_BYTES = _default("FRAME_INFLIGHT_BYTES", 512 * 2**20)

# Largest flattened frame (after crop/downsample) accepted from files: the joint co-moment is
# (2d + da)^2 float64, 512 MiB at d = 4096, and log2(blocks) of them sit in the merge tree.
FRAMES_MAX_DIM = _default("FRAMES_MAX_DIM", 4096)

# The refinement of the supervised optimum where its two metrics differ (solvers/closed_form.py,
# docs/theory.md item 5): the gradient of loss / loss(z = 0) at an orthonormal Y below
# REFINE_GTOL is stationarity to about the rounding of the loss's gradient; L-BFGS restarts
# (fresh curvature memory from the orthonormalised Y) at most REFINE_ROUNDS times. At or below
# CONVERGED_RTOL the refinement has reached a stationary point (L-BFGS alone stalls near
# sqrt(eps) = 1.5e-8, where its line search meets the rounding of the loss, and the Newton steps
# go lower); above it, it stalled before one and eig refuses.
REFINE_GTOL = _default("REFINE_GTOL", 1e-10)
REFINE_MAXITER = _default("REFINE_MAXITER", 5000)
REFINE_ROUNDS = _default("REFINE_ROUNDS", 2)
CONVERGED_RTOL = _default("CONVERGED_RTOL", 1e-7)
NEWTON_STEPS = _default("NEWTON_STEPS", 5)
NEWTON_CG = _default("NEWTON_CG", 200)

# Wider frames (after preprocessing) take the streamed sketch path of lamfast fit (--method auto):
# at do = 2048 the full co-moment is (2 do)^2 float64 = 128 MiB and log2(blocks) of them sit in
# the merge tree; above it the thin passes (lamfast.moments.sketch) need (2 do) x q values.
WIDE_AUTO_DO = _default("WIDE_AUTO_DO", 2048)

# Bytes of one block of rows in a thin pass (lamfast.sources.frames.wide): a 64 x 64 RGB block
# (2 x 12,288 values a row) of 256 rows is 24 MiB.
WIDE_BLOCK_BYTES = _default("WIDE_BLOCK_BYTES", 32 * 2**20)

# The last sketch pass keeps every transition's narrow values (its sketch columns' values and
# actions, 8 bytes each; held twice at the end, as blocks and stacked) when twice their size fits
# in this many bytes, so the action probes' accuracies need no further pass (1e5 transitions of
# 45 values: 36 MB); above it one more pass reads them from the frames.
WIDE_KEPT_ROWS_BYTES = _default("WIDE_KEPT_ROWS_BYTES", 512 * 2**20)

# Columns beyond dz that the sketch keeps (oversampling) and passes over the data it makes.
SKETCH_OVERSAMPLE = _default("SKETCH_OVERSAMPLE", 16)
SKETCH_PASSES = _default("SKETCH_PASSES", 4)

# Threads over blocks in the simulated stream and the sequential frame pass (0 = all cores;
# the frame pass also stays within FRAME_INFLIGHT_BYTES). Blocks are independent and each one's
# moments are computed the same way on any thread, so this never changes a result
# (tests/test_perf_paths.py::test_stream_bitwise_across_threads,
# tests/test_frames_distributed.py::test_sequential_pass_bitwise_for_any_thread_count).
# LAMFAST_THREADS overrides it.
STREAM_THREADS = _default("STREAM_THREADS", int(os.environ.get("LAMFAST_THREADS", "0") or 0))

# Dense LAPACK subset driver up to this dimension, ARPACK above it (when k is small).
EIGH_DENSE_MAX = _default("EIGH_DENSE_MAX", 1024)

# top_eigh(method="auto") uses the block-Krylov solver when d >= EIGH_KRYLOV_MIN_D and
# k <= d / EIGH_KRYLOV_MAX_K_FRACTION, LAPACK's subset driver otherwise. Crossover measured with
# `python -m bench.eigen_policy` (bench/results/eigen_policy.json, quiet 2-core EPYC,
# 2026-11-26 23:40): at d = 1024, k = 16 on the hard sampled spectrum the subset driver took
# 0.052 s and Krylov 0.17 s; at d = 2048 0.37 s and 0.39 s (k = 16) and 0.35 s and 0.042 s
# (k = 4); Krylov wins every population spectrum from d = 512. ARPACK was often fastest below
# d = 2048, but auto never picks it: single-vector Lanczos can miss copies of a repeated
# eigenvalue, and population moments have them (da equal action eigenvalues). At d = 4096 see the
# Performance table of docs/performance.md.
EIGH_KRYLOV_MIN_D = _default("EIGH_KRYLOV_MIN_D", 2048)
EIGH_KRYLOV_MAX_K_FRACTION = _default("EIGH_KRYLOV_MAX_K_FRACTION", 16)
# Block size max(k, EIGH_KRYLOV_MIN_BLOCK) and basis size in blocks of the Krylov solver.
# Measured at d = 4096 (quiet machine; bench/results/krylov-tuning-2026-11-26.txt): on the
# hard sampled spectrum at k = 16 a block of k took 1.11 s (69 block products) against
# 1.52 s (48 products) for the former k + max(k, 16); the 16 extra columns per product cost more
# than the products they save. At k = 2-8 a block of 8 was as fast as or faster than 16 or k.
EIGH_KRYLOV_MIN_BLOCK = _default("EIGH_KRYLOV_MIN_BLOCK", 8)
# 12 blocks: on the hard sampled d = 4096 spectrum 12 and 16-24 blocks needed about the same
# number of block products, and the smaller basis costs less to orthogonalise and restart.
EIGH_KRYLOV_MAX_BLOCKS = _default("EIGH_KRYLOV_MAX_BLOCKS", 12)
# Rayleigh-Ritz convergence checks after the second block product (a low-rank matrix, such
# as a population covariance, converges there) and then every this many (each check costs an
# eigh of the projected matrix, up to 12 blocks square): every 3 was within 2% of every 6 on
# the sampled spectrum, and every step cost 20-60% more.
EIGH_KRYLOV_CHECK_EVERY = _default("EIGH_KRYLOV_CHECK_EVERY", 3)
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
# w = 1 - (1 - m)^BATCH_SIZE (docs/theory.md, closed forms, item 4).
BATCH_SIZE = _default("BATCH_SIZE", 128)

# Checkpoints (--checkpoint) are written after this many new blocks or this many seconds,
# whichever comes first. A do=128 stack is at most log2(blocks) entries of 264^2 float64 (0.5 MiB
# each): at 256 blocks of 4096 rows (~1M rows, a few seconds of work) saving costs well under 1%.
CHECKPOINT_BLOCKS = _default("CHECKPOINT_BLOCKS", 256)
CHECKPOINT_SECONDS = _default("CHECKPOINT_SECONDS", 60.0)

# Blocks per Dask task: a power of two, so that a task is one aligned subtree of the fixed merge
# tree (lamfast.moments.tree). 16 blocks of 4096 rows at do=128 are ~0.3 s of work, far above
# Dask's ~1 ms per-task overhead, and return one 0.5 MiB co-moment.
DASK_TASK_BLOCKS = _default("DASK_TASK_BLOCKS", 16)

# Tasks in flight per Dask worker. The client holds at most (workers * this) task results
# (finished but not yet merged, because merging is in block order): bounded memory whatever the
# stream length. 2 keeps every worker busy while the next result is merged.
DASK_TASKS_PER_WORKER = _default("DASK_TASKS_PER_WORKER", 2)

# Seconds to wait for a Dask scheduler given by --scheduler before giving up.
DASK_CONNECT_TIMEOUT = _default("DASK_CONNECT_TIMEOUT", 10.0)

# Seconds of work before a progress bar is shown on stderr.
PROGRESS_AFTER_SECONDS = _default("PROGRESS_AFTER_SECONDS", 2.0)
# Off a terminal: plain progress lines (the command line turns them on), this many seconds apart.
PROGRESS_PLAIN = _default("PROGRESS_PLAIN", False)
PROGRESS_PLAIN_SECONDS = _default("PROGRESS_PLAIN_SECONDS", 10.0)

# ---- moment-gd (lamfast/gd.py). Adam is the paper's optimiser: the init-dependent flat directions
# (learned decoder, free encoder, kappa = 0) end where an Adam trainer leaves them, so Adam is the
# default. PyTorch's Adam defaults for betas and eps.
GD_OPTIMIZER = _default("GD_OPTIMIZER", "adam")
# Run the Adam loop in the numba kernel (False: the numpy reference loop, same result to rounding).
GD_KERNEL = _default("GD_KERNEL", True)
# Noise-aware twin: refresh the minibatch-gradient variance every this many steps (Adam's second
# moment averages ~1/(1 - beta2) = 1000 steps, so a 10-step-old variance is as good as fresh).
GD_NOISE_EVERY = _default("GD_NOISE_EVERY", 10)
ADAM_BETAS = _default("ADAM_BETAS", (0.9, 0.999))
ADAM_EPS = _default("ADAM_EPS", 1e-8)
# Step limit, initial and final lr of the geometric decay of the Adam phase.
GD_STEPS = _default("GD_STEPS", 2000)
GD_ADAM_LR = _default("GD_ADAM_LR", 1e-2)
GD_ADAM_LR_FINAL = _default("GD_ADAM_LR_FINAL", 1e-4)
# Plain GD step (the objective is per coordinate, so its curvature is O(||Mx|| / do) per entry).
GD_LR = _default("GD_LR", 0.5)
# Stopping rule of the Adam/GD phase: relative loss change below GD_RTOL over GD_WINDOW steps, or
# gradient norm below GD_GTOL times the initial one.
GD_RTOL = _default("GD_RTOL", 1e-7)
GD_GTOL = _default("GD_GTOL", 1e-9)
GD_WINDOW = _default("GD_WINDOW", 50)
# L-BFGS polish to stationarity: stop when the largest gradient entry falls below GD_POLISH_GTOL
# times the largest entry at the initialisation.
GD_POLISH = _default("GD_POLISH", True)
GD_POLISH_GTOL = _default("GD_POLISH_GTOL", 1e-10)
# The fit counts as converged when the largest gradient entry ends below this fraction of its value
# at the initialisation (reachable in float64: see lamfast/gd.py).
GD_CONVERGED_RTOL = _default("GD_CONVERGED_RTOL", 1e-6)
GD_POLISH_MAXITER = _default("GD_POLISH_MAXITER", 5000)
# The loss from its residual with E[o o^T] != I takes an explicit Moo^-1: only when the smallest
# eigenvalue of Moo exceeds GD_RESIDUAL_RCOND times the largest (the inverse then has a relative
# error below ~1e-8); otherwise, e.g. fewer rows than do, the loss stays the expansion.
GD_RESIDUAL_RCOND = _default("GD_RESIDUAL_RCOND", 1e-8)
# Learned decoder, free encoder, kappa = 0: polish over (B, D) with the decoder A profiled out in
# closed form and C held at the Adam end point (lamfast/gd.py::_polish_profiled). The full-space
# polish spent its iterations on the flat o-content direction (up to the 5000 cap near chi = 0.9,
# ~20 s a fit) without changing the loss or the surrogate latent; the profiled one converges the
# loss-changing directions in a few hundred iterations. False: the full-space polish.
# ON by default: the full-space polish left some points unconverged (chi = 0.7, dz = 8: recon
# 1.3e-3 instead of ~0; chi = 0.9, dz = 14: 3.4e-6 instead of 5e-14) and made the full reproduce
# take ~330 s instead of ~60 s. The one default fig4-left point that moves by more than 1e-3 is
# chi = 1, dz = 2 (act_mse and llo by 2.8e-3): there Sig = 0, so B and D are flat as well and
# neither polish is more correct; all claim checks hold either way. False: the full-space polish.
GD_POLISH_PROFILED = _default("GD_POLISH_PROFILED", True)
# Gradient kernel with E[o o^T] = I exploited (lamfast/gd.py::_value_grad_kernel: one dz x do x do
# product fewer in W Mx, B^T R0 Mx from a precomputed Sig = Mdd - Mdo Mdo^T): ~20% fewer CPU
# seconds on fig4-left, same formulas, another rounding (fig4-left moves by at most 4e-5);
# tests/test_gd.py::test_kernel_matches_numpy checks it against the numpy reference.
GD_KERNEL_EYE = _default("GD_KERNEL_EYE", True)
# ... and with E[delta o^T], E[delta delta^T] and Sig each c I plus a low-rank part to rounding
# (the paper's worlds, population moments; lamfast/solvers/gd.py::identity_plus_low_rank), the
# kernel multiplies by the factors: three dz x do x do products a step (those with A) instead of
# seven. Another rounding again; False: the dense products.
GD_KERNEL_LOWRANK = _default("GD_KERNEL_LOWRANK", True)

# ---- sgd (lamfast/sgd.py): the paper's protocol. Adam lr 1e-3 and batch BATCH_SIZE are the
# paper's; "a few thousand" steps; held-out rows for closed-form probes (probe MSE error
# O(dz / rows) ~ 1e-4 at dz = 16); Adam probe steps.
SGD_STEPS = _default("SGD_STEPS", 5000)
# fig4-left at chi = 1 under the authors' protocol (`reproduce --chi1-protocol`): their release
# trained this panel for 40,000 Adam steps at lr SGD_LR; the deterministic paper-mode twin
# (moment-gd, no minibatch-noise term: within the seed spread of the sgd protocol there, at a
# third of its cost) runs that many steps.
CHI1_PROTOCOL_STEPS = _default("CHI1_PROTOCOL_STEPS", 40_000)
SGD_LR = _default("SGD_LR", 1e-3)
SGD_EVAL_ROWS = _default("SGD_EVAL_ROWS", 200_000)
SGD_PROBE_STEPS = _default("SGD_PROBE_STEPS", 3000)


# Largest row count of a simulated source: moments hold counts as float64, exact up to 2^53.
MAX_ROWS = _default("MAX_ROWS", 2**53)

# Largest joint co-moment (p x p float64, p = 2 do + da + noise) a run may hold, in bytes: a
# larger world or frame width is refused before anything is allocated (a few of them live at
# once: the merge tree's stack, the eigensolver's copy).
MAX_MOMENT_BYTES = _default("MAX_MOMENT_BYTES", 4 * 2**30)

# Discrete actions become one-hot columns of the joint vector: more ids than this (inferred from
# the data) is refused unless --n-actions says so explicitly.
MAX_ACTIONS = _default("MAX_ACTIONS", 4096)

# A local Dask cluster of more single-threaded worker processes than this many per usable core
# is refused (each process costs memory and start-up; none adds speed).
MAX_WORKERS_PER_CORE = _default("MAX_WORKERS_PER_CORE", 4)

# lamfast probe: held-out folds. Probes are fitted on k - 1 folds and scored on the k-th, so a
# latent that memorises its training rows is not scored on them; 5 folds give a spread from five
# scores while each probe still sees 80% of the rows.
PROBE_FOLDS = _default("PROBE_FOLDS", 5)

# Data without episodes (pairs files) or with fewer episodes than folds are split into folds by
# runs of this many consecutive transitions instead: neighbouring transitions are near copies of
# each other, so a row-level split would score a probe on rows it has almost seen.
PROBE_RUN_ROWS = _default("PROBE_RUN_ROWS", 1000)

# A codebook "collapses" when fewer codes are in effective use (the perplexity of the code usage)
# than this fraction of what the codes could distinguish (min(codebook size, actions)): one code
# of five carrying most transitions is the failure deep-LAM users report.
CODE_COLLAPSE_FRACTION = _default("CODE_COLLAPSE_FRACTION", 0.5)

# Joint codes of several codebooks (their product) get their own statistics while the product
# stays at most this many cells.
MAX_JOINT_CODES = _default("MAX_JOINT_CODES", 4096)


def pinv_rtol(dim: int) -> float:
    """Relative eigenvalue cut-off used by every pseudo-inverse in lamfast."""
    return PINV_RCOND_FACTOR * max(int(dim), 1) * np.finfo(np.float64).eps


def _reset() -> None:
    """Restore every tunable to its default (tests use this after monkeypatching)."""
    g = globals()
    for name, value in _DEFAULTS.items():
        g[name] = value
