"""Fast paths equal their references (no timing here: speed lives in bench/).

- the source-space stream kernel (one SYRK of the sources per block, mapped by L) equals the
  row-materialising kernel and the naive rows of tests/naive.py, to rounding;
- the threaded stream is bitwise identical to the serial one for any thread count and chunking;
- the block-Krylov eigensolver equals dense LAPACK (eigenvalues, subspaces, residuals).
"""

from __future__ import annotations

import numpy as np
import pytest

import lamfast.sources.simulate as simulate_simulate
from lamfast.errors import LamfastError
from lamfast.moments.core import MergeTree
from lamfast.moments.eigen import top_eigh
from lamfast.sources.world import LinearWorld

from . import naive

EPS = np.finfo(np.float64).eps

WORLDS = [
    dict(noise="exo", sigma=2.0, chi=0.0),
    dict(noise="exo", sigma=0.5, chi=0.4),
    dict(noise="gaussian", sigma=0.7, chi=0.3),
    dict(noise="uniform", sigma=1.5, chi=0.0),
    dict(noise="none", sigma=0.0, chi=1.0),
]


def _world(seed, **kw):
    return LinearWorld(do=12, da=3, db=4, seed=seed, **kw)


def _rounding_bound(world, K):
    """Entry-wise bound on the difference of two float64 evaluations of the same moments.

    Every path computes each co-moment entry as a sum of at most K rounded products (the dot
    product over the rows of a block or of the whole sample, the r-term sums of the map
    x = L s or S_x = L S_s L^T, the few Chan merges). Higham's bound for such a sum is
    gamma_K * sum |terms| with gamma_K = K eps / (1 - K eps), and by Cauchy-Schwarz and the
    triangle inequality sum_rows |x_i x_j| / n <= scale_i scale_j with
    scale = |L| sqrt(E s^2) (E s^2 = 1 for normals, 1/3 for U[0, 1)); a factor 2 covers the
    sample's second moments exceeding the population's (a 1/sqrt(n) effect) and another 2 the two
    evaluations being compared. So |cov_a - cov_b|_ij <= 4 gamma_K scale_i scale_j, and the
    same with one factor scale for the means. The bound is ~1e-11 relative here, while any real
    defect (a wrong block, draw or map entry) moves entries by O(1/sqrt(rows)) >= 1e-3.
    """
    mean_s, var_s = world.source_mean_var()
    scale = np.abs(world.source_map) @ np.sqrt(2.0 * (var_s + mean_s**2))
    gamma = K * EPS / (1 - K * EPS)
    return 4 * gamma * scale, 4 * gamma * np.outer(scale, scale)


@pytest.mark.parametrize("kw", WORLDS, ids=lambda kw: f"{kw['noise']}-chi{kw['chi']}")
def test_source_kernel_matches_rows(seed, kw):
    """Per block: fast source-space moments == row-materialising kernel == naive rows."""
    world = _world(seed, **kw)
    rows, block_rows = 5000, 2048  # three blocks, the last one short
    fast = simulate_simulate.chunk_moments(world, 0, 3, rows, block_rows)
    slow = simulate_simulate.chunk_moments(world, 0, 3, rows, block_rows, kernel="rows")
    X = naive.world_rows(world, rows, block_rows)
    r = world.n_gauss + world.n_uniform
    tol_mean, tol_cov = _rounding_bound(world, block_rows + 2 * r + 8)
    for k, ((nf, mf, cf), (ns, ms, cs)) in enumerate(zip(fast, slow, strict=True)):
        count, mean, cov = naive.moments(X[k * block_rows : (k + 1) * block_rows])
        assert nf == ns == count
        for m, c in ((mf, cf), (ms, cs)):
            assert np.all(np.abs(m - mean) <= tol_mean)
            assert np.all(np.abs(c / count - cov) <= tol_cov)


@pytest.mark.parametrize("kw", WORLDS, ids=lambda kw: f"{kw['noise']}-chi{kw['chi']}")
def test_structured_map_equals_dense_map(seed, kw):
    """The structured joint map equals (L mu, L S L^T) for an arbitrary PSD source co-moment."""
    world = _world(seed, **kw)
    L = world.source_map
    r = L.shape[1]
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((r + 3, r))
    S = G.T @ G
    mu = rng.standard_normal(r)
    plan = simulate_simulate._SourcePlan(world, 10, 10)
    mean, com = plan.to_joint(mu, S)
    # Sums of at most 2 r + 4 products; |S_ab| <= sqrt(S_aa S_bb) (PSD) gives the scale.
    gamma = (2 * r + 4) * EPS
    scale = np.abs(L) @ np.sqrt(np.diag(S))
    assert np.all(np.abs(com - L @ S @ L.T) <= 2 * gamma * np.outer(scale, scale))
    assert np.all(np.abs(mean - L @ mu) <= 2 * gamma * (np.abs(L) @ np.abs(mu)))
    assert np.array_equal(com, com.T)


def test_sources_match_numpy_stream(seed):
    """Scalar draws inside numba reproduce numpy's array fill (normals, then uniforms)."""
    world = _world(seed, noise="uniform", sigma=1.0)
    rows = 300
    S = np.empty((rows, world.n_gauss + world.n_uniform))
    mean = np.empty(S.shape[1])
    simulate_simulate._centred_sources(
        simulate_simulate.block_generator(world.seed, 7),
        world.n_gauss,
        world.n_uniform,
        rows,
        S,
        mean,
    )
    g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(world.seed, spawn_key=(1, 7))))
    raw = np.hstack([g.standard_normal((rows, world.n_gauss)), g.random((rows, world.n_uniform))])
    # Mean: a sum of `rows` terms (gamma_rows * max|x|); centring adds one rounding of each entry.
    assert np.allclose(mean, raw.mean(axis=0), rtol=0, atol=rows * EPS * np.abs(raw).max())
    assert np.allclose(S + mean, raw, rtol=0, atol=4 * EPS * (np.abs(raw).max() + 1))


@pytest.mark.parametrize("kw", WORLDS[:3], ids=lambda kw: kw["noise"])
def test_stream_matches_naive(seed, kw):
    """Whole stream (threads, merge tree) against np.cov of all naive rows."""
    world = _world(seed, **kw)
    rows, block_rows = 9000, 1024
    m = simulate_simulate.stream_moments(world, rows, block_rows=block_rows, threads=2)
    count, mean, cov = naive.moments(naive.world_rows(world, rows, block_rows))
    r = world.n_gauss + world.n_uniform
    tol_mean, tol_cov = _rounding_bound(world, rows + 2 * r + 16)
    assert m.count == count
    assert np.all(np.abs(m.mean - mean) <= tol_mean)
    assert np.all(np.abs(m.cov - cov) <= tol_cov)


def test_stream_bitwise_across_threads(seed):
    """Bitwise identical for any thread count and any chunking (docs/architecture.md,
    determinism)."""
    world = _world(seed, noise="exo", sigma=2.0, chi=0.2)
    rows, block_rows = 20_000, 1000
    ref = simulate_simulate.stream_moments(world, rows, block_rows=block_rows, threads=1)
    for threads, chunk in ((2, 3), (3, 1), (0, 16)):
        got = simulate_simulate.stream_moments(
            world, rows, block_rows=block_rows, threads=threads, chunk_blocks=chunk
        )
        assert np.array_equal(got.mean, ref.mean) and np.array_equal(got.cov, ref.cov)
    # The executor's unit of work: uneven chunks on different thread counts, same MergeTree.
    tree = MergeTree(world.blocks)
    for first, stop, threads in ((0, 7, 2), (7, 8, 1), (8, 20, 3)):
        for block in simulate_simulate.chunk_moments(
            world, first, stop, rows, block_rows, threads=threads
        ):
            tree.push(*block)
    got = tree.result("stream")
    assert np.array_equal(got.mean, ref.mean) and np.array_equal(got.cov, ref.cov)


def test_rows_kernel_bitwise_across_threads(seed):
    world = _world(seed, noise="gaussian", sigma=0.3)
    a = simulate_simulate.stream_moments(world, 5000, block_rows=1000, threads=1, kernel="rows")
    b = simulate_simulate.stream_moments(world, 5000, block_rows=1000, threads=2, kernel="rows")
    assert np.array_equal(a.cov, b.cov) and np.array_equal(a.mean, b.mean)


def test_stream_bad_options():
    world = _world(0)
    with pytest.raises(LamfastError, match="kernel"):
        simulate_simulate.stream_moments(world, 100, kernel="fast")
    with pytest.raises(LamfastError, match="threads"):
        simulate_simulate.stream_moments(world, 100, threads=-1)


# ----------------------------------------------------------------------------- eigensolver
def _spectrum_matrix(rng, d, spectrum):
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (Q * spectrum) @ Q.T


def _hard_spectrum(rng, d):
    """A world-like spectrum: 8 action eigenvalues above a tightly packed noise bulk."""
    bulk = np.sort(0.25 + 0.02 * rng.standard_normal(d - 8))[::-1]
    return np.concatenate([1.25 + 0.01 * np.arange(8)[::-1], bulk])


@pytest.mark.parametrize("d,k", [(160, 16), (200, 5), (240, 1)])
def test_krylov_matches_dense(rng, d, k):
    """Eigenvalues, subspaces and the residual rule of the Krylov solver against LAPACK."""
    spectrum = _hard_spectrum(rng, d)
    C = _spectrum_matrix(rng, d, spectrum)
    w, V = top_eigh(C, k, method="krylov")
    w_ref, V_ref = naive.top_eigh(C, k)
    norm = np.linalg.norm(C, 2)
    # The rule it promises: ||C v - w v|| <= 1e-9 ||C|| for every pair.
    assert np.linalg.norm(C @ V - V * w, axis=0).max() <= 1e-9 * norm
    # A residual eta bounds the eigenvalue error by eta (Weyl/Bauer-Fike, symmetric C) and, for
    # an isolated eigenvalue with gap g, the angle by eta / g (Davis-Kahan); LAPACK's own error
    # is ~ d eps ||C||.
    assert np.allclose(w, w_ref, rtol=0, atol=1e-9 * norm + d * EPS * norm)
    gaps = np.abs(np.diff(np.sort(spectrum)[::-1][: k + 1]))
    for i in range(k):
        gap = min(gaps[i], gaps[i - 1] if i else np.inf)
        cos = abs(V[:, i] @ V_ref[:, i])
        assert np.sqrt(max(0.0, 1 - cos**2)) <= 1e-9 * norm / gap + 1e-8
    assert np.allclose(V.T @ V, np.eye(k), rtol=0, atol=1e-12)


def test_krylov_warm_start_and_low_rank(rng):
    """Warm start from a previous fit; an exactly low-rank matrix exhausts the Krylov space."""
    d = 300
    G = rng.standard_normal((d, 12))
    C = G @ G.T  # rank 12: the Krylov space is exhausted after one block
    w, V = top_eigh(C, 16, method="krylov")
    w_ref, _ = naive.top_eigh(C, 16)
    norm = np.linalg.norm(C, 2)
    assert np.allclose(w, w_ref, rtol=0, atol=1e-9 * norm)
    assert np.linalg.norm(C @ V - V * w, axis=0).max() <= 1e-9 * norm
    w2, V2 = top_eigh(C + 1e-3 * np.eye(d), 16, method="krylov", v0=V)
    assert np.allclose(w2, w_ref + 1e-3, rtol=0, atol=1e-9 * norm)
    with pytest.raises(LamfastError, match="v0"):
        top_eigh(C, 4, method="krylov", v0=np.full((d, 4), np.nan))


@pytest.mark.parametrize("d", [300, 2048])
def test_krylov_warm_start_from_directions_that_are_no_longer_the_top(rng, d):
    """A warm start from the eigenvectors of a previous fit, which are exact eigenvectors of the
    new matrix but not its top ones, must not pass the residual rule with the wrong pairs
    (review of 2026-11-26: with a block made only of v0 and a check after the first product,
    this returned eight 1s instead of eight 4s)."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, 16)))
    X, Y = Q[:, :8], Q[:, 8:]
    C = X @ X.T + 4.0 * (Y @ Y.T)
    for v0 in (X, np.hstack([X, X[:, :4]]), Q[:, ::-1]):
        w, V = top_eigh(C, 8, method="krylov", v0=v0)
        np.testing.assert_allclose(w, 4.0, rtol=0, atol=1e-9 * 4)
        np.testing.assert_allclose(naive.projector(V), Y @ Y.T, atol=1e-8)


def test_krylov_deterministic_and_sign_rule(rng):
    C = _spectrum_matrix(rng, 200, _hard_spectrum(rng, 200))
    w1, V1 = top_eigh(C, 6, method="krylov")
    w2, V2 = top_eigh(C, 6, method="krylov")
    assert np.array_equal(w1, w2) and np.array_equal(V1, V2)
    idx = np.argmax(np.abs(V1), axis=0)
    assert np.all(V1[idx, np.arange(6)] > 0)


def test_auto_policy_follows_config(rng, monkeypatch):
    """auto picks krylov above the measured crossover, LAPACK below (config thresholds)."""
    from lamfast import config
    from lamfast.moments import eigen

    calls = []
    real = eigen._krylov_top
    monkeypatch.setattr(eigen, "_krylov_top", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    C = _spectrum_matrix(rng, 256, _hard_spectrum(rng, 256))
    monkeypatch.setattr(config, "EIGH_KRYLOV_MIN_D", 1000)
    top_eigh(C, 4)
    assert not calls
    monkeypatch.setattr(config, "EIGH_KRYLOV_MIN_D", 100)
    w, _ = top_eigh(C, 4)
    assert calls
    assert np.allclose(w, naive.top_eigh(C, 4)[0], rtol=0, atol=1e-9 * np.linalg.norm(C, 2))


def test_kernels_are_cacheable():
    """Every numba kernel writes to the on-disk cache (cold start: a second process loads the
    compiled code instead of compiling). Closures, dynamic globals or ctypes pointers would
    silently turn numba's cache into a NullCache."""
    import importlib
    import os
    import pkgutil

    from numba.core.caching import FunctionCache

    import lamfast
    from lamfast import _jit

    if not _jit.CACHE:
        pytest.skip("LAMFAST_CACHE=0")
    kernels = [
        obj
        for info in pkgutil.walk_packages(lamfast.__path__, "lamfast.")
        for obj in vars(importlib.import_module(info.name)).values()
        if type(obj).__name__ == "CPUDispatcher"
    ]
    assert len(kernels) >= 10
    for kernel in kernels:
        assert isinstance(kernel._cache, FunctionCache), kernel
        # the cache lives in the user cache directory, never inside the installed package
        # (leftovers there shadowed a later editable install after pip uninstall)
        path = kernel._cache._cache_path
        assert path.startswith(_jit.cache_dir()), path
        assert not path.startswith(os.path.dirname(lamfast.__file__)), path


def test_bench_table_formats():
    """The benchmark table renders (text and Markdown) from a result record; no timing."""
    from lamfast.benchmarks import environment, format_table

    result = {
        "date": "2026-01-01 00:00 UTC",
        "quick": True,
        "environment": environment(),
        "rows": [
            {
                "section": "stream",
                "case": "do=128",
                "method": "lamfast (8 rows)",
                "seconds": 0.5,
                "rate": 16.0,
                "unit": "rows/s",
                "lamfast_speedup": 1.0,
                "fraction_of_library_limit": 0.7,
                "fraction_of_hardware_limit": 0.3,
            },
            {
                "section": "eigen",
                "case": "d=64",
                "method": "scipy eigsh",
                "seconds": 0.1,
                "rate": None,
                "unit": "",
                "lamfast_speedup": 2.0,
                "residual": 1e-12,
            },
        ],
    }
    text = format_table(result)
    md = format_table(result, markdown=True)
    assert "0.70 of library limit" in text and "OPENBLAS_CORETYPE=" in text
    assert md.startswith("| section |") and "| eigen | d=64 | scipy eigsh |" in md


def test_symmetrise_matches_numpy(rng):
    from lamfast.moments.eigen import _symmetrise

    C = rng.standard_normal((300, 300))
    out = np.empty_like(C)
    _symmetrise(C, out)
    assert np.array_equal(out, 0.5 * (C + C.T))


def test_unwritable_cache_dir_compiles_instead_of_failing(tmp_path):
    """No HOME, a read-only home or a bad LAMFAST_CACHE_DIR: kernels compile every time, the
    command works (review: the first kernel call died with a traceback)."""
    import os
    import subprocess
    import sys

    (tmp_path / "afile").write_text("not a directory\n")
    env = {**os.environ, "LAMFAST_CACHE_DIR": str(tmp_path / "afile" / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    code = (
        "from lamfast import LinearWorld, stream_moments; "
        "print(stream_moments(LinearWorld(do=6, da=2, seed=1), 3000, block_rows=500).count)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3000.0" and "Traceback" not in out.stderr
