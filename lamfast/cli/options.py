"""Option groups and parameter types shared by the commands of the ``lamfast`` command line.

Choices are read from the library's constants (noise kinds, decoders, encoders, weightings,
solvers, sources, action kinds, policies), so the command line cannot drift from the library.
"""

from __future__ import annotations

import click
import numpy as np

from ..experiments.fitframes import METHODS
from ..solvers.variant import DECODERS, ENCODERS, SOLVER_CHOICES, WEIGHTINGS
from ..sources.frames.formats import ReaderOptions
from ..sources.frames.source import ACTION_KINDS, LABEL_UNITS
from ..sources.world import NOISE_KINDS

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


class Pair(click.ParamType):
    """Two numbers ``a:b`` (a time range) or ``HxW`` (a frame size)."""

    def __init__(self, sep: str, kind, name: str):
        self.sep, self.kind, self.name = sep, kind, name

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().split(self.sep)
        try:
            if len(parts) != 2:
                raise ValueError
            pair = tuple(self.kind(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not of the form {self.name}", param, ctx)
        if any(not np.isfinite(x) or x < 0 for x in pair) or (self.kind is int and min(pair) < 1):
            self.fail(f"{value!r}: {self.name} needs positive numbers", param, ctx)
        return pair


class Offsets(click.ParamType):
    """Frame gaps ``K`` or ``K1,K2,...``: distinct whole numbers >= 1."""

    name = "K[,K...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            gaps = tuple(int(p) for p in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a list of whole numbers like 1,2,4,8", param, ctx)
        if min(gaps) < 1 or len(set(gaps)) != len(gaps):
            self.fail(f"{value!r}: offsets must be distinct whole numbers >= 1", param, ctx)
        return gaps


# Options shared by several commands.
progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress on stderr for long work: a bar on a terminal, a plain line every 10 s in a "
    "log [default: on].",
)


jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: usable cores].",
)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
force_option = click.option("--force", is_flag=True, help="Overwrite an existing output file.")


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
            type=click.Choice(SOLVER_CHOICES),
            default="auto",
            show_default=True,
            help="auto: eig where a closed form exists, else moment-gd (the output says which "
            "ran); eig: closed forms (docs/theory.md); moment-gd: Adam on the exact loss; "
            "sgd: the paper's minibatch protocol.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _read_options():
    """Flags that say how frame files are read (``fit`` and ``probe``)."""
    return [
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
            "--obs-key", default=None, help="HDF5 dataset or LeRobot column of the observations."
        ),
        click.option(
            "--action-key", default=None, help="HDF5 dataset or LeRobot column of the actions."
        ),
        click.option(
            "--stride",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Keep every N-th frame (video, images, LeRobot).",
        ),
        click.option(
            "--time-range",
            type=Pair(":", float, "T0:T1"),
            default=None,
            help="Seconds T0:T1 of each video.",
        ),
        click.option(
            "--resize",
            type=Pair("x", int, "HxW"),
            default=None,
            help="Scale decoded frames to HxW (video, images, LeRobot).",
        ),
        click.option(
            "--grey", is_flag=True, help="Decode to one grey channel (video, images, LeRobot)."
        ),
        click.option(
            "--actions-file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Actions beside videos or image folders (.npy, one per kept frame).",
        ),
        click.option(
            "--episodes-file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Episode start frames of a video (.npy).",
        ),
    ]


READER_FLAGS = (
    "obs_key", "action_key", "stride", "time_range", "resize", "grey", "actions_file",
    "episodes_file",
)  # fmt: skip


def reader_options(kw: dict) -> ReaderOptions:
    """Pop the reader flags out of a command's keyword arguments into ``ReaderOptions``."""
    return ReaderOptions(**{name: kw.pop(name) for name in READER_FLAGS})


def frame_read_options(f):
    """Flags for reading frame files."""
    for option in reversed(_read_options()):
        f = option(f)
    return f


def frame_options(f):
    """Flags for reading frame files (only with FRAMES_PATH)."""
    options = [
        *_read_options(),
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
            "--label-budget",
            type=click.FloatRange(0, 1, min_open=True),
            metavar="F",
            default=None,
            help="Keep a random fraction F of the transitions (or episodes) labelled, drawn with "
            "--seed, and fit with those labels only: a label budget on a fully labelled dataset.",
        ),
        click.option(
            "--label-unit",
            type=click.Choice(LABEL_UNITS),
            default="transition",
            show_default=True,
            help="What --label-budget draws.",
        ),
        click.option(
            "--offset",
            type=Offsets(),
            default="1",
            show_default=True,
            help="Frame gap K: fit on (o_t, o_t+K), never across an episode. Several gaps "
            "(1,2,4,8) are read in one pass and compared side by side.",
        ),
        click.option(
            "--method",
            type=click.Choice(METHODS),
            default="auto",
            show_default=True,
            help="exact: the full moments of [o, delta, a]; sketch: passes of a randomized "
            "subspace iteration in memory of order do x dz, for wide frames (exact for the "
            "identity decoder; a learned decoder or labels are fitted inside the sketch's "
            "subspace, reported); auto: the sketch above 2048 values a frame.",
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
        force_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f
