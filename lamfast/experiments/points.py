"""Grid points: a world, a variant, a latent size, a solver and a source; how each is fitted and
scored (one CSV row per point and probe evaluation).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from .. import config
from ..errors import LamfastError
from ..estimator import fit
from ..probes.closed import probe_metrics
from ..solvers.variant import Variant, check_dz
from ..sources.simulated import world_moments
from ..sources.world import LinearWorld
from .panels import EVALS, PANELS, PROTOCOL_SOLVER, RunOptions
from .tables import OUTPUTS


# ------------------------------------------------------------------------------ solver choice
def default_solver(world: LinearWorld, variant: Variant, source: str = "population") -> str:
    """The fastest exact solver for a variant: ``eig`` where a closed form exists, else moment-gd.

    Mirrors the cases of docs/theory.md, closed forms that ``lam.fit(solver="eig")`` solves. On
    finite-sample moments ``o`` is never exactly uncorrelated with ``delta`` (the cross moment
    is O(1/sqrt(n))): augmentation with a learned decoder and free encoder still has a closed
    form there (the ridge innovation PCA), action supervision of an encoder or decoder that can
    read ``o`` does not.

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
        return "eig"  # a non-zero mean frame difference (uniform noise) is refined exactly
    return "eig"  # kappa > 0 with a learned decoder and free encoder: the ridge innovation PCA


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
    dz = check_dz(dz, world.do)
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
    if name == "fig4-left" and options.chi1_protocol:
        # The authors' protocol at chi = 1, where the latent is path-dependent: one more point
        # per dz, after the grid (docs/reproduce.md, the figure at chi = 1).
        for dz in dict(axes)["dz"]:
            settings = {**fixed, "chi": 1.0, "dz": dz, "solver": PROTOCOL_SOLVER}
            points.append(_build_point(name, settings, options, panel.evals, panel.latent))
    return points


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
    if solver == PROTOCOL_SOLVER:  # the paper-mode twin with the authors' step count
        return fit(
            moments,
            point.dz,
            point.variant,
            solver="moment-gd",
            seed=point.world.seed,
            solver_options={
                "mode": "paper",
                "steps": config.CHI1_PROTOCOL_STEPS,
                "noise_aware": False,
            },
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
            # moment-gd in converge mode (whatever solver name led to it); the protocol twin
            # runs a fixed number of steps and is not meant to converge
            iterative = lam.solver == "moment-gd" and point.solver != PROTOCOL_SOLVER
            row["converged"] = bool(getattr(lam, "converged_", False)) if iterative else None
            out.append(row)
    return out
