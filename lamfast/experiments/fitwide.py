"""Fit and probe a LAM on frames too wide for the full co-moment: the streamed sketch path of
``lamfast fit --method sketch`` (chosen by ``--method auto`` above ``config.WIDE_AUTO_DO``).

The variants whose optimum is the top-``dz`` eigenspace of ``M = E[delta delta^T]`` (identity
decoder, any encoder and kappa: docs/theory.md, item 1) are fitted exactly within the sketch's
accuracy: ``passes`` thin passes of randomized subspace iteration (:mod:`lamfast.moments.sketch`)
give the eigenvectors ``V`` and their residuals, and the last pass also holds the thin moments of
``[o, delta | Q^T delta, a]`` from which the latent ``z = V^T delta = G Q^T delta`` is probed in
closed form (:mod:`lamfast.probes.thin`). Memory is of order ``do x (dz + oversampling)``, never
``do x do``; the data are read ``passes`` times (plus once for the argmax accuracy).
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from .. import config
from ..errors import LamfastError
from ..moments.sketch import SKETCH, SubspaceIteration
from ..moments.tree import dask_client
from ..probes.thin import schur_probe
from ..solvers.variant import Variant
from ..sources.frames.distributed import side_checkpoint_path
from ..sources.frames.wide import frame_differences, frames_as_stored, thin_pass


def check_sketch_variant(variant: Variant) -> None:
    """The sketch path fits the variants whose optimum is a PCA of ``M``; others need the full
    moments (a learned decoder reads ``E[delta o^T]``, supervision the labelled cross terms)."""
    if variant.decoder != "identity" or variant.label_fraction > 0:
        raise LamfastError(
            "the sketch path for wide frames fits the identity decoder without action "
            "supervision (its optimum is the top of the frame-difference spectrum); for a "
            "learned decoder or labels, shrink the frames (--downsample, --crop) to "
            f"{config.WIDE_AUTO_DO} values or fewer and use --method exact"
        )


def frames_summary(source, transitions, dz: int, variant: Variant) -> dict:
    """The head of a frame fit's result: the data, the layout and the model asked for."""
    return {
        "path": str(source.path),
        "frames": source.n_frames,
        "transitions": int(transitions),
        "frame_shape": list(source.frame_shape),
        "do": source.do,
        "da": source.da,
        "actions": source.action_kind,
        "dz": int(dz),
        "variant": dataclasses.asdict(variant),
    }


def delta_probe_accuracy(source, V, G, h, progress=None) -> float:
    """Argmax accuracy of the action probe ``argmax(G V^T delta + h)``, in one more pass: the
    value of :func:`lamfast.probes.frames.probe_accuracy` with the latent map ``[0, V^T, 0]``
    (the same bits: the same product ``delta @ V``, without its ``o @ 0`` term), reading the
    frames as stored and converting them once (:func:`frames_as_stored`)."""
    if source.action_kind != "discrete":
        raise LamfastError("probe accuracy needs discrete actions")
    Vt = np.ascontiguousarray(V.T)  # V^T's layout in probe_accuracy's W: the same GEMM
    stored, scale = frames_as_stored(source)
    hits = total = 0
    for o, o2, acts in stored.transitions(progress=progress, label="accuracy"):
        keep = source.labelled(acts)
        if not keep.all():
            o, o2, acts = o[keep], o2[keep], acts[keep]
        ids = acts.astype(np.int64)
        z = frame_differences(o, o2, scale) @ Vt.T
        hits += int(np.count_nonzero(np.argmax(z @ G.T + h, axis=1) == ids))
        total += ids.shape[0]
    return hits / max(total, 1)


def fit_wide(
    source,
    dz: int,
    variant: Variant,
    *,
    seed: int = 0,
    passes: int | None = None,
    oversample: int | None = None,
    accuracy: bool = True,
    progress=None,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
) -> dict:
    """Fit the PCA LAM of ``source`` by the sketch and probe it; the result has the keys of
    :func:`lamfast.experiments.fitframes.fit_frames` plus ``sketch`` (passes, columns,
    residuals ``||M v - lambda v|| / lambda_1`` of every eigenpair, the discarded variance).

    ``workers`` / ``scheduler`` run every pass on Dask; ``checkpoint`` (``run.npz``) keeps one
    file a pass (``run.sketch1.npz``, ...), so a rerun resumes inside the pass it stopped in and
    recomputes the finished ones from their files, bit for bit."""
    check_sketch_variant(variant)
    passes = int(passes or config.SKETCH_PASSES)
    if passes < 2:
        raise LamfastError(f"the sketch needs at least 2 passes over the data, got {passes}")
    over = int(config.SKETCH_OVERSAMPLE if oversample is None else oversample)
    do = source.do
    k_report = min(do, max(16, dz + 8))  # the spectrum the narrow path reports
    it = SubspaceIteration(do, max(dz, k_report), over, seed)
    thin = None
    scale = {}
    if workers is not None or scheduler is not None:
        scale = {"workers": workers, "scheduler": scheduler}
    with contextlib.ExitStack() as stack:
        if scale:  # one cluster for every pass
            scale = {"client": stack.enter_context(dask_client(workers, scheduler))}
        for i in range(passes):
            last = i == passes - 1
            path = None
            if checkpoint is not None:
                path = side_checkpoint_path(checkpoint, f"sketch{i + 1}")
            thin = thin_pass(
                source,
                it.columns(),
                with_obs=last,
                with_actions=last,
                progress=progress,
                label=f"sketch {i + 1}/{passes}",
                checkpoint=path,
                variances=last,  # only the traces of the last pass read them
                **scale,
            )
            it.update(thin)
    pairs_m = it.eigenpairs("M", dz)
    pairs_s = it.eigenpairs("Sigma", k_report)
    G = it.ritz_map(dz)  # z = G [Q^T delta] from the last pass
    ms = thin.narrow_moments()
    s = ms.index(SKETCH)
    S_ss = ms.cov[s, s]
    S_zz = G @ S_ss @ G.T
    mu_z = G @ ms.mean[s]
    var_delta = thin.wide_var("delta")
    mu_delta = thin.wide_mean("delta")
    tr_m = float(var_delta.sum() + mu_delta @ mu_delta)
    captured = float(np.clip(pairs_m.values, 0.0, None).sum())
    obs_mse, _ = schur_probe(
        S_zz, (thin.block_cross("o", SKETCH) @ G.T).T, float(thin.wide_var("o").sum())
    )
    result = {
        **frames_summary(source, thin.count, dz, variant),
        "solver": "sketch",
        "delta_spectrum": np.clip(pairs_s.values, 0.0, None).tolist(),
        "delta_total_variance": float(var_delta.sum()),
        # the identity-decoder PCA LAM loses the variance of M outside span(V)
        "recon": max(tr_m - captured, 0.0) / do,
        "obs_mse": obs_mse,
        "sketch": {
            "passes": passes,
            "columns": int(it.l),
            "seed": int(seed),
            "residuals": pairs_m.residual.tolist(),
            "spectrum_residuals": pairs_s.residual.tolist(),
            "discarded_variance": max(tr_m - captured, 0.0),
        },
    }
    if source.da:
        a = ms.index("a")
        S_za = G @ ms.cov[s, a]
        S_aa = ms.cov[a, a]
        act_mse, Ga = schur_probe(S_zz, S_za, float(np.trace(S_aa)))
        result["act_mse"], result["act_mse_chance"] = act_mse, 1.0
        if source.action_kind == "discrete":
            freq = ms.mean[a]
            result["action_freq"] = freq.tolist()
            result["act_acc_chance"] = float(freq.max())
            if accuracy:
                h = ms.mean[a] - Ga @ mu_z
                # the accuracy pass reads delta; V^T delta = G Q^T delta up to rounding
                result["act_acc"] = delta_probe_accuracy(
                    source, pairs_m.vectors, Ga, h, progress=progress
                )
    result["notes"] = [
        f"sketch: PCA of E[delta delta^T] by {passes} passes of randomized subspace iteration "
        f"({it.l} columns); largest relative residual ||M v - lambda v|| / lambda_1 = "
        f"{float(pairs_m.residual.max()):.2g}"
    ]
    return result
