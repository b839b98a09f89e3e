"""Wide frames: thin moments (lamfast.moments.thin), the streamed sketch
(lamfast.moments.sketch, lamfast.sources.frames.wide) and ``lamfast fit --method sketch``,
against the full moments and the exact fit where both run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.testing import assert_allclose

from lamfast import config
from lamfast.cli import cli
from lamfast.errors import LamfastError
from lamfast.experiments.fitframes import fit_frames
from lamfast.moments.accumulate import BlockAccumulator, moments_from_rows
from lamfast.moments.sketch import SubspaceIteration
from lamfast.moments.thin import ThinReducer
from lamfast.probes.frames import probe_accuracy
from lamfast.sources.frames import wide as wide_module
from lamfast.sources.frames.source import FrameSource
from lamfast.sources.frames.wide import ThinLayout, thin_pass

from . import naive

DA = 4


@pytest.fixture
def wide(tmp_path, rng):
    """Frames of 16 x 32 = 512 values: 4 actions with strong effects, weak iid pixel noise, so
    the top of the frame-difference spectrum has a large gap (10 against 0.003)."""
    T, do = 6000, 512
    X = rng.standard_normal((do, DA)) * 0.3
    ids = rng.integers(0, DA, T)
    steps = X[:, ids[:-1]].T + 0.05 * rng.standard_normal((T - 1, do))
    return write_walk(tmp_path / "w.npz", steps, ids)


def write_walk(path, steps, ids):
    """Frames of 16 x 32 that start at 0 and move by the rows of ``steps`` (their actions
    ``ids``, one more than steps), as float32, in episodes of 700 frames; ``path``."""
    frames = np.concatenate([np.zeros((1, steps.shape[1])), np.cumsum(steps, axis=0)])
    starts = np.zeros(len(frames), bool)
    starts[::700] = True
    frames = frames.reshape(len(frames), 16, 32).astype(np.float32)
    np.savez(path, frames=frames, actions=ids, episode_starts=starts)
    return path


@pytest.fixture
def wide_u8(tmp_path, rng, monkeypatch):
    """uint8 frames of 9 x 11 x 3 = 297 values (no multiple of 8 or 64, so every product has
    ragged edges), blocks of 64 rows and 899 transitions (a last block of 3 rows)."""
    T, do = 903, 297
    walk = np.cumsum(rng.integers(-3, 4, (T, do)), axis=0) // 2
    frames = np.clip(rng.integers(60, 200, do) + walk, 0, 255).astype(np.uint8)
    starts = np.zeros(T, bool)
    starts[::251] = True
    path = tmp_path / "u8.npz"
    np.savez(path, frames=frames.reshape(T, 9, 11, 3), actions=rng.integers(0, DA, T),
             episode_starts=starts)  # fmt: skip
    monkeypatch.setattr(config, "WIDE_BLOCK_BYTES", 64 * 8 * 300)  # 64 rows a block
    return path


def _rows(path, scale=1.0, n_actions=DA):
    """The rows ``[o, delta, a]`` of a fixture's file, by the naive reader."""
    data = np.load(path)
    return naive.frame_rows(data["frames"], actions=data["actions"], n_actions=n_actions,
                            episode_starts=data["episode_starts"], scale=scale)  # fmt: skip


def _generic_pass(src, Q, with_obs):
    """A thin pass the plain way: float64 rows from ``transitions``, stacked with numpy and fed
    to a BlockAccumulator with the pass's reducer."""
    layout = ThinLayout(src, Q, with_obs, with_obs)
    acc = BlockAccumulator(layout.blocks, layout.block_rows, shift=layout.shift,
                           reducer=layout.reducer)  # fmt: skip
    for o, o2, acts in src.transitions(progress=False):
        parts = ([o] if with_obs else []) + [o2 - o]
        acc.add(np.hstack(parts + ([src.action_rows(acts)] if with_obs else [])))
    return layout, acc.result("frames")


@pytest.mark.parametrize("with_obs", [False, True])
def test_fused_pass_is_the_generic_pass_bitwise(wide_u8, monkeypatch, with_obs):
    """The fused pass (uint8 frames converted inside the row kernel, block means summed while
    the rows are written, cross terms by Yc^T W) gives the bits of the plain path, for any
    chunk and thread count, and the thin moments of a numpy reference."""
    src = FrameSource(wide_u8)
    Q = np.random.default_rng(5).standard_normal((src.do, 7))
    layout, ref = _generic_pass(src, Q, with_obs)
    assert layout.block_rows == 64 and src.scale == 1 / 255
    for cf, threads in ((7, 1), (100, 2), (1000, 1)):
        monkeypatch.setattr(config, "STREAM_THREADS", threads)
        got = thin_pass(FrameSource(wide_u8, chunk_frames=cf), Q, with_obs=with_obs,
                        with_actions=with_obs)  # fmt: skip
        for name in ("mean", "cross", "cov_y", "var_w"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    rows = _rows(wide_u8, scale=1 / 255)
    do = src.do
    delta = rows[:, do : 2 * do]
    w = rows[:, : 2 * do] if with_obs else delta
    y = np.hstack([delta @ Q, rows[:, 2 * do :]]) if with_obs else delta @ Q
    wc, yc = w - w.mean(0), y - y.mean(0)
    assert_allclose(got.mean, np.concatenate([w.mean(0), y.mean(0)]), rtol=1e-12, atol=1e-15)
    assert_allclose(got.cross, wc.T @ yc / len(w), rtol=1e-9, atol=1e-14)
    assert_allclose(got.cov_y, yc.T @ yc / len(w), rtol=1e-9, atol=1e-14)
    assert_allclose(got.var_w, (wc**2).mean(0), rtol=1e-9, atol=1e-15)


def test_pass_paths_agree_bitwise(wide_u8, monkeypatch):
    """Frames read as stored or as float64 rows, in process or through the block executor (a
    checkpoint), with or without the variances: the same bits."""
    src = FrameSource(wide_u8, chunk_frames=50)
    Q = np.random.default_rng(6).standard_normal((src.do, 9))
    ref = thin_pass(src, Q, with_obs=True, with_actions=True)
    runs = {"resumable": thin_pass(src, Q, with_obs=True, with_actions=True,
                                   checkpoint=wide_u8.parent / "c.npz")}  # fmt: skip
    no_var = thin_pass(src, Q, with_obs=True, with_actions=True, variances=False)
    assert np.isnan(no_var.var_w).all()
    runs["no variances"] = no_var
    monkeypatch.setattr(wide_module, "frames_as_stored", lambda source: (source, 1.0))
    runs["float rows"] = thin_pass(src, Q, with_obs=True, with_actions=True)
    for label, got in runs.items():
        for name in ("mean", "cross", "cov_y") + (("var_w",) if label != "no variances" else ()):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=label)


def test_latent_probe_accuracy_is_probe_accuracy(wide_u8, wide):
    from lamfast.experiments.fitwide import latent_probe_accuracies

    g = np.random.default_rng(7)
    for path in (wide_u8, wide):  # uint8 frames (scaled), float32 frames
        src = FrameSource(path)
        Wo, Wd = g.standard_normal((3, src.do)), g.standard_normal((3, src.do))
        G, h = g.standard_normal((DA, 3)), g.standard_normal(DA)
        W = np.zeros((3, 2 * src.do + src.da))
        W[:, src.do : 2 * src.do] = Wd
        one = latent_probe_accuracies(src, [(Wd, G, h, None)])[0]
        assert one == probe_accuracy(src, [(W, G, h)])[0]
        W[:, : src.do] = Wo
        got = latent_probe_accuracies(src, [(Wd, G, h, Wo)])[0]
        assert got == probe_accuracy(src, [(W, G, h)])[0]


def test_thin_moments_are_blocks_of_the_full_moments(rng):
    X = rng.standard_normal((1000, 9)) + 5.0
    full = moments_from_rows(X, blocks=[("w", 6), ("y", 3)], block_rows=64)
    acc = BlockAccumulator(
        (("w", 6), ("y", 3)), 64, shift=X[0], reducer=ThinReducer(6, (("y", 3),))
    )
    acc.add(X)
    thin = acc.result("rows")
    # both are float64 sums of 1e3 O(1) products: agreement to ~1e-13 relative
    assert_allclose(thin.mean, full.mean, rtol=1e-12)
    assert_allclose(thin.cross, full.cov[:6, 6:], rtol=1e-10, atol=1e-12)
    assert_allclose(thin.cov_y, full.cov[6:, 6:], rtol=1e-10, atol=1e-12)
    assert_allclose(thin.var_w, np.diag(full.cov)[:6], rtol=1e-10)
    for chunk in (1, 7, 1000):  # fixed blocks: the same bits for any chunking
        other = BlockAccumulator(
            (("w", 6), ("y", 3)), 64, shift=X[0], reducer=ThinReducer(6, (("y", 3),))
        )
        for s in range(0, 1000, chunk):
            other.add(X[s : s + chunk])
        got = other.result("rows")
        for a, b in ((got.cross, thin.cross), (got.cov_y, thin.cov_y), (got.mean, thin.mean)):
            np.testing.assert_array_equal(a, b)


def test_pass_bitwise_for_any_chunk_and_thread_count(wide, monkeypatch):
    it = SubspaceIteration(512, 4, 8, seed=1)
    ref = thin_pass(FrameSource(wide), it.columns(), with_obs=True, with_actions=True)
    for cf, threads in ((1, 1), (37, 2), (100_000, 1)):
        monkeypatch.setattr(config, "STREAM_THREADS", threads)
        got = thin_pass(
            FrameSource(wide, chunk_frames=cf), it.columns(), with_obs=True, with_actions=True
        )
        for name in ("mean", "cross", "cov_y", "var_w"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


def test_sketch_equals_the_exact_fit(wide):
    exact, _ = fit_frames(wide, DA, method="exact")
    sketch, lam = fit_frames(wide, DA, method="sketch")
    assert lam is None and sketch["solver"] == "sketch"
    # The subspace error after p passes is ~(lambda_{l+1} / lambda_4)^(p - 1), 4e-4 a pass here
    # (eigenvalue errors its square): ~1e-10 after the default 4 passes, so 1e-9 on the scores
    # and 1e-8 on the subspace have room while a wrong eigenvector (an O(1) error) fails.
    for key in ("recon", "obs_mse", "act_mse", "act_acc"):
        assert sketch[key] == pytest.approx(exact[key], rel=1e-9, abs=1e-12), key
    # Cov(delta) has DA - 1 action directions (one-hot actions sum to one; below them the iid
    # noise floor is flat, where no subspace converges). Its Ritz pairs come from the basis of
    # M = Cov + mu mu^T: their residuals are first order in the rank-one mismatch (4e-6
    # measured), their values second order, so the values still agree to 1e-9.
    k = DA - 1
    assert_allclose(sketch["delta_spectrum"][:k], exact["delta_spectrum"][:k], rtol=1e-9)
    assert max(sketch["sketch"]["spectrum_residuals"][:k]) < 1e-4
    assert max(sketch["sketch"]["residuals"]) < 1e-8


def test_sketch_subspace_against_numpy(wide):
    src = FrameSource(wide)
    rows = naive.frame_rows(np.load(wide)["frames"], episode_starts=np.load(wide)["episode_starts"])
    delta = rows[:, 512:]
    w, V = naive.top_eigh(delta.T @ delta / len(delta), DA)  # uncentred M, the LAM's matrix
    it = SubspaceIteration(512, DA, 8, seed=0)
    for _ in range(config.SKETCH_PASSES):
        it.update(thin_pass(src, it.columns()))
    pairs = it.eigenpairs("M")
    assert_allclose(pairs.values, w, rtol=1e-10)
    # sin of the largest principal angle, ||(I - V V^T) U||_2 (arccos of singular values near 1
    # would floor at ~1e-7 from rounding); see test_sketch_equals_the_exact_fit for the margin
    U = pairs.vectors
    assert np.linalg.norm(U - V @ (V.T @ U), 2) < 1e-8


def test_auto_picks_the_sketch_above_the_width(wide, monkeypatch):
    monkeypatch.setattr(config, "WIDE_AUTO_DO", 256)
    r, lam = fit_frames(wide, 2)
    assert r["solver"] == "sketch" and lam is None
    monkeypatch.setattr(config, "WIDE_AUTO_DO", 4096)
    r, lam = fit_frames(wide, 2)
    assert r["solver"] == "eig" and lam is not None


def test_projected_pass_against_numpy(wide_u8, monkeypatch):
    """``project_obs`` adds ``Q^T o`` to the narrow block: computed from the shifted ``o`` with
    the shift's image added back to its mean, the moments of ``[delta Q, o Q, a]`` of a numpy
    reference, bitwise for any chunk and thread count."""
    src = FrameSource(wide_u8)
    Q = np.random.default_rng(8).standard_normal((src.do, 5))
    kw = dict(with_obs=True, with_actions=True, project_obs=True)
    ref = thin_pass(src, Q, **kw)
    assert [name for name, _ in ref.narrow] == ["sketch", "sketch_o", "a"]
    for cf, threads in ((7, 1), (100, 2)):
        monkeypatch.setattr(config, "STREAM_THREADS", threads)
        got = thin_pass(FrameSource(wide_u8, chunk_frames=cf), Q, **kw)
        for name in ("mean", "cross", "cov_y", "var_w"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    rows = _rows(wide_u8, scale=1 / 255)
    do = src.do
    o, delta = rows[:, :do], rows[:, do : 2 * do]
    y = np.hstack([delta @ Q, o @ Q, rows[:, 2 * do :]])
    w = rows[:, : 2 * do]
    wc, yc = w - w.mean(0), y - y.mean(0)
    # o sits near 0.5 (uint8 / 255) and Q's columns sum ~17 values: the mean of o Q is ~10,
    # its spread ~1; 1e-12 relative is a thousand times the rounding of the shifted sum
    assert_allclose(ref.mean, np.concatenate([w.mean(0), y.mean(0)]), rtol=1e-12, atol=1e-15)
    assert_allclose(ref.cross, wc.T @ yc / len(w), rtol=1e-9, atol=1e-13)
    assert_allclose(ref.cov_y, yc.T @ yc / len(w), rtol=1e-9, atol=1e-13)


def test_kept_rows_are_the_narrow_values_of_every_transition(wide_u8, monkeypatch):
    """``keep_rows``: the narrow values ``[delta Q, o Q, a]`` of every transition in stream
    order (``o Q`` with the shift's image added back), as numpy computes them from the rows,
    bitwise for any chunk and thread count; the moments are the same bits as without."""
    src = FrameSource(wide_u8)
    Q = np.random.default_rng(9).standard_normal((src.do, 6))
    kw = dict(with_obs=True, with_actions=True, project_obs=True)
    ref, rows = thin_pass(src, Q, keep_rows=True, **kw)
    plain = thin_pass(src, Q, **kw)
    for name in ("mean", "cross", "cov_y", "var_w"):
        np.testing.assert_array_equal(getattr(ref, name), getattr(plain, name))
    for cf, threads in ((7, 1), (100, 2)):
        monkeypatch.setattr(config, "STREAM_THREADS", threads)
        _, got = thin_pass(FrameSource(wide_u8, chunk_frames=cf), Q, keep_rows=True, **kw)
        np.testing.assert_array_equal(got, rows)
    data = _rows(wide_u8, scale=1 / 255)
    do = src.do
    want = np.hstack([data[:, do : 2 * do] @ Q, data[:, :do] @ Q, data[:, 2 * do :]])
    # o Q of the shifted o plus Q^T shift: the rounding of a sum of ~300 terms near 10
    assert_allclose(rows, want, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("variant", [{}, {"decoder": "learned"}])
def test_accuracy_from_kept_rows_is_the_accuracy_pass(wide, monkeypatch, variant):
    """The argmax accuracy from the last pass's kept rows equals the one of a pass over the
    frames (taken when the rows do not fit in config.WIDE_KEPT_ROWS_BYTES), which reads one
    more time; the other scores are the same bits."""
    kept, _ = fit_frames(wide, DA, method="sketch", variant=variant)
    monkeypatch.setattr(config, "WIDE_KEPT_ROWS_BYTES", 0)
    passed, _ = fit_frames(wide, DA, method="sketch", variant=variant)
    assert kept["act_acc"] == passed["act_acc"]
    for key in ("recon", "obs_mse", "act_mse"):
        assert kept[key] == passed[key], key


def test_pass_bitwise_for_any_blas_thread_count(tmp_path, rng):
    """Frames of 64 x 64 x 3 and 83 sketch columns (a learned decoder with cleaning: 2 l + k):
    there OpenBLAS's vector-times-matrix products round differently on 1 and 2 threads, so the
    shift's image (the mean of ``Q^T o``, the kept rows) and the iteration's ``mu^T Q`` are
    taken on one BLAS thread; the pass and the next basis are the same bits either way."""
    from threadpoolctl import threadpool_limits

    frames = rng.integers(0, 256, (40, 64, 64, 3)).astype(np.uint8)
    np.savez(tmp_path / "f.npz", frames=frames, actions=rng.integers(0, DA, 40))
    src = FrameSource(tmp_path / "f.npz")
    got = []
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            it = SubspaceIteration(src.do, 67, 16, seed=3)
            thin, rows = thin_pass(src, it.columns(), with_obs=True, with_actions=True,
                                   project_obs=True, keep_rows=True)  # fmt: skip
            it.update(thin)
            got.append((thin.mean, rows, it.columns()))
    for a, b in zip(*got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_subspace_check_needs_a_smaller_subspace(tmp_path, rng):
    """With dz = do the sketch's columns are all of the frames: no smaller subspace holds dz
    dimensions, so no check is reported (rather than the same fit twice)."""
    walk = np.cumsum(rng.standard_normal((300, 8, 8)), axis=0).astype(np.float32)
    np.savez(tmp_path / "s.npz", frames=walk, actions=rng.integers(0, DA, 300))
    r, _ = fit_frames(tmp_path / "s.npz", 64, method="sketch", variant={"decoder": "learned"})
    assert r["subspace"]["dim"] == 64 and r["subspace"]["check"] is None
    assert any("no smaller subspace" in n for n in r["notes"])
    run = CliRunner().invoke(cli, ["fit", str(tmp_path / "s.npz"), "--dz", "64", "--method",
                                   "sketch", "--decoder", "learned"])  # fmt: skip
    assert run.exit_code == 0 and "subspace the top 64 eigenvectors" in run.output


def _sketch(src, passes, project_obs=True):
    it = SubspaceIteration(src.do, 16, 16, seed=0)
    for i in range(passes):
        last = i == passes - 1
        thin = thin_pass(src, it.columns(), with_obs=last, with_actions=last,
                         project_obs=project_obs and last)  # fmt: skip
        it.update(thin)
    return it, thin


def test_subspace_fit_scores_against_numpy(wide):
    """The moments of the Ritz coordinates and the lifted LAM's scores (recon, obs_mse,
    act_mse) against the same LAM lifted to the frames and scored on the rows by numpy."""
    from lamfast.estimator import fit
    from lamfast.experiments.fitwide import lifted_scores, subspace_moments
    from lamfast.solvers.variant import Variant

    src = FrameSource(wide)
    it, thin = _sketch(src, 3)
    rows = _rows(wide)
    do = src.do
    o, delta, a = rows[:, :do], rows[:, do : 2 * do], rows[:, 2 * do :]
    tr_m = float(np.mean(np.sum(delta**2, axis=1)))
    for m, variant in ((20, Variant(decoder="learned")), (32, Variant(label_fraction=0.5)),
                       (12, Variant(decoder="learned", encoder="free"))):  # fmt: skip
        V = it.last_basis() @ it.ritz_map(m).T  # the top m Ritz vectors of M
        x = np.hstack([o @ V, delta @ V, a])
        mm = subspace_moments(thin, it, m)
        xc = x - x.mean(0)
        assert_allclose(mm.mean, x.mean(0), rtol=1e-9, atol=1e-12)
        assert_allclose(mm.cov, xc.T @ xc / len(x), rtol=1e-8, atol=1e-11)
        lam = fit(mm, DA, variant, solver="auto", seed=0)
        got, _ = lifted_scores(lam, thin, it, mm, tr_m)
        A = np.eye(do) + V @ (lam.A - np.eye(m)) @ V.T  # A = I outside span(V)
        B, C, D = V @ lam.B, lam.C @ V.T, lam.D @ V.T
        z = o @ (C + D).T + delta @ D.T
        # rows and moments sum the same values in other orders: ~1e-12 relative apart; the
        # probes solve with Cov(z) on both sides, so they agree to ~eps cond(Cov(z)) absolute
        # (of a unit-scale MSE): with ~0 obs_mse (the free encoder's z holds o) that is the bound
        zc = z - z.mean(0)
        probe_tol = 8 * np.finfo(float).eps * np.linalg.cond(zc.T @ zc)
        assert probe_tol < 1e-9  # a latent well enough conditioned for the check to mean something
        assert got["recon"] == pytest.approx(naive.lam_loss(rows, do, A, B, C, D), rel=1e-9)
        assert got["obs_mse"] == pytest.approx(naive.probe_mse(z, o), rel=1e-9, abs=probe_tol)
        assert got["act_mse"] == pytest.approx(naive.probe_mse(z, a), rel=1e-9, abs=probe_tol)
        outside = delta - (delta @ V) @ V.T
        assert got["delta_outside"] == pytest.approx(
            np.mean(np.sum(outside**2, axis=1)) / do, rel=1e-8, abs=1e-15
        )


def test_sketch_fits_the_other_variants_in_its_subspace(wide):
    """A learned decoder and action supervision on the sketch path: fitted in the sketch's
    subspace. The learned decoder's recon (its whole objective) is never better than the
    exact optimum over all the frames (the lifted LAM is one of the LAMs that optimum ranges
    over); both stay within the part of delta outside the subspace of the exact fit here
    (delta has 3 action directions above a flat floor)."""
    for variant in ({"decoder": "learned"}, {"label_fraction": 0.5}):
        exact, _ = fit_frames(wide, DA, method="exact", variant=variant)
        sketch, _ = fit_frames(wide, DA, method="sketch", variant=variant)
        sub = sketch["subspace"]
        assert sketch["solver"] == "sketch" and sub["solver"] == exact["solver"] == "eig"
        assert sub["dim"] == 32 and sub["check"]["dim"] == DA + (32 - DA) // 2
        if "decoder" in variant:
            assert exact["recon"] <= sketch["recon"] * (1 + 1e-9)
        assert abs(sketch["recon"] - exact["recon"]) <= sub["delta_outside"]
        assert sketch["act_acc"] == exact["act_acc"] == 1.0
        assert sketch["act_mse"] == pytest.approx(exact["act_mse"], abs=1e-4)
        assert any(n.startswith("subspace:") for n in sketch["notes"])


def test_hostile_sketch(wide, tmp_path):
    with pytest.raises(LamfastError, match="dz must be"):
        fit_frames(wide, 513, method="sketch")
    it = SubspaceIteration(512, 2, 4, seed=0)
    other = SubspaceIteration(256, 2, 4, seed=0)
    with pytest.raises(LamfastError, match="does not match the sketch"):
        other.update(thin_pass(FrameSource(wide), it.columns()))
    with pytest.raises(LamfastError, match="at least two passes"):
        SubspaceIteration(512, 2, 4, seed=0).eigenpairs()
    out = tmp_path / "f.npz"
    run = CliRunner().invoke(
        cli, ["fit", str(wide), "--dz", "2", "--method", "sketch", "--out", str(out)]
    )
    assert run.exit_code == 2 and "saved fit" in run.output and not out.exists()


def test_cli_sketch(wide):
    run = CliRunner().invoke(cli, ["fit", str(wide), "--dz", "4", "--method", "sketch", "--json"])
    assert run.exit_code == 0, run.output
    r = json.loads(run.output)
    assert r["sketch"]["passes"] == config.SKETCH_PASSES
    text = CliRunner().invoke(cli, ["fit", str(wide), "--dz", "4", "--method", "sketch"]).output
    assert "sketch   4 passes" in text and "subspace the top" not in text
    run = CliRunner().invoke(
        cli, ["fit", str(wide), "--dz", "4", "--method", "sketch", "--decoder", "learned"]
    )
    assert run.exit_code == 0, run.output
    assert "subspace the top 32 eigenvectors (solver eig)" in run.output


def test_full_moments_of_1028_columns_bitwise_across_threads(wide, monkeypatch):
    """16 x 32 frames with 4 actions: p = 1028 columns, where unpadded SYRK blocks rounded
    differently on the main thread than on pool threads (lamfast.moments.core.padded)."""
    runs = []
    for threads in (1, 2):
        monkeypatch.setattr(config, "STREAM_THREADS", threads)
        runs.append(FrameSource(wide, chunk_frames=999).moments(block_rows=1000))
    np.testing.assert_array_equal(runs[0].cov, runs[1].cov)
    np.testing.assert_array_equal(runs[0].mean, runs[1].mean)


def test_thin_pass_on_dask_and_resumed_bitwise(wide, tmp_path):
    distributed = pytest.importorskip("distributed")
    src = FrameSource(wide, chunk_frames=333)
    it = SubspaceIteration(512, 4, 8, seed=2)
    cols = it.columns()
    ref = thin_pass(src, cols, with_obs=True, with_actions=True)

    def same(got):
        for name in ("mean", "cross", "cov_y", "var_w"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))

    ck = tmp_path / "pass.npz"
    same(thin_pass(src, cols, with_obs=True, with_actions=True, checkpoint=ck))
    same(thin_pass(src, cols, with_obs=True, with_actions=True, checkpoint=ck))  # from the file
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        same(thin_pass(src, cols, with_obs=True, with_actions=True, client=client))
    other = SubspaceIteration(512, 4, 8, seed=3).columns()
    with pytest.raises(LamfastError, match="another configuration"):
        thin_pass(src, other, with_obs=True, with_actions=True, checkpoint=ck)
    narrow = FrameSource(wide, preprocess=None, chunk_frames=333)
    with pytest.raises(LamfastError, match="sketch columns of shape"):
        thin_pass(narrow, cols[:256], checkpoint=ck)


def test_fit_wide_resumes_from_its_pass_checkpoints(wide, tmp_path):
    ref, _ = fit_frames(wide, 4, method="sketch")
    ck = tmp_path / "run.npz"
    first, _ = fit_frames(wide, 4, method="sketch", checkpoint=ck)
    assert sorted(p.name for p in tmp_path.glob("run.sketch*.npz")) == [
        f"run.sketch{i}.npz" for i in range(1, config.SKETCH_PASSES + 1)
    ]
    again, _ = fit_frames(wide, 4, method="sketch", checkpoint=ck)
    for r in (first, again):
        for key in ("recon", "obs_mse", "act_mse", "delta_spectrum"):
            assert r[key] == ref[key], key
