"""Figures of the paper's panels (matplotlib, an optional extra: ``pip install 'lamfast[plot]'``).

Each panel is drawn from its CSV rows as the paper lays it out: a metric (LLO unless stated)
against ``dz``, ``sigma`` or ``chi``, one line per setting, one subplot per facet. Only the
object-oriented API (``Figure`` + the Agg canvas) is used: no pyplot, no global backend state.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np

from .._files import atomic_output
from .panels import PROTOCOL_SOLVER

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
    if panel.facets == "metric":
        facets = [("metric", m) for m in panel.metrics]
    elif panel.facets:
        facets = [(panel.facets, v) for v in _unique(r[panel.facets] for r in rows)]
    else:
        facets = [(None, None)]
    # fig4-left's chi = 1 points under the authors' protocol (--chi1-protocol): crosses beside
    # the lines, in the colour of their line
    protocol = [r for r in rows if r["solver"] == PROTOCOL_SOLVER]
    rows = [r for r in rows if r["solver"] != PROTOCOL_SOLVER]
    n = len(facets)
    fig = _figure(4.2 * n, 3.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    line_keys = _unique(tuple(r[c] for c in panel.lines) for r in rows)
    cmap = fig.colormaps["viridis"] if hasattr(fig, "colormaps") else None
    if cmap is None:
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
    crossed = False
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
            mine = [r for r in protocol if tuple(r[c] for c in panel.lines) == key]
            if mine and facet_col in (None, "metric"):
                ax.plot(
                    [r[panel.x] for r in mine],
                    [r[metric] for r in mine],
                    "x",
                    markersize=5,
                    color=color,
                    label=None if crossed else "authors' protocol",
                )
                crossed = True
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
    _save(fig, path)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    with atomic_output(path) as tmp:
        # No timestamp metadata: rerunning writes the same bytes on the same matplotlib.
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})


PROBE_BARS = (
    ("act_r2", "action R²"),
    ("accuracy", "action accuracy"),
    ("obs_share", "observation held"),
    ("noi_share", "exogenous part held"),
    ("leak", "future-exogenous leakage"),
)


def plot_probe_scores(result: dict, path, labels: dict) -> None:
    """Bars of the per-target scores of the latent beside its references (``lamfast probe``):
    shares of each target's variance the latent holds, with the fold spread as error bars."""
    fig = _figure(7.5, 3.4)
    ax = fig.subplots()
    names = [n for n in labels if n in result["scores"]]
    bars = []
    for key, label in PROBE_BARS:
        base = {"obs_share": "obs_mse", "noi_share": "noi_mse"}.get(key, key)
        values = []
        for n in names:
            e = result["scores"][n].get(base)
            if e is None:
                values.append((float("nan"), 0.0))
                continue
            mean = 1.0 - e["mean"] if base != key else e["mean"]
            sd = e.get("sd", float("nan"))
            values.append((mean, sd if sd == sd else 0.0))
        if any(v == v for v, _ in values):
            bars.append((label, values))
    width = 0.8 / max(len(names), 1)
    cmap = fig.colormaps["viridis"] if hasattr(fig, "colormaps") else None
    for j, n in enumerate(names):
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(bars))]
        ys = [b[1][j][0] for b in bars]
        errs = [b[1][j][1] for b in bars]
        color = cmap(j / max(len(names) - 1, 1) * 0.9) if cmap else None
        ax.bar(xs, ys, width, yerr=errs, label=labels[n], color=color, capsize=2)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("share held (held-out)")
    ax.axhline(0.0, color="0.4", linewidth=0.6)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    ax.set_title("What the latent holds, beside the references", fontsize=9)
    _save(fig, path)


def plot_contingency(codes: dict, path, g: int = 0) -> None:
    """Heat map of the code x action contingency table of codebook ``g``."""
    table = np.asarray(codes["contingency"], dtype=np.float64)
    # large codebooks: the map stays a readable page (at most 16 x 12 inches), cells shrink
    fig = _figure(min(1.6 + 0.45 * table.shape[1], 16.0), min(1.2 + 0.35 * table.shape[0], 12.0))
    ax = fig.subplots()
    im = ax.imshow(table, cmap="viridis", aspect="auto")
    ax.set_xlabel("action")
    ax.set_ylabel("code")
    if table.shape[1] <= 40:
        ax.set_xticks(range(table.shape[1]))
    if table.shape[0] <= 40:
        ax.set_yticks(range(table.shape[0]))
    fig.colorbar(im, ax=ax, label="transitions")
    name = "joint code" if g == "joint" else f"codebook {g}"
    ax.set_title(f"{name}: NMI {codes['nmi']:.2f}, purity {codes['purity']:.2f}", fontsize=9)
    _save(fig, path)


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
