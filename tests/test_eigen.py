"""Truncated eigensolver against np.linalg.eigh (docs/architecture.md, conventions)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lamfast import LamfastError, LinearWorld, top_eigh

from . import naive


def _spd(rng, d, gap=True):
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = np.sort(rng.uniform(0.1, 1.0, d))[::-1] if not gap else np.geomspace(10.0, 0.01, d)
    return (Q * w) @ Q.T


@pytest.mark.parametrize("method", ["auto", "dense", "subset", "arpack"])
@pytest.mark.parametrize("d, k", [(30, 1), (60, 5), (200, 16)])
def test_top_eigh_matches_eigh(rng, method, d, k):
    C = _spd(rng, d)
    w, V = top_eigh(C, k, method=method)
    w_ref, V_ref = naive.top_eigh(C, k)
    norm = np.linalg.norm(C, 2)
    # Backward-stable solvers: eigenvalue errors O(d eps ||C||).
    assert_allclose(w, w_ref, rtol=0, atol=1e3 * d * np.finfo(float).eps * norm)
    assert np.all(np.diff(w) <= 0)
    assert_allclose(V.T @ V, np.eye(k), atol=1e-10)
    assert np.linalg.norm(C @ V - V * w, axis=0).max() <= 1e-9 * norm
    assert_allclose(naive.projector(V), naive.projector(V_ref), atol=1e-8)


def test_sign_rule_is_deterministic(rng):
    C = _spd(rng, 40)
    _, V1 = top_eigh(C, 4, method="dense")
    _, V2 = top_eigh(C, 4, method="subset")
    _, V3 = top_eigh(C, 4, method="arpack")
    for V in (V1, V2, V3):
        idx = np.argmax(np.abs(V), axis=0)
        assert np.all(V[idx, np.arange(4)] > 0)
    assert_allclose(V1, V2, atol=1e-9)
    assert_allclose(V1, V3, atol=1e-9)


def test_world_spectrum():
    """Cov(delta) of a noise-free world: da unit eigenvalues on span(X), zero elsewhere."""
    w = LinearWorld(do=64, da=6)
    vals, V = top_eigh(w.population_moments().block_cov("delta"), 6)
    assert_allclose(vals, 1.0, atol=1e-12)
    assert_allclose(naive.projector(V), naive.projector(w.X), atol=1e-10)


@pytest.mark.parametrize(
    "C, k, message",
    [
        (np.zeros((3, 4)), 1, "square"),
        (np.eye(3), 0, "k must"),
        (np.eye(3), 4, "k must"),
        (np.full((2, 2), np.nan), 1, "NaN"),
    ],
)
def test_bad_input(C, k, message):
    with pytest.raises(LamfastError, match=message):
        top_eigh(C, k)
    with pytest.raises(LamfastError, match="method"):
        top_eigh(np.eye(3), 1, method="magic")
