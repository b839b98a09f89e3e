"""lamfast probe: scores of any latent against naive least squares on materialised rows,
scikit-learn's NMI and hand-counted contingency tables, and the answers a simulated world knows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import balanced_accuracy_score, normalized_mutual_info_score

from lamfast import FrameSource, LinearWorld, fit, probe_metrics
from lamfast.cli import cli
from lamfast.experiments.probe import probe_latents
from lamfast.probes.latents import _fold_of_unit
from lamfast.sources.export import write_world
from lamfast.sources.gridworld import simulate_gridworld

from . import naive

NOISE_ROW = "3:4,0:4"
PIXELS = np.arange(12, 16)  # the grid world's noise row, flattened


@pytest.fixture(scope="module")
def grid():
    d = simulate_gridworld(episodes=60, length=12, noise=1.0, seed=3)
    rows = naive.frame_rows(d["frames"], d["actions"], d["episode_starts"], n_actions=5)
    ids = np.concatenate([d["actions"][s : s + 11] for s in range(0, len(d["actions"]), 12)])
    episode = np.repeat(np.arange(60), 11)
    return d, rows, ids, episode


def _naive_fold_scores(Z, rows, ids, episode, folds, seed, do=16):
    """Per-fold held-out scores from rows, with the same seeded draw of episodes to folds."""
    fold = _fold_of_unit(int(episode.max()) + 1, folds, seed)[episode]
    o, delta, a = rows[:, :do], rows[:, do : 2 * do], rows[:, 2 * do :]
    noise_next = (o + delta)[:, PIXELS]
    out = {"act_mse": [], "obs_mse": [], "noi_mse": [], "leak": [], "accuracy": [], "bal": []}
    for f in range(folds):
        tr, te = fold != f, fold == f
        act, pred = naive.heldout_probe(Z[tr], a[tr], Z[te], a[te])
        out["act_mse"].append(act)
        out["obs_mse"].append(naive.heldout_probe(Z[tr], o[tr], Z[te], o[te])[0])
        out["noi_mse"].append(naive.heldout_probe(Z[tr], noise_next[tr], Z[te], noise_next[te])[0])
        base = naive.heldout_probe(o[tr], noise_next[tr], o[te], noise_next[te])[0]
        Zo = np.hstack([Z, o])
        both = naive.heldout_probe(Zo[tr], noise_next[tr], Zo[te], noise_next[te])[0]
        out["leak"].append(1 - both / base)
        p = np.argmax(pred, axis=1)
        out["accuracy"].append(np.mean(p == ids[te]))
        out["bal"].append(naive.balanced_accuracy(ids[te], p))
    return out


def test_continuous_latent_matches_naive_heldout_least_squares(grid):
    d, rows, ids, episode = grid
    rng = np.random.default_rng(0)
    # a latent that mixes the action, the noise row and nonsense, nonlinearly
    Z = np.hstack([np.eye(5)[ids] + 0.3 * rng.normal(size=(len(ids), 5)), rows[:, 28:30] ** 2])
    r = probe_latents(Z.astype(np.float32), d, noise_region=NOISE_ROW, folds=4, seed=7)
    want = _naive_fold_scores(Z.astype(np.float32).astype(np.float64), rows, ids, episode, 4, 7)
    got = r["scores"]["latent"]
    # the moments path and lstsq differ only by rounding of well-conditioned 7-column problems
    for key in ("act_mse", "obs_mse", "noi_mse", "leak", "accuracy"):
        np.testing.assert_allclose(got[key]["folds"], want[key], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got["balanced_accuracy"]["folds"], want["bal"], rtol=1e-12)
    assert got["act_mse"]["mean"] == pytest.approx(np.mean(want["act_mse"]), rel=1e-8)
    assert got["act_mse"]["sd"] == pytest.approx(np.std(want["act_mse"], ddof=1), rel=1e-6)


def test_in_sample_scores_match_naive(grid):
    d, rows, ids, _ = grid
    Z = rows[:, 16:32] @ np.random.default_rng(1).normal(size=(16, 3))
    r = probe_latents(Z, d, noise_region=NOISE_ROW, folds=1)
    got = r["scores"]["latent"]
    o, a = rows[:, :16], rows[:, 32:]
    assert got["act_mse"]["in_sample"] == pytest.approx(naive.probe_mse(Z, a), rel=1e-9)
    assert got["obs_mse"]["in_sample"] == pytest.approx(naive.probe_mse(Z, o), rel=1e-9)
    assert got["act_mse"]["folds"] == [] and got["act_mse"]["mean"] == got["act_mse"]["in_sample"]
    acc = naive.probe_accuracy(Z, ids, 5)
    assert got["accuracy"]["in_sample"] == pytest.approx(acc, abs=1e-12)


@pytest.mark.parametrize("groups", [1, 3])
def test_codes_match_sklearn_nmi_and_counted_contingency(grid, groups):
    d, rows, ids, _ = grid
    rng = np.random.default_rng(groups)
    noisy = np.where(rng.random(len(ids)) < 0.4, rng.integers(0, 5, len(ids)), ids)
    codes = np.stack([noisy, rng.integers(0, 3, len(ids)), ids % 2][:groups], axis=1)
    sizes = [5, 3, 2][:groups]
    z = codes[:, 0] if groups == 1 else codes
    r = probe_latents(z, d, codebook_size=None, folds=3)
    assert r["latent"]["codebook_sizes"] == sizes
    if groups > 1:  # the joint code of the codebooks has its own table
        joint = r["codes"][-1]
        assert joint["codebook"] == "joint" and joint["size"] == 30
        flat = (codes[:, 0] * 3 + codes[:, 1]) * 2 + codes[:, 2]
        assert joint["contingency"] == naive.contingency(flat, ids, 30, 5).tolist()
    for g, c in enumerate(r["codes"][:groups]):
        assert c["codebook"] == g
        table = naive.contingency(codes[:, g], ids, sizes[g], 5)
        assert c["contingency"] == table.tolist()
        assert c["nmi"] == pytest.approx(normalized_mutual_info_score(ids, codes[:, g]), abs=1e-12)
        assert c["purity"] == pytest.approx(table.max(axis=1).sum() / len(ids), abs=1e-15)
        used = np.bincount(codes[:, g], minlength=sizes[g])
        assert c["perplexity"] == pytest.approx(
            np.exp(-sum(p * np.log(p) for p in used[used > 0] / len(ids))), rel=1e-12
        )
    # one-hot codes: the probe is the per-code mean action, fitted on the training folds
    onehot = np.hstack([np.eye(k)[codes[:, g]] for g, k in enumerate(sizes)])
    want = probe_latents(onehot, d, folds=3)["scores"]["latent"]["act_mse"]["folds"]
    np.testing.assert_allclose(r["scores"]["latent"]["act_mse"]["folds"], want, rtol=1e-9)


def test_embedded_codes_use_the_codebook_vectors(grid):
    d, _, ids, _ = grid
    book = np.random.default_rng(2).normal(size=(5, 3))
    r = probe_latents(ids, d, codebook=book, folds=2)
    want = probe_latents(book[ids], d, folds=2)
    assert r["latent"]["features"] == 3 and r["latent"]["embedded"]
    assert r["scores"]["latent"]["act_mse"] == want["scores"]["latent"]["act_mse"]


def test_true_action_and_noise_latents_score_as_the_theory_says(grid):
    d, rows, ids, _ = grid
    act = probe_latents(ids, d, noise_region=NOISE_ROW)["scores"]["latent"]
    assert act["act_mse"]["mean"] < 1e-12 and act["accuracy"]["mean"] == 1.0
    assert act["obs_mse"]["mean"] > 0.98 and act["noi_mse"]["mean"] > 0.98
    noise_next = (rows[:, :16] + rows[:, 16:32])[:, PIXELS]
    noi = probe_latents(noise_next, d, noise_region=NOISE_ROW)["scores"]["latent"]
    assert noi["noi_mse"]["mean"] < 1e-12 and noi["act_mse"]["mean"] > 0.98
    assert noi["leak"]["mean"] == pytest.approx(1.0, abs=1e-9)


def test_linear_lam_latents_through_probe_match_probe_metrics(tmp_path):
    """lamfast's own linear LAM, encoded and probed in-sample, scores what probe_metrics says."""
    world = LinearWorld(do=8, da=2, db=2, noise="exo", sigma=1.0, seed=1)
    data = tmp_path / "w"
    write_world(world, 5000, data, block_rows=1000)
    lam = fit(FrameSource(data).moments(), dz=3)
    o, o2 = np.load(data / "o.npy"), np.load(data / "o_next.npy")
    z = o @ lam.C.T + o2 @ lam.D.T
    np.save(tmp_path / "z.npy", z)
    r = probe_latents(tmp_path / "z.npy", data, folds=1)
    assert r["noise"] == "noise arrays 'b' saved with the data"
    want = probe_metrics(lam, _with_noise(data))
    got = r["scores"]["latent"]
    for key in ("act_mse", "obs_mse", "noi_mse", "llo"):
        assert got[key]["in_sample"] == pytest.approx(want[key], rel=1e-8, abs=1e-10), key
    lin = r["scores"]["linear_lam"]  # the reference is the same model
    assert lin["act_mse"]["in_sample"] == pytest.approx(want["act_mse"], rel=1e-6, abs=1e-9)


def _with_noise(data):
    """Moments [o, delta, a, b] of the written world, from its rows."""
    from lamfast.moments import moments_from_rows

    o, o2 = np.load(data / "o.npy"), np.load(data / "o_next.npy")
    a, b = np.load(data / "actions.npy"), np.load(data / "b.npy")
    rows = np.hstack([o, o2 - o, a, b])
    return moments_from_rows(rows, [("o", 8), ("delta", 8), ("a", 2), ("b", 2)])


def test_bitwise_identical_for_any_chunking(grid, tmp_path):
    d, rows, ids, _ = grid
    np.savez(tmp_path / "g.npz", **d)
    Z = rows[:, 16:32] @ np.random.default_rng(4).normal(size=(16, 4))
    a = probe_latents(Z, tmp_path / "g.npz", noise_region=NOISE_ROW, chunk_frames=7)
    b = probe_latents(Z, tmp_path / "g.npz", noise_region=NOISE_ROW, chunk_frames=4096)
    assert json.dumps(a["scores"]) == json.dumps(b["scores"])


def test_index_scores_the_named_transitions(grid):
    d, rows, ids, episode = grid
    keep = np.flatnonzero(np.arange(len(ids)) % 3 != 0)
    Z = rows[keep, 16:32] @ np.random.default_rng(5).normal(size=(16, 2))
    r = probe_latents(Z, d, index=keep, folds=1, noise_region=NOISE_ROW)
    assert r["transitions"] == len(keep)
    got = r["scores"]["latent"]["act_mse"]["in_sample"]
    assert got == pytest.approx(naive.probe_mse(Z, rows[keep, 32:]), rel=1e-9)
    assert any("skips" in w for w in r["warnings"])


def test_per_episode_files_and_arrays_of_other_kinds(grid, tmp_path):
    torch = pytest.importorskip("torch")
    d, rows, ids, _ = grid
    folder = tmp_path / "z"
    folder.mkdir()
    for e in range(60):
        np.save(folder / f"ep{e:03d}.npy", ids[e * 11 : (e + 1) * 11])
    a = probe_latents(folder, d)
    b = probe_latents(torch.from_numpy(ids), d)
    assert json.dumps(a["scores"]) == json.dumps(b["scores"])
    np.save(folder / "ep000.npy", ids[:10])  # one row short
    with pytest.raises(ValueError, match="ep000.npy: 10 rows but episode 0 has 11 transitions"):
        probe_latents(folder, d, folds=2)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_matches_sklearn():
    from lamfast.probes.latents import _accuracies

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    y[y == 3] = 2  # a class that never occurs
    conf = np.zeros((4, 4), dtype=np.int64)
    np.add.at(conf, (y, p), 1)
    assert _accuracies(conf)[1] == pytest.approx(balanced_accuracy_score(y, p), abs=1e-15)


# ------------------------------------------------------------------------------ the command
@pytest.fixture()
def files(tmp_path, grid):
    d, rows, ids, _ = grid
    np.savez(tmp_path / "grid.npz", **d)
    np.save(tmp_path / "codes.npy", ids)
    return tmp_path


def _run(args):
    return CliRunner().invoke(cli, args)


def test_cli_table_json_and_report(files):
    r = _run(["probe", str(files / "codes.npy"), "--data", str(files / "grid.npz"),
              "--noise-region", NOISE_ROW, "--out", str(files / "rep")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "action accuracy" in r.output and "your latent" in r.output
    assert "The latent carries 1.00 of the action" in r.output
    assert sorted(p.name for p in (files / "rep").iterdir()) == [
        "codes0.png", "report.md", "scores.json", "scores.png"
    ]  # fmt: skip
    report = json.loads((files / "rep" / "scores.json").read_text())
    assert report["codes"][0]["nmi"] == 1.0
    j = _run(["probe", str(files / "codes.npy"), "--data", str(files / "grid.npz"), "--json"])
    assert json.loads(j.output)["scores"]["latent"]["accuracy"]["mean"] == 1.0


@pytest.mark.parametrize(
    "case, message",
    [
        ("short", "latent rows but the data have 660 transitions"),
        ("nan", "latents row 5 contains NaN or inf"),
        ("range", "code 7 in codebook 0 is outside a codebook of 5 codes"),
        ("region", "noise region '2:5,0:4' lies outside the frame of 4 x 4"),
        ("repeat", "index repeats transition 4"),
        ("unsorted", "index is not increasing"),
        ("outside", "index names transition 660, outside the data's 660 transitions"),
        ("out-in-input", "is inside the latents"),
        ("out-exists", "exists; remove it or choose another folder"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(files, case, message):
    codes = np.load(files / "codes.npy")
    z, extra = files / "codes.npy", []
    if case == "short":
        np.save(files / "z.npy", codes[:-1])
        z = files / "z.npy"
    elif case == "nan":
        f = np.ones((len(codes), 2))
        f[5, 1] = np.nan
        np.save(files / "z.npy", f)
        z = files / "z.npy"
    elif case == "range":
        extra = ["--codebook-size", "5"]
        c = codes.copy()
        c[3] = 7
        np.save(files / "z.npy", c)
        z = files / "z.npy"
    elif case == "region":
        extra = ["--noise-region", "2:5,0:4"]
    elif case in ("repeat", "unsorted", "outside"):
        idx = np.arange(len(codes))
        if case == "repeat":
            idx[5] = 4
        elif case == "unsorted":
            idx[[5, 6]] = idx[[6, 5]]
        else:
            idx = idx + 1
        np.save(files / "idx.npy", idx)
        extra = ["--index", str(files / "idx.npy")]
    elif case == "out-in-input":
        z = files / "zdir"
        z.mkdir()
        np.save(z / "all.npy", codes)
        extra = ["--out", str(z / "rep")]
    elif case == "out-exists":
        (files / "rep").mkdir()
        extra = ["--out", str(files / "rep")]
    result = _run(["probe", str(z), "--data", str(files / "grid.npz"), *extra])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # not an escaped exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == ""


# ------------------------------------------------------------------------------ Dask, grouping
def test_dask_gives_the_same_bits(grid, tmp_path):
    """Both passes on a cluster of two processes (latents, noise and data reopened from their
    files on the workers): the same scores and counts, bit for bit, as in process."""
    pytest.importorskip("distributed")
    from lamfast.moments.tree import dask_client

    d, rows, ids, _ = grid
    np.savez(tmp_path / "g.npz", **d)
    rng = np.random.default_rng(6)
    codes = np.where(rng.random(len(ids)) < 0.3, rng.integers(0, 5, len(ids)), ids)
    np.save(tmp_path / "c.npy", codes)
    keep = np.flatnonzero(np.arange(len(ids)) % 4 != 1)
    np.save(tmp_path / "c_some.npy", codes[keep])
    np.save(tmp_path / "z.npy", rows[:, 16:32] @ rng.normal(size=(16, 3)))  # continuous
    cases = [
        dict(z=tmp_path / "c.npy"),
        dict(z=tmp_path / "c_some.npy", index=keep),
        dict(z=tmp_path / "z.npy"),
    ]
    with dask_client(workers=2) as client:
        for case in cases:
            z = case.pop("z")
            local = probe_latents(z, tmp_path / "g.npz", noise_region=NOISE_ROW, **case)
            remote = probe_latents(
                z, tmp_path / "g.npz", noise_region=NOISE_ROW, client=client, **case
            )
            for key in ("scores", "codes"):
                assert json.dumps(local[key]) == json.dumps(remote[key])


def test_arrays_in_memory_are_refused_for_dask(grid):
    d, _, ids, _ = grid
    with pytest.raises(ValueError, match="cannot be sent to Dask workers"):
        probe_latents(ids, d, workers=1)


def test_grouped_accumulator_matches_each_groups_rows_and_chunking(rng):
    from lamfast.moments import BlockAccumulator
    from lamfast.moments.accumulate import moments_from_rows

    X = rng.standard_normal((1000, 3)) + 5.0
    g = rng.integers(0, 3, 1000)
    g[g == 2] = 1  # group 2 stays empty
    blocks = (("x", 3),)
    results = []
    for chunk in (1, 37, 1000):
        acc = BlockAccumulator(blocks, 64, shift=X[0], groups=3)
        for s in range(0, 1000, chunk):
            acc.add(X[s : s + chunk], g[s : s + chunk])
        results.append(acc.result("rows"))
    for other in results[1:]:
        for a, b in zip(results[0][:2], other[:2], strict=True):
            np.testing.assert_array_equal(a.cov, b.cov)
            np.testing.assert_array_equal(a.mean, b.mean)
    assert results[0][2] is None
    for k in (0, 1):
        want = moments_from_rows(X[g == k], blocks)
        np.testing.assert_allclose(results[0][k].cov, want.cov, rtol=1e-12)
        np.testing.assert_allclose(results[0][k].mean, want.mean, rtol=1e-14)
        assert results[0][k].count == np.count_nonzero(g == k)


def test_verdict_reads_the_numbers(grid):
    d, rows, ids, _ = grid
    quiet = simulate_gridworld(episodes=60, length=12, noise=0.0, seed=3)
    r = probe_latents(ids, quiet, noise_region=NOISE_ROW)
    assert "never changes in these data" in r["verdict"]
    assert r["noise_variance"] == 0.0
    noise_next = (rows[:, :16] + rows[:, 16:32])[:, PIXELS]
    v = probe_latents(noise_next, d, noise_region=NOISE_ROW)["verdict"]
    assert "the latent encodes noise the next frame will show" in v
    assert "noise dominates the frame differences" in v
    only = probe_latents(ids, d, references=False, accuracy=False, folds=1)
    assert sorted(only["scores"]) == ["chance", "latent"]
    assert "accuracy" not in only["scores"]["latent"] and "in-sample" in only["verdict"]


def test_pairs_data_without_episodes_fold_over_runs(tmp_path):
    world = LinearWorld(do=6, da=2, noise="gaussian", sigma=0.5, seed=2)
    write_world(world, 6000, tmp_path / "w", block_rows=1000)
    a = np.load(tmp_path / "w" / "actions.npy")
    r = probe_latents(a, tmp_path / "w")
    assert r["fold_unit"] == "runs of 1000 consecutive transitions"
    assert r["actions"] == "continuous" and r["noise"] == "noise arrays 'eps' saved with the data"
    assert r["scores"]["latent"]["act_mse"]["mean"] < 1e-12


def test_per_episode_files_are_read_in_natural_order(grid, tmp_path):
    """ep2 before ep10: the order the episodes of the data have (review: string order
    misaligned latents with HDF5 and image episodes, silently, when episodes had equal
    lengths)."""
    d, _, ids, _ = grid
    folder = tmp_path / "z"
    folder.mkdir()
    for e in range(60):
        np.save(folder / f"episode_{e}.npy", ids[e * 11 : (e + 1) * 11])
    r = probe_latents(folder, d, folds=2)
    assert r["scores"]["latent"]["accuracy"]["mean"] == 1.0


def test_folds_whose_target_never_varies_are_left_out():
    """A fold where every transition has one action cannot score the action probe: it is left
    out of the mean rather than counted as 'holds nothing'."""
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(200, 4))
    actions = np.zeros(200, dtype=np.int64)
    actions[:40] = 1  # episodes 0 and 1 only
    starts = np.arange(200) % 20 == 0
    ids = np.concatenate([actions[s : s + 19] for s in range(0, 200, 20)])
    r = probe_latents(ids, {"frames": frames, "actions": actions, "episode_starts": starts})
    act = r["scores"]["latent"]["act_mse"]
    assert np.nanmax(act["folds"]) < 1e-20 and np.isnan(act["folds"]).any()
    assert act["mean"] < 1e-20
    assert "memorised" not in r["verdict"]


def test_scalars_and_wide_latents_are_one_line_errors(grid, tmp_path):
    d, _, ids, _ = grid
    np.save(tmp_path / "s.npy", np.float64(3.0))
    with pytest.raises(ValueError, match="a scalar, not an array along a time axis"):
        probe_latents(tmp_path / "s.npy", d)
    np.savez(tmp_path / "two.npz", z=np.ones((660, 2)), codes=ids)
    with pytest.raises(ValueError, match="name the latents with --key"):
        probe_latents(tmp_path / "two.npz", d)
    wide = np.lib.format.open_memmap(tmp_path / "w.npy", "w+", np.float32, (660, 12000))
    del wide
    with pytest.raises(ValueError, match="co-moments of 12037 columns at once over 5 folds need"):
        probe_latents(tmp_path / "w.npy", d)
