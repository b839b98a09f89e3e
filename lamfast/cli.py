"""The ``lamfast`` command line: thin click commands over the library (docs/architecture.md,
conventions).

Errors from bad input (``LamfastError`` or a click usage error) print one line,
``Error: <message>``, on stderr and exit with status 2; no traceback, no partial output.
"""

from __future__ import annotations

import json
import sys

import click
import numba
import numpy as np
import scipy

from ._files import atomic_write_text, check_output
from ._version import __version__
from .benchmarks import format_table, run_bench
from .errors import LamfastError
from .experiments.fit import run_fit
from .experiments.fitframes import encode_frames, fit_frames, save_lam
from .experiments.panels import FIG4_MIDDLE_NOISES, SOLVER_CHOICES, RunOptions
from .experiments.reproduce import reproduce as run_reproduce
from .experiments.sweep import sweep as run_sweep
from .info import machine_info
from .solvers.variant import DECODERS, ENCODERS, SOLVERS, WEIGHTINGS
from .sources.export import write_world
from .sources.frames.preprocess import Preprocess
from .sources.frames.source import ACTION_KINDS
from .sources.gridworld import POLICIES, write_gridworld
from .sources.simulated import SOURCES
from .sources.world import NOISE_KINDS, LinearWorld

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


# Options shared by several commands.
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: usable cores].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


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
            type=click.Choice(NOISE_KINDS),
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
            type=click.Choice(DECODERS),
            default="identity",
            show_default=True,
            help="identity fixes A = I.",
        ),
        click.option(
            "--encoder",
            type=click.Choice(ENCODERS),
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
            type=click.Choice(WEIGHTINGS),
            default="paper",
            show_default=True,
            help="paper: w = m; batch: w = 1 - (1 - m)^128 (authors' scripts).",
        ),
        click.option(
            "--solver",
            type=click.Choice(SOLVERS),
            default="eig",
            show_default=True,
            help="eig: closed forms (docs/theory.md); moment-gd: Adam on the exact loss; "
            "sgd: the paper's minibatch protocol.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def frame_options(f):
    """Flags for reading frame files (only with FRAMES_PATH)."""
    options = [
        click.option(
            "--actions",
            "actions",
            type=click.Choice(ACTION_KINDS),
            default="auto",
            show_default=True,
            help="How to read actions: integer ids are discrete (one-hot) under auto.",
        ),
        click.option(
            "--n-actions", type=click.IntRange(min=1), default=None, help="Discrete action count."
        ),
        click.option("--crop", default=None, help="Crop frames to rows y0:y1, columns x0:x1."),
        click.option(
            "--downsample",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Block-average frames by this factor.",
        ),
        click.option(
            "--scale",
            type=float,
            default=None,
            help="Multiply pixel values (default 1/255 for uint8, else 1).",
        ),
        click.option(
            "--chunk-frames",
            type=click.IntRange(min=1),
            default=None,
            help="Frames read per chunk (bounds memory; never changes results).",
        ),
        click.option(
            "--clean-basis",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Noise basis (.npy, do x k) removed from the frame differences before fitting.",
        ),
        click.option(
            "--noop-action",
            type=click.IntRange(min=0),
            default=None,
            help="Clean with the top --clean-k directions of this action's frame differences.",
        ),
        click.option(
            "--clean-k",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Noise directions estimated from no-op transitions.",
        ),
        click.option(
            "--accuracy/--no-accuracy",
            default=True,
            show_default=True,
            help="Second pass: argmax accuracy of the action probe (discrete actions).",
        ),
        click.option(
            "--out",
            "out",
            type=click.Path(dir_okay=False),
            default=None,
            help="Save the fitted LAM to this .npz (for lamfast encode).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command(context_settings=CONTEXT)
@click.argument("frames_path", required=False, type=click.Path(exists=True))
@world_options
@click.option(
    "--source",
    type=click.Choice(SOURCES),
    default="population",
    show_default=True,
    help="Exact moments, a direct Wishart draw of --rows rows, or streamed rows.",
)
@click.option(
    "--rows", type=Rows(), default="1e6", show_default=True, help="Rows (wishart, stream)."
)
@variant_options
@frame_options
@json_option
@progress_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="Compute the moments (stream or frame files) on a local Dask cluster of N "
    "single-threaded processes (needs lamfast[dask]).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Compute the moments on an existing Dask cluster, e.g. tcp://10.0.0.1:8786 (its "
    "workers must see FRAMES_PATH at the same path).",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Save progress to this .npz file; re-running the same command resumes from it "
    "(with --noop-action also NAME.noop.npz).",
)
@click.pass_context
def fit(
    ctx,
    frames_path,
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
    workers,
    scheduler,
    checkpoint,
    **frame_kw,
):
    """Fit a linear LAM to a simulated world, or to FRAMES_PATH, and probe its latent.

    Without FRAMES_PATH the data come from a simulated world (world flags). With it, frames are
    streamed from a .npy / .npz / directory / zarr dataset (see docs/frames.md).

    \b
    Examples:
      lamfast fit --noise exo --sigma 2 --dz 8 --source wishart --rows 1e9 --json
      lamfast fit data.npz --dz 8 --json
      lamfast fit data.npz --dz 4 --noop-action 4 --clean-k 4 --out fit.npz
    """
    variant = dict(
        decoder=decoder,
        encoder=encoder,
        kappa=kappa,
        label_fraction=label_fraction,
        label_weighting=label_weighting,
    )
    if frames_path is not None:
        world_flags = ("do", "da", "db", "noise", "sigma", "chi", "source", "rows")
        given = [
            n
            for n in world_flags
            if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise click.UsageError(f"--{given[0]} describes a simulated world, not frame files")
        scale = dict(workers=workers, scheduler=scheduler, checkpoint=checkpoint)
        _fit_frames_cmd(
            frames_path, dz, variant, solver, seed, as_json, progress, **scale, **frame_kw
        )
        return
    given = [
        n
        for n, v in frame_kw.items()
        if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT
    ]
    if given:
        flag = given[0].replace("_", "-")
        raise click.UsageError(f"--{flag} applies to frame files (give FRAMES_PATH)")

    result = run_fit(
        world=dict(do=do, da=da, db=db, noise=noise, sigma=sigma, chi=chi, seed=seed),
        variant=variant,
        dz=dz,
        source=source,
        rows=rows,
        solver=solver,
        progress=progress,
        workers=workers,
        scheduler=scheduler,
        checkpoint=checkpoint,
    )
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(format_fit(result))


def _fit_frames_cmd(
    path, dz, variant, solver, seed, as_json, progress, *, actions, n_actions, crop, downsample,
    scale, chunk_frames, clean_basis, noop_action, clean_k, accuracy, out, workers, scheduler,
    checkpoint,
):  # fmt: skip

    if clean_basis is not None and noop_action is not None:
        raise click.UsageError("give --clean-basis or --noop-action, not both")
    if out is not None:
        check_output(out)  # before the fit, which may take hours
    result, lam = fit_frames(
        path,
        dz,
        variant,
        solver=solver,
        seed=seed,
        preprocess=Preprocess(crop=crop, downsample=downsample, scale=scale),
        actions=actions,
        n_actions=n_actions,
        chunk_frames=chunk_frames,
        clean_basis=clean_basis,
        noop_action=noop_action,
        clean_k=clean_k,
        accuracy=accuracy,
        progress=progress,
        workers=workers,
        scheduler=scheduler,
        checkpoint=checkpoint,
    )
    if out is not None:
        result["out"] = str(save_lam(lam, out))
    click.echo(json.dumps(result) if as_json else format_frames_fit(result))


def format_frames_fit(r: dict) -> str:
    """A readable table of a fit to frame files."""
    v = r["variant"]
    lines = [
        f"data    {r['path']}: {r['frames']} frames, {r['transitions']} transitions, "
        f"frame {'x'.join(map(str, r['frame_shape']))} -> do={r['do']}",
        f"actions {r['actions'] or 'none'}" + (f" (da={r['da']})" if r["da"] else ""),
        f"model   dz={r['dz']} "
        + " ".join(f"{k}={x}" for k, x in v.items())
        + f" solver={r['solver']}",
        "",
        "  frame-difference covariance, top eigenvalues (total variance "
        f"{r['delta_total_variance']:.4g}):",
        "    " + " ".join(f"{x:.4g}" for x in r["delta_spectrum"][:12]),
        f"  recon    {r['recon']:.6f}   (LAM loss per coordinate)",
        f"  obs_mse  {r['obs_mse']:.6f}   (1 = latent knows nothing of the observation)",
    ]
    if "act_mse" in r:
        lines.append(f"  act_mse  {r['act_mse']:.6f}   (chance {r['act_mse_chance']:g})")
    if "act_acc" in r:
        lines.append(
            f"  act_acc  {r['act_acc']:.6f}   (chance {r['act_acc_chance']:.6f}, majority action)"
        )
    if "recon_clean" in r:
        lines += [
            "",
            f"  cleaned: {r['clean_dim']} noise direction(s) from {r['clean_from']} removed "
            "from delta",
            f"  recon    {r['recon_clean']:.6f}",
            f"  obs_mse  {r['obs_mse_clean']:.6f}",
        ]
        if "act_mse_clean" in r:
            lines.append(
                f"  act_mse  {r['act_mse_clean']:.6f}   (was {r['act_mse']:.6f}, improvement "
                f"{r['act_mse'] - r['act_mse_clean']:+.6f})"
            )
        if "act_acc_clean" in r:
            lines.append(
                f"  act_acc  {r['act_acc_clean']:.6f}   (was {r['act_acc']:.6f}, improvement "
                f"{r['act_acc_clean'] - r['act_acc']:+.6f})"
            )
    lines += [f"  note: {n}" for n in r["notes"]]
    if "out" in r:
        lines.append(f"  saved {r['out']}")
    lines.append(f"\n{r['seconds']:.3f} s")
    return "\n".join(lines)


@cli.command(context_settings=CONTEXT)
@click.argument("fit_path", type=click.Path(exists=True, dir_okay=False))
@click.argument("frames_path", type=click.Path(exists=True))
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Latents (.npy, n x dz)."
)
@click.option("--chunk-frames", type=click.IntRange(min=1), default=None, help="Frames per chunk.")
@progress_option
def encode(fit_path, frames_path, out, chunk_frames, progress):
    """Encode the transitions of FRAMES_PATH with a LAM saved by `lamfast fit ... --out`.

    Writes z = C o + D o' for every transition (episode boundaries respected), one row each.

    \b
    Example:
      lamfast encode fit.npz new_frames.npz --out z.npy
    """

    r = encode_frames(fit_path, frames_path, out, chunk_frames=chunk_frames, progress=progress)
    click.echo(f"wrote {r['out']}: {r['transitions']} x {r['dz']} latents")


@cli.group(context_settings=CONTEXT)
def simulate():
    """Write simulated datasets in the formats `lamfast fit FRAMES_PATH` reads.

    \b
    Examples:
      lamfast simulate linear --noise exo --sigma 2 --rows 1e6 --out data/
      lamfast simulate gridworld --out grid.npz
    """


@simulate.command("gridworld", context_settings=CONTEXT)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output .npz.")
@click.option("--episodes", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--length", type=click.IntRange(min=2), default=50, show_default=True)
@click.option(
    "--noise",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Intensity of a lit noise pixel in the bottom row (0: no noise).",
)
@click.option(
    "--noise-p", type=click.FloatRange(0, 1), default=0.5, show_default=True,
    help="Probability that a noise pixel is lit.",
)  # fmt: skip
@click.option("--policy", type=click.Choice(POLICIES), default="uniform", show_default=True)
@click.option(
    "--p", "p", type=click.FloatRange(0, 1), default=0.8, show_default=True,
    help="Correlated policy: probability of following the snake.",
)  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def simulate_gridworld_cmd(out, episodes, length, noise, noise_p, policy, p, seed):
    """The paper's 4x4 grid world (5 actions, Bernoulli noise row) as frames/actions/episodes.

    \b
    Example:
      lamfast simulate gridworld --noise 1 --policy correlated --out grid.npz
    """

    r = write_gridworld(
        out, episodes=episodes, length=length, noise=noise, noise_p=noise_p, policy=policy,
        p=p, seed=seed,
    )  # fmt: skip
    click.echo(f"wrote {r['out']}: {r['frames']} frames ({episodes} episodes of {length})")


@simulate.command("linear", context_settings=CONTEXT)
@world_options
@click.option("--rows", type=Rows(), required=True, help="Transitions to write.")
@click.option("--out", type=click.Path(), required=True, help="Output directory, or a .npz file.")
@click.option("--block-rows", type=click.IntRange(min=2), default=None, help="Rows per block.")
@progress_option
def simulate_linear_cmd(do, da, db, noise, sigma, chi, seed, rows, out, block_rows, progress):
    """Write a LinearWorld's stream (o, o_next, actions, noise; world.json spec) to disk.

    \b
    Example:
      lamfast simulate linear --noise exo --sigma 2 --rows 1e6 --out data/
    """

    world = LinearWorld(do=do, da=da, db=db, noise=noise, sigma=sigma, chi=chi, seed=seed)
    r = write_world(world, rows, out, block_rows=block_rows, progress=progress)
    click.echo(f"wrote {r['out']}: {r['rows']} transitions (block rows {r['block_rows']})")


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
@click.argument("panels", nargs=-1, metavar="[PANEL]...")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="lamfast-out",
    show_default=True,
    help="Output folder: <panel>.csv, <panel>.png, report.md.",
)
@click.option(
    "--solver",
    type=click.Choice(SOLVER_CHOICES),
    default="auto",
    show_default=True,
    help="auto: eig where the variant is identifiable, moment-gd elsewhere.",
)
@click.option(
    "--source",
    type=click.Choice(SOURCES),
    default="population",
    show_default=True,
    help="Exact moments, or finite-sample moments of --rows rows.",
)
@click.option("--rows", type=Rows(), default=None, help="Rows (wishart, stream).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed.")
@click.option(
    "--do",
    "do",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Observation dim.",
)
@click.option("--quick", is_flag=True, help="Thin grids (a few points per axis).")
@click.option(
    "--fig4-middle-noise",
    type=click.Choice(FIG4_MIDDLE_NOISES),
    default="gaussian",
    show_default=True,
    help="gaussian: the paper's text; uniform: the authors' augmentation script.",
)
@click.option(
    "--label-weighting",
    type=click.Choice(WEIGHTINGS),
    default="batch",
    show_default=True,
    help="fig4-right lines drawn solid: batch (authors' scripts) or paper (w = m).",
)
@jobs_option
@click.option("--force", is_flag=True, help="Overwrite this run's files if they exist in --out.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write PNG figures.")
@progress_option
def reproduce(
    panels,
    out,
    solver,
    source,
    rows,
    seed,
    do,
    quick,
    fig4_middle_noise,
    label_weighting,
    jobs,
    force,
    plot,
    progress,
):
    """Regenerate the paper's simulation panels: CSV + PNG per panel and one report.md.

    PANEL is any of fig3-left fig3-middle fig3-right fig4-left fig4-middle fig4-right (default:
    all six), or gridworld (the linear grid-world study on simulated frame files; run only when
    named). Files of this run that already exist in --out are an error unless --force; other
    files there are left alone.

    \b
    Example:
      lamfast reproduce --out lamfast-out
      lamfast reproduce fig3-right --source wishart --rows 1e6 --out small
      lamfast reproduce gridworld --out grid
    """

    options = RunOptions(
        solver=solver,
        source=source,
        rows=rows,
        seed=seed,
        do=do,
        quick=quick,
        fig4_middle_noise=fig4_middle_noise,
        label_weighting=label_weighting,
    )
    result = run_reproduce(
        panels, out, options, jobs=jobs, force=force, progress=progress, plot=plot
    )
    passed, computed = result["checks"]
    for name, n in result["rows"].items():
        click.echo(f"{name:<12} {n:4d} rows")
    if not result["figures"]:
        click.echo("figures skipped" + ("" if not plot else ": matplotlib is not installed"))
    checks = f"{passed} of {computed} claim checks hold; " if computed else ""
    click.echo(
        f"{checks}wrote {len(result['files'])} files to "
        f"{result['out']} in {result['seconds']:.1f} s (see report.md)"
    )


@cli.command(context_settings=CONTEXT)
@click.argument("grid", type=click.Path(dir_okay=False))
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Output CSV (atomic write)."
)
@jobs_option
@click.option("--force", is_flag=True, help="Recompute every row (ignore finished rows).")
@progress_option
def sweep(grid, out, jobs, force, progress):
    """Fit every point of a TOML grid of axes; write one CSV; resume if interrupted.

    GRID sets axes (a value or a list each) in an [axes] table: world (seed do da db noise sigma
    chi), dz, variant (decoder encoder kappa label_fraction label_weighting), solver
    (auto eig moment-gd sgd), source (population wishart stream) and rows, eval (train
    noise-free random-actions) and latent (true surrogate act-surrogate). Finished rows are
    kept in OUT.partial; a rerun computes only the missing ones.

    \b
    Example:
      lamfast sweep grid.toml --out results.csv
    """

    result = run_sweep(grid, out, jobs=jobs, force=force, progress=progress)
    click.echo(
        f"{result['rows']} rows ({result['computed']} computed, {result['reused']} reused) "
        f"written to {result['out']} in {result['seconds']:.1f} s"
    )


@cli.command(context_settings=CONTEXT)
@json_option
def info(as_json):
    """Versions, BLAS, threads, numba cache and optional extras.

    \b
    Example:
      lamfast info
      lamfast info --json
    """

    if as_json:
        click.echo(json.dumps(machine_info()))
        return
    for key, value in machine_info().items():
        click.echo(f"{key:<22} {value}")


@cli.command(context_settings=CONTEXT)
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run of every benchmark.")
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the table as Markdown (for docs/performance.md).",
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

    result = run_bench(quick=quick, log=lambda msg: click.echo(msg, err=True))
    click.echo(format_table(result))
    for path, text in (
        (markdown, format_table(result, markdown=True) if markdown else None),
        (json_path, json.dumps(result, indent=1) if json_path else None),
    ):
        if path:
            atomic_write_text(path, text)


def main(argv=None):
    """Console-script entry point."""
    cli.main(args=argv, prog_name="lamfast")
