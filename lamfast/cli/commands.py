"""The commands of ``lamfast``: each parses its options, calls one library function, prints.

Errors from bad input (``LamfastError`` or a click usage error) print one line,
``Error: <message>``, on stderr and exit with status 2; no traceback, no partial output.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import click
import numba
import numpy as np
import scipy

from .. import config
from .._files import atomic_write_text, check_output, check_output_folder
from .._version import __version__
from ..benchmarks import format_table, run_bench
from ..errors import LamfastError
from ..experiments.fit import run_fit
from ..experiments.fitframes import encode_frames, fit_frames, fit_offsets, save_lam
from ..experiments.panels import (
    FIG4_MIDDLE_NOISES,
    FIG4_RIGHT_WEIGHTINGS,
    SOLVER_CHOICES,
    RunOptions,
)
from ..experiments.probe import probe_latents, to_json, write_report
from ..experiments.reproduce import reproduce as run_reproduce
from ..experiments.sweep import sweep as run_sweep
from ..info import machine_info
from ..sources.export import write_world
from ..sources.frames.distributed import side_checkpoint_path
from ..sources.frames.preprocess import Preprocess
from ..sources.gridworld import POLICIES, write_gridworld
from ..sources.simulated import SOURCES
from ..sources.world import LinearWorld
from .format import format_fit, format_frames_fit, format_offsets, format_probe
from .options import (
    CONTEXT,
    Rows,
    force_option,
    frame_options,
    frame_read_options,
    jobs_option,
    json_option,
    progress_option,
    reader_options,
    variant_options,
    world_options,
)


def _versions() -> str:
    return (
        f"lamfast {__version__} (numba {numba.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, python {sys.version.split()[0]})"
    )


class LamfastGroup(click.Group):
    """A click group whose errors are one line on stderr, with exit status 2 for bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            # Numerical warnings (a NaN compared, a division by a zero variance) are handled by
            # the library's own checks; printed, they would read as failures of a run that ends
            # well, or precede its one-line error.
            plain = config.PROGRESS_PLAIN
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                config.PROGRESS_PLAIN = True  # long runs in a log are never silent
                try:
                    rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                finally:
                    config.PROGRESS_PLAIN = plain
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code or 1)
        except LamfastError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)
        except MemoryError:  # sizes are checked before allocating; this is the last resort
            click.echo("Error: out of memory (try a smaller problem, or --chunk-frames)", err=True)
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
    "(with --noop-action also NAME.noop.npz, with partial labels NAME.labelled.npz, on the "
    "sketch path NAME.sketch1.npz, ... one a pass).",
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
    streamed from a .npy / .npz / directory / zarr dataset, video files, image folders, HDF5 or a
    LeRobot v3 folder (see docs/frames.md).

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

    if checkpoint is not None:
        check_output(checkpoint, flag="--checkpoint", checkpoint=True)
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
    scale, chunk_frames, clean_basis, noop_action, clean_k, label_budget, label_unit, offset,
    method, accuracy, out, workers, scheduler, checkpoint, force, **read,
):  # fmt: skip
    reader = reader_options(read)
    common = dict(  # how the data are read and the LAM is fitted, for one gap or several
        solver=solver,
        seed=seed,
        preprocess=Preprocess(crop=crop, downsample=downsample, scale=scale),
        actions=actions,
        n_actions=n_actions,
        chunk_frames=chunk_frames,
        reader=reader,
        label_budget=label_budget,
        label_unit=label_unit,
        progress=progress,
    )
    if len(offset) > 1:
        given = [
            flag
            for flag, value in (
                ("--out", out), ("--checkpoint", checkpoint), ("--workers", workers),
                ("--scheduler", scheduler), ("--clean-basis", clean_basis),
                ("--noop-action", noop_action),
            )
            if value is not None
        ]  # fmt: skip
        if given:
            raise click.UsageError(f"{given[0]} takes one offset (compare gaps first, then fit)")
        result = fit_offsets(path, dz, offset, variant, **common)
        click.echo(json.dumps(result) if as_json else format_offsets(result))
        return
    if clean_basis is not None and noop_action is not None:
        raise click.UsageError("give --clean-basis or --noop-action, not both")
    # Every output is checked before the fit, which may take hours: none may be an input.
    inputs = [("dataset", path), ("clean basis", clean_basis)]
    inputs += [("actions file", reader.actions_file), ("episodes file", reader.episodes_file)]
    if checkpoint is not None:
        check_output(checkpoint, inputs=inputs, flag="--checkpoint", checkpoint=True)
    if out is not None:
        checkpoints = [("checkpoint", checkpoint)]
        if checkpoint is not None:  # side streams (no-op, labelled rows) checkpoint beside it
            checkpoints.append(("no-op checkpoint", side_checkpoint_path(checkpoint, "noop")))
            checkpoints.append(
                ("labelled checkpoint", side_checkpoint_path(checkpoint, "labelled"))
            )
        check_output(out, inputs=[*inputs, *checkpoints], force=force)
    result, lam = fit_frames(
        path,
        dz,
        variant,
        offset=offset[0],
        method=method,
        save=out is not None,
        clean_basis=clean_basis,
        noop_action=noop_action,
        clean_k=clean_k,
        accuracy=accuracy,
        workers=workers,
        scheduler=scheduler,
        checkpoint=checkpoint,
        **common,
    )
    if out is not None:
        result["out"] = str(save_lam(lam, out))
    click.echo(json.dumps(result) if as_json else format_frames_fit(result))


@cli.command(context_settings=CONTEXT)
@click.argument("fit_path", type=click.Path(exists=True, dir_okay=False))
@click.argument("frames_path", type=click.Path(exists=True))
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Latents (.npy, n x dz)."
)
@click.option("--chunk-frames", type=click.IntRange(min=1), default=None, help="Frames per chunk.")
@progress_option
@force_option
def encode(fit_path, frames_path, out, chunk_frames, progress, force):
    """Encode the transitions of FRAMES_PATH with a LAM saved by `lamfast fit ... --out`.

    Writes z = C o + D o' for every transition (episode boundaries respected), one row each.

    \b
    Example:
      lamfast encode fit.npz new_frames.npz --out z.npy
    """

    r = encode_frames(
        fit_path, frames_path, out, chunk_frames=chunk_frames, progress=progress, force=force
    )
    click.echo(f"wrote {r['out']}: {r['transitions']} x {r['dz']} latents")


@cli.command(context_settings=CONTEXT)
@click.argument("latents", type=click.Path(exists=True))
@click.option(
    "--data",
    "data",
    type=click.Path(exists=True),
    required=True,
    help="The transitions the latents belong to: anything `lamfast fit` reads.",
)
@click.option("--key", default=None, help="Member of a latents .npz to read.")
@click.option(
    "--kind",
    type=click.Choice(["auto", "continuous", "codes"]),
    default="auto",
    show_default=True,
    help="Integer latents are codes under auto.",
)
@click.option(
    "--index",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Transition ids (.npy) of the latent rows, for models that skip transitions.",
)
@click.option(
    "--codebook",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Codebook vectors (.npy, K x d or G x K x d): embed codes instead of one-hot.",
)
@click.option(
    "--codebook-size", type=click.IntRange(min=1), default=None, help="Codes per codebook."
)
@click.option(
    "--noise-region", default=None, help="Exogenous part: frame rows y0:y1, columns x0:x1."
)
@click.option(
    "--noise-mask",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Exogenous part: a boolean .npy mask of the frame.",
)
@click.option("--noise-columns", default=None, help="Exogenous part: feature columns, e.g. 0:8,12.")
@click.option(
    "--folds",
    type=click.IntRange(min=1),
    default=None,
    help=f"Held-out folds over episodes (default {config.PROBE_FOLDS}; 1: in-sample only).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold draw.")
@click.option(
    "--references/--no-references",
    default=True,
    show_default=True,
    help="Score the linear LAM of the same size and the supervised ceiling too (chance always).",
)
@click.option(
    "--ref-dz", type=click.IntRange(min=1), default=None, help="Latent size of the references."
)
@click.option(
    "--accuracy/--no-accuracy",
    default=True,
    show_default=True,
    help="Second pass: argmax accuracy of the action probes (discrete actions).",
)
@frame_read_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Write report.md, scores.json and figures into this new folder.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="Run both passes on a local Dask cluster of N processes (needs lamfast[dask]).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Run both passes on an existing Dask cluster (its workers must see the files).",
)
@json_option
@progress_option
def probe(
    latents, data, key, kind, index, codebook, codebook_size, noise_region, noise_mask,
    noise_columns, folds, seed, references, ref_dz, accuracy, actions, n_actions, crop,
    downsample, scale, chunk_frames, out, workers, scheduler, as_json, progress, **read,
):  # fmt: skip
    """What does your LAM's latent capture? Score LATENTS against the transitions of --data.

    LATENTS holds one latent per transition (.npy, .npz, or a folder of per-episode files):
    real N x dz latents, or integer codes N or N x G (vector quantisation). Latent i belongs to
    transition i of the data (frame t to t + 1 inside an episode, episodes in order). Probes
    are fitted on held-out folds of episodes and reported beside the linear LAM of the same
    size, the best linear latent for the action, and chance.

    \b
    Examples:
      lamfast probe codes.npy --data grid.npz --noise-region 3:4,0:4
      lamfast probe z.npy --data frames.npz --codebook codebook.npy --out report
    """
    reader = reader_options(read)
    inputs = [("latents", latents), ("dataset", data), ("index", index), ("codebook", codebook)]
    inputs += [("noise mask", noise_mask), ("actions file", reader.actions_file)]
    inputs.append(("episodes file", reader.episodes_file))
    if out is not None:
        if os.path.lexists(out):
            raise LamfastError(f"--out {out} exists; remove it or choose another folder")
        check_output_folder(out, inputs=inputs)
    result = probe_latents(
        latents,
        data,
        index=index,
        key=key,
        kind=kind,
        codebook_size=codebook_size,
        codebook=codebook,
        noise_region=noise_region,
        noise_mask=noise_mask,
        noise_columns=noise_columns,
        folds=folds,
        seed=seed,
        references=references,
        ref_dz=ref_dz,
        accuracy=accuracy,
        preprocess=Preprocess(crop=crop, downsample=downsample, scale=scale),
        actions=actions,
        n_actions=n_actions,
        chunk_frames=chunk_frames,
        reader=reader,
        progress=progress,
        workers=workers,
        scheduler=scheduler,
    )
    if out is not None:
        result["report"] = [str(Path(out) / name) for name in write_report(result, out)]
    click.echo(to_json(result) if as_json else format_probe(result))


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
@force_option
def simulate_gridworld_cmd(out, episodes, length, noise, noise_p, policy, p, seed, force):
    """The paper's 4x4 grid world (5 actions, Bernoulli noise row) as frames/actions/episodes.

    \b
    Example:
      lamfast simulate gridworld --noise 1 --policy correlated --out grid.npz
    """

    r = write_gridworld(
        out, episodes=episodes, length=length, noise=noise, noise_p=noise_p, policy=policy,
        p=p, seed=seed, force=force,
    )  # fmt: skip
    click.echo(f"wrote {r['out']}: {r['frames']} frames ({episodes} episodes of {length})")


@simulate.command("linear", context_settings=CONTEXT)
@world_options
@click.option("--rows", type=Rows(), required=True, help="Transitions to write.")
@click.option("--out", type=click.Path(), required=True, help="Output directory, or a .npz file.")
@click.option("--block-rows", type=click.IntRange(min=2), default=None, help="Rows per block.")
@progress_option
@click.option(
    "--force", is_flag=True, help="Overwrite an existing .npz (an existing folder is refused)."
)
def simulate_linear_cmd(
    do, da, db, noise, sigma, chi, seed, rows, out, block_rows, progress, force
):
    """Write a LinearWorld's stream (o, o_next, actions, noise; world.json spec) to disk.

    \b
    Example:
      lamfast simulate linear --noise exo --sigma 2 --rows 1e6 --out data/
    """

    world = LinearWorld(do=do, da=da, db=db, noise=noise, sigma=sigma, chi=chi, seed=seed)
    r = write_world(world, rows, out, block_rows=block_rows, progress=progress, force=force)
    click.echo(f"wrote {r['out']}: {r['rows']} transitions (block rows {r['block_rows']})")


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
    type=click.Choice(FIG4_RIGHT_WEIGHTINGS),
    default="batch",
    show_default=True,
    help="fig4-right lines drawn solid: batch (authors' scripts) or paper (w = m).",
)
@click.option(
    "--chi1-protocol",
    is_flag=True,
    help="fig4-left: also fit chi = 1 by the authors' protocol (40,000 Adam steps), beside the "
    "optimum (about 10 CPU s a point).",
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
    chi1_protocol,
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
        chi1_protocol=chi1_protocol,
    )
    shown = set()

    def panel_done(name, n):  # each panel's line when it is done, not after the whole run
        shown.add(name)
        click.echo(f"{name:<12} {n:4d} rows")

    result = run_reproduce(
        panels, out, options, jobs=jobs, force=force, progress=progress, plot=plot,
        on_panel=panel_done,
    )  # fmt: skip
    passed, computed = result["checks"]
    for name, n in result["rows"].items():
        if name not in shown:
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
@force_option
def bench(quick, markdown, json_path, force):
    """Side-by-side benchmark table: stream, Wishart, eigensolver, cold start.

    Medians of several runs, baselines (numpy, scikit-learn, LAPACK, ARPACK) in the same run,
    machine limits measured in the same run.

    \b
    Example:
      lamfast bench --quick
    """

    if markdown is not None:  # before minutes of measuring
        check_output(markdown, flag="--markdown", force=force)
    if json_path is not None:
        check_output(json_path, inputs=[("--markdown", markdown)], flag="--json", force=force)
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
