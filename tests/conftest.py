"""Shared fixtures: the test seed (docs/architecture.md, conventions) and tolerances by dtype
(docs/architecture.md, conventions)."""

from __future__ import annotations

import os

import numpy as np
import pytest

SEED = int(os.environ.get("LAMFAST_TEST_SEED", "20250618"))

# scikit-learn's _testing.assert_allclose conventions.
RTOL = {np.float64: 1e-7, np.float32: 1e-4}


def pytest_report_header(config):
    return f"LAMFAST_TEST_SEED={SEED}"


@pytest.fixture
def seed() -> int:
    """The suite's seed; override with LAMFAST_TEST_SEED to reproduce a failure."""
    return SEED


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def fit_json(args: list[str]) -> dict:
    """``lamfast <args> --json`` through click's runner: the printed object without ``seconds``
    (the one field that differs between two runs of the same fit)."""
    import json

    from click.testing import CliRunner

    from lamfast.cli import cli

    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    out.pop("seconds")
    return out
