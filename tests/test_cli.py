"""The command line: stdout, stderr and exit codes (docs/architecture.md, conventions)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lamfast.cli import cli

KEYS = {
    "act_mse",
    "obs_mse",
    "noi_mse",
    "recon",
    "llo",
    "angles_action",
    "source",
    "rows",
    "seconds",
}


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_fit_json_done_means():
    """The issue's acceptance command: sigma_exo = 2 captures the noise, so LLO is far below 2."""
    r = run(
        "fit",
        "--do",
        "128",
        "--da",
        "8",
        "--db",
        "8",
        "--noise",
        "exo",
        "--sigma",
        "2",
        "--dz",
        "8",
        "--source",
        "wishart",
        "--rows",
        "1e9",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert KEYS <= set(out)
    assert out["source"] == "wishart" and out["rows"] == 10**9
    assert out["llo"] < 0.5
    assert out["noi_mse"] < 0.1 and out["act_mse"] > 0.9
    assert len(out["angles_action"]) == 8 and "angles_noise" in out


def test_fit_table_default_world():
    r = run("fit")
    assert r.exit_code == 0
    assert "LLO      2.000000" in r.stdout
    assert "act_mse  0.000000" in r.stdout
    assert r.stderr == ""


def test_fit_stream_small():
    r = run("fit", "--do", "16", "--da", "4", "--source", "stream", "--rows", "2e4", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rows"] == 20000 and out["source"] == "stream"
    assert out["act_mse"] < 1e-8  # noise-free: Delta = X a exactly, dz = da


def test_fit_supervised_and_learned():
    r = run(
        "fit",
        "--noise",
        "exo",
        "--sigma",
        "2",
        "--label-fraction",
        "0.01",
        "--label-weighting",
        "batch",
        "--json",
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["llo"] > 1.9
    r = run("fit", "--decoder", "learned", "--encoder", "free", "--kappa", "0.1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["llo"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sigma", "-1"], "sigma"),
        (["--dz", "200"], "dz"),
        (["--dz", "0"], "dz"),
        (["--chi", "1.5"], "chi"),
        (["--chi", "-0.1"], "chi"),
        (["--noise", "pink"], "--noise"),
        (["--rows", "abc", "--source", "stream"], "--rows"),
        (["--rows", "1.5", "--source", "stream"], "--rows"),
        (["--kappa", "-1"], "kappa"),
        (["--label-fraction", "2"], "label_fraction"),
        (["--da", "200"], "da"),
        (["--decoder", "learned", "--encoder", "free"], "moment-gd"),
        (["--noise", "uniform", "--sigma", "1", "--source", "wishart"], "Gaussian"),
        (["--bogus"], "bogus"),
    ],
)
def test_bad_input_one_line_exit_2(args, message):
    r = run("fit", *args)
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert "Traceback" not in r.stderr


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and "lamfast" in r.stdout and "numba" in r.stdout
    r = run("fit", "-h")
    assert r.exit_code == 0 and "Example" in r.stdout


def test_info_runs():
    r = run("info")
    assert r.exit_code == 0
    for key in ("numba", "numpy", "OPENBLAS_CORETYPE", "extra: dask"):
        assert key in r.stdout
