"""Fit and probe a LAM on frames too wide for the full co-moment: the streamed sketch path of
``lamfast fit --method sketch`` (chosen by ``--method auto`` above ``config.WIDE_AUTO_DO``).

The variants whose optimum is the top-``dz`` eigenspace of ``M = E[delta delta^T]`` (identity
decoder, any encoder and kappa: docs/theory.md, item 1) are fitted exactly within the sketch's
accuracy: ``passes`` thin passes of randomized subspace iteration (:mod:`lamfast.moments.sketch`)
give the eigenvectors ``V`` and their residuals, and the last pass also holds the thin moments of
``[o, delta | Q^T delta, a]`` from which the latent ``z = V^T delta = G Q^T delta`` is probed in
closed form (:mod:`lamfast.probes.thin`). Memory is of order ``do x (dz + oversampling)``, never
``do x do``; the data are read ``passes`` times (plus once for the argmax accuracy).

The other variants (a learned decoder, action supervision) are fitted inside the span of the
sketch's ``l`` columns: the last pass also gives ``Q^T o``, hence the full moments of the
frames in that span, where the exact solvers of the narrow path run; the fitted LAM, lifted to
the frames (``A = I`` outside the span), is scored exactly, and the report says what lies
outside the span and how the scores move with its dimension (:func:`subspace_fit`).
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from .. import config
from ..errors import LamfastError
from ..estimator import fit
from ..moments.core import Moments
from ..moments.sketch import SKETCH, SKETCH_OBS, SubspaceIteration
from ..moments.tree import dask_client
from ..probes.closed import latent_map, linear_probe, probe_mse
from ..probes.thin import schur_probe
from ..solvers.fitted import recon_loss
from ..solvers.variant import Variant
from ..sources.frames.distributed import side_checkpoint_path
from ..sources.frames.wide import frame_differences, frame_rows, frames_as_stored, thin_pass


def pca_variant(variant: Variant) -> bool:
    """Whether the optimum of ``variant`` is the top-``dz`` eigenspace of ``M`` (identity
    decoder, no action labels: docs/theory.md), which the sketch finds exactly; the others are
    fitted inside the sketch's subspace (:func:`subspace_fit`)."""
    return variant.decoder == "identity" and variant.label_fraction == 0


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


def chance_scores(source, freq: np.ndarray) -> dict:
    """The action probes' baselines: ``act_mse`` 1 (predicting the mean), and for discrete
    actions their frequencies and the majority action's share (the accuracy of chance)."""
    out = {"act_mse_chance": 1.0}
    if source.action_kind == "discrete":
        out["action_freq"] = freq.tolist()
        out["act_acc_chance"] = float(freq.max())
    return out


def latent_probe_accuracy(source, Wd, G, h, Wo=None, progress=None) -> float:
    """Argmax accuracy of the action probe ``argmax(G z + h)`` of the latent ``z = Wo o + Wd
    delta`` (``Wo`` omitted: ``z = Wd delta``), in one more pass: the value of
    :func:`lamfast.probes.frames.probe_accuracy` with the latent map ``[Wo, Wd, 0]`` (the same
    bits: the same products, without an ``o @ 0`` term when ``Wo`` is omitted), reading the
    frames as stored and converting them once (:func:`frames_as_stored`)."""
    if source.action_kind != "discrete":
        raise LamfastError("probe accuracy needs discrete actions")
    do = source.do
    Wd = np.ascontiguousarray(Wd)  # the layout of probe_accuracy's W rows: the same GEMM
    Wo = None if Wo is None else np.ascontiguousarray(Wo)
    stored, scale = frames_as_stored(source)
    hits = total = 0
    for o, o2, acts in stored.transitions(progress=progress, label="accuracy"):
        keep = source.labelled(acts)
        if not keep.all():
            o, o2, acts = o[keep], o2[keep], acts[keep]
        ids = acts.astype(np.int64)
        if Wo is None:
            z = frame_differences(o, o2, scale) @ Wd.T
        else:
            X = frame_rows(o, o2, scale)
            z = X[:, :do] @ Wo.T + X[:, do:] @ Wd.T
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
    solver: str = "auto",
) -> dict:
    """Fit the LAM of ``source`` by the sketch and probe it; the result has the keys of
    :func:`lamfast.experiments.fitframes.fit_frames` plus ``sketch`` (passes, columns,
    residuals ``||M v - lambda v|| / lambda_1`` of every eigenpair, the discarded variance)
    and, for a variant fitted inside the sketch's subspace, ``subspace`` (its dimension, the
    part of ``E||delta||^2`` outside it, the scores of the same fit in a smaller subspace).
    ``solver`` is the solver of that fit (the PCA variants need none).

    ``workers`` / ``scheduler`` run every pass on Dask; ``checkpoint`` (``run.npz``) keeps one
    file a pass (``run.sketch1.npz``, ...), so a rerun resumes inside the pass it stopped in and
    recomputes the finished ones from their files, bit for bit."""
    in_subspace = not pca_variant(variant)
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
                project_obs=last and in_subspace,  # the frames in span(Q): the fit's moments
                progress=progress,
                label=f"sketch {i + 1}/{passes}",
                checkpoint=path,
                variances=last,  # only the traces of the last pass read them
                **scale,
            )
            it.update(thin)
    pairs_m = it.eigenpairs("M", dz)
    pairs_s = it.eigenpairs("Sigma", k_report)
    var_delta = thin.wide_var("delta")
    mu_delta = thin.wide_mean("delta")
    tr_m = float(var_delta.sum() + mu_delta @ mu_delta)
    captured = float(np.clip(pairs_m.values, 0.0, None).sum())
    result = {
        **frames_summary(source, thin.count, dz, variant),
        "solver": "sketch",
        "delta_spectrum": np.clip(pairs_s.values, 0.0, None).tolist(),
        "delta_total_variance": float(var_delta.sum()),
        "sketch": {
            "passes": passes,
            "columns": int(it.l),
            "seed": int(seed),
            "residuals": pairs_m.residual.tolist(),
            "spectrum_residuals": pairs_s.residual.tolist(),
            "discarded_variance": max(tr_m - captured, 0.0),
        },
    }
    if in_subspace:
        result.update(
            subspace_fit(source, thin, it, dz, variant, tr_m, solver, seed, accuracy, progress)
        )
    else:
        result.update(pca_probes(source, thin, it, dz, tr_m - captured, accuracy, progress))
    result["notes"] = [
        f"sketch: PCA of E[delta delta^T] by {passes} passes of randomized subspace iteration "
        f"({it.l} columns); largest relative residual ||M v - lambda v|| / lambda_1 = "
        f"{float(pairs_m.residual.max()):.2g}",
        *result.pop("subspace_notes", []),
    ]
    return result


def pca_probes(source, thin, it, dz, discarded, accuracy, progress) -> dict:
    """Scores of the PCA LAM (the top-``dz`` eigenvectors ``V`` of ``M``): exact within the
    sketch's accuracy. Its latent is ``z = V^T delta = G Q^T delta``, a map of the last pass's
    narrow block, so the probes are Schur complements of the thin moments."""
    do = source.do
    pairs_m = it.eigenpairs("M", dz)
    G = it.ritz_map(dz)  # z = G [Q^T delta] from the last pass
    ms = thin.narrow_moments()
    s = ms.index(SKETCH)
    S_zz = G @ ms.cov[s, s] @ G.T
    mu_z = G @ ms.mean[s]
    obs_mse, _ = schur_probe(
        S_zz, (thin.block_cross("o", SKETCH) @ G.T).T, float(thin.wide_var("o").sum())
    )
    # the identity-decoder PCA LAM loses the variance of M outside span(V)
    out = {"recon": max(discarded, 0.0) / do, "obs_mse": obs_mse}
    if source.da:
        a = ms.index("a")
        S_za = G @ ms.cov[s, a]
        S_aa = ms.cov[a, a]
        act_mse, Ga = schur_probe(S_zz, S_za, float(np.trace(S_aa)))
        out["act_mse"] = act_mse
        out.update(chance_scores(source, ms.mean[a]))
        if source.action_kind == "discrete" and accuracy:
            h = ms.mean[a] - Ga @ mu_z
            # the accuracy pass reads delta; V^T delta = G Q^T delta up to rounding
            out["act_acc"] = latent_probe_accuracy(
                source, pairs_m.vectors.T, Ga, h, progress=progress
            )
    return out


def subspace_moments(thin, it, m: int) -> Moments:
    """The moments of ``[V_m^T o, V_m^T delta, a]``: the frames in the span of the top ``m``
    Ritz vectors ``V_m = Q U_m`` of ``M``, from the last pass's narrow block
    ``[Q^T delta, Q^T o, a]`` (an exact linear map of it: ``V_m^T x = U_m^T Q^T x``)."""
    ms = thin.narrow_moments()
    T = subspace_map(ms, it.ritz_map(m))
    blocks = (("o", m), ("delta", m), *((("a", ms.size("a")),) if "a" in ms.names else ()))
    return Moments(ms.count, T @ ms.mean, T @ ms.cov @ T.T, blocks, ms.source)


def subspace_map(ms: Moments, Ut: np.ndarray) -> np.ndarray:
    """``T`` with ``[V^T o, V^T delta, a] = T y`` on the narrow block ``y`` of a pass."""
    m = Ut.shape[0]
    da = ms.size("a") if "a" in ms.names else 0
    T = np.zeros((2 * m + da, ms.dim))
    T[:m, ms.index(SKETCH_OBS)] = Ut
    T[m : 2 * m, ms.index(SKETCH)] = Ut
    if da:
        T[2 * m :, ms.index("a")] = np.eye(da)
    return T


def lifted_scores(lam, thin, it, mm: Moments, tr_m: float) -> tuple[dict, np.ndarray]:
    """``(scores, W)``: recon, obs_mse, act_mse (with actions) and the part of
    ``E||delta||^2`` outside the subspace (per value) of ``lam``, fitted on the moments ``mm``
    of the top ``m`` Ritz coordinates (:func:`subspace_moments`), lifted to the frames, and
    ``W`` with ``z = W y`` on the last pass's narrow block ``y``.

    The lifted LAM predicts ``delta`` inside ``span(V_m)`` only, so its loss is its loss in
    the coordinates (``recon_loss`` per coordinate, times ``m``) plus the outside part
    ``tr M - tr V_m^T M V_m``; its latent reads ``V_m^T o`` and ``V_m^T delta``, so the probe
    of ``o`` is the Schur complement of ``Cov(z)`` and ``Cov(z, o) = W Cov(y, o)``. Scores are
    averaged over the fit's tie draws, as on narrow frames."""
    ms = thin.narrow_moments()
    do, m = thin.wide_var("o").shape[0], mm.size("o")
    lams = (lam, *lam.draws_) if lam.draws_ else (lam,)
    outside = max(tr_m - float(np.trace(mm.second_moment("delta"))), 0.0)
    T = subspace_map(ms, it.ritz_map(m))
    maps = [latent_map(x, mm) @ T for x in lams]
    var_o = float(thin.wide_var("o").sum())
    obs = [schur_probe(W @ ms.cov @ W.T, W @ thin.wide_cross("o").T, var_o)[0] for W in maps]
    scores = {
        "recon": (recon_loss(lam, mm) * m + outside) / do,
        "obs_mse": float(np.mean(obs)),
        "delta_outside": outside / do,
    }
    if "a" in mm.names:
        scores["act_mse"] = float(np.mean([probe_mse(latent_map(x, mm), mm, "a") for x in lams]))
    return scores, maps[0]


def subspace_fit(source, thin, it, dz, variant, tr_m, solver, seed, accuracy, progress) -> dict:
    """Fit ``variant`` inside the top-``l`` eigenspace of ``M`` (all the sketch's columns) and
    score the fitted LAM, lifted to the full frames, exactly.

    The lifted LAM reads and writes the frames in ``span(V)`` only (``A = I`` outside it), so
    its loss is the loss inside plus the part of ``E||delta||^2`` outside ``span(V)``, and its
    latent is a map of the narrow block: the probes of ``o`` and ``a`` are exact Schur
    complements of the thin moments. What the restriction costs against a fit on the full
    frames is not known without the ``do x do`` moments: the outside part of ``delta`` (which
    the lifted LAM does not reconstruct) and the same fit inside a smaller subspace (how much
    the scores still move with the dimension) are reported to gauge it."""
    do, cols = source.do, it.l
    ms = thin.narrow_moments()
    out = {"subspace": {"dim": int(cols)}}
    checks = {}
    check_dim = dz + (cols - dz) // 2
    for m in (cols, check_dim):
        mm = subspace_moments(thin, it, m)
        lam = fit(mm, int(dz), variant, solver=solver, seed=seed)
        checks[m] = (lam, mm, *lifted_scores(lam, thin, it, mm, tr_m))
    lam, mm, scores, W = checks[cols]
    out.update({k: v for k, v in scores.items() if k != "delta_outside"})
    out["subspace"].update(
        {
            "solver": lam.solver,
            "delta_outside": scores["delta_outside"],
            "delta_outside_fraction": scores["delta_outside"] * do / tr_m if tr_m > 0 else 0.0,
            "check": {"dim": int(check_dim), **checks[check_dim][2]},
        }
    )
    if source.da:
        out.update(chance_scores(source, mm.block_mean("a")))
        if source.action_kind == "discrete" and accuracy:
            G, h = linear_probe(latent_map(lam, mm), mm, "a")
            Q = it.last_basis()
            Wo = W[:, ms.index(SKETCH_OBS)] @ Q.T  # z = Wo o + Wd delta on the frames
            Wd = W[:, ms.index(SKETCH)] @ Q.T
            out["act_acc"] = latent_probe_accuracy(source, Wd, G, h, Wo=Wo, progress=progress)
    c = out["subspace"]["check"]
    out["subspace_notes"] = [
        f"subspace: the {variant.decoder}-decoder LAM is fitted inside the top {cols} "
        f"eigenvectors of E[delta delta^T] (the frames outside them pass through unchanged); "
        f"{100 * out['subspace']['delta_outside_fraction']:.3g}% of E||delta||^2 lies outside "
        f"(the fit does not reconstruct it); the same fit in the top {c['dim']} gives "
        f"recon {c['recon']:.4g} (vs {out['recon']:.4g}), obs_mse {c['obs_mse']:.4g} "
        f"(vs {out['obs_mse']:.4g})",
        *lam.notes_,
    ]
    return out
