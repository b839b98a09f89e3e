"""``solver="auto"`` (the default of ``lamfast fit``): the closed form where one exists, else
moment-gd, and the result says which ran and why."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lamfast import LinearWorld, Variant, wishart_moments
from lamfast.cli import cli
from lamfast.solvers.closed_form import NoClosedFormError
from lamfast.solvers.solve import solve

# kappa = 0: the o-content of z is a flat direction of the loss, no closed form anywhere
FREE = Variant(decoder="learned", encoder="free")


def test_auto_is_eig_where_a_closed_form_exists():
    m = LinearWorld(do=8, da=2).population_moments()
    auto, eig = solve(m, 2, Variant(), "auto"), solve(m, 2, Variant(), "eig")
    assert auto.solver == "eig"
    np.testing.assert_array_equal(auto.B, eig.B)
    assert not any("solver auto" in n for n in auto.notes)


def test_auto_falls_back_to_moment_gd_and_says_why():
    m = wishart_moments(LinearWorld(do=8, da=2, seed=1), 100_000)
    with pytest.raises(NoClosedFormError) as e:
        solve(m, 2, FREE, "eig")
    auto, gd = solve(m, 2, FREE, "auto"), solve(m, 2, FREE, "moment-gd")
    assert auto.solver == "moment-gd"
    assert auto.notes[-1] == f"solver auto: {e.value.reason} has no closed form, so moment-gd ran"
    np.testing.assert_array_equal(auto.B, gd.B)  # the same run, not an approximation of it


def test_cli_fit_defaults_to_auto_and_reports_the_solver_that_ran():
    args = ["fit", "--do", "8", "--da", "2", "--dz", "2", "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert (out["solver"], out["solver_requested"]) == ("eig", "auto")
    free = ["--decoder", "learned", "--encoder", "free"]  # kappa = 0: a flat valley
    r = CliRunner().invoke(cli, [*args, *free, "--source", "wishart", "--rows", "1e5"])
    out = json.loads(r.output)
    assert (out["solver"], out["solver_requested"]) == ("moment-gd", "auto")
    assert any(n.startswith("solver auto: ") for n in out["notes"])
