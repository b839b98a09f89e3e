"""Experiments: one grid point (``run_fit``), the paper's six panels as data, and user grids.

Flow: world -> moments (population | wishart | stream) -> ``lam.fit`` -> ``probe_metrics``.

A *panel* (:class:`Panel`) is data: the fixed world and LAM variant, the swept axes, how the probes
are evaluated, and how the figure is laid out. :func:`panel_points` expands it into grid points;
:func:`run_points` computes them (in parallel across processes, output order fixed by the grid);
:func:`reproduce` writes one CSV and one PNG per panel and a ``report.md`` whose claims are
computed checks (:mod:`lamfast.report`). :func:`sweep` does the same for a TOML grid, resumably.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import io
import itertools
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from . import lam as _lam
from ._files import atomic_write_text
from ._progress import Progress
from .errors import LamfastError
from .lam import Variant, fit
from .probes import probe_metrics
from .simulate import stream_moments, wishart_moments
from .world import LinearWorld

SOURCES = ("population", "wishart", "stream")

# The CSV contract of `lamfast reproduce` and `lamfast sweep` (issue 3): these columns, in this
# order, then the extra columns.
COLUMNS = (
    "panel",
    "da",
    "dz",
    "db",
    "noise",
    "sigma",
    "chi",
    "kappa",
    "label_fraction",
    "solver",
    "source",
    "rows",
    "seed",
    "act_mse",
    "obs_mse",
    "noi_mse",
    "recon",
    "llo",
)
# angle_action: the largest principal angle (radians) between span(B) and span(X); 0 when the
# latent's decoder subspace contains, or lies inside, the action subspace.
EXTRA_COLUMNS = (
    "do",
    "decoder",
    "encoder",
    "label_weighting",
    "eval",
    "latent",
    "angle_action",
)
CSV_COLUMNS = COLUMNS + EXTRA_COLUMNS
METRICS = ("act_mse", "obs_mse", "noi_mse", "recon", "llo")
OUTPUTS = (*METRICS, "angle_action")
# Columns that identify a grid point (everything but the outputs): the key of a finished row when
# a sweep resumes.
KEY_COLUMNS = tuple(c for c in CSV_COLUMNS if c not in OUTPUTS)

# How probes fitted on the training law are scored (DESIGN 1.2, distribution shift).
EVALS = ("train", "noise-free", "random-actions")
# Which latent each probe reads: "true" (z), "surrogate" (o^' - o), or "act-surrogate" (the action
# probe reads the surrogate latent, the observation and noise probes read z: Fig. 4-left).
LATENT_CHOICES = ("true", "surrogate", "act-surrogate")
SOLVER_CHOICES = ("auto", "eig", "moment-gd", "sgd")


def world_moments(
    world: LinearWorld,
    source: str = "population",
    rows=None,
    progress=None,
    draw: int = 0,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
):
    """Moments of a world from one of the simulated sources.

    ``draw`` selects an independent Wishart draw (the stream source is keyed by the world's seed).
    ``workers`` / ``scheduler`` run the stream on Dask and ``checkpoint`` makes it resumable
    (``lamfast.distributed``); all three give the same bits as the plain stream.
    """
    scaled = {"workers": workers, "scheduler": scheduler, "checkpoint": checkpoint}
    used = [f"--{k}" for k, v in scaled.items() if v is not None]
    if used and source != "stream":
        raise LamfastError(f"{', '.join(used)} only apply to --source stream, not {source}")
    if source == "population":
        return world.population_moments()
    if rows is None:
        raise LamfastError(f"the {source} source needs a number of rows")
    if source == "wishart":
        return wishart_moments(world, rows, draw=draw)
    if source == "stream":
        if workers is not None or scheduler is not None:
            from .distributed import stream_moments_dask

            return stream_moments_dask(
                world,
                rows,
                workers=workers,
                scheduler=scheduler,
                checkpoint=checkpoint,
                progress=progress,
            )
        if checkpoint is not None:
            from .distributed import stream_moments_checkpointed

            return stream_moments_checkpointed(world, rows, checkpoint, progress=progress)
        return stream_moments(world, rows, progress=progress)
    raise LamfastError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")


def run_fit(
    world: dict | LinearWorld,
    variant: dict | Variant,
    dz: int,
    source: str = "population",
    rows=None,
    solver: str = "eig",
    progress=None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
) -> dict:
    """Simulate (or compute) moments, fit a LAM, probe it; one JSON-ready dict.

    Examples
    --------
    >>> r = run_fit({"do": 16, "da": 4}, {}, dz=4)
    >>> r["llo"], r["source"]
    (2.0, 'population')
    """
    start = time.perf_counter()
    world = world if isinstance(world, LinearWorld) else LinearWorld(**world)
    variant = variant if isinstance(variant, Variant) else Variant(**variant)
    if not isinstance(dz, int) or not 1 <= dz <= world.do:
        raise LamfastError(f"dz must be an integer in [1, do={world.do}], got {dz!r}")
    moments = world_moments(
        world, source, rows, progress, workers=workers, scheduler=scheduler, checkpoint=checkpoint
    )
    lam = fit(moments, dz, variant, solver=solver, seed=world.seed, world=world)
    metrics = probe_metrics(lam, moments, world=world)
    return {
        **{k: (round(v, 15) if isinstance(v, float) else v) for k, v in metrics.items()},
        "source": source,
        "rows": None if source == "population" else int(moments.count),
        "seconds": time.perf_counter() - start,
        "dz": dz,
        "solver": solver,
        "world": world.to_dict(),
        "variant": {
            "decoder": variant.decoder,
            "encoder": variant.encoder,
            "kappa": variant.kappa,
            "label_fraction": variant.label_fraction,
            "label_weighting": variant.label_weighting,
        },
        "loss": lam.loss,
        "spectrum": np.asarray(lam.spectrum).tolist(),
        "tie": list(lam.tie) if lam.tie else None,
        "notes": list(lam.notes),
    }


# ------------------------------------------------------------------------------ solver choice
def default_solver(world: LinearWorld, variant: Variant, source: str = "population") -> str:
    """The fastest exact solver for a variant: ``eig`` where a closed form exists, else moment-gd.

    Mirrors the cases of DESIGN 1.1 that ``lam.fit(solver="eig")`` solves. On finite-sample
    moments ``o`` is never exactly uncorrelated with ``delta`` (the cross moment is O(1/sqrt(n))),
    so the closed forms that rely on a random policy apply to population moments only.

    Examples
    --------
    >>> w = LinearWorld(do=16, da=4)
    >>> default_solver(w, Variant()), default_solver(w, Variant("learned", "free"))
    ('eig', 'moment-gd')
    """
    learned = variant.decoder == "learned"
    free = variant.encoder == "free"
    identity_tied = not learned and not free
    random_policy = world.chi == 0 and source == "population"
    if learned and free and variant.kappa == 0:
        return "moment-gd"  # the o-content of z is a flat direction: initialisation decides it
    if variant.label_weight > 0:
        if not identity_tied and not random_policy:
            return "moment-gd"
        if world.noise == "uniform" and world.sigma > 0:
            return "moment-gd"  # non-zero mean frame difference: the supervised form needs zero
        return "eig"
    if learned and free and not random_policy:
        return "moment-gd"
    return "eig"


def _available_solvers() -> tuple[str, ...]:
    return tuple(_lam.SOLVERS)


# ------------------------------------------------------------------------------ panels as data
@dataclasses.dataclass(frozen=True)
class Panel:
    """One simulation panel of the paper (DESIGN 2), as data.

    Parameters
    ----------
    name : str
        ``fig3-left`` ... ``fig4-right``.
    title : str
        What the panel shows.
    world, variant : dict
        Fixed :class:`LinearWorld` and :class:`Variant` fields.
    axes : tuple of (name, values)
        Swept axes in nesting order (world fields, variant fields, ``dz``); the grid is their
        product.
    quick_axes : tuple of (name, values)
        Thinner values for ``--quick`` runs (the same claims stay checkable).
    evals : tuple of str
        How probes are scored: ``train`` (the law they were fitted on), ``noise-free``
        (``sigma = 0``), ``random-actions`` (``chi = 0``). One CSV row per grid point and eval.
    latent : str
        ``true``, ``surrogate`` or ``act-surrogate`` (see ``LATENT_CHOICES``).
    x, lines, facets : str, tuple of str, str or None
        Figure layout: the x axis, the columns that make one line, the column that makes one
        subplot (``"metric"``: one subplot per entry of ``metrics``).
    metrics : tuple of str
        Metrics plotted (LLO unless stated).
    notes : tuple of str
        Where lamfast's defaults come from (paper text versus the authors' scripts).
    """

    name: str
    title: str
    world: dict
    variant: dict
    axes: tuple
    quick_axes: tuple = ()
    evals: tuple = ("train",)
    latent: str = "true"
    x: str = "dz"
    lines: tuple = ()
    facets: str | None = None
    metrics: tuple = ("llo",)
    notes: tuple = ()


def _steps(start: float, stop: float, step: float) -> tuple:
    n = int(round((stop - start) / step))
    return tuple(round(start + i * step, 10) for i in range(n + 1))


DZ_ALL = tuple(range(2, 17))
DZ_EVEN = tuple(range(2, 17, 2))
DZ_QUICK = (2, 4, 8, 12, 16)

PANELS: dict[str, Panel] = {
    p.name: p
    for p in (
        Panel(
            name="fig3-left",
            title="No noise: LLO against dz, one line per action dimension da",
            world={"noise": "none"},
            variant={"decoder": "identity", "encoder": "tied"},
            axes=(("da", tuple(range(2, 17, 2))), ("dz", tuple(range(1, 17)))),
            quick_axes=(("da", (4, 8, 16)), ("dz", (1, 2, 4, 8, 12, 16))),
            x="dz",
            lines=("da",),
        ),
        Panel(
            name="fig3-middle",
            title="Gaussian iid noise: LLO against sigma, one line per dz; probes scored on noisy "
            "and on noise-free transitions",
            world={"noise": "gaussian"},
            variant={"decoder": "identity", "encoder": "tied"},
            axes=(("sigma", _steps(0.0, 1.5, 0.1)), ("dz", DZ_EVEN)),
            quick_axes=(("sigma", (0.0, 0.5, 1.0, 1.5)), ("dz", (2, 8, 16))),
            evals=("train", "noise-free"),
            x="sigma",
            lines=("dz",),
            facets="eval",
        ),
        Panel(
            name="fig3-right",
            title="Exogenous noise (db = 8): LLO, action and noise MSE against dz, one line per "
            "sigma_exo",
            world={"noise": "exo", "db": 8},
            variant={"decoder": "identity", "encoder": "tied"},
            axes=(("sigma", (0.5, 2.0)), ("dz", DZ_ALL)),
            quick_axes=(("sigma", (0.5, 2.0)), ("dz", (2, 8, 16))),
            x="dz",
            lines=("sigma",),
            facets="metric",
            metrics=("llo", "act_mse", "noi_mse"),
        ),
        Panel(
            name="fig4-left",
            title="Correlated policy a = chi P o + (1 - chi) e: LLO against chi, one line per dz; "
            "probes fitted on-policy, scored on random actions",
            world={"noise": "none"},
            variant={"decoder": "learned", "encoder": "free", "kappa": 0.0},
            axes=(("chi", _steps(0.0, 1.0, 0.1)), ("dz", DZ_ALL)),
            quick_axes=(("chi", (0.0, 0.5, 1.0)), ("dz", (2, 4, 8))),
            evals=("random-actions",),
            latent="act-surrogate",
            x="chi",
            lines=("dz",),
            notes=(
                "Learned decoder, free encoder, kappa = 0, solved by moment-gd from the training "
                "initialisation: the collapse at chi = 1 is an initialisation effect that no "
                "closed form shows.",
                "The action probe reads the surrogate latent o^' - o (the paper's choice for a "
                "learned decoder); the observation probe reads z.",
            ),
        ),
        Panel(
            name="fig4-middle",
            title="Learned decoder, free encoder, augmentation kappa: LLO against dz, one line "
            "per kappa, one subplot per noise scale",
            world={"noise": "gaussian"},
            variant={"decoder": "learned", "encoder": "free"},
            axes=(("sigma", (0.0, 0.1, 0.5, 1.0)), ("kappa", (0.0, 0.01, 0.1)), ("dz", DZ_ALL)),
            quick_axes=(("sigma", (0.0, 1.0)), ("kappa", (0.0, 0.1)), ("dz", (2, 8, 16))),
            x="dz",
            lines=("kappa",),
            facets="sigma",
            notes=(
                "The paper's text uses Gaussian noise; the authors' augmentation script used "
                "uniform noise sigma * U[0, 1) (non-zero mean): `--fig4-middle-noise uniform`.",
                "Any kappa > 0 forces A = I, C = -D at the population optimum, so kappa = 0.01 "
                "and kappa = 0.1 coincide here; a finite training run separates them.",
            ),
        ),
        Panel(
            name="fig4-right",
            title="Exogenous noise with action supervision on a fraction m of rows (kappa = 0.1): "
            "LLO against dz, one subplot per sigma_exo",
            world={"noise": "exo", "db": 8},
            variant={"decoder": "learned", "encoder": "free", "kappa": 0.1},
            axes=(
                ("sigma", (0.5, 1.0, 2.0)),
                ("label_fraction", (0.0, 0.01)),
                ("label_weighting", ("batch", "paper")),
                ("dz", DZ_ALL),
            ),
            quick_axes=(
                ("sigma", (0.5, 2.0)),
                ("label_fraction", (0.0, 0.01)),
                ("label_weighting", ("batch", "paper")),
                ("dz", (2, 8, 16)),
            ),
            x="dz",
            lines=("label_fraction", "label_weighting"),
            facets="sigma",
            notes=(
                "The paper's objective weights the action loss by w = m; the authors' scripts "
                "average it over the labelled rows of each batch of 128, an effective weight "
                "w = 1 - (1 - m)^128. The figure uses the scripts' weighting "
                "(`--label-weighting batch`, default); both are computed.",
            ),
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Choices that apply to every panel of a run.

    Parameters
    ----------
    solver : {"auto", "eig", "moment-gd", "sgd"}
        ``auto``: :func:`default_solver` per grid point.
    source : {"population", "wishart", "stream"}
    rows : int or None
        Rows for the finite-sample sources.
    seed : int
        World seed (bases and rows) and solver seed of every grid point.
    do : int
        Observation dimension (the paper: 128).
    quick : bool
        Thin grids (``Panel.quick_axes``).
    fig4_middle_noise : {"gaussian", "uniform"}
        Noise of fig4-middle: the paper's text (gaussian) or the authors' script (uniform).
    label_weighting : {"batch", "paper"}
        Weighting drawn as the main lines of fig4-right (both are always computed).

    Examples
    --------
    >>> RunOptions(source="wishart", rows=10**6).rows
    1000000
    """

    solver: str = "auto"
    source: str = "population"
    rows: int | None = None
    seed: int = 0
    do: int = 128
    quick: bool = False
    fig4_middle_noise: str = "gaussian"
    label_weighting: str = "batch"

    def __post_init__(self):
        if self.solver not in SOLVER_CHOICES:
            raise LamfastError(
                f"solver must be one of {', '.join(SOLVER_CHOICES)}, got {self.solver!r}"
            )
        if self.source not in SOURCES:
            raise LamfastError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source != "population" and self.rows is None:
            raise LamfastError(f"the {self.source} source needs --rows")
        if self.fig4_middle_noise not in ("gaussian", "uniform"):
            raise LamfastError(
                f"fig4-middle noise must be gaussian or uniform, got {self.fig4_middle_noise!r}"
            )
        if self.label_weighting not in _lam.WEIGHTINGS:
            raise LamfastError(
                f"label_weighting must be batch or paper, got {self.label_weighting!r}"
            )


# Panels run only when named: the grid-world study (lamfast.gridworld) simulates frame files and
# fits them through lamfast.frames, the path users' own data take.
EXTRA_PANELS = ("gridworld",)


def panel_names(names: Iterable[str] | None = None) -> list[str]:
    """Validated panel names in the paper's order (the six simulation panels when empty)."""
    names = list(names or ())
    if not names:
        return list(PANELS)
    known = (*PANELS, *EXTRA_PANELS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LamfastError(
            f"unknown panel {unknown[0]!r}; choose from {', '.join(known)} (or none for the six "
            "simulation panels)"
        )
    return [n for n in known if n in set(names)]


WORLD_FIELDS = ("do", "da", "db", "noise", "sigma", "chi", "seed")
VARIANT_FIELDS = ("decoder", "encoder", "kappa", "label_fraction", "label_weighting")


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: a world, a variant, a latent dimension, a solver and a source."""

    panel: str
    world: LinearWorld
    variant: Variant
    dz: int
    solver: str
    source: str = "population"
    rows: int | None = None
    evals: tuple = ("train",)
    latent: str = "true"

    def task_key(self) -> tuple:
        """Points with the same key share moments (they differ only in ``dz``)."""
        return (self.panel, self.world, self.variant, self.solver, self.source, self.rows)


def _build_point(panel_name, settings: dict, options: RunOptions, evals, latent) -> Point:
    world_kw = {k: settings[k] for k in WORLD_FIELDS if k in settings}
    variant_kw = {k: settings[k] for k in VARIANT_FIELDS if k in settings}
    try:
        world = LinearWorld(**world_kw)
        variant = Variant(**variant_kw)
    except TypeError as e:  # pragma: no cover - guarded by the callers' key checks
        raise LamfastError(str(e)) from None
    dz = settings["dz"]
    if isinstance(dz, bool) or not isinstance(dz, int) or not 1 <= dz <= world.do:
        raise LamfastError(f"dz must be an integer in [1, do={world.do}], got {dz!r}")
    solver = settings.get("solver", options.solver)
    if solver == "auto":
        solver = default_solver(world, variant, settings.get("source", options.source))
    return Point(
        panel=panel_name,
        world=world,
        variant=variant,
        dz=dz,
        solver=solver,
        source=settings.get("source", options.source),
        rows=None
        if settings.get("source", options.source) == "population"
        else int(float(settings.get("rows", options.rows))),
        evals=tuple(evals),
        latent=latent,
    )


def panel_points(name: str, options: RunOptions | None = None) -> list[Point]:
    """The grid of a panel, in the panel's order (its axes nested left to right).

    Examples
    --------
    >>> pts = panel_points("fig3-right")
    >>> len(pts), pts[0].world.sigma, pts[0].dz, pts[-1].world.sigma, pts[-1].dz
    (30, 0.5, 2, 2.0, 16)
    """
    options = options or RunOptions()
    panel = PANELS[name]
    fixed = {"do": options.do, "seed": options.seed, **panel.world, **panel.variant}
    if name == "fig4-middle":
        fixed["noise"] = options.fig4_middle_noise
    axes = panel.quick_axes if options.quick and panel.quick_axes else panel.axes
    names = [a for a, _ in axes]
    points = []
    for values in itertools.product(*(v for _, v in axes)):
        settings = {**fixed, **dict(zip(names, values, strict=True))}
        if settings.get("label_fraction", 0) == 0 and "label_weighting" in names:
            # Without labels the weighting is moot: keep one copy, under the figure's weighting.
            if settings["label_weighting"] != options.label_weighting:
                continue
        if settings.get("dz", 0) > settings.get("do", 128):
            continue
        points.append(_build_point(name, settings, options, panel.evals, panel.latent))
    return points


# ------------------------------------------------------------------------------ computing points
def _fmt(value) -> str:
    """CSV text of a value: floats round-trip exactly (``repr``), None is empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return str(value)


def point_inputs(point: Point, eval_name: str) -> dict:
    """The identifying CSV columns of one row (everything but the metrics)."""
    w, v = point.world, point.variant
    return {
        "panel": point.panel,
        "da": w.da,
        "dz": point.dz,
        "db": w.db,
        "noise": w.noise,
        "sigma": float(w.sigma),
        "chi": float(w.chi),
        "kappa": float(v.kappa),
        "label_fraction": float(v.label_fraction),
        "solver": point.solver,
        "source": point.source,
        "rows": point.rows,
        "seed": w.seed,
        "do": w.do,
        "decoder": v.decoder,
        "encoder": v.encoder,
        "label_weighting": v.label_weighting,
        "eval": eval_name,
        "latent": point.latent,
    }


def row_key(row: dict) -> tuple:
    """Key of a row (as CSV text) over ``KEY_COLUMNS``: identifies a finished grid point."""
    return tuple(_fmt(row[c]) for c in KEY_COLUMNS)


def _eval_world(world: LinearWorld, eval_name: str) -> LinearWorld | None:
    if eval_name == "train":
        return None
    if eval_name == "noise-free":
        return world.replace(sigma=0.0)
    if eval_name == "random-actions":
        return world.replace(chi=0.0)
    raise LamfastError(f"eval must be one of {', '.join(EVALS)}, got {eval_name!r}")


def _probe(lam, moments, eval_moments, latent, world) -> dict:
    if latent in ("true", "surrogate"):
        out = probe_metrics(lam, moments, eval_moments=eval_moments, latent=latent, world=world)
    else:
        # act-surrogate: the action probe reads o^' - o, the others read z (Fig. 4-left).
        out = probe_metrics(lam, moments, eval_moments=eval_moments, latent="true", world=world)
        sur = probe_metrics(lam, moments, eval_moments=eval_moments, latent="surrogate")
        out["act_mse"] = sur["act_mse"]
        out["llo"] = -out["act_mse"] + out["obs_mse"] + out["noi_mse"]
    out["angle_action"] = float(max(out.pop("angles_action")))
    return out


def _fit_point(point: Point, moments):
    solver = point.solver
    if solver not in _available_solvers():
        raise LamfastError(
            f"solver {solver!r} is not available in this build (have {', '.join(_lam.SOLVERS)})"
        )
    if solver == "sgd":  # the paper's protocol samples its own minibatches from the world
        return fit(
            moments,
            point.dz,
            point.variant,
            solver=solver,
            seed=point.world.seed,
            world=point.world,
        )
    return fit(moments, point.dz, point.variant, solver=solver, seed=point.world.seed)


def compute_points(points: Sequence[Point]) -> list[dict]:
    """Rows (one per point and eval) for points sharing one world: moments are computed once.

    Every row is a dict over ``CSV_COLUMNS``; metrics are Python floats.
    """
    if not points:
        return []
    first = points[0]
    moments = world_moments(first.world, first.source, first.rows)
    eval_moments = {}
    out = []
    for point in points:
        lam = _fit_point(point, moments)
        for eval_name in point.evals:
            if eval_name not in eval_moments:
                ew = _eval_world(first.world, eval_name)
                eval_moments[eval_name] = (
                    None if ew is None else world_moments(ew, first.source, first.rows, draw=1)
                )
            metrics = _probe(lam, moments, eval_moments[eval_name], point.latent, point.world)
            row = point_inputs(point, eval_name)
            row.update({k: float(metrics[k]) for k in OUTPUTS})
            out.append(row)
    return out


def _run_group(points: Sequence[Point]) -> tuple[list[dict], float]:
    # Worker entry point (picklable, top level): rows and the CPU seconds they took.
    start = time.process_time()
    rows = compute_points(points)
    return rows, time.process_time() - start


def _groups(points: Sequence[Point]) -> list[list[int]]:
    """Indices of points grouped by shared moments, in first-appearance order.

    ``eig`` fits cost about as much as their moments, so points sharing a world are one task.
    Iterative solvers cost far more than exact or Wishart moments: each of their points is its own
    task, so that the slow ones spread over the workers (streamed moments stay shared).
    """
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        key = p.task_key()
        if p.solver != "eig" and p.source != "stream":
            key = (*key, p.dz)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


# Environment of worker processes: one BLAS / numba thread each, so that `jobs` processes use
# `jobs` cores without oversubscription, and every grid point is computed with the same thread
# count (BLAS reductions can round differently with a different number of threads).
_WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


@contextlib.contextmanager
def _worker_environment():
    saved = {k: os.environ.get(k) for k in _WORKER_ENV}
    os.environ.update(_WORKER_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _one_blas_thread():
    """One BLAS thread in this process too, when threadpoolctl is installed (as in the workers)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=1):
        yield


def default_jobs() -> int:
    """Worker processes by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_points(
    points: Sequence[Point],
    jobs: int | None = None,
    progress: bool | None = None,
    label: str = "points",
    on_rows: Callable[[list[int], list[dict]], None] | None = None,
    cpu_seconds: dict | None = None,
) -> list[list[dict]]:
    """Compute grid points, in parallel across processes; result ``i`` holds point ``i``'s rows.

    Points that share a world (they differ only in ``dz``) form one task. With ``jobs > 1`` tasks
    run in ``spawn``-ed worker processes with one BLAS thread each; the output order is the order
    of ``points`` whatever the completion order. ``on_rows(indices, rows)`` is called in the main
    process as each task finishes (sweeps append finished rows to their checkpoint there).
    ``cpu_seconds``, if given, accumulates the CPU seconds of the tasks of each panel.
    """
    points = list(points)
    jobs = default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise LamfastError(f"jobs must be >= 1, got {jobs}")
    groups = _groups(points)
    # Heaviest tasks first (moment-gd and sgd iterate; eig is one eigendecomposition), so that the
    # last task to finish is a short one.
    weight = {"eig": 1, "moment-gd": 50, "sgd": 200}
    order = sorted(
        range(len(groups)),
        key=lambda g: -sum(weight.get(points[i].solver, 1) for i in groups[g]),
    )
    results: list[list[dict] | None] = [None] * len(points)

    def finished(g: int, rows: list[dict], seconds: float):
        if cpu_seconds is not None:
            panel = points[groups[g][0]].panel
            cpu_seconds[panel] = cpu_seconds.get(panel, 0.0) + seconds
        idx = groups[g]
        per_point: dict[int, list[dict]] = {i: [] for i in idx}
        k = 0
        for i in idx:
            n = len(points[i].evals)
            per_point[i] = rows[k : k + n]
            k += n
        for i in idx:
            results[i] = per_point[i]
        if on_rows is not None:
            on_rows(idx, rows)
        bar.update(len(idx))

    with Progress(total=len(points), label=label, enabled=progress) as bar:
        if jobs == 1 or len(groups) <= 1:
            with _one_blas_thread():
                for g in order:
                    start = time.process_time()
                    rows = compute_points([points[i] for i in groups[g]])
                    finished(g, rows, time.process_time() - start)
        else:
            ctx = multiprocessing.get_context("spawn")
            futures = {}
            # The environment must hold while workers start: the executor spawns them lazily,
            # on submit.
            with _worker_environment():
                pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=min(jobs, len(groups)), mp_context=ctx
                )
                try:
                    futures = {
                        pool.submit(_run_group, [points[i] for i in groups[g]]): g for g in order
                    }
                    for fut in concurrent.futures.as_completed(futures):
                        finished(futures[fut], *fut.result())
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                pool.shutdown(wait=True)
    return [r if r is not None else [] for r in results]


def csv_text(rows: Iterable[dict], columns: Sequence[str] = CSV_COLUMNS) -> str:
    """CSV text of rows (floats written with ``repr``, so they round-trip exactly)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row.get(c)) for c in columns])
    return buf.getvalue()


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a lamfast CSV with numbers parsed (metrics and numeric inputs as float/int)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [_parse_row(r) for r in csv.DictReader(f)]


_INT_COLUMNS = ("da", "dz", "db", "seed", "do", "rows")
_FLOAT_COLUMNS = ("sigma", "chi", "kappa", "label_fraction", *OUTPUTS)


def _parse_row(r: dict) -> dict:
    out = dict(r)
    for c in _INT_COLUMNS:
        if c in out:
            out[c] = int(out[c]) if out[c] not in ("", None) else None
    for c in _FLOAT_COLUMNS:
        if c in out and out[c] not in ("", None):
            out[c] = float(out[c])
    return out


# ------------------------------------------------------------------------------ reproduce
def plots_available() -> bool:
    """Whether figures can be drawn (matplotlib, an optional extra, is installed)."""
    from . import plots

    return plots.available()


def output_files(names: Sequence[str]) -> list[str]:
    """Files ``reproduce`` writes for these panels: one CSV and PNG each, and ``report.md``."""
    files = [f"{n}.{ext}" for n in names if n in PANELS for ext in ("csv", "png")]
    return files + [f"{n}.csv" for n in names if n in EXTRA_PANELS] + ["report.md"]


def reproduce(
    panels: Sequence[str] | None,
    out: str | os.PathLike,
    options: RunOptions | None = None,
    *,
    jobs: int | None = None,
    force: bool = False,
    progress: bool | None = None,
    plot: bool = True,
) -> dict:
    """Regenerate the paper's simulation panels: CSV + PNG per panel, one ``report.md``.

    Parameters
    ----------
    panels : sequence of str or None
        Panel names (``fig3-left`` ... ``fig4-right``); all six when empty.
    out : path
        Output folder (created if missing). Files this run would write that already exist are an
        error unless ``force`` (other files in the folder are never touched).
    options : RunOptions
        Solver, source, rows, seed, quick grids, authors'-script settings.
    jobs : int, optional
        Worker processes (default: the usable cores).
    plot : bool
        Write PNGs when matplotlib is installed (skipped, and said so, when it is not).

    Returns
    -------
    dict
        ``files`` written, ``rows`` per panel, ``seconds``, ``figures`` (bool), ``checks``
        (passed, total).

    Examples
    --------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> r = reproduce(["fig3-right"], out, RunOptions(quick=True), jobs=1, plot=False)
    >>> r["files"], r["checks"][0] == r["checks"][1]
    (['fig3-right.csv', 'report.md'], True)
    """
    from . import plots, report

    start = time.perf_counter()
    options = options or RunOptions()
    requested = panel_names(panels)
    names = [n for n in requested if n in PANELS]
    extras = [n for n in requested if n in EXTRA_PANELS]
    outdir = Path(out)
    if outdir.exists() and not outdir.is_dir():
        raise LamfastError(f"--out {outdir} exists and is not a folder")
    existing = [f for f in output_files(requested) if (outdir / f).exists()]
    if existing and not force:
        raise LamfastError(
            f"{outdir} already holds {', '.join(existing[:3])}"
            + (" ..." if len(existing) > 3 else "")
            + "; pass --force to overwrite"
        )
    points = [p for n in names for p in panel_points(n, options)]
    missing = sorted({p.solver for p in points} - set(_available_solvers()))
    if missing:
        raise LamfastError(
            f"solver {missing[0]!r} is needed by these panels but not available in this build "
            f"(have {', '.join(_lam.SOLVERS)})"
        )
    cpu_seconds: dict[str, float] = {}
    results = run_points(
        points, jobs=jobs, progress=progress, label="reproduce", cpu_seconds=cpu_seconds
    )
    by_panel: dict[str, list[dict]] = {n: [] for n in names}
    for p, rows in zip(points, results, strict=True):
        by_panel[p.panel].extend(rows)
    compute_seconds = time.perf_counter() - start
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for n in names:
        atomic_write_text(outdir / f"{n}.csv", csv_text(by_panel[n]))
        written.append(f"{n}.csv")
    have_plots = plot and plots_available()
    if have_plots:
        for n in names:
            plots.plot_panel(PANELS[n], by_panel[n], outdir / f"{n}.png", options)
            written.append(f"{n}.png")
    seconds = time.perf_counter() - start
    text, checks = report.render(
        names,
        by_panel,
        options,
        seconds=seconds,
        compute_seconds=compute_seconds,
        figures=have_plots,
        plot_requested=plot,
        jobs=jobs if jobs is not None else default_jobs(),
        cpu_seconds=cpu_seconds,
    )
    rows_extra = {}
    if "gridworld" in extras:
        from .gridworld import gridworld_panel

        grid_rows, grid_md = gridworld_panel(seed=options.seed)
        columns = list(grid_rows[0])
        atomic_write_text(outdir / "gridworld.csv", csv_text(grid_rows, columns))
        written.append("gridworld.csv")
        rows_extra["gridworld"] = len(grid_rows)
        text = (text if names else "# lamfast reproduce: report\n") + "\n" + grid_md + "\n"
    atomic_write_text(outdir / "report.md", text)
    written.append("report.md")
    by_panel_rows = {n: len(by_panel[n]) for n in names}
    return {
        "out": str(outdir),
        "files": written,
        "rows": {**by_panel_rows, **rows_extra},
        "points": len(points),
        "seconds": time.perf_counter() - start,
        "figures": have_plots,
        "checks": checks,
    }


# ------------------------------------------------------------------------------ sweep
# Axes a sweep grid may set, in the nesting order of the product (dz innermost, so that points
# sharing a world are computed together).
SWEEP_AXES = (
    "seed",
    "do",
    "da",
    "db",
    "noise",
    "sigma",
    "chi",
    "decoder",
    "encoder",
    "kappa",
    "label_fraction",
    "label_weighting",
    "solver",
    "source",
    "rows",
    "eval",
    "latent",
    "dz",
)
_SWEEP_DEFAULTS = {
    "seed": 0,
    "do": 128,
    "da": 8,
    "db": 8,
    "noise": "none",
    "sigma": 0.0,
    "chi": 0.0,
    "decoder": "identity",
    "encoder": "tied",
    "kappa": 0.0,
    "label_fraction": 0.0,
    "label_weighting": "paper",
    "solver": "auto",
    "source": "population",
    "rows": None,
    "eval": "train",
    "latent": "true",
    "dz": 8,
}
_SWEEP_TYPES = {
    "seed": int,
    "do": int,
    "da": int,
    "db": int,
    "noise": str,
    "sigma": float,
    "chi": float,
    "decoder": str,
    "encoder": str,
    "kappa": float,
    "label_fraction": float,
    "label_weighting": str,
    "solver": str,
    "source": str,
    "rows": float,
    "eval": str,
    "latent": str,
    "dz": int,
}


def load_grid(path: str | os.PathLike) -> dict:
    """Read a sweep grid (TOML): ``name`` (optional) and a table ``[axes]`` of scalars or lists.

    Example grid::

        name = "exo-supervision"
        [axes]
        noise = "exo"
        sigma = [0.5, 2.0]
        label_fraction = [0.0, 0.01]
        dz = [4, 8, 16]
        solver = "auto"
    """
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise LamfastError(f"grid file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise LamfastError(f"grid file {path} is not valid TOML: {e}") from None
    return parse_grid(data, default_name=Path(path).stem)


def parse_grid(data: dict, default_name: str = "sweep") -> dict:
    """Validate a grid mapping; returns ``{"name": str, "axes": {axis: tuple of values}}``."""
    unknown_top = set(data) - {"name", "axes"}
    if unknown_top:
        raise LamfastError(
            f"unknown key {sorted(unknown_top)[0]!r} in the grid; expected 'name' and [axes]"
        )
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise LamfastError("the grid's name must be a non-empty string")
    axes_in = data.get("axes")
    if not isinstance(axes_in, dict) or not axes_in:
        raise LamfastError("the grid needs an [axes] table (e.g. dz = [2, 4, 8])")
    unknown = [k for k in axes_in if k not in SWEEP_AXES]
    if unknown:
        raise LamfastError(
            f"unknown axis {unknown[0]!r} in the grid; axes are {', '.join(SWEEP_AXES)}"
        )
    axes = {}
    for key in SWEEP_AXES:
        raw = axes_in.get(key, _SWEEP_DEFAULTS[key])
        values = list(raw) if isinstance(raw, list) else [raw]
        if not values:
            raise LamfastError(f"axis {key!r} is an empty list")
        typed = []
        for v in values:
            if v is None:
                typed.append(None)
                continue
            want = _SWEEP_TYPES[key]
            if want is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise LamfastError(f"axis {key!r} needs whole numbers, got {v!r}")
            if want is float and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise LamfastError(f"axis {key!r} needs numbers, got {v!r}")
            if want is str and not isinstance(v, str):
                raise LamfastError(f"axis {key!r} needs strings, got {v!r}")
            typed.append(float(v) if want is float else v)
        axes[key] = tuple(typed)
    for s in axes["solver"]:
        if s not in SOLVER_CHOICES:
            raise LamfastError(f"solver must be one of {', '.join(SOLVER_CHOICES)}, got {s!r}")
    for s in axes["eval"]:
        if s not in EVALS:
            raise LamfastError(f"eval must be one of {', '.join(EVALS)}, got {s!r}")
    for s in axes["latent"]:
        if s not in LATENT_CHOICES:
            raise LamfastError(f"latent must be one of {', '.join(LATENT_CHOICES)}, got {s!r}")
    for s in axes["source"]:
        if s not in SOURCES:
            raise LamfastError(f"source must be one of {', '.join(SOURCES)}, got {s!r}")
        if s != "population" and None in axes["rows"]:
            raise LamfastError(f"the {s} source needs a rows axis (e.g. rows = 1e6)")
    for r in axes["rows"]:
        if r is not None and (not math.isfinite(r) or r < 2 or r != int(r)):
            raise LamfastError(f"rows must be whole numbers >= 2, got {r!r}")
    return {"name": name, "axes": axes}


def grid_points(grid: dict) -> list[Point]:
    """Grid points of a parsed grid, in the nesting order of ``SWEEP_AXES`` (dz innermost).

    A finite source's ``rows`` axis is ignored by the population source (one point, not many).
    """
    axes = grid["axes"]
    options = RunOptions()
    points, seen = [], set()
    for values in itertools.product(*(axes[k] for k in SWEEP_AXES)):
        s = dict(zip(SWEEP_AXES, values, strict=True))
        if s["source"] == "population":
            s["rows"] = None
        point = _build_point(grid["name"], s, options, (s["eval"],), s["latent"])
        key = (point, s["eval"])
        if key in seen:
            continue
        seen.add(key)
        points.append(point)
    return points


def _read_finished(path: Path) -> dict[tuple, dict]:
    """Complete rows of a (partial or final) sweep CSV, by key; a torn last line is dropped."""
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # an interrupted write: drop the torn line
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header[: len(CSV_COLUMNS)]) != CSV_COLUMNS:
        raise LamfastError(
            f"{path} is not a lamfast sweep CSV (unexpected header); move it away or use --force"
        )
    done = {}
    for rec in reader:
        if len(rec) != len(header):
            continue
        row = dict(zip(header, rec, strict=True))
        if any(row[m] == "" for m in METRICS):
            continue
        done[tuple(row[c] for c in KEY_COLUMNS)] = row
    return done


def sweep(
    grid: dict | str | os.PathLike,
    out: str | os.PathLike,
    *,
    jobs: int | None = None,
    force: bool = False,
    progress: bool | None = None,
) -> dict:
    """Fit every point of a user grid; write one CSV atomically; resume an interrupted run.

    Finished rows are appended (and flushed) to ``OUT.partial`` as tasks complete; the final CSV
    is written to a temporary file and renamed over ``OUT`` only when every row is done, in grid
    order. A rerun reads the rows already in ``OUT.partial`` (and in ``OUT``) and computes only
    the missing points; ``force`` recomputes everything.

    Returns
    -------
    dict
        ``out``, ``rows`` (total), ``computed`` (rows computed by this call), ``reused``,
        ``seconds``.
    """
    start = time.perf_counter()
    if not isinstance(grid, dict):
        grid = load_grid(grid)
    points = grid_points(grid)
    out = Path(out)
    if out.exists() and out.is_dir():
        raise LamfastError(f"--out {out} is a folder; give a CSV file name")
    if not out.parent.exists():
        raise LamfastError(f"folder {out.parent} does not exist")
    partial = out.with_name(out.name + ".partial")
    missing = sorted({p.solver for p in points} - set(_available_solvers()))
    if missing:
        raise LamfastError(
            f"solver {missing[0]!r} is not available in this build (have {', '.join(_lam.SOLVERS)})"
        )
    keys = [row_key(point_inputs(p, p.evals[0])) for p in points]
    done: dict[tuple, dict] = {}
    if not force:
        done.update(_read_finished(out))
        done.update(_read_finished(partial))
    todo = [i for i, k in enumerate(keys) if k not in done]
    # Rewrite the checkpoint with exactly the reusable rows, then append as tasks finish.
    reused = [done[k] for k in keys if k in done]
    atomic_write_text(partial, csv_text(reused))
    with open(partial, "a", newline="", encoding="utf-8") as log:

        def append(_idx, rows):
            log.write(csv_text(rows).split("\n", 1)[1])
            log.flush()
            os.fsync(log.fileno())

        results = run_points(
            [points[i] for i in todo], jobs=jobs, progress=progress, label="sweep", on_rows=append
        )
    for rows in results:
        for row in rows:
            done[row_key(row)] = {c: _fmt(row[c]) for c in CSV_COLUMNS}
    atomic_write_text(out, csv_text([done[k] for k in keys]))
    os.unlink(partial)
    return {
        "out": str(out),
        "rows": len(keys),
        "computed": len(todo),
        "reused": len(keys) - len(todo),
        "seconds": time.perf_counter() - start,
    }
