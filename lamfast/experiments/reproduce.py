"""``lamfast reproduce``: the paper's six simulation panels, a CSV and a PNG each, and a report
whose claims are computed checks (:mod:`lamfast.experiments.report`).
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .._blas import usable_cores
from .._files import atomic_write_text, check_output, check_output_folder, output_lock
from ..errors import LamfastError
from .gridworld import gridworld_panel
from .panels import EXTRA_PANELS, PANELS, RunOptions, panel_names
from .plots import available, plot_panel
from .points import panel_points
from .report import render
from .runner import run_points
from .tables import csv_text


# ------------------------------------------------------------------------------ reproduce
def plots_available() -> bool:
    """Whether figures can be drawn (matplotlib, an optional extra, is installed)."""

    return available()


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
    on_panel: Callable[[str, int], None] | None = None,
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
    on_panel : callable, optional
        ``on_panel(name, rows)``, called as soon as every point of a simulation panel is computed
        (a long run is never silent).

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
    for f in output_files(requested):  # a FIFO or a device named like an output: refused
        if os.path.lexists(outdir / f):
            check_output(outdir / f, force=True)
    check_output_folder(outdir)  # before minutes of computing
    outdir.mkdir(parents=True, exist_ok=True)
    # One run at a time per folder: a second one fails now instead of replacing these files.
    with output_lock(outdir / ".lamfast-reproduce.lock", f"into {outdir}"):
        points = [p for n in names for p in panel_points(n, options)]
        cpu_seconds: dict[str, float] = {}
        left = collections.Counter(p.panel for p in points)
        rows_at: dict[int, list[dict]] = {}
        have_plots = plot and plots_available()
        drawn = []

        def finished(indices, rows):  # in this process, as each task ends
            for i, point_rows in zip(indices, rows, strict=True):
                rows_at[i] = point_rows
                name = points[i].panel
                left[name] -= 1
                if left[name] > 0:
                    continue
                panel_rows = [
                    r for k, p in enumerate(points) if p.panel == name for r in rows_at[k]
                ]
                if have_plots:
                    # now, while the workers compute the other panels, not after all of them
                    plot_panel(PANELS[name], panel_rows, outdir / f"{name}.png", options)
                    drawn.append(name)
                if on_panel is not None:
                    on_panel(name, len(panel_rows))

        results = run_points(
            points,
            jobs=jobs,
            progress=progress,
            label="reproduce",
            cpu_seconds=cpu_seconds,
            on_rows=finished,
        )
        by_panel: dict[str, list[dict]] = {n: [] for n in names}
        for p, rows in zip(points, results, strict=True):
            by_panel[p.panel].extend(rows)
        compute_seconds = time.perf_counter() - start
        written = []
        for n in names:
            atomic_write_text(outdir / f"{n}.csv", csv_text(by_panel[n]))
            written.append(f"{n}.csv")
        if have_plots:
            for n in names:
                if n not in drawn:  # a panel without points
                    plot_panel(PANELS[n], by_panel[n], outdir / f"{n}.png", options)
                written.append(f"{n}.png")
        seconds = time.perf_counter() - start
        text, checks = render(
            names,
            by_panel,
            options,
            seconds=seconds,
            compute_seconds=compute_seconds,
            figures=have_plots,
            plot_requested=plot,
            jobs=jobs if jobs is not None else usable_cores(),
            cpu_seconds=cpu_seconds,
        )
        rows_extra = {}
        if "gridworld" in extras:
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
