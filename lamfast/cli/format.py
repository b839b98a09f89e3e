"""Readable tables of fit results, for the terminal (``--json`` prints the record itself)."""

from __future__ import annotations

import textwrap

import numpy as np

from ..experiments.probe import score_table


def format_frames_fit(r: dict) -> str:
    """A readable table of a fit to frame files."""
    v = r["variant"]
    lines = [
        f"data    {r['path']}: {r['frames']} frames, {r['transitions']} transitions, "
        f"frame {'x'.join(map(str, r['frame_shape']))} -> do={r['do']}",
        f"actions {r['actions'] or 'none'}" + (f" (da={r['da']})" if r["da"] else ""),
        f"model   dz={r['dz']} "
        + " ".join(f"{k}={x}" for k, x in v.items())
        + f" solver={r['solver']}",
        "",
        "  frame-difference covariance, top eigenvalues (total variance "
        f"{r['delta_total_variance']:.4g}):",
        "    " + " ".join(f"{x:.4g}" for x in r["delta_spectrum"][:12]),
        f"  recon    {r['recon']:.6f}   (LAM loss per coordinate)",
        f"  obs_mse  {r['obs_mse']:.6f}   (1 = latent knows nothing of the observation)",
    ]
    if "act_mse" in r:
        lines.append(f"  act_mse  {r['act_mse']:.6f}   (chance {r['act_mse_chance']:g})")
    if "act_acc" in r:
        lines.append(
            f"  act_acc  {r['act_acc']:.6f}   (chance {r['act_acc_chance']:.6f}, majority action)"
        )
    if "sketch" in r:
        sk = r["sketch"]
        lines.append(
            f"  sketch   {sk['passes']} passes, {sk['columns']} columns, residuals "
            f"||M v - lambda v|| / lambda_1 <= {max(sk['residuals']):.2g}"
        )
    if "subspace" in r:
        sub = r["subspace"]
        c = sub["check"]
        lines.append(
            f"  subspace the top {sub['dim']} eigenvectors (solver {sub['solver']}), "
            f"{sub['delta_outside_fraction']:.3%} of E||delta||^2 outside them"
            + (f"; in the top {c['dim']}:" if c else "")
        )
        if c:
            lines.append(
                f"           recon {c['recon']:.6f}, obs_mse {c['obs_mse']:.6f}"
                + (f", act_mse {c['act_mse']:.6f}" if "act_mse" in c else "")
            )
    if r.get("labels") == "partial":
        n, nl = r["transitions"], r["labelled_transitions"]
        budget = r.get("label_budget")
        how = (
            f"a budget of {budget['fraction']:g} of the {budget['unit']}s, seed {budget['seed']}"
            if budget
            else "the labels in the data"
        )
        lines += [
            "",
            f"  labels: {nl} of {n} transitions ({nl / n:.4%}), {how}; without them:",
            f"  recon    {r['recon_without_labels']:.6f}",
            f"  act_mse  {r['act_mse_without_labels']:.6f}   (with labels {r['act_mse']:.6f}, "
            f"improvement {r['act_mse_without_labels'] - r['act_mse']:+.6f})",
        ]
        if "act_acc_without_labels" in r:
            lines.append(
                f"  act_acc  {r['act_acc_without_labels']:.6f}   (with labels "
                f"{r['act_acc']:.6f}, improvement "
                f"{r['act_acc'] - r['act_acc_without_labels']:+.6f})"
            )
    if "recon_clean" in r:
        lines += [
            "",
            f"  cleaned: {r['clean_dim']} noise direction(s) from {r['clean_from']} removed "
            "from delta",
            f"  recon    {r['recon_clean']:.6f}",
            f"  obs_mse  {r['obs_mse_clean']:.6f}",
        ]
        if "act_mse_clean" in r:
            lines.append(
                f"  act_mse  {r['act_mse_clean']:.6f}   (was {r['act_mse']:.6f}, improvement "
                f"{r['act_mse'] - r['act_mse_clean']:+.6f})"
            )
        if "act_acc_clean" in r:
            lines.append(
                f"  act_acc  {r['act_acc_clean']:.6f}   (was {r['act_acc']:.6f}, improvement "
                f"{r['act_acc_clean'] - r['act_acc']:+.6f})"
            )
    lines += [f"  note: {n}" for n in r["notes"]]
    if "out" in r:
        lines.append(f"  saved {r['out']}")
    lines.append(f"\n{r['seconds']:.3f} s")
    return "\n".join(lines)


def format_fit(r: dict) -> str:
    """A readable table of one fit."""
    w = r["world"]
    lines = [
        f"world   do={w['do']} da={w['da']} db={w['db']} noise={w['noise']} sigma={w['sigma']:g} "
        f"chi={w['chi']:g} seed={w['seed']}",
        f"source  {r['source']}" + (f" ({r['rows']:.3g} rows)" if r["rows"] else ""),
        f"model   dz={r['dz']} "
        + " ".join(f"{k}={v}" for k, v in r["variant"].items())
        + f" solver={r['solver']}",
        "",
        f"  act_mse  {r['act_mse']:.6f}   (0 = latent predicts the action)",
        f"  obs_mse  {r['obs_mse']:.6f}   (1 = latent knows nothing of the observation)",
        f"  noi_mse  {r['noi_mse']:.6f}   (1 = latent knows nothing of the noise)",
        f"  recon    {r['recon']:.6f}   (LAM loss per coordinate)",
        f"  LLO      {r['llo']:.6f}   (optimum 2)",
        "",
        "  top eigenvalues  "
        + " ".join(f"{x:.4g}" for x in r["spectrum"][: min(12, len(r["spectrum"]))]),
        "  angles to span(X), deg  " + " ".join(f"{np.degrees(x):.1f}" for x in r["angles_action"]),
    ]
    if "angles_noise" in r:
        lines.append(
            "  angles to span(Y), deg  "
            + " ".join(f"{np.degrees(x):.1f}" for x in r["angles_noise"])
        )
    lines += [f"  note: {n}" for n in r["notes"]]
    lines.append(f"\n{r['seconds']:.3f} s")
    return "\n".join(lines)


def format_probe(r: dict) -> str:
    """The score table, code statistics and verdict of ``lamfast probe``."""
    lat = r["latent"]
    lines = [
        f"latents {lat['path']}: {lat['rows']} x {lat['features']} {lat['kind']} features",
        f"data    {r['data']}: {r['transitions']} transitions scored, {r['episodes']} episodes, "
        f"actions {r['actions'] or 'none'}",
        f"noise   {r['noise'] or 'not given (--noise-region, --noise-mask, --noise-columns)'}",
        f"folds   {r['folds']} over {r['fold_unit']}, seed {r['seed']}"
        + (f"; references of {r['ref_dz']} latents" if r["ref_dz"] else ""),
        "",
    ]
    header, rows = score_table(r)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for c in r.get("codes") or []:
        g = c["codebook"]
        name = "joint code" if g == "joint" else f"codebook {g}"
        line = f"{name}: {c['used']}/{c['size']} codes used, perplexity {c['perplexity']:.2f}"
        if "nmi" in c:
            line += f", NMI {c['nmi']:.3f}, purity {c['purity']:.3f}"
        lines += ["", line]
    for w in r["warnings"]:
        lines.append(f"warning: {w}")
    lines += ["", *textwrap.wrap(r["verdict"], width=100)]
    if r.get("report"):
        lines += ["", "wrote " + ", ".join(r["report"])]
    return "\n".join(lines)


def format_offsets(r: dict) -> str:
    """The side-by-side table of ``lamfast fit --offset K1,K2,...``."""
    lines = [
        f"data    {r['path']}: {r['frames']} frames, frame "
        f"{'x'.join(map(str, r['frame_shape']))} -> do={r['do']}",
        f"actions {r['actions'] or 'none'}" + (f" (da={r['da']})" if r["da"] else ""),
        f"model   dz={r['dz']} " + " ".join(f"{k}={x}" for k, x in r["variant"].items()),
        "",
    ]
    header = ["offset", "transitions", "top eigenvalues", f"top-{r['dz']} share"]
    acts = any("action_share" in row for row in r["offsets"])
    if acts:
        header += ["action share", "noise share", "act_mse"]
    header += ["obs_mse", "recon", "solver"]
    table = [header]
    for row in r["offsets"]:
        cells = [
            str(row["offset"]),
            str(row["transitions"]),
            " ".join(f"{x:.3g}" for x in row["delta_spectrum"][:3]),
            f"{row['top_dz_share']:.3f}",
        ]
        if acts:
            cells += [f"{row['action_share']:.3g}", f"{row['noise_share']:.3g}"]
            cells.append(f"{row['act_mse']:.4f}")
        cells += [f"{row['obs_mse']:.4f}", f"{row['recon']:.4g}", row["solver"]]
        table.append(cells)
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    for t in table:
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(t, widths, strict=True)))
    lines += [
        "",
        "  action share: frame-difference variance the actions explain linearly; noise share: "
        "the rest",
        f"\n{r['seconds']:.3f} s",
    ]
    return "\n".join(lines)
