"""Benchmark cases shared by ``lamfast bench`` and the pytest-benchmark suite in ``bench/``.

One registry (docs/architecture.md, conventions): each case builds its inputs once and returns
named callables for
lamfast, its reference path and the baselines, so the table and ``bench/`` time the same code.
Every figure is the median of several runs, taken in the same process and run as its baselines,
and reported as a ratio; the machine's limits (docs/performance.md) are measured in the same run:

    T_limit = n r / R_rng + n f / P_blas

with ``r`` normals per row, ``R_rng`` the best measured normal-generation rate on all cores,
``f = r (r + 1)`` the SYRK flops per row of the source co-moment and ``P_blas`` the best measured
SYRK rate for the block shape. The hardware limit replaces ``P_blas`` by the CPU's peak.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import threadpoolctl

from . import config
from ._blas import one_blas_thread
from ._jit import njit
from .moments.accumulate import moments_from_rows
from .moments.eigen import top_eigh
from .sources.simulate import stream_moments, wishart_moments
from .sources.world import LinearWorld


# ----------------------------------------------------------------------------------- timing
def median_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def environment() -> dict:
    """What every benchmark record carries: BLAS core type and threads, numba threading."""
    env = {
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)"),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "numba_threading_layer": numba.config.THREADING_LAYER,
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "stream_threads": config.STREAM_THREADS or os.cpu_count(),
    }
    try:
        env["threadpools"] = [
            {
                key: pool.get(key)
                for key in ("user_api", "internal_api", "version", "num_threads", "architecture")
            }
            for pool in threadpoolctl.threadpool_info()
        ]
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        env["threadpools"] = "threadpoolctl missing"
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or "unknown"


def _cpu_ghz() -> float:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):  # pragma: no cover
        pass
    return 0.0


def _flops_per_cycle() -> int:
    """Double-precision flops per cycle and core: two FMA pipes of the widest vector unit."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:  # pragma: no cover
        flags = ""
    if " avx512f" in flags:
        return 32
    if " fma" in flags:
        return 16
    return 4


# ----------------------------------------------------------------------------------- limits
@njit
def _fill_normals(gen, out):
    """Standard normals into ``out`` (the RNG rate alone, for the limit model)."""
    flat = out.reshape(-1)
    for i in range(flat.shape[0]):
        flat[i] = gen.standard_normal()


def machine_limits(r: int, block_rows: int, repeat: int = 5) -> dict:
    """Measured RNG and SYRK rates on all cores, and the estimated hardware peak.

    Both rates are measured the way the stream runs (one block per thread, BLAS on one thread)
    and, for SYRK, also as one multi-threaded BLAS call; the best of each is the library limit.
    """

    cores = os.cpu_count() or 1
    reps = 16
    bufs = [np.empty((block_rows, r)) for _ in range(cores)]
    gens = [np.random.default_rng(i) for i in range(cores)]
    _fill_normals(gens[0], bufs[0])
    pool = ThreadPoolExecutor(cores)  # persistent, like the stream's: no thread start-up timed

    def rng_part(i):
        for _ in range(reps):
            _fill_normals(gens[i], bufs[i])

    t = median_time(lambda: list(pool.map(rng_part, range(cores))), repeat)
    t1 = median_time(lambda: rng_part(0), repeat)
    rng_rate = max(cores * reps * block_rows * r / t, reps * block_rows * r / t1)
    g = np.random.default_rng(0)
    t_np = median_time(lambda: g.standard_normal(out=bufs[0]), repeat)
    numpy_rng_rate = block_rows * r / t_np

    flops = block_rows * r * (r + 1)  # SYRK of a (block_rows x r) matrix
    S = [b.copy() for b in bufs]

    def syrk_part(i):
        for _ in range(4):
            np.dot(S[i].T, S[i])

    with one_blas_thread():
        t_threads = median_time(lambda: list(pool.map(syrk_part, range(cores))), repeat)
    t_one = median_time(lambda: np.dot(S[0].T, S[0]), repeat)
    pool.shutdown()
    syrk_rate = max(cores * 4 * flops / t_threads, flops / t_one)
    ghz_nominal = _cpu_ghz()
    fpc = _flops_per_cycle()
    # The nominal clock under-states a boosting CPU: take the clock that the best measured
    # single-call SYRK/GEMM rate implies on the AVX2 (16 flops/cycle) kernels OpenBLAS runs with
    # OPENBLAS_CORETYPE=Haswell, if it is higher.
    A = np.random.default_rng(1).standard_normal((1024, 1024))
    with one_blas_thread():
        gemm_1core = 2 * 1024**3 / median_time(lambda: A @ A, repeat)
    ghz = max(ghz_nominal, gemm_1core / 16 / 1e9)
    peak = cores * fpc * ghz * 1e9
    return {
        "cores": cores,
        "rng_normals_per_s": rng_rate,
        "numpy_rng_normals_per_s_1core": numpy_rng_rate,
        "syrk_flops_per_s": syrk_rate,
        "gemm_flops_per_s_1core": gemm_1core,
        "cpu_ghz_nominal": ghz_nominal,
        "cpu_ghz_estimated": ghz,
        "flops_per_cycle": fpc,
        "peak_flops_per_s": peak,
    }


# ----------------------------------------------------------------------------------- stream
def _numpy_pipeline(world: LinearWorld, rows: int, block_rows: int):
    """The plain numpy pipeline: default_rng normals, x = s L^T, then X^T X per chunk."""
    L = world.source_map
    rng = np.random.default_rng(world.seed)
    p = L.shape[0]
    com = np.zeros((p, p))
    total = np.zeros(p)
    for start in range(0, rows, block_rows):
        m = min(block_rows, rows - start)
        s = rng.standard_normal((m, world.n_gauss))
        x = s @ L.T
        com += x.T @ x
        total += x.sum(axis=0)
    mean = total / rows
    return mean, com / rows - np.outer(mean, mean)


def stream_case(do: int, rows: int, block_rows: int | None = None) -> dict:
    """Simulated stream of an exo-noise world, joint blocks [o, delta, a, b].

    ``fns`` maps a method to ``(callable, rows it processes)``. Baselines that are much slower
    process fewer rows (at most ``rows / 4``, whole blocks) so the run stays short; throughput
    is compared in rows/s, which does not depend on the row count once blocks are full. The
    scikit-learn timings exclude generating their Delta rows (a favour to the baseline).
    """

    block_rows = int(block_rows or config.BLOCK_ROWS)
    world = LinearWorld(do=do, da=8, db=8, noise="exo", sigma=2.0, seed=0)
    few = max(block_rows, rows // 4 // block_rows * block_rows)
    # scikit-learn's IncrementalPCA does an SVD per batch (~100x slower): fewer whole blocks.
    fewest = max(block_rows, rows // 16 // block_rows * block_rows)

    def numpy_one_thread():
        with one_blas_thread():
            _numpy_pipeline(world, few, block_rows)

    fns = {
        "lamfast": (
            lambda: stream_moments(world, rows, block_rows=block_rows, progress=False),
            rows,
        ),
        "lamfast rows kernel": (
            lambda: stream_moments(
                world, few, block_rows=block_rows, progress=False, kernel="rows"
            ),
            few,
        ),
        "numpy pipeline": (lambda: _numpy_pipeline(world, few, block_rows), few),
        "numpy pipeline, BLAS 1 thread": (numpy_one_thread, few),
    }
    try:
        from sklearn.decomposition import PCA, IncrementalPCA

        delta = np.random.default_rng(1).standard_normal((few, world.n_gauss)) @ (
            world.source_map[world.do : 2 * world.do].T
        )

        def ipca():
            est = IncrementalPCA(n_components=world.da)
            for start in range(0, fewest, block_rows):
                est.partial_fit(delta[start : start + block_rows])

        def ipca_pipeline():
            # The same pipeline shape as lamfast's: generate each block's Delta rows, then fit.
            rng = np.random.default_rng(world.seed)
            Ld = world.source_map[world.do : 2 * world.do].T
            est = IncrementalPCA(n_components=world.da)
            for _ in range(0, fewest, block_rows):
                est.partial_fit(rng.standard_normal((block_rows, world.n_gauss)) @ Ld)

        fns["sklearn IncrementalPCA.partial_fit"] = (ipca, fewest)
        fns["sklearn IncrementalPCA, generating its rows"] = (ipca_pipeline, fewest)
        fns["sklearn PCA(covariance_eigh)"] = (
            lambda: PCA(n_components=world.da, svd_solver="covariance_eigh").fit(delta),
            few,
        )
    except ImportError:
        pass
    r = world.n_gauss
    p = sum(size for _, size in world.blocks)
    return {"world": world, "rows": rows, "block_rows": block_rows, "r": r, "p": p, "fns": fns}


def equal_work_case(do: int, rows: int, block_rows: int | None = None) -> dict:
    """The same work for lamfast and scikit-learn: top-``da`` principal directions of the same
    pre-generated Delta rows (``rows x do``, the frame differences of an exo-noise world).

    ``lamfast``: ``moments_from_rows`` (fixed blocks, merge tree) then ``top_eigh`` of the
    covariance, k = da; scikit-learn: ``IncrementalPCA.partial_fit`` block by block with
    ``n_components = da``, and ``PCA(svd_solver="covariance_eigh")`` on all rows at once. No
    method's timing includes generating the rows.
    """
    block_rows = int(block_rows or config.BLOCK_ROWS)
    world = LinearWorld(do=do, da=8, db=8, noise="exo", sigma=2.0, seed=0)
    k = world.da
    delta = np.random.default_rng(1).standard_normal((rows, world.n_gauss)) @ (
        world.source_map[world.do : 2 * world.do].T
    )
    blocks = [("delta", do)]

    def lamfast_pca():
        m = moments_from_rows(delta, blocks, block_rows)
        return top_eigh(m.block_cov("delta"), k)

    fns = {"lamfast": (lamfast_pca, rows)}
    try:
        from sklearn.decomposition import PCA, IncrementalPCA

        def ipca():
            est = IncrementalPCA(n_components=k)
            for start in range(0, rows, block_rows):
                est.partial_fit(delta[start : start + block_rows])
            return est

        fns["sklearn IncrementalPCA.partial_fit"] = (ipca, rows)
        fns["sklearn PCA(covariance_eigh)"] = (
            lambda: PCA(n_components=k, svd_solver="covariance_eigh").fit(delta),
            rows,
        )
    except ImportError:
        pass
    return {"world": world, "rows": rows, "block_rows": block_rows, "k": k, "delta": delta,
            "fns": fns}  # fmt: skip


# ----------------------------------------------------------------------------------- eigen
def eigen_matrix(d: int, kind: str, seed: int = 0, n: int = 10**6) -> np.ndarray:
    """A d x d covariance with the spectrum of a do = d world (the LAM's Delta second moment).

    ``sampled``: the Delta covariance of ``n`` rows (a Wishart draw) of a gaussian-noise world
    (sigma = 0.5): 8 action eigenvalues near 1.25 above a Marchenko-Pastur bulk near 0.25 whose
    top eigenvalues are ~1e-4 apart, the hard case for a truncated solver at k = 16.
    ``population``: the exact Delta covariance of an exo-noise world (sigma = 2): eigenvalues
    4 (x8), 1 (x8), then zeros.
    """
    world = LinearWorld(
        do=d,
        da=8,
        db=8,
        noise="gaussian" if kind == "sampled" else "exo",
        sigma=0.5 if kind == "sampled" else 2.0,
        seed=seed,
    )
    if kind == "population":
        X, Y = world.X, world.Y
        return X @ X.T + 4.0 * (Y @ Y.T)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    r = 8 + d  # sources e, xi of delta = X e + sigma xi
    T = np.tril(rng.standard_normal((r, r)), k=-1)
    T[np.diag_indices(r)] = np.sqrt(rng.chisquare(n - 1 - np.arange(r)))
    LT = world.X @ T[:8] + world.sigma * T[8:]
    C = LT @ LT.T / n
    return 0.5 * (C + C.T)


def _one_thread(fn, *args, **kwargs):

    with one_blas_thread():
        return fn(*args, **kwargs)


def eigen_case(d: int, k: int, kind: str) -> dict:
    """Top-k eigenpairs by lamfast and by numpy, scipy subset and ARPACK."""
    import scipy.sparse.linalg

    C = eigen_matrix(d, kind)
    v0 = np.full(d, 1.0 / np.sqrt(d))
    fns = {
        "lamfast krylov": lambda: top_eigh(C, k, method="krylov"),
        "lamfast auto": lambda: top_eigh(C, k),
        "np.linalg.eigh": lambda: np.linalg.eigh(C),
        "np.linalg.eigh, BLAS 1 thread": lambda: _one_thread(np.linalg.eigh, C),
        "scipy eigh subset": lambda: scipy.linalg.eigh(C, subset_by_index=[d - k, d - 1]),
        "scipy eigh subset, BLAS 1 thread": lambda: _one_thread(
            scipy.linalg.eigh, C, subset_by_index=[d - k, d - 1]
        ),
        "scipy eigsh": lambda: scipy.sparse.linalg.eigsh(C, k=k, which="LA", v0=v0),
    }
    return {"C": C, "d": d, "k": k, "kind": kind, "fns": fns}


def residual(C: np.ndarray, w: np.ndarray, V: np.ndarray) -> float:
    """max_i ||C v_i - w_i v_i|| / ||C||_2."""
    return float(np.linalg.norm(C @ V - V * w, axis=0).max() / np.linalg.norm(C, 2))


# ----------------------------------------------------------------------------------- cold start
def cold_start(repeat: int = 3) -> dict:
    """Wall time of ``import lamfast`` and of ``lamfast fit --source population`` in fresh
    processes: the first call with an empty numba cache, then cached calls."""
    exe = [sys.executable, "-c"]
    fit = "from lamfast.cli import main; main(['fit', '--source', 'population'])"
    # The stream source runs the numba kernels (source draw, Chan merge): compile versus cache.
    stream = "from lamfast.cli import main; main(['fit', '--source', 'stream', '--rows', '1e5'])"
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)

        def run(code):
            start = time.perf_counter()
            subprocess.run(exe + [code], env=env, check=True, capture_output=True)
            return time.perf_counter() - start

        out["python -c pass"] = statistics.median(run("pass") for _ in range(repeat))
        out["import lamfast"] = statistics.median(run("import lamfast") for _ in range(repeat))
        out["fit, empty numba cache"] = run(fit)
        out["fit, cached"] = statistics.median(run(fit) for _ in range(repeat))
        out["fit --source stream --rows 1e5, empty numba cache"] = run(stream)
        out["fit --source stream --rows 1e5, cached"] = statistics.median(
            run(stream) for _ in range(repeat)
        )
    return out


def reproduce_run(args: list[str], out: str, cache: str | None = None) -> dict:
    """``lamfast reproduce ARGS --out OUT --force --no-plot`` in a fresh process, timed as a user
    sees it (interpreter start, imports, worker start-up and any compilation included).

    ``cache``: a folder for numba's cache (empty: a cold run that compiles every kernel it needs);
    None uses the user's cache as it is. Returns the wall time, the CPU seconds of the whole
    process tree (workers included), the compile time the run reported (0 when it compiled
    nothing), the report's CPU seconds by panel and its claim-check line.
    """
    env = dict(os.environ)
    if cache is not None:
        env.pop("NUMBA_CACHE_DIR", None)  # it would win over LAMFAST_CACHE_DIR
        env["LAMFAST_CACHE_DIR"] = cache
    code = "from lamfast.cli import main; main()"
    cmd = [sys.executable, "-c", code, "reproduce", *args, "--out", out, "--force", "--no-plot"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"lamfast reproduce failed: {proc.stderr.strip()[-500:]}")
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    compiled = re.search(r"compiled kernels in ([0-9.]+) s", proc.stderr)
    by_panel = re.search(r"CPU seconds by panel \(fits and probes\): (.*)", report)
    checks = re.search(r"\*\*(\d+) of (\d+) computed checks hold\*\*", report)
    return {
        "seconds": seconds,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "compile_seconds": float(compiled.group(1)) if compiled else 0.0,
        "cpu_by_panel": {
            name: float(value)
            for name, value in (part.rsplit(" ", 1) for part in by_panel.group(1).split(", "))
        }
        if by_panel
        else {},
        "checks": [int(checks.group(1)), int(checks.group(2))] if checks else None,
    }


# ----------------------------------------------------------------------------------- the table
def run_bench(quick: bool = False, log=None) -> dict:
    """Every benchmark of the table, in one run; ``quick`` shrinks sizes (a smoke run).

    Returns a JSON-ready dict: ``environment``, ``limits`` and a list of ``rows``, each with
    ``section``, ``case``, ``method``, ``seconds`` (median), ``rate`` and the ratios.
    """
    say = log or (lambda msg: None)
    repeat = 3 if quick else 5
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": quick}
    out["environment"] = environment()
    rows: list[dict] = []
    # ---- stream
    say("stream ...")
    for do, n in ((128, 65_536 if quick else 524_288), (1024, 8192 if quick else 32_768)):
        case = stream_case(do, n)
        r, p, br = case["r"], case["p"], case["block_rows"]
        limits = machine_limits(r, br, repeat)
        if do == 128:
            out["limits"] = limits
        t_limit = n * r / limits["rng_normals_per_s"] + n * r * (r + 1) / limits["syrk_flops_per_s"]
        t_hw = n * r / limits["rng_normals_per_s"] + n * r * (r + 1) / limits["peak_flops_per_s"]
        times = {}
        for name, (fn, _) in case["fns"].items():
            sk = name.startswith("sklearn")
            # scikit-learn gets as many runs as lamfast: with 2, one slow outlier of its LAPACK
            # calls on this shared VM (0.40 s against 0.18 s) doubled its ratio in one table.
            reps = repeat if name == "lamfast" or sk else max(2, repeat - 2)
            times[name] = median_time(fn, reps, warmup=1)
            say(f"  do={do} {name}: {times[name]:.3f} s")
        base = n / times["lamfast"]
        for name, t in times.items():
            m = case["fns"][name][1]
            row = {
                "section": "stream",
                "case": f"do={do} exo [o,delta,a,b] p={p} r={r}",
                "method": f"{name} ({m:,} rows)",
                "seconds": t,
                "rate": m / t,
                "unit": "rows/s",
                "lamfast_speedup": base / (m / t),
            }
            if name == "lamfast":
                row["fraction_of_library_limit"] = t_limit / t
                row["fraction_of_hardware_limit"] = t_hw / t
            rows.append(row)
    # ---- equal work: the same pre-generated Delta rows and the same k for every method
    say("equal work ...")
    n = 65_536 if quick else 262_144
    case = equal_work_case(128, n)
    times = {name: median_time(fn, repeat, warmup=1) for name, (fn, _) in case["fns"].items()}
    for name, t in times.items():
        say(f"  do=128 same Delta rows {name}: {t:.3f} s")
        rows.append(
            {
                "section": "equal work",
                "case": f"top-{case['k']} PCA of the same {n:,} Delta rows, do=128",
                "method": name,
                "seconds": t,
                "rate": n / t,
                "unit": "rows/s",
                "lamfast_speedup": t / times["lamfast"],
            }
        )
    # ---- wishart vs stream at n = 1e9
    say("wishart ...")

    world = LinearWorld(do=128, da=8, db=8, noise="exo", sigma=2.0, seed=0)
    t_w = median_time(lambda: wishart_moments(world, 10**9), 7)
    stream_rate = next(
        x["rate"]
        for x in rows
        if x["method"].startswith("lamfast (") and x["case"].startswith("do=128")
    )
    for name, t in (("lamfast wishart", t_w), ("lamfast stream (extrapolated)", 1e9 / stream_rate)):
        rows.append(
            {
                "section": "wishart",
                "case": "do=128 exo, moments of n=1e9 rows",
                "method": name,
                "seconds": t,
                "rate": 1e9 / t,
                "unit": "rows/s",
                "lamfast_speedup": t / t_w,
            }
        )
    # ---- eigen
    d = 1024 if quick else 4096
    for kind in ("sampled", "population"):
        say(f"eigen {kind} d={d} ...")
        case = eigen_case(d, 16, kind)
        times, resid = {}, {}
        for name, fn in case["fns"].items():
            dense = name.startswith(("np.linalg.eigh", "scipy eigh subset"))
            times[name] = median_time(
                fn, 1 if (dense and not quick) else repeat - 1, warmup=0 if dense else 1
            )
            w, V = fn()
            if name.startswith("np.linalg.eigh"):
                w, V = w[::-1][:16], V[:, ::-1][:, :16]
            resid[name] = residual(case["C"], np.asarray(w), np.asarray(V))
            say(f"  {name}: {times[name]:.3f} s, residual {resid[name]:.1e}")
        base = times["lamfast krylov"]
        for name, t in times.items():
            rows.append(
                {
                    "section": "eigen",
                    "case": f"d={d} k=16 {kind} spectrum",
                    "method": name,
                    "seconds": t,
                    "rate": None,
                    "unit": "",
                    "lamfast_speedup": t / base,
                    "residual": resid[name],
                }
            )
    # ---- cold start
    say("cold start ...")
    for name, t in cold_start(repeat).items():
        rows.append(
            {
                "section": "cold start",
                "case": "subprocess wall time",
                "method": name,
                "seconds": t,
                "rate": None,
                "unit": "",
                "lamfast_speedup": None,
            }
        )
    out["rows"] = rows
    return out


def format_table(result: dict, markdown: bool = False) -> str:
    """The benchmark table (plain text, or Markdown for docs/performance.md)."""
    env = result["environment"]
    lim = result.get("limits", {})
    head = ["section", "case", "method", "median s", "rate", "lamfast ×", "notes"]
    body = []
    for row in result["rows"]:
        notes = []
        if "fraction_of_library_limit" in row:
            notes.append(
                f"{row['fraction_of_library_limit']:.2f} of library limit, "
                f"{row['fraction_of_hardware_limit']:.2f} of hardware limit"
            )
        if row.get("residual") is not None:
            notes.append(f"residual {row['residual']:.1e}·‖C‖")
        speed = row["lamfast_speedup"]
        body.append(
            [
                row["section"],
                row["case"],
                row["method"],
                f"{row['seconds']:.4g}",
                f"{row['rate']:.3g} {row['unit']}" if row["rate"] else "",
                f"{speed:.3g}" if speed is not None else "",
                "; ".join(notes),
            ]
        )
    pools = env.get("threadpools")
    pools = (
        "; ".join(
            f"{p['internal_api']} {p['version']} {p['architecture']} threads={p['num_threads']}"
            for p in pools
        )
        if isinstance(pools, list)
        else str(pools)
    )
    foot = [
        f"date {result['date']}{' (quick)' if result.get('quick') else ''}; "
        f"cpu {env['cpu']} x{env['cpus']}",
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}; "
        f"threadpools: {pools}; numba threading layer {env['numba_threading_layer']} "
        f"(threads {env['numba_num_threads']}); stream threads {env['stream_threads']}",
    ]
    if lim:
        foot.append(
            f"limits (measured this run, {lim['cores']} cores): RNG {lim['rng_normals_per_s']:.3g} "
            f"normals/s (numpy fill, 1 core: {lim['numpy_rng_normals_per_s_1core']:.3g}); "
            f"SYRK {lim['syrk_flops_per_s'] / 1e9:.3g} GF/s; hardware peak "
            f"{lim['peak_flops_per_s'] / 1e9:.3g} GF/s ({lim['flops_per_cycle']} flop/cycle "
            f"x {lim['cpu_ghz_estimated']:.2f} GHz x {lim['cores']})"
        )
    foot.append(
        "'lamfast ×' = lamfast rows/s / method rows/s (stream) or method time / lamfast time "
        "(others); > 1: lamfast is faster. Stream baselines process fewer rows (whole blocks); "
        "scikit-learn times exclude generating its rows."
    )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + "\n".join(f"- {f}" for f in foot) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*cells) for cells in body]
    return "\n".join(lines) + "\n\n" + "\n".join(foot)
