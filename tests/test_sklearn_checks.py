"""scikit-learn's own estimator checks on LinearLAM, where they apply.

``check_estimator`` feeds estimators ``X`` of its own making. LinearLAM reads ``X`` as
``[o | o_next]`` side by side, so ``X`` must have an even number of columns; most checks use 3 or
5 columns and cannot apply (the estimator then refuses with "X needs an even number of columns",
which these tests require, so the list below cannot hide another failure). Every other check
must pass.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lamfast import LamfastError, LinearLAM

sklearn = pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

ODD_WIDTH = "X needs an even number of columns"
# check -> why it cannot apply to an estimator of transitions [o | o_next]
INAPPLICABLE = {
    name: "its X has 3 or 5 columns, which cannot be split into [o | o_next]"
    for name in (
        "check_fit_score_takes_y",
        "check_dont_overwrite_parameters",
        "check_estimators_dtypes",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",  # NaN and inf are refused too: tests/test_api.py
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_dict_unchanged",
        "check_fit2d_predict1d",
    )
}


@pytest.fixture(scope="module")
def results():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return check_estimator(LinearLAM(dz=1), on_fail=None)


def test_applicable_checks_pass(results):
    failed = [
        (r["check_name"], str(r["exception"]).splitlines()[0])
        for r in results
        if r["status"] == "failed" and r["check_name"] not in INAPPLICABLE
    ]
    assert failed == []
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    # the ones this project fixed: n_features_in_, sparse input, array-likes that refuse
    # __array_function__ (check_transformer_data_not_an_array needs an even width: below),
    # complex data, empty data, object arrays of numbers
    for name in (
        "check_n_features_in_after_fitting",
        "check_estimator_sparse_array",
        "check_estimator_sparse_matrix",
        "check_complex_data",
        "check_estimators_empty_data_messages",
        "check_dtype_object",
    ):
        assert name in passed, name


def test_inapplicable_checks_fail_only_on_the_width(results):
    for r in results:
        if r["check_name"] in INAPPLICABLE and r["status"] == "failed":
            msg = str(r["exception"])
            assert ODD_WIDTH in msg or "doesn't check for NaN" in msg, (r["check_name"], msg)


class _NotAnArray:
    """An array-like with ``__array__`` that refuses ``__array_function__`` (like sklearn's)."""

    def __init__(self, data):
        self.data = np.asarray(data)

    def __array__(self, dtype=None, copy=None):
        return self.data

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError("Don't want to call array_function " + func.__name__)


def test_array_likes_without_array_function(rng):
    o = rng.standard_normal((50, 4))
    X = np.hstack([o, o + rng.standard_normal((50, 4))])
    y = rng.standard_normal(50)
    lam = LinearLAM(dz=2).fit(_NotAnArray(X), _NotAnArray(y))
    assert lam.n_features_in_ == 8
    assert np.array_equal(lam.transform(_NotAnArray(X)), lam.transform(X))


def test_messages_name_the_problem(rng):
    import scipy.sparse

    with pytest.raises(LamfastError, match="sparse input is not supported"):
        LinearLAM(dz=1).fit(scipy.sparse.csr_matrix(np.ones((5, 4))))
    with pytest.raises(LamfastError, match="even number of columns: .* got 3 columns"):
        LinearLAM(dz=1).fit(rng.standard_normal((10, 3)), rng.standard_normal(10))
    with pytest.raises(LamfastError, match="o_next must have the same shape as o"):
        LinearLAM(dz=1).fit(np.zeros((10, 3)), np.zeros((10, 5)))  # not an X, y pair
    lam = LinearLAM(dz=1).fit(rng.standard_normal((10, 4)))
    with pytest.raises(LamfastError, match="X has 6 features, but LinearLAM is expecting 4"):
        lam.transform(rng.standard_normal((10, 6)))
