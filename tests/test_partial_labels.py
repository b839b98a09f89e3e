"""Partial action labels on frame files: -1 ids, NaN rows, a label mask, a label budget
(lamfast.sources.frames.source), and the supervised fit that uses only the labelled rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.testing import assert_allclose

from lamfast.cli import cli
from lamfast.errors import LamfastError
from lamfast.sources.frames.source import FrameSource

from . import naive
from .conftest import RTOL
from .helpers import assert_bitwise

# Moments of <= 1e3 rows of O(1) numbers: float64 summation error ~1e-13 relative, so RTOL
# (1e-7) with this absolute floor has room while one row too many or too few (O(1e-3)) fails.
ATOL = 1e-12


def _data(rng, T=400, n_actions=4, missing=0.7):
    frames = rng.standard_normal((T, 3, 2)).astype(np.float32)
    ids = rng.integers(0, n_actions, T)
    starts = np.zeros(T, bool)
    starts[[0, 57, 58, 200, 333]] = True
    unlabelled = rng.random(T) < missing
    return frames, ids, starts, unlabelled


def _check(m, rows):
    n, mean, cov = naive.moments(rows)
    assert m.count == n
    assert_allclose(m.mean, mean, rtol=RTOL[np.float64], atol=ATOL)
    assert_allclose(m.cov, cov, rtol=RTOL[np.float64], atol=ATOL)


@pytest.mark.parametrize("how", ["minus_one", "mask", "nan"])
def test_labelled_stream_is_the_labelled_rows(tmp_path, rng, how):
    frames, ids, starts, unl = _data(rng)
    kw = {"frames": frames, "episode_starts": starts}
    if how == "minus_one":
        kw["actions"] = np.where(unl, -1, ids)
    elif how == "mask":
        kw["actions"], kw["label_mask"] = ids, ~unl
    else:  # continuous actions, NaN rows missing
        vec = rng.standard_normal((len(frames), 2))
        ids = vec
        kw["actions"] = np.where(unl[:, None], np.nan, vec)
    np.savez(tmp_path / "d.npz", **kw)
    n_actions = 4 if how != "nan" else None
    full = naive.frame_rows(frames, ids, episode_starts=starts, n_actions=n_actions)
    keep = np.array([not unl[t] for t in range(len(frames) - 1) if not starts[t + 1]])
    do = frames[0].size
    src = FrameSource(tmp_path / "d.npz", n_actions=n_actions)
    assert src.partial and src.n_labelled == keep.sum()
    m, mL = src.moments(block_rows=32, labelled=True)
    assert m.names == ("o", "delta") and mL.names == ("o", "delta", "a")
    _check(m, full[:, : 2 * do])
    _check(mL, full[keep])
    # the read chunk size never changes a bit, and neither does Dask's order (ranges by index)
    for cf in (1, 7, 1000):
        got = FrameSource(tmp_path / "d.npz", n_actions=n_actions, chunk_frames=cf)
        g, gL = got.moments(block_rows=32, labelled=True)
        assert_bitwise(g, m)
        assert_bitwise(gL, mL)
    g, gL = src.moments(block_rows=32, labelled=True, checkpoint=tmp_path / "run.npz")
    assert_bitwise(g, m)
    assert_bitwise(gL, mL)
    assert (tmp_path / "run.labelled.npz").exists()
    g, gL = src.moments(block_rows=32, labelled=True, checkpoint=tmp_path / "run.npz")
    assert_bitwise(gL, mL)  # resumed from finished checkpoints


def test_full_labels_give_one_stream(tmp_path, rng):
    frames, ids, starts, _ = _data(rng)
    np.savez(tmp_path / "d.npz", frames=frames, actions=ids, episode_starts=starts)
    src = FrameSource(tmp_path / "d.npz")
    assert not src.partial
    m, mL = src.moments(block_rows=32, labelled=True)
    assert mL is m and m.names == ("o", "delta", "a")


@pytest.mark.parametrize("unit", ["transition", "episode"])
def test_label_budget_draws_a_seeded_subset(tmp_path, rng, unit):
    frames, ids, starts, _ = _data(rng, T=600)
    np.savez(tmp_path / "d.npz", frames=frames, actions=ids, episode_starts=starts)
    a = FrameSource(tmp_path / "d.npz", label_budget=0.25, label_unit=unit, label_seed=3)
    b = FrameSource(
        tmp_path / "d.npz", label_budget=0.25, label_unit=unit, label_seed=3, chunk_frames=5
    )
    c = FrameSource(tmp_path / "d.npz", label_budget=0.25, label_unit=unit, label_seed=4)
    n = a.n_transitions
    lab = np.concatenate([a.labelled(x) for *_, x in a.transitions()])
    assert a.n_labelled == lab.sum()
    if unit == "transition":
        assert a.n_labelled == round(0.25 * n)
    else:  # whole episodes: a transition is labelled iff its episode is
        ep = np.repeat(np.arange(len(a.episode_lengths())), a.episode_lengths())
        for e in np.unique(ep):
            assert len(set(lab[ep == e])) == 1
    lab_b = np.concatenate([b.labelled(x) for *_, x in b.transitions()])
    lab_c = np.concatenate([c.labelled(x) for *_, x in c.transitions()])
    np.testing.assert_array_equal(lab, lab_b)
    assert (lab != lab_c).any()
    ma, maL = a.moments(block_rows=16, labelled=True)
    mb, mbL = b.moments(block_rows=16, labelled=True, checkpoint=tmp_path / "r.npz")
    assert_bitwise(ma, mb)
    assert_bitwise(maL, mbL)


def test_hostile_partial_labels(tmp_path, rng):
    frames, ids, starts, unl = _data(rng)
    bad = ids.copy()
    bad[5] = -2
    np.savez(tmp_path / "a.npz", frames=frames, actions=bad)
    with pytest.raises(LamfastError, match="-1 marks a missing action"):
        FrameSource(tmp_path / "a.npz").moments()
    vec = rng.standard_normal((len(frames), 2))
    vec[3, 0] = np.nan  # half a row missing is damage, not a missing label
    np.savez(tmp_path / "b.npz", frames=frames, actions=vec)
    with pytest.raises(LamfastError, match="row all NaN"):
        FrameSource(tmp_path / "b.npz").moments(labelled=True)
    np.savez(tmp_path / "c.npz", frames=frames, actions=ids, label_mask=np.ones(7, bool))
    with pytest.raises(LamfastError, match="label mask must be"):
        FrameSource(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", frames=frames, actions=ids, label_mask=np.zeros(len(ids), bool))
    with pytest.raises(LamfastError, match="no transition has an action label"):
        FrameSource(tmp_path / "d.npz").moments(labelled=True)
    np.savez(tmp_path / "e.npz", frames=frames)
    with pytest.raises(LamfastError, match="needs actions"):
        FrameSource(tmp_path / "e.npz", label_budget=0.5)
    for bad_budget in (0, 1.5, True):
        with pytest.raises(LamfastError, match="label budget"):
            FrameSource(tmp_path / "a.npz", label_budget=bad_budget)
    np.savez(tmp_path / "f.npz", frames=frames, actions=np.where(unl, -1, ids))
    src = FrameSource(tmp_path / "f.npz")
    with pytest.raises(LamfastError, match="no action label"):
        src.joint_rows(*next(src.transitions()), with_actions=True)


def test_cli_fit_with_partial_labels(tmp_path, rng):
    frames, ids, starts, unl = _data(rng, T=800, missing=0.9)
    np.savez(tmp_path / "d.npz", frames=frames, actions=np.where(unl, -1, ids))
    run = CliRunner().invoke(cli, ["fit", str(tmp_path / "d.npz"), "--dz", "2", "--json"])
    assert run.exit_code == 0, run.output
    r = json.loads(run.output)
    assert r["labels"] == "partial"
    n = r["transitions"]
    assert r["labelled_transitions"] == int((~unl[:-1]).sum())
    assert r["variant"]["label_fraction"] == r["labelled_transitions"] / n
    for key in ("act_mse", "act_mse_without_labels", "act_acc", "act_acc_without_labels"):
        assert key in r
    run = CliRunner().invoke(
        cli, ["fit", str(tmp_path / "d.npz"), "--dz", "2", "--label-fraction", "0.1"]
    )
    assert run.exit_code == 2 and run.output.startswith("Error: ")
    assert "drop --label-fraction" in run.output
    text = CliRunner().invoke(cli, ["fit", str(tmp_path / "d.npz"), "--dz", "2"]).output
    assert "labels:" in text and "without them" in text


def test_label_budget_of_one_percent_reproduces_the_population(tmp_path):
    """1% of a simulated world's transitions labelled (the paper's setting, batch weighting)
    gives the population's supervised action probe within its sampling error.

    The probe MSE is a ratio of variances estimated from the ``nL`` labelled rows: for Gaussian
    rows a sample variance has relative standard error ``sqrt(2 / nL)`` (0.032 at nL = 2000),
    which bounds the error of the ratio to first order. Each draw of the budget must be within
    4 of those of the population value and the mean of 4 draws within 4 / sqrt(4); without
    labels the same world is far away (0.88), so the test sees whether the labels were used.
    """
    from lamfast import LinearWorld, fit
    from lamfast.experiments.fitframes import fit_frames
    from lamfast.probes.closed import latent_map, probe_mse
    from lamfast.solvers.variant import Variant
    from lamfast.sources.export import write_world

    world = LinearWorld(do=16, da=4, noise="exo", sigma=2, seed=1)
    pop = world.population_moments()
    lam = fit(pop, 4, Variant(label_fraction=0.01, label_weighting="batch"))
    target = probe_mse(latent_map(lam, pop), pop, "a")
    assert abs(probe_mse(latent_map(fit(pop, 4), pop), pop, "a") - target) > 0.3
    write_world(world, 200_000, tmp_path / "lin")
    got = []
    for seed in range(4):
        r, _ = fit_frames(tmp_path / "lin", 4, {"label_weighting": "batch"}, label_budget=0.01,
                          seed=seed)  # fmt: skip
        assert r["labelled_transitions"] == 2000 and r["variant"]["label_fraction"] == 0.01
        got.append(r["act_mse"])
    se = np.sqrt(2 / 2000)
    assert max(abs(g - target) for g in got) < 4 * se, (got, target)
    assert abs(np.mean(got) - target) < 4 * se / 2, (got, target)
