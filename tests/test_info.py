"""``lamfast info``: what it reports, and that missing extras are reported, not fatal."""

from __future__ import annotations

import importlib.util
import json

import numba
import numpy as np
import scipy
from click.testing import CliRunner

import lamfast
from lamfast.cli import cli
from lamfast.info import EXTRAS, machine_info


def test_info_reports_versions_blas_threads_cache_and_extras():
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    out = result.output
    for key, value in (
        ("lamfast", lamfast.__version__),
        ("numpy", np.__version__),
        ("scipy", scipy.__version__),
        ("numba", numba.__version__),
    ):
        assert any(line.split()[:2] == [key, value] for line in out.splitlines()), key
    for key in (
        "blas",
        "OPENBLAS_CORETYPE",
        "numba threading layer",
        "numba threads",
        "numba cache dir",
        "extra: dask",
        "extra: matplotlib",
        "extra: zarr",
    ):
        assert f"\n{key} " in "\n" + out, key


def test_info_json_is_machine_readable():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["numba"] == numba.__version__
    assert set(f"extra: {e}" for e in EXTRAS) <= set(info)


def test_missing_extras_are_reported_without_failing(monkeypatch):
    missing = {"dask", "distributed", "matplotlib", "zarr", "sklearn"}
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] in missing else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    assert "extra: dask            missing (dask, distributed)" in result.output
    assert "extra: matplotlib      missing (matplotlib)" in result.output
    assert "extra: zarr            missing (zarr)" in result.output


def test_extra_present_only_when_all_its_modules_are(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "distributed" else real(name, *a, **k),
    )
    status = machine_info()["extra: dask"]
    assert status.startswith("missing") and "distributed" in status
