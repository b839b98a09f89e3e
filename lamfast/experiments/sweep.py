"""``lamfast sweep``: every point of a user grid (TOML), one CSV written atomically, resumable."""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import time
import tomllib
from pathlib import Path

from .._files import atomic_write_text, check_input, check_output, output_lock
from ..errors import LamfastError
from ..sources.simulated import SOURCES
from .panels import EVALS, LATENT_CHOICES, SOLVER_CHOICES, RunOptions
from .points import Point, _build_point, point_inputs
from .runner import run_points
from .tables import CSV_COLUMNS, KEY_COLUMNS, METRICS, _fmt, csv_text, row_key

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
    if not os.path.lexists(path):
        raise LamfastError(f"grid file {path} does not exist")
    check_input(path, "grid file")  # a FIFO would block forever
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise LamfastError(f"grid file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise LamfastError(f"grid file {path} is not UTF-8 text (TOML must be)") from None
    except OSError as e:
        raise LamfastError(f"grid file {path}: cannot read ({e.strerror or e})") from None
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
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise LamfastError(
            f"{path} is not a lamfast sweep CSV (not UTF-8 text); move it away or use --force"
        ) from None
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # an interrupted write: drop the torn line
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is not None and tuple(header) == CSV_COLUMNS[:-1]:
        raise LamfastError(
            f"{path} was written by an earlier lamfast (no 'converged' column), so its rows "
            "cannot be appended to; move it away or use --force"
        )
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
    out = Path(out)
    grid_path = None if isinstance(grid, dict) else grid
    if os.path.isdir(out):
        raise LamfastError(f"--out {out} is a folder; give a CSV file name")
    if not isinstance(grid, dict):
        grid = load_grid(grid)
    points = grid_points(grid)
    # OUT is rewritten (a finished or partial sweep resumes from it), but never an input.
    partial = out.with_name(out.name + ".partial")
    inputs = [("grid", grid_path)]
    check_output(out, inputs=inputs, overwrite_ok=True)
    check_output(partial, inputs=inputs, overwrite_ok=True)
    with output_lock(out.with_name(f".{out.name}.lock"), f"the sweep {out}"):
        return _sweep(grid, points, out, partial, jobs, force, progress, start)


def _sweep(grid, points, out, partial, jobs, force, progress, start) -> dict:
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
            log.write(csv_text([r for point_rows in rows for r in point_rows]).split("\n", 1)[1])
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
