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
        (["--decoder", "learned", "--encoder", "free", "--solver", "eig"], "moment-gd"),
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


def test_progress_off_a_terminal_is_plain_lines(monkeypatch):
    """In a log (stderr not a terminal) the command line writes plain progress lines, never a
    redrawn bar; --no-progress writes none; library calls stay silent off a terminal."""
    import io

    from lamfast import config
    from lamfast._progress import Progress

    monkeypatch.setattr(config, "PROGRESS_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(config, "PROGRESS_PLAIN_SECONDS", 0.0)
    args = ["fit", "--do", "8", "--da", "2", "--dz", "2", "--source", "stream", "--rows", "5e4"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("stream: ") and " of 50,000 " in line for line in lines)
    assert "\r" not in result.stderr
    quiet = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    log = io.StringIO()  # not a terminal, and not the command line: silent
    with Progress(10, "x", stream=log) as bar:
        bar.update(5)
    assert log.getvalue() == ""


def test_reproduce_prints_each_panel_when_it_is_done(tmp_path, monkeypatch):
    from lamfast.experiments import reproduce as module

    seen = []
    real = module.run_points

    def spy(points, **kw):
        out = real(points, **kw)
        seen.append("computed")
        return out

    monkeypatch.setattr(module, "run_points", spy)
    messages = []
    module.reproduce(
        ["fig3-left", "fig3-right"], tmp_path, module.RunOptions(quick=True), jobs=1, plot=False,
        on_panel=lambda name, n: messages.append((name, n, list(seen))),
    )  # fmt: skip
    # both panel lines came while the points were still being computed, not after
    assert sorted(m[0] for m in messages) == ["fig3-left", "fig3-right"]
    assert all(m[2] == [] for m in messages)
    assert dict((m[0], m[1]) for m in messages) == {"fig3-left": 18, "fig3-right": 6}
