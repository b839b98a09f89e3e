"""The paper's six simulation panels as data, and the options of a run.

A *panel* (:class:`Panel`) is data: the fixed world and LAM variant, the swept axes, how the probes
are evaluated, and how the figure is laid out. :func:`lamfast.experiments.points.panel_points`
expands it into grid points; :func:`lamfast.experiments.runner.run_points` computes them;
:func:`lamfast.experiments.reproduce.reproduce` writes the files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ..errors import LamfastError
from ..solvers.variant import SOLVER_CHOICES, WEIGHTINGS
from ..sources.simulated import SOURCES

# How probes fitted on the training law are scored (docs/theory.md, scoring, distribution shift).
EVALS = ("train", "noise-free", "random-actions")


# Which latent each probe reads: "true" (z), "surrogate" (o^' - o), or "act-surrogate" (the action
# probe reads the surrogate latent, the observation and noise probes read z: Fig. 4-left).
LATENT_CHOICES = ("true", "surrogate", "act-surrogate")


# Noise of fig4-middle: the paper's text (gaussian) or the authors' augmentation script (uniform).
FIG4_MIDDLE_NOISES = ("gaussian", "uniform")
# The CSV solver of fig4-left's chi = 1 points under the authors' protocol (--chi1-protocol).
PROTOCOL_SOLVER = "moment-gd-paper"
# Weightings of fig4-right, the figure's solid lines (the authors' scripts) first.
FIG4_RIGHT_WEIGHTINGS = ("batch", "paper")


# ------------------------------------------------------------------------------ panels as data
@dataclasses.dataclass(frozen=True)
class Panel:
    """One simulation panel of the paper (docs/reproduce.md), as data.

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
                ("label_weighting", FIG4_RIGHT_WEIGHTINGS),
                ("dz", DZ_ALL),
            ),
            quick_axes=(
                ("sigma", (0.5, 2.0)),
                ("label_fraction", (0.0, 0.01)),
                ("label_weighting", FIG4_RIGHT_WEIGHTINGS),
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
    chi1_protocol : bool
        fig4-left: also fit every dz at chi = 1 by the authors' protocol (the paper-mode twin,
        ``config.CHI1_PROTOCOL_STEPS`` Adam steps at lr ``config.SGD_LR``), reported and drawn
        beside the optimum-manifold value (CSV solver ``moment-gd-paper``).

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
    chi1_protocol: bool = False

    def __post_init__(self):
        if self.solver not in SOLVER_CHOICES:
            raise LamfastError(
                f"solver must be one of {', '.join(SOLVER_CHOICES)}, got {self.solver!r}"
            )
        if self.source not in SOURCES:
            raise LamfastError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source != "population" and self.rows is None:
            raise LamfastError(f"the {self.source} source needs --rows")
        if self.fig4_middle_noise not in FIG4_MIDDLE_NOISES:
            raise LamfastError(
                f"fig4-middle noise must be gaussian or uniform, got {self.fig4_middle_noise!r}"
            )
        if self.label_weighting not in WEIGHTINGS:
            raise LamfastError(
                f"label_weighting must be batch or paper, got {self.label_weighting!r}"
            )


# Panels run only when named: the grid-world study (lamfast.experiments.gridworld) simulates frame
# files and
# fits them through lamfast.sources.frames, the path users' own data take.
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
