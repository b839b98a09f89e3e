"""The CSV contract of ``lamfast reproduce`` and ``lamfast sweep``: columns, writing, reading."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence

import numpy as np

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
# latent's decoder subspace contains, or lies inside, the action subspace. converged: whether a
# moment-gd fit (converge mode) reached stationarity (True/False); empty for the other solvers
# (closed forms are exact, the paper's protocol runs a fixed number of steps by design).
EXTRA_COLUMNS = (
    "do",
    "decoder",
    "encoder",
    "label_weighting",
    "eval",
    "latent",
    "angle_action",
    "converged",
)


CSV_COLUMNS = COLUMNS + EXTRA_COLUMNS


METRICS = ("act_mse", "obs_mse", "noi_mse", "recon", "llo")


OUTPUTS = (*METRICS, "angle_action")


# Columns that identify a grid point (everything but the outputs): the key of a finished row when
# a sweep resumes.
KEY_COLUMNS = tuple(c for c in CSV_COLUMNS if c not in (*OUTPUTS, "converged"))


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


def row_key(row: dict) -> tuple:
    """Key of a row (as CSV text) over ``KEY_COLUMNS``: identifies a finished grid point."""
    return tuple(_fmt(row[c]) for c in KEY_COLUMNS)


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
    if "converged" in out:
        out["converged"] = {"True": True, "False": False}.get(out["converged"])
    return out
