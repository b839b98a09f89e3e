"""The ``lamfast`` command line: thin click commands over the library (STYLE 15).

Errors from bad input (``LamfastError`` or a click usage error) print one line,
``Error: <message>``, on stderr and exit with status 2; no traceback, no partial output.
"""

from __future__ import annotations

import json
import sys

import click
import numpy as np

from . import __version__
from .errors import LamfastError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Rows(click.ParamType):
    """A whole number of rows, written as ``1000000`` or ``1e6``."""

    name = "ROWS"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not np.isfinite(number) or number < 2 or number != int(number):
            self.fail(f"{value!r} is not a whole number >= 2", param, ctx)
        return int(number)


def _versions() -> str:
    import numba
    import scipy

    return (
        f"lamfast {__version__} (numba {numba.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, python {sys.version.split()[0]})"
    )


class LamfastGroup(click.Group):
    """A click group whose errors are one line on stderr, with exit status 2 for bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code or 1)
        except LamfastError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=LamfastGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", message=_versions())
def cli():
    """lamfast: what does a latent action model's latent capture?

    The linear theory of Zhang, Pearce et al. (arXiv 2506.15691), exact and fast.
    """


def world_options(f):
    """Flags that describe a simulated ``LinearWorld``."""
    options = [
        click.option(
            "--do", "do", type=int, default=128, show_default=True, help="Observation dim."
        ),
        click.option("--da", type=int, default=8, show_default=True, help="Action dim."),
        click.option("--db", type=int, default=8, show_default=True, help="Exo-noise dim."),
        click.option(
            "--noise",
            type=click.Choice(["none", "gaussian", "exo", "uniform"]),
            default="none",
            show_default=True,
            help="Exogenous noise kind.",
        ),
        click.option(
            "--sigma", type=float, default=0.0, show_default=True, help="Noise scale >= 0."
        ),
        click.option(
            "--chi",
            type=float,
            default=0.0,
            show_default=True,
            help="Policy determinism in [0, 1].",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="World seed (>= 0)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def variant_options(f):
    """Flags that choose the LAM variant and solver."""
    options = [
        click.option("--dz", type=int, default=8, show_default=True, help="Latent dim, 1..do."),
        click.option(
            "--decoder",
            type=click.Choice(["identity", "learned"]),
            default="identity",
            show_default=True,
            help="identity fixes A = I.",
        ),
        click.option(
            "--encoder",
            type=click.Choice(["tied", "free"]),
            default="tied",
            show_default=True,
            help="tied forces C = -D (z sees only the frame difference).",
        ),
        click.option(
            "--kappa", type=float, default=0.0, show_default=True, help="Augmentation >= 0."
        ),
        click.option(
            "--label-fraction",
            type=float,
            default=0.0,
            show_default=True,
            help="Fraction of rows with action labels, in [0, 1].",
        ),
        click.option(
            "--label-weighting",
            type=click.Choice(["paper", "batch"]),
            default="paper",
            show_default=True,
            help="paper: w = m; batch: w = 1 - (1 - m)^128 (authors' scripts).",
        ),
        click.option(
            "--solver",
            type=click.Choice(["eig"]),
            default="eig",
            show_default=True,
            help="eig: closed forms (DESIGN 1.1).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command(context_settings=CONTEXT)
@world_options
@click.option(
    "--source",
    type=click.Choice(["population", "wishart", "stream"]),
    default="population",
    show_default=True,
    help="Exact moments, a direct Wishart draw of --rows rows, or streamed rows.",
)
@click.option(
    "--rows", type=Rows(), default="1e6", show_default=True, help="Rows (wishart, stream)."
)
@variant_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
def fit(
    do,
    da,
    db,
    noise,
    sigma,
    chi,
    seed,
    source,
    rows,
    dz,
    decoder,
    encoder,
    kappa,
    label_fraction,
    label_weighting,
    solver,
    as_json,
    progress,
):
    """Fit a linear LAM to a simulated world and probe its latent.

    \b
    Example:
      lamfast fit --noise exo --sigma 2 --dz 8 --source wishart --rows 1e9 --json
    """
    from .experiments import run_fit

    result = run_fit(
        world=dict(do=do, da=da, db=db, noise=noise, sigma=sigma, chi=chi, seed=seed),
        variant=dict(
            decoder=decoder,
            encoder=encoder,
            kappa=kappa,
            label_fraction=label_fraction,
            label_weighting=label_weighting,
        ),
        dz=dz,
        source=source,
        rows=rows,
        solver=solver,
        progress=progress,
    )
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(format_fit(result))


def format_fit(r: dict) -> str:
    """A readable table of one fit."""
    w = r["world"]
    lines = [
        f"world   do={w['do']} da={w['da']} db={w['db']} noise={w['noise']} sigma={w['sigma']:g} "
        f"chi={w['chi']:g} seed={w['seed']}",
        f"source  {r['source']}" + (f" ({r['rows']:.3g} rows)" if r["rows"] else ""),
        f"model   dz={r['dz']} "
        + " ".join(f"{k}={v}" for k, v in r["variant"].items())
        + f" solver={r['solver']}",
        "",
        f"  act_mse  {r['act_mse']:.6f}   (0 = latent predicts the action)",
        f"  obs_mse  {r['obs_mse']:.6f}   (1 = latent knows nothing of the observation)",
        f"  noi_mse  {r['noi_mse']:.6f}   (1 = latent knows nothing of the noise)",
        f"  recon    {r['recon']:.6f}   (LAM loss per coordinate)",
        f"  LLO      {r['llo']:.6f}   (optimum 2)",
        "",
        "  top eigenvalues  "
        + " ".join(f"{x:.4g}" for x in r["spectrum"][: min(12, len(r["spectrum"]))]),
        "  angles to span(X), deg  " + " ".join(f"{np.degrees(x):.1f}" for x in r["angles_action"]),
    ]
    if "angles_noise" in r:
        lines.append(
            "  angles to span(Y), deg  "
            + " ".join(f"{np.degrees(x):.1f}" for x in r["angles_noise"])
        )
    lines += [f"  note: {n}" for n in r["notes"]]
    lines.append(f"\n{r['seconds']:.3f} s")
    return "\n".join(lines)


@cli.command(context_settings=CONTEXT)
def info():
    """Versions, BLAS, threads, numba cache and optional extras.

    \b
    Example:
      lamfast info
    """
    from .info import machine_info

    for key, value in machine_info().items():
        click.echo(f"{key:<22} {value}")


@cli.command(context_settings=CONTEXT)
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run of every benchmark.")
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the table as Markdown (for the README).",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, writable=True), help="Write raw results."
)
def bench(quick, markdown, json_path):
    """Side-by-side benchmark table: stream, Wishart, eigensolver, cold start.

    Medians of several runs, baselines (numpy, scikit-learn, LAPACK, ARPACK) in the same run,
    machine limits measured in the same run.

    \b
    Example:
      lamfast bench --quick
    """
    import os
    import tempfile

    from .benchmarks import format_table, run_bench

    result = run_bench(quick=quick, log=lambda msg: click.echo(msg, err=True))
    click.echo(format_table(result))
    for path, text in (
        (markdown, format_table(result, markdown=True) if markdown else None),
        (json_path, json.dumps(result, indent=1) if json_path else None),
    ):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as f:
                f.write(text)
            os.replace(f.name, path)


def main(argv=None):
    """Console-script entry point."""
    cli.main(args=argv, prog_name="lamfast")
