"""Figures of the paper's panels (matplotlib, an optional extra: ``pip install 'lamfast[plot]'``).

Each panel is drawn from its CSV rows as the paper lays it out: a metric (LLO unless stated)
against ``dz``, ``sigma`` or ``chi``, one line per setting, one subplot per facet. Only the
object-oriented API (``Figure`` + the Agg canvas) is used: no pyplot, no global backend state.
"""

from __future__ import annotations

import os
import textwrap

from .._files import atomic_output

LABELS = {
    "llo": "LLO (optimum 2)",
    "act_mse": "action probe MSE",
    "obs_mse": "observation probe MSE",
    "noi_mse": "noise probe MSE",
    "recon": "reconstruction loss",
    "dz": "latent dimension dz",
    "sigma": "noise scale sigma",
    "chi": "policy determinism chi",
    "da": "da",
    "kappa": "kappa",
    "label_fraction": "m",
    "label_weighting": "weighting",
    "eval": "probes scored on",
}
EVAL_TITLES = {
    "train": "scored on the training law",
    "noise-free": "scored on noise-free transitions",
    "random-actions": "scored on random actions",
}


def available() -> bool:
    """Whether matplotlib is installed (figures are skipped, and the report says so, if not)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _line_label(panel, key) -> str:
    parts = []
    values = dict(zip(panel.lines, key, strict=True))
    for col, value in values.items():
        if col == "label_weighting":
            if values.get("label_fraction", 1) != 0:  # without labels the weighting is moot
                parts.append("w = m" if value == "paper" else "w = 1-(1-m)^128")
        else:
            parts.append(
                f"{LABELS.get(col, col)}={value:g}"
                if isinstance(value, float)
                else f"{LABELS.get(col, col)}={value}"
            )
    return ", ".join(parts)


def plot_panel(panel, rows: list[dict], path: str | os.PathLike, options=None) -> None:
    """Write the PNG figure of one panel from its rows (atomically: temp file, then rename)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if panel.facets == "metric":
        facets = [("metric", m) for m in panel.metrics]
    elif panel.facets:
        facets = [(panel.facets, v) for v in _unique(r[panel.facets] for r in rows)]
    else:
        facets = [(None, None)]
    n = len(facets)
    fig = Figure(figsize=(4.2 * n, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    line_keys = _unique(tuple(r[c] for c in panel.lines) for r in rows)
    cmap = fig.colormaps["viridis"] if hasattr(fig, "colormaps") else None
    if cmap is None:
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
    for ax, (facet_col, facet_val) in zip(axes, facets, strict=True):
        metric = facet_val if facet_col == "metric" else panel.metrics[0]
        sub = (
            rows
            if facet_col in (None, "metric")
            else [r for r in rows if r[facet_col] == facet_val]
        )
        for j, key in enumerate(line_keys):
            pts = sorted(
                (r[panel.x], r[metric]) for r in sub if tuple(r[c] for c in panel.lines) == key
            )
            if not pts:
                continue
            color = cmap(j / max(len(line_keys) - 1, 1) * 0.9)
            style = "--" if "paper" in key else "-"
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                style,
                marker="o",
                markersize=2.5,
                linewidth=1.2,
                color=color,
                label=_line_label(panel, key),
            )
        ax.set_xlabel(LABELS.get(panel.x, panel.x))
        ax.set_ylabel(LABELS.get(metric, metric))
        if metric == "llo":
            ax.axhline(2.0, color="0.6", linewidth=0.6, linestyle=":")
        if facet_col == "eval":
            ax.set_title(EVAL_TITLES.get(facet_val, facet_val), fontsize=9)
        elif facet_col not in (None, "metric"):
            ax.set_title(f"{LABELS.get(facet_col, facet_col)} = {facet_val:g}", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(labels) > 8:
        axes[-1].legend(handles, labels, fontsize=6, ncol=2, loc="best")
    else:
        axes[-1].legend(handles, labels, fontsize=7, loc="best")
    title = textwrap.fill(f"{panel.name}: {panel.title}", width=max(60, 58 * n))
    fig.suptitle(title, fontsize=9)
    with atomic_output(path) as tmp:
        # No timestamp metadata: rerunning writes the same bytes on the same matplotlib.
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})


def _unique(values) -> list:
    """Distinct values in order of first appearance (rows come in grid order)."""
    return list(dict.fromkeys(values))


def _order(value):
    """Sort key that orders numbers numerically and strings alphabetically (numbers first)."""
    if isinstance(value, tuple):
        return tuple(_order(v) for v in value)
    if isinstance(value, int | float):
        return (0, float(value), "")
    return (1, 0.0, str(value))
