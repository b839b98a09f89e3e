"""``lamfast probe``: what does *your* LAM's latent capture? Inputs, the verdict, the report.

:func:`probe_latents` opens the latents and the transitions they belong to, says what is
exogenous (a region of the frame, a pixel mask, feature columns, or the noise arrays that
``lamfast simulate`` saves), scores everything in two streamed passes
(:func:`lamfast.probes.latents.score_latents`) and writes the verdict in plain words.
:func:`write_report` saves ``scores.json``, ``report.md`` and, with the plot extra, the figures.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path

import numpy as np

from .._files import atomic_folder, atomic_write_text, check_input
from ..errors import LamfastError
from ..moments.tree import dask_client
from ..probes.latents import check_wide, score_latents, wide_frames
from ..sources.export import read_spec
from ..sources.frames.preprocess import Preprocess, parse_crop
from ..sources.frames.source import FrameSource
from ..sources.latents import RowArray
from . import plots

LABELS = {
    "latent": "your latent",
    "linear_lam": "linear LAM (same size)",
    "ceiling": "supervised ceiling",
    "chance": "chance",
}


def open_data(
    data, *, preprocess=None, actions="auto", n_actions=None, chunk_frames=None, reader=None
):
    """The transitions: a :class:`FrameSource`, a path it reads, a mapping of arrays with the
    keys of an ``.npz``, or a tuple ``(o, o_next[, a])``."""
    if isinstance(data, FrameSource):
        return data
    if isinstance(data, tuple | list):
        if len(data) not in (2, 3):
            raise LamfastError("data as a tuple must be (o, o_next) or (o, o_next, a)")
        data = dict(zip(("o", "o_next", "actions"), data, strict=False))
    return FrameSource(
        data,
        preprocess=preprocess,
        actions=actions,
        n_actions=n_actions,
        chunk_frames=chunk_frames,
        reader=reader,
    )


def parse_columns(text: str, do: int) -> np.ndarray:
    """``"0:8,12"`` to sorted feature ids of the flattened frame."""
    ids = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", part)
        if not m:
            raise LamfastError(f"noise columns must look like '0:8,12', got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo + 1
        if hi <= lo:
            raise LamfastError(f"noise columns {part.strip()!r} are empty")
        ids.extend(range(lo, hi))
    ids = np.unique(np.array(ids, dtype=np.int64))
    if ids[-1] >= do:
        raise LamfastError(f"noise column {int(ids[-1])} is outside the {do} frame values")
    return ids


def noise_pixels(shape: tuple, *, region=None, mask=None, columns=None):
    """Flat ids (into the preprocessed frame of ``shape``) of what is exogenous, and a label."""
    given = [n for n, v in (("region", region), ("mask", mask), ("columns", columns)) if v]
    if len(given) > 1:
        raise LamfastError(f"give one of a noise region, mask or columns, not {given}")
    do = int(np.prod(shape))
    if region is not None:
        if len(shape) < 2:
            raise LamfastError(
                f"a noise region needs frames shaped H x W [x C], these are {shape}: use "
                "noise columns"
            )
        y0, y1, x0, x1 = parse_crop(region)
        H, W = shape[0], shape[1]
        if y1 > H or x1 > W:
            raise LamfastError(
                f"noise region {region!r} lies outside the frame of {H} x {W} (after --crop and "
                "--downsample)"
            )
        grid = np.zeros(shape, dtype=bool)
        grid[y0:y1, x0:x1] = True
        return np.flatnonzero(grid.ravel()), f"frame region rows {y0}:{y1}, columns {x0}:{x1}"
    if mask is not None:
        label = "pixel mask"
        if isinstance(mask, str | Path):
            label = f"pixel mask {Path(mask).name}"
            path = check_input(mask, "noise mask")
            try:
                mask = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise LamfastError(f"{path}: not a readable .npy mask ({e})") from None
        mask = np.asarray(mask)
        if mask.shape not in (tuple(shape), (do,)):
            raise LamfastError(
                f"noise mask of shape {mask.shape} does not match the frame {tuple(shape)}"
            )
        if mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
            raise LamfastError("noise mask must hold booleans (or 0 / 1)")
        ids = np.flatnonzero(mask.ravel())
        if ids.size == 0:
            raise LamfastError("noise mask selects no pixel")
        return ids, label
    if columns is not None:
        ids = parse_columns(columns, do)
        return ids, f"feature columns {columns}"
    return None, None


def _noise_arrays(data):
    """The noise arrays ``lamfast simulate linear`` saved beside the transitions, if any."""
    if not isinstance(data, str | Path):
        return None
    try:
        spec = read_spec(data)
    except (OSError, ValueError, KeyError):
        return None
    block = (spec or {}).get("noise_block")
    if not block:
        return None
    path = Path(data)
    if path.is_dir():
        return RowArray(path / f"{block}.npy", name="noise", kind="continuous"), block
    return RowArray(path, name="noise", key=block, kind="continuous"), block


def probe_latents(
    z,
    data,
    *,
    index=None,
    key: str | None = None,
    kind: str = "auto",
    codebook_size=None,
    codebook=None,
    noise_region: str | None = None,
    noise_mask=None,
    noise_columns: str | None = None,
    noise_arrays: bool = True,
    folds: int | None = None,
    seed: int = 0,
    references: bool = True,
    ref_dz: int | None = None,
    accuracy: bool = True,
    preprocess: Preprocess | None = None,
    actions: str = "auto",
    n_actions: int | None = None,
    chunk_frames: int | None = None,
    reader=None,
    progress=None,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
) -> dict:
    """Score the latents of any LAM: what do they hold of the action, the observation and the
    exogenous noise, beside the linear LAM of the same size, the supervised ceiling and chance?

    Parameters
    ----------
    z : array_like or path
        One latent per transition: continuous ``N x dz``, or integer codes ``N`` / ``N x G``;
        an array, ``.npy``, ``.npz`` (``key`` names the member) or a directory of per-episode
        files (:mod:`lamfast.sources.latents`).
    data : path, FrameSource, mapping or tuple
        The transitions: anything ``lamfast fit`` reads, arrays under the keys of an ``.npz``,
        or ``(o, o_next[, a])``. Latent ``i`` belongs to transition ``i``
        (:meth:`lamfast.FrameSource.transitions` order); ``index`` gives the transition ids of
        models that skip transitions.
    noise_region, noise_mask, noise_columns
        What is exogenous: ``"y0:y1,x0:x1"`` of the frame after preprocessing, a boolean mask
        of the frame (array or ``.npy``), or feature columns ``"0:8,12"``. Without them, the
        noise arrays that ``lamfast simulate linear`` saves are used (``noise_arrays``).
    folds, seed
        Held-out folds over episodes (default 5) and the seed of their draw.
    references, ref_dz
        Score the references too, with latents of ``ref_dz`` values.
    accuracy : bool
        The second pass that counts argmax accuracies (discrete actions).
    preprocess, actions, n_actions, chunk_frames, reader
        How a dataset path is read (:class:`FrameSource`).
    workers, scheduler, client
        Run both passes on Dask: a local cluster of ``workers`` processes, the cluster at
        ``scheduler``, or an existing ``client`` (latents and data as files that every worker
        sees at the same path). The scores are the same bits as in process.

    Frames wider than ``config.FRAMES_MAX_DIM`` values are scored from thin moments
    (:func:`lamfast.probes.latents.score_latents`, docs/probe.md): the same keys, the latent
    beside chance; the references and Dask are refused there, and the leakage is not scored.

    Returns
    -------
    dict
        What :func:`lamfast.probes.latents.score_latents` returns, plus ``noise`` (what was
        probed as exogenous) and ``verdict`` (a paragraph in plain words).

    Examples
    --------
    >>> from lamfast.sources.gridworld import simulate_gridworld
    >>> d = simulate_gridworld(episodes=40, length=10, noise=1.0, seed=0)
    >>> src = FrameSource(d)
    >>> a = np.concatenate([acts for _, _, acts in src.transitions()])
    >>> r = probe_latents(a, src, noise_region="3:4,0:4")   # the true action, as codes
    >>> round(r["scores"]["latent"]["act_mse"]["mean"], 6), r["codes"][0]["purity"]
    (0.0, 1.0)
    """
    source = open_data(
        data,
        preprocess=preprocess,
        actions=actions,
        n_actions=n_actions,
        chunk_frames=chunk_frames,
        reader=reader,
    )
    dask = client is not None or workers is not None or scheduler is not None
    if wide_frames(source):  # thin moments (what they cannot score is refused here)
        check_wide(source, references, dask)
    else:  # the scores need the full moments of [z, o, delta, a]
        source.check_full_width()
    if source.partial:
        raise LamfastError(
            f"{source.path}: {source.n_labelled} of {source.n_transitions} transitions have an "
            "action label; lamfast probe scores fully labelled data (or --actions none)"
        )
    latents = RowArray(z, name="latents", key=key, kind=kind)
    pixels, label = noise_pixels(
        source.shape, region=noise_region, mask=noise_mask, columns=noise_columns
    )
    noise = None
    if pixels is None and noise_arrays:
        found = _noise_arrays(data)
        if found is not None:
            noise, block = found
            label = f"noise arrays '{block}' saved with the data"
    if client is not None and (workers is not None or scheduler is not None):
        raise LamfastError("give a client, or workers/scheduler, not both")
    if client is not None or (workers is None and scheduler is None):
        context = contextlib.nullcontext(client)
    else:
        source.spec(), latents.spec()  # arrays in memory are refused before a cluster starts
        context = dask_client(workers, scheduler)
    with context as own:
        result = score_latents(
            latents,
            source,
            index=index,
            codebook_size=codebook_size,
            codebook=codebook,
            noise_pixels=pixels,
            noise=noise,
            folds=folds,
            seed=seed,
            references=references,
            ref_dz=ref_dz,
            accuracy=accuracy,
            progress=progress,
            client=own,
        )
    result["data"] = str(source.path)
    result["noise"] = label
    result["verdict"] = verdict(result)
    return result


# ---------------------------------------------------------------------------- the verdict
MEANINGFUL = 0.1  # a share of variance below this is "little" in the verdict's words


def _mean(result, name, metric) -> float:
    entry = result["scores"].get(name, {}).get(metric)
    return float("nan") if entry is None else entry["mean"]


def _share(mse: float) -> float:
    """The share of a target's variance a probe explains, ``1 - MSE``, in [0, 1]."""
    return float(min(max(1.0 - mse, 0.0), 1.0))


def verdict(result: dict) -> str:
    """A paragraph in plain words: what the latent holds, beside the references, and the
    remedies the theory predicts (docs/theory.md, probing any latent)."""
    s = []
    act = _share(_mean(result, "latent", "act_mse"))
    has_act = math.isfinite(_mean(result, "latent", "act_mse"))
    noi_mse = _mean(result, "latent", "noi_mse")
    has_noise = math.isfinite(noi_mse)
    obs = _share(_mean(result, "latent", "obs_mse"))
    held = "held-out" if result["folds"] > 1 else "in-sample"
    noise_varies = has_noise and result.get("noise_variance", 1.0) > 0
    what = []
    if has_act:
        what.append(f"{act:.2f} of the action")
    if noise_varies:
        what.append(f"{_share(noi_mse):.2f} of the exogenous part ({result['noise']})")
    what.append(f"{obs:.2f} of the observation")
    s.append(f"The latent carries {_join(what)} ({held} linear probes, shares of variance).")
    if has_noise and not noise_varies:
        s.append(f"The exogenous part ({result['noise']}) never changes in these data.")
    acc = _mean(result, "latent", "accuracy")
    if math.isfinite(acc):
        chance = _mean(result, "chance", "accuracy")
        s.append(f"Its action probe is right {acc:.0%} of the time (chance: {chance:.0%}).")
    leak = _mean(result, "latent", "leak")
    if math.isfinite(leak) and leak > MEANINGFUL:
        s.append(
            f"It holds {leak:.2f} of the future exogenous state that o does not predict: the "
            "latent encodes noise the next frame will show, the failure the theory names."
        )
    if "linear_lam" in result["scores"] and has_act:
        lin_act = _share(_mean(result, "linear_lam", "act_mse"))
        lin_noi = _mean(result, "linear_lam", "noi_mse")
        line = f"The linear LAM of the same size carries {lin_act:.2f} of the action"
        lin_noise = _share(lin_noi) if math.isfinite(lin_noi) and noise_varies else None
        if lin_noise is not None:
            line += f" and {lin_noise:.2f} of the exogenous part"
        if (
            lin_noise is not None
            and min(lin_noise, lin_act) > MEANINGFUL
            and (abs(lin_noise - lin_act) < MEANINGFUL)
        ):
            line += (
                ": the top of the frame-difference spectrum holds the action and the noise "
                "alike, so a LAM of this size mixes them; cleaning or a few action labels "
                "separate them"
            )
        elif lin_noise is not None and lin_noise > max(lin_act, MEANINGFUL):
            line += (
                ": noise dominates the frame differences, so a LAM of this size is pulled "
                "towards it; cleaning (lamfast fit --noop-action or --clean-basis), "
                "augmentation or a few action labels are the remedies the theory predicts"
            )
        elif lin_act > MEANINGFUL:
            line += ": the action dominates the frame differences"
        else:
            line += (
                f": the top of the frame-difference spectrum holds little of "
                f"{'the action' if lin_noise is None else 'either'} (the action is not a "
                "linear function of the frame difference here)"
            )
        s.append(line + ".")
    if "ceiling" in result["scores"] and has_act:
        ceil = _share(_mean(result, "ceiling", "act_mse"))
        line = f"The best linear latent of this size reaches {ceil:.2f} of the action"
        if act < 0.5 * ceil:
            line += "; your latent is well below what a linear read-out of (o, o') achieves"
        elif act > ceil + 0.05:
            line += "; your latent goes beyond it (a nonlinear encoder can)"
        s.append(line + ".")
    if has_act:
        gap = act - _share(result["scores"]["latent"]["act_mse"]["in_sample"])
        if result["folds"] > 1 and gap < -MEANINGFUL:
            s.append(
                f"Held-out scores trail in-sample ones by {-gap:.2f}: part of what the probe "
                "finds is memorised rows."
            )
    for w in result["warnings"]:
        if "collapsed" in w:
            s.append(w[0].upper() + w[1:] + ": too few codes to tell the actions apart.")
    return " ".join(s)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------------------- the report
def _cell(entry) -> str:
    if entry is None or not math.isfinite(entry["mean"]):
        return "—"
    if math.isfinite(entry.get("sd", float("nan"))):
        return f"{entry['mean']:.3f} ± {entry['sd']:.3f}"
    return f"{entry['mean']:.3f}"


ROWS = (
    ("act_r2", "action R²"),
    ("accuracy", "action accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("obs_mse", "obs_mse"),
    ("noi_mse", "noi_mse"),
    ("leak", "future-exogenous leakage"),
    ("llo", "LLO"),
)


def score_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the score table (metrics x latents), for the terminal and Markdown."""
    names = [n for n in LABELS if n in result["scores"]]
    header = ["metric", *(LABELS[n] for n in names)]
    rows = []
    for metric, label in ROWS:
        cells = [_cell(result["scores"][n].get(metric)) for n in names]
        if all(c == "—" for c in cells):
            continue
        rows.append([label, *cells])
    return header, rows


def markdown(result: dict, figures: list[str]) -> str:
    """The report as Markdown."""
    lat = result["latent"]
    lines = [
        "# lamfast probe report",
        "",
        f"- latents: {lat['path']} ({lat['kind']}, {lat['rows']} rows, {lat['features']} features)",
        f"- data: {result['data']} ({result['transitions']} transitions scored of "
        f"{result['data_transitions']}, {result['episodes']} episodes)",
        f"- actions: {result['actions'] or 'none'}; "
        f"exogenous part: {result['noise'] or 'not given'}",
        f"- folds: {result['folds']} over {result['fold_unit']} (seed {result['seed']}); "
        f"references of {result['ref_dz']} latents",
        "",
        "## Verdict",
        "",
        result["verdict"],
        "",
        "## Scores",
        "",
        (
            "Held-out mean ± sd over folds"
            if result["folds"] > 1
            else "In-sample (one fold: the probes are scored on the rows they were fitted on)"
        )
        + "; MSEs are normalised by the target's variance (1: the latent holds nothing of it).",
        "",
    ]
    header, rows = score_table(result)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    for c in result.get("codes") or []:
        g = c["codebook"]
        lines += [
            "",
            f"## Codebook {g}" if g != "joint" else "## Joint code of all codebooks",
            "",
            f"{c['used']} of {c['size']} codes used ({c['dead']} dead), perplexity "
            f"{c['perplexity']:.2f}" + (" — collapsed" if c["collapse"] else ""),
        ]
        if "nmi" in c:
            lines[-1] += f"; NMI with the actions {c['nmi']:.3f}, purity {c['purity']:.3f}."
            table = c["contingency"]
            acts = " | ".join(f"a = {a}" for a in range(len(table[0])))
            lines += ["", f"| code | {acts} |", "|---|" + "---|" * len(table[0])]
            lines += [
                f"| {k} | " + " | ".join(str(v) for v in row) + " |" for k, row in enumerate(table)
            ]
    for w in result["warnings"]:
        lines += ["", f"**Warning:** {w}"]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def to_json(result: dict, **options) -> str:
    """JSON of a result, with NaN (an undefined score) as null."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(result), **options)


def write_report(result: dict, out, *, figures: bool = True) -> list[str]:
    """Write ``scores.json``, ``report.md`` and (with matplotlib) the figures into the new
    folder ``out``, atomically. Returns the names written."""
    out = Path(out)
    names = []
    with atomic_folder(out) as tmp:
        if figures and plots.available():
            plots.plot_probe_scores(result, tmp / "scores.png", LABELS)
            names.append("scores.png")
            for c in result.get("codes") or []:
                if "contingency" in c:
                    g = c["codebook"]
                    plots.plot_contingency(c, tmp / f"codes{g}.png", g)
                    names.append(f"codes{g}.png")
        atomic_write_text(tmp / "scores.json", to_json(result, indent=2) + "\n")
        atomic_write_text(tmp / "report.md", markdown(result, names))
    return ["report.md", "scores.json", *names]
