"""The Python API: the LinearLAM estimator, array input rules, scikit-learn compatibility.

Fast paths are checked against ``tests/naive.py`` (plain numpy on materialised rows).

Tolerances. Moments here are float64 sums of n = 3000 rows of O(10) entries: reordering the sums
(blocked merge tree versus ``np.cov``) changes them by about ``n * eps`` relative, 3000 * 1.1e-16
= 3.3e-13, so ``RTOL_SUM = 1e-10`` leaves a factor 300 and ``ATOL_SUM = 1e-10`` covers entries
that are zero in expectation. Eigenvalues move by at most the norm of that perturbation (Weyl);
eigenvectors by perturbation / gap, and the smallest gap used below is > 1, so projectors and
latents are compared at ``ATOL_VEC = 1e-8``.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lamfast
import lamfast.estimator as lam_module_estimator
import lamfast.solvers.fitted as lam_module_fitted
from lamfast import LamfastError, LinearLAM, LinearWorld, Moments, NotFittedError
from lamfast.moments import moments_from_rows
from lamfast.sources.arrays import moments_from_transitions

from . import naive

RTOL_SUM = 1e-10
ATOL_SUM = 1e-10
ATOL_VEC = 1e-8

DO, DA, N = 10, 3, 3000
SCALES = np.array([3.0, 2.0, 1.5])  # distinct action scales: eigen-gaps >= 1.5 for dz = 1, 2


@pytest.fixture
def data(rng):
    """Transitions o' = o + X a + 0.3 xi with a mean offset on o (rows are float64)."""
    X = np.linalg.qr(rng.standard_normal((DO, DA)))[0]
    o = 5.0 + rng.standard_normal((N, DO))
    a = rng.standard_normal((N, DA)) * SCALES
    eps = 0.3 * rng.standard_normal((N, DO))
    return {"o": o, "o_next": o + a @ X.T + eps, "a": a, "eps": eps, "X": X}


def _aligned(got, ref):
    """Flip the columns of ``ref`` to the sign of ``got`` (eigenvectors are defined up to sign)."""
    signs = np.sign(np.sum(got * ref, axis=0))
    signs[signs == 0] = 1
    return ref * signs


# --------------------------------------------------------------------------- moments of arrays
def test_transition_moments_match_naive(data):
    m = moments_from_transitions(data["o"], data["o_next"], data["a"], data["eps"])
    assert m.blocks == (("o", DO), ("delta", DO), ("a", DA), ("eps", DO))
    count, mean, cov = naive.moments(
        naive.transition_rows(data["o"], data["o_next"], data["a"], data["eps"])
    )
    assert m.count == count
    assert_allclose(m.mean, mean, rtol=RTOL_SUM, atol=ATOL_SUM)
    assert_allclose(m.cov, cov, rtol=RTOL_SUM, atol=ATOL_SUM)


@pytest.mark.parametrize("block_rows", [7, 1000, 5000])
def test_transition_moments_bitwise_equal_moments_from_rows(data, block_rows):
    rows = naive.transition_rows(data["o"], data["o_next"], data["a"])
    blocks = [("o", DO), ("delta", DO), ("a", DA)]
    ref = moments_from_rows(rows, blocks, block_rows=block_rows)
    got = moments_from_transitions(data["o"], data["o_next"], data["a"], block_rows=block_rows)
    assert_array_equal(got.mean, ref.mean)
    assert_array_equal(got.cov, ref.cov)


class TensorLike:
    """A stand-in for a CPU torch tensor: it only exposes ``__array__``."""

    def __init__(self, x):
        self._x = np.asarray(x)

    def __array__(self, dtype=None, copy=None):
        return self._x if dtype is None else self._x.astype(dtype)


def test_array_types_give_bitwise_equal_moments(data, tmp_path):
    ref = moments_from_transitions(data["o"], data["o_next"], data["a"])
    np.save(tmp_path / "o.npy", data["o"])
    np.save(tmp_path / "o_next.npy", data["o_next"])
    inputs = {
        "memmap": (
            np.load(tmp_path / "o.npy", mmap_mode="r"),
            np.load(tmp_path / "o_next.npy", mmap_mode="r"),
            data["a"],
        ),
        "__array__": (TensorLike(data["o"]), TensorLike(data["o_next"]), TensorLike(data["a"])),
        "lists": (data["o"].tolist(), data["o_next"].tolist(), data["a"].tolist()),
        "fortran": (np.asfortranarray(data["o"]), data["o_next"], data["a"]),
    }
    for name, args in inputs.items():
        got = moments_from_transitions(*args)
        assert_array_equal(got.cov, ref.cov, err_msg=name)
        assert_array_equal(got.mean, ref.mean, err_msg=name)


def test_float32_input_equals_its_float64_upcast(data):
    # float32 -> float64 conversion is exact and happens before any arithmetic.
    o32, on32 = data["o"].astype(np.float32), data["o_next"].astype(np.float32)
    got = moments_from_transitions(o32, on32)
    ref = moments_from_transitions(o32.astype(np.float64), on32.astype(np.float64))
    assert_array_equal(got.cov, ref.cov)
    lam32 = LinearLAM(dz=2).fit(o32, on32)
    lam64 = LinearLAM(dz=2).fit(o32.astype(np.float64), on32.astype(np.float64))
    assert_array_equal(lam32.D_, lam64.D_)
    assert lam32.transform(o32, on32).dtype == np.float64


def test_uint8_frames_do_not_wrap_around(rng):
    frames = rng.integers(0, 256, size=(200, 4, 4), dtype=np.uint8)
    o, o_next = frames[:-1], frames[1:]  # many differences are negative
    m = moments_from_transitions(o, o_next)
    count, mean, cov = naive.moments(naive.transition_rows(o, o_next))
    assert_allclose(m.mean, mean, rtol=RTOL_SUM, atol=ATOL_SUM * 255)
    assert_allclose(m.cov, cov, rtol=RTOL_SUM, atol=ATOL_SUM * 255**2)
    # A wrapped difference would be >= 0 everywhere.
    assert (o_next.astype(int) - o.astype(int)).min() < 0
    lam = LinearLAM(dz=3).fit(o, o_next)
    w, _ = naive.frame_diff_pca(o.reshape(199, -1), o_next.reshape(199, -1), 3)
    assert_allclose(lam.explained_variance_, w, rtol=RTOL_SUM)


# --------------------------------------------------------------------------- estimator vs naive
@pytest.mark.parametrize("dz", [1, 2, 3])
def test_estimator_is_pca_of_frame_differences(data, dz):
    lam = LinearLAM(dz=dz).fit(data["o"], data["o_next"])
    w, V = naive.frame_diff_pca(data["o"], data["o_next"], dz)
    assert_allclose(lam.explained_variance_, w, rtol=RTOL_SUM)
    assert lam.components_.shape == (dz, DO)
    assert_allclose(lam.components_ @ lam.components_.T, np.eye(dz), atol=ATOL_VEC)
    assert_allclose(naive.projector(lam.components_.T), naive.projector(V.T), atol=ATOL_VEC, rtol=0)
    z = lam.transform(data["o"], data["o_next"])
    z_ref = (data["o_next"] - data["o"]) @ V.T
    scale = np.abs(z_ref).max()
    assert_allclose(z, _aligned(z, z_ref), atol=ATOL_VEC * scale, rtol=0)
    # The fitted IDM/FDM are the tied, identity-decoder LAM: C = -D, A = I.
    assert_array_equal(lam.C_, -lam.D_)
    assert_array_equal(lam.A_, np.eye(DO))


def test_round_trip_predict_next_and_score_match_naive(data):
    lam = LinearLAM(dz=3).fit(data["o"], data["o_next"])
    z = lam.transform(data["o"], data["o_next"])
    pred = lam.predict_next(data["o"], z)
    recon = float(np.mean(np.sum((pred - data["o_next"]) ** 2, axis=1)) / DO)
    ref = naive.lam_recon(lam.A_, lam.B_, lam.C_, lam.D_, data["o"], data["o_next"])
    assert_allclose(recon, ref, rtol=RTOL_SUM)
    # Without actions the score is -recon, computed from moments.
    assert_allclose(lam.score(data["o"], data["o_next"]), -ref, rtol=1e-9)
    # dz = da and no noise: the round trip is exact.
    clean = data["o"] + data["a"] @ data["X"].T
    lam0 = LinearLAM(dz=DA).fit(data["o"], clean)
    back = lam0.predict_next(data["o"], lam0.transform(data["o"], clean))
    assert_allclose(back, clean, atol=1e-9 * np.abs(clean).max(), rtol=0)


def test_score_is_llo_when_actions_and_noise_known(data):
    o, on, a, eps = data["o"], data["o_next"], data["a"], data["eps"]
    lam = LinearLAM(dz=2).fit(o, on, a)
    Z = lam.transform(o, on)
    # Schur complements (pinv) versus lstsq on rows: both backward stable, ~1e-12 apart.
    assert_allclose(lam.score(o, on, a, noise=eps), naive.llo(Z, a, o, eps), rtol=1e-8)
    assert_allclose(lam.score(o, on, a, noise="none"), naive.llo(Z, a, o), rtol=1e-8)
    # Actions known but the noise unknown: -recon.
    assert_allclose(
        lam.score(o, on, a), -naive.lam_recon(lam.A_, lam.B_, lam.C_, lam.D_, o, on), rtol=1e-9
    )


def test_score_on_sources():
    world = LinearWorld(do=16, da=4, db=4, noise="exo", sigma=2.0)
    m = world.population_moments()
    lam = LinearLAM(dz=4).fit(world)
    llo = lamfast.probe_metrics(lam, m)["llo"]
    assert lam.score(world) == llo
    assert lam.score(m) == llo  # moments with a noise block: noise known
    assert lam.score(m.select(["o", "delta", "a"])) == -lam_module_fitted.recon_loss(lam, m)
    # Declared noise-free: the noise probe scores 1 by definition.
    metrics = lamfast.probe_metrics(lam, m)
    declared = -metrics["act_mse"] + metrics["obs_mse"] + 1.0
    assert lam.score(m.select(["o", "delta", "a"]), noise="none") == pytest.approx(declared)
    clean = LinearWorld(do=16, da=4)
    assert LinearLAM(dz=4).fit(clean).score(clean) == pytest.approx(2.0, abs=1e-9)


# --------------------------------------------------------------------------- fit forms
class Stream:
    """Any object with a moments() method is a fit source."""

    def __init__(self, m):
        self.m = m

    def moments(self):
        return self.m


def test_fit_forms_agree(data):
    o, on, a = data["o"], data["o_next"], data["a"]
    m = moments_from_transitions(o, on, a)
    fits = {
        "arrays": LinearLAM(dz=2).fit(o, on, a),
        "sklearn form": LinearLAM(dz=2).fit(np.hstack([o, on]), a),
        "moments": LinearLAM(dz=2).fit(m),
        "source": LinearLAM(dz=2).fit(Stream(m)),
        "functional": lamfast.fit(m, 2),
    }
    for name, lam in fits.items():
        for attr in ("A_", "B_", "C_", "D_", "spectrum_"):
            assert_array_equal(getattr(lam, attr), getattr(fits["arrays"], attr), err_msg=name)
    assert isinstance(fits["functional"], LinearLAM)
    one = LinearLAM(dz=2).fit(np.hstack([o, on]), a[:, 0])  # 1-d y: one action per row
    assert_array_equal(one.D_, LinearLAM(dz=2).fit(o, on, a[:, :1]).D_)
    assert_array_equal(
        fits["arrays"].transform(np.hstack([o, on])), fits["arrays"].transform(o, on)
    )


def test_fit_frame_source_and_frame_files(tmp_path, rng):
    """A frame file read by lamfast.sources.frames is a fit source (it has a moments() method)."""
    frames = rng.standard_normal((400, 3, 4)).cumsum(axis=0)
    actions = rng.standard_normal((399, 2))
    path = tmp_path / "frames.npz"
    np.savez(path, frames=frames, actions=actions)
    by_source = LinearLAM(dz=2).fit(lamfast.FrameSource(path))
    by_moments = LinearLAM(dz=2).fit(lamfast.frame_moments(path))
    assert_array_equal(by_source.D_, by_moments.D_)
    f = frames.reshape(400, -1)
    by_arrays = LinearLAM(dz=2).fit(f[:-1], f[1:], actions)
    assert_allclose(by_source.explained_variance_, by_arrays.explained_variance_, rtol=RTOL_SUM)
    assert_allclose(
        naive.projector(by_source.D_.T), naive.projector(by_arrays.D_.T), atol=ATOL_VEC, rtol=0
    )


@pytest.mark.parametrize(
    "params",
    [
        {"decoder": "learned", "encoder": "tied"},
        {"decoder": "learned", "encoder": "free", "kappa": 0.1},
        {"label_fraction": 0.01, "label_weighting": "batch"},
        {"decoder": "learned", "encoder": "free", "kappa": 0.1, "label_fraction": 0.01},
    ],
)
def test_estimator_equals_functional_fit(params):
    world = LinearWorld(do=16, da=4, db=4, noise="exo", sigma=2.0, seed=3)
    m = world.population_moments()
    est = LinearLAM(dz=4, seed=5, **params).fit(world)
    ref = lam_module_estimator.fit(m, 4, seed=5, **params)
    for attr in ("A_", "B_", "C_", "D_", "spectrum_", "E_", "h_"):
        got, want = getattr(est, attr), getattr(ref, attr)
        if want is None:
            assert got is None
        else:
            assert_array_equal(got, want, err_msg=attr)
    assert est.notes_ == ref.notes_


def test_supervised_components_are_orthonormal(data):
    o, on, a = data["o"], data["o_next"], data["a"]
    lam = LinearLAM(dz=2, label_fraction=0.01, label_weighting="batch").fit(o, on, a)
    assert lam.E_.shape == (DA, 2)
    comp = lam.components_
    assert_allclose(comp @ comp.T, np.eye(2), atol=ATOL_VEC)
    # Same row space as D.
    assert_allclose(naive.projector(comp.T), naive.projector(lam.D_.T), atol=ATOL_VEC)
    # Refit without labels: the action head disappears.
    lam.set_params(label_fraction=0.0).fit(o, on, a)
    assert lam.E_ is None


def test_pickle_round_trip(data):
    import pickle

    lam = LinearLAM(dz=2, kappa=0.1).fit(data["o"], data["o_next"])
    back = pickle.loads(pickle.dumps(lam))
    assert back.get_params() == lam.get_params()
    assert_array_equal(
        back.transform(data["o"], data["o_next"]), lam.transform(data["o"], data["o_next"])
    )


def test_refit_replaces_fitted_attributes(data):
    lam = LinearLAM(dz=3).fit(data["o"], data["o_next"])
    lam.set_params(dz=1).fit(data["o"], data["o_next"])
    assert lam.D_.shape == (1, DO) and lam.explained_variance_.shape == (1,)


# --------------------------------------------------------------------------- params, errors
def test_get_set_params():
    lam = LinearLAM(dz=4, kappa=0.1)
    assert lam.get_params() == {
        "dz": 4,
        "decoder": "identity",
        "encoder": "tied",
        "kappa": 0.1,
        "label_fraction": 0.0,
        "label_weighting": "paper",
        "solver": "eig",
        "seed": 0,
    }
    assert lam.set_params(dz=2, encoder="free") is lam
    assert (lam.dz, lam.encoder) == (2, "free")
    with pytest.raises(LamfastError, match="invalid parameter 'depth'.*valid parameters are"):
        lam.set_params(depth=3)
    with pytest.raises(ValueError):  # scikit-learn's contract: a ValueError
        lam.set_params(depth=3)


def test_not_fitted():
    lam = LinearLAM()
    assert not hasattr(lam, "components_")
    with pytest.raises(NotFittedError, match="not fitted"):
        lam.transform(np.zeros((2, 4)), np.zeros((2, 4)))
    assert issubclass(NotFittedError, LamfastError)


class CudaTensorLike:
    def __array__(self, dtype=None, copy=None):
        raise TypeError("can't convert cuda:0 device type tensor to numpy.")


def _fitted16():
    return LinearLAM(dz=2).fit(LinearWorld(do=16, da=2))


BAD = {
    "complex": (lambda: LinearLAM(2).fit(np.zeros((5, 4), complex)), "dtype complex128"),
    "strings": (lambda: LinearLAM(2).fit(np.full((5, 4), "x")), "must hold real numbers"),
    "objects": (lambda: LinearLAM(2).fit(object()), "dtype object"),
    "scalar": (lambda: LinearLAM(2).fit(3.0, 4.0), "got a scalar"),
    "1-d o": (lambda: LinearLAM(2).fit(np.zeros(5), np.zeros(5)), "must be 2-d"),
    "no rows": (lambda: LinearLAM(2).fit(np.zeros((0, 4)), np.zeros((0, 4))), "has no rows"),
    "rows differ": (
        lambda: LinearLAM(2).fit(np.zeros((5, 4)), np.zeros((5, 4)), np.zeros((4, 1))),
        "same number of rows: o has 5, o_next has 5, a has 4",
    ),
    "shapes differ": (
        lambda: LinearLAM(2).fit(np.zeros((5, 4)), np.zeros((5, 3))),
        r"o_next must have the same shape as o, got \(5, 3\) and \(5, 4\)",
    ),
    "odd X": (lambda: LinearLAM(2).fit(np.zeros((5, 5))), "side by side.*got 5 columns"),
    "nan": (
        lambda: LinearLAM(2).fit(
            np.zeros((9, 4)), np.where(np.arange(9)[:, None] == 5, np.nan, np.ones((9, 4)))
        ),
        "o_next row 5 contains NaN or inf",
    ),
    "cuda tensor": (
        lambda: LinearLAM(2).fit(CudaTensorLike(), np.zeros((5, 4))),
        r"o could not be converted.*cuda.*detach\(\)\.cpu\(\)",
    ),
    "dz > do": (lambda: LinearLAM(9).fit(np.ones((5, 4)), np.ones((5, 4))), "dz must be"),
    "bad decoder": (lambda: LinearLAM(2, decoder="deep").fit(LinearWorld(4, 2)), "decoder must"),
    "transform do": (
        lambda: _fitted16().transform(np.zeros((3, 10)), np.zeros((3, 10))),
        r"o must have 16 columns, got shape \(3, 10\)",
    ),
    "predict z": (
        lambda: _fitted16().predict_next(np.zeros((3, 16)), np.zeros((3, 5))),
        "z must have 2 columns",
    ),
    "score noise": (lambda: _fitted16().score(LinearWorld(16, 2), noise="gauss"), "noise must"),
    "score do": (lambda: _fitted16().score(LinearWorld(8, 2)), "data have do = 8"),
    "source + arrays": (
        lambda: LinearLAM(2).fit(LinearWorld(4, 2), np.zeros((3, 4))),
        "takes no o_next or a",
    ),
    "moments() type": (
        lambda: LinearLAM(2).fit(Stream("not moments")),
        r"Stream.moments\(\) must return Moments, got str",
    ),
    "a without o_next": (
        lambda: LinearLAM(2).fit(np.zeros((5, 4)), a=np.zeros(5)),
        "a needs o_next",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_error(case):
    call, message = BAD[case]
    with pytest.raises(LamfastError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_torch_tensors_if_installed(data):
    torch = pytest.importorskip("torch")
    o, on = torch.from_numpy(data["o"]).float(), torch.from_numpy(data["o_next"]).float()
    lam = LinearLAM(dz=2).fit(o, on)
    ref = LinearLAM(dz=2).fit(o.numpy(), on.numpy())
    assert_array_equal(lam.D_, ref.D_)
    with pytest.raises(LamfastError, match="could not be converted"):
        LinearLAM(dz=2).fit(o.requires_grad_(), on)


def test_public_api_exports():
    for name in (
        "LinearLAM",
        "LinearWorld",
        "Moments",
        "fit",
        "frame_moments",
        "FrameSource",
        "moments_from_rows",
        "moments_from_transitions",
        "moments_from_world",
        "probe_metrics",
        "top_eigh",
    ):
        assert name in lamfast.__all__ and hasattr(lamfast, name)
    assert isinstance(lamfast.moments_from_world(LinearWorld(4, 2)), Moments)


# --------------------------------------------------------------------------- scikit-learn
def test_sklearn_clone_and_check_is_fitted(data):
    sklearn_base = pytest.importorskip("sklearn.base")
    from sklearn.exceptions import NotFittedError as SkNotFitted
    from sklearn.utils.validation import check_is_fitted

    lam = LinearLAM(dz=2, decoder="learned", kappa=0.1, seed=7)
    with pytest.raises(SkNotFitted):
        check_is_fitted(lam)
    lam.fit(data["o"], data["o_next"])
    check_is_fitted(lam)
    twin = sklearn_base.clone(lam)
    assert twin.get_params() == lam.get_params()
    assert not hasattr(twin, "D_")
    assert_array_equal(twin.fit(data["o"], data["o_next"]).D_, lam.D_)


def test_sklearn_pipeline_probe_matches_naive(data):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    X = np.hstack([data["o"], data["o_next"]])
    pipe = Pipeline([("lam", LinearLAM(dz=2)), ("probe", LinearRegression())])
    pred = pipe.fit(X, data["a"]).predict(X)
    # naive: latent = projection of delta on the top-2 PCA directions, then lstsq with intercept.
    _, V = naive.frame_diff_pca(data["o"], data["o_next"], 2)
    Z = (data["o_next"] - data["o"]) @ V.T
    Z1 = np.hstack([Z, np.ones((N, 1))])
    coef, *_ = np.linalg.lstsq(Z1, data["a"], rcond=None)
    assert_allclose(pred, Z1 @ coef, atol=1e-8 * np.abs(data["a"]).max(), rtol=0)
    # Parameters route through the pipeline; the LAM as last step scores -recon.
    pipe.set_params(lam__dz=3)
    assert pipe.named_steps["lam"].dz == 3
    search = GridSearchCV(LinearLAM(), {"dz": [1, 3]}, cv=2).fit(X)
    assert search.best_params_ == {"dz": 3}  # more latent dims reconstruct better
