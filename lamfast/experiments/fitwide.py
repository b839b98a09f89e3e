"""Fit and probe a LAM on frames too wide for the full co-moment: the streamed sketch path of
``lamfast fit --method sketch`` (chosen by ``--method auto`` above ``config.WIDE_AUTO_DO``).

The variants whose optimum is the top-``dz`` eigenspace of ``M = E[delta delta^T]`` (identity
decoder, any encoder and kappa: docs/theory.md, item 1) are fitted exactly within the sketch's
accuracy: ``passes`` thin passes of randomized subspace iteration (:mod:`lamfast.moments.sketch`)
give the eigenvectors ``V`` and their residuals, and the last pass also holds the thin moments of
``[o, delta | Q^T delta, a]`` from which the latent ``z = V^T delta = G Q^T delta`` is probed in
closed form (:mod:`lamfast.probes.thin`). Memory is of order ``do x (dz + oversampling)``, never
``do x do``; the data are read ``passes`` times: the last pass also keeps every transition's
narrow values (``Q^T delta`` and the actions, ``n x (l + da)`` floats; with ``Q^T o`` and the
cleaned iteration's columns where those run; twice that within ``config.WIDE_KEPT_ROWS_BYTES``),
from which the argmax accuracy of the action probe follows without another pass (above that
budget, or on Dask, one more pass reads the frames).

The other variants (a learned decoder, action supervision) are fitted inside the span of the
sketch's ``l`` columns: the last pass also gives ``Q^T o``, hence the full moments of the
frames in that span, where the exact solvers of the narrow path run; the fitted LAM, lifted to
the frames (``A = I`` outside the span), is scored exactly, and the report says what lies
outside the span and how the scores move with its dimension (:func:`subspace_fit`).

Cleaning (``delta -> P delta``, ``P = I - U U^T``, :mod:`lamfast.moments.cleaning`) runs a
second iteration, on ``P M P``, in the same passes: each pass carries the columns of both side
by side (``[Q, P Q_c]``, and ``U`` in the last one for ``tr P M P``), so a basis costs no extra
read. A no-op action first estimates ``U`` as the top of ``E[delta delta^T]`` over the no-op
transitions, by as many passes over them (:func:`noop_basis`). The cleaned latent
``V_c^T P delta = V_c^T delta`` is again a map of the last pass's narrow block, probed exactly
like the raw one; the argmax accuracies of both come from one pass.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import numpy as np

from .. import config
from .._blas import one_blas_thread
from ..errors import LamfastError
from ..estimator import fit
from ..moments.cleaning import orthonormal_basis
from ..moments.core import Moments
from ..moments.sketch import SKETCH, SKETCH_OBS, SubspaceIteration
from ..moments.tree import dask_client
from ..probes.closed import latent_map, linear_probe, probe_mse
from ..probes.thin import schur_probe
from ..solvers.fitted import recon_loss
from ..solvers.variant import Variant
from ..sources.frames.distributed import side_checkpoint_path
from ..sources.frames.source import FrameSource
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


def latent_probe_accuracies(source, probes, progress=None) -> list[float]:
    """Argmax accuracies of action probes ``argmax(G z + h)`` of latents ``z = Wo o + Wd delta``
    (``Wo`` None: ``z = Wd delta``), for probes ``(Wd, G, h, Wo)``, in one more pass: the values
    of :func:`lamfast.probes.frames.probe_accuracy` with the latent maps ``[Wo, Wd, 0]`` (the
    same bits: the same products, without an ``o @ 0`` term when ``Wo`` is None), reading the
    frames as stored and converting them once (:func:`frames_as_stored`)."""
    if source.action_kind != "discrete":
        raise LamfastError("probe accuracy needs discrete actions")
    do = source.do
    probes = [  # the layout of probe_accuracy's W rows: the same GEMM
        (np.ascontiguousarray(Wd), G, h, None if Wo is None else np.ascontiguousarray(Wo))
        for Wd, G, h, Wo in probes
    ]
    stored, scale = frames_as_stored(source)
    hits, total = [0] * len(probes), 0
    for o, o2, acts in stored.transitions(progress=progress, label="accuracy"):
        keep = source.labelled(acts)
        if not keep.all():
            o, o2, acts = o[keep], o2[keep], acts[keep]
        ids = acts.astype(np.int64)
        D = X = None
        for i, (Wd, G, h, Wo) in enumerate(probes):
            if Wo is None:
                if D is None:
                    D = frame_differences(o, o2, scale)
                z = D @ Wd.T
            else:
                if X is None:
                    X = frame_rows(o, o2, scale)
                z = X[:, :do] @ Wo.T + X[:, do:] @ Wd.T
            hits[i] += int(np.count_nonzero(np.argmax(z @ G.T + h, axis=1) == ids))
        total += ids.shape[0]
    return [n / max(total, 1) for n in hits]


class NoopFrames(FrameSource):
    """A copy of a :class:`FrameSource` whose :meth:`transitions` yields only the transitions
    whose (discrete) action is ``noop_action``, in the same order: the stream of a thin pass
    over the no-op transitions (sequential passes only; the indexed reads of the Dask and
    checkpoint executors are not filtered, so they are refused)."""

    noop_action: int

    @classmethod
    def of(cls, source: FrameSource, noop_action: int) -> NoopFrames:
        view = copy.copy(source)
        view.__class__ = cls
        view.noop_action = int(noop_action)
        return view

    def transitions(self, progress: bool | None = None, label: str = "frames"):
        for o, o2, acts in super().transitions(progress=progress, label=label):
            if acts is None:
                continue
            keep = np.asarray(acts).astype(np.int64, copy=False) == self.noop_action
            if keep.all():
                yield o, o2, acts
            elif keep.any():
                yield o[keep], o2[keep], acts[keep]

    def index(self, select=None, stride=None):
        raise LamfastError("internal: the no-op view of a frame source has no index")


def clean_limit(do: int, columns: int) -> int:
    """The most noise directions a cleaned sketch of ``columns`` columns allows: its columns
    lie in ``range(P)``, of dimension ``do - k``."""
    return do - columns


def noop_basis(source, noop_action, clean_k, passes, over, seed, limit, progress):
    """``(U, info)``: the top ``clean_k`` eigenvectors of ``E[delta delta^T]`` over the
    transitions whose action is ``noop_action`` (the noise basis of
    :func:`lamfast.moments.cleaning.noise_basis_from_noop`), by ``passes`` sequential thin
    passes over them (:class:`NoopFrames`), and what the result reports of them."""
    k = 1 if clean_k is None else int(clean_k)
    if not 1 <= k <= limit:
        raise LamfastError(
            f"clean-k must be in [1, {limit}] on the sketch path for {source.do} values (the "
            f"cleaned sketch's {source.do - limit} columns lie outside the noise directions), "
            f"got {k}"
        )
    n_noop = source.index(int(noop_action)).total  # checks the id; reads actions and flags
    if n_noop == 0:
        raise LamfastError(f"no transitions with the noop action {noop_action}")
    view = NoopFrames.of(source, noop_action)
    it = SubspaceIteration(source.do, k, over, seed)
    for i in range(passes):
        thin = thin_pass(
            view, it.columns(), progress=progress, label=f"noop {i + 1}/{passes}", variances=False
        )
        it.update(thin)
    pairs = it.eigenpairs("M", k)
    info = {
        "noop_transitions": int(thin.count),
        "noop_passes": passes,
        "noop_columns": int(it.l),
        "noop_residuals": pairs.residual.tolist(),
    }
    return pairs.vectors, info


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
    clean_basis=None,
    noop_action: int | None = None,
    clean_k: int | None = None,
) -> dict:
    """Fit the LAM of ``source`` by the sketch and probe it; the result has the keys of
    :func:`lamfast.experiments.fitframes.fit_frames` plus ``sketch`` (passes, columns,
    residuals ``||M v - lambda v|| / lambda_1`` of every eigenpair, the discarded variance)
    and, for a variant fitted inside the sketch's subspace, ``subspace`` (its dimension, the
    part of ``E||delta||^2`` outside it, the scores of the same fit in a smaller subspace).
    ``solver`` is the solver of that fit (the PCA variants need none).

    ``clean_basis`` (``do x k``) or ``noop_action`` (with ``clean_k``, default 1) also fit the
    LAM of the cleaned differences ``P delta`` (the ``*_clean`` keys of the narrow path, and
    ``sketch.clean``): a second iteration on ``P M P`` in the same passes (its columns beside
    the raw ones), after, for a no-op action, ``passes`` passes over the no-op transitions that
    estimate the basis (sequential only: refused with ``workers``, ``scheduler``, ``checkpoint``).
    A learned decoder or action supervision is cleaned in the cleaned sketch's subspace
    (``subspace.clean``).

    ``workers`` / ``scheduler`` run every pass on Dask; ``checkpoint`` (``run.npz``) keeps one
    file a pass (``run.sketch1.npz``, ...; ``run.sketch1.clean.npz``, ... with a clean basis),
    so a rerun resumes inside the pass it stopped in and recomputes the finished ones from
    their files, bit for bit."""
    in_subspace = not pca_variant(variant)
    passes = int(passes or config.SKETCH_PASSES)
    if passes < 2:
        raise LamfastError(f"the sketch needs at least 2 passes over the data, got {passes}")
    over = int(config.SKETCH_OVERSAMPLE if oversample is None else oversample)
    do = source.do
    k_report = min(do, max(16, dz + 8))  # the spectrum the narrow path reports
    it = SubspaceIteration(do, max(dz, k_report), over, seed)
    if clean_basis is not None and noop_action is not None:
        raise LamfastError("give either a clean basis or a noop action, not both")
    limit = clean_limit(do, it.l)
    U, clean_info = None, {}
    if noop_action is not None:
        if any(x is not None for x in (workers, scheduler, checkpoint)):
            raise LamfastError(
                "the sketch path estimates the no-op noise basis in sequential passes over the "
                "no-op transitions: drop --workers / --scheduler / --checkpoint, or give the "
                "basis (--clean-basis)"
            )
        U, clean_info = noop_basis(
            source, noop_action, clean_k, passes, over, seed, limit, progress
        )
    elif clean_basis is not None:
        U = orthonormal_basis(clean_basis, do, "clean basis")
        if U.shape[1] > limit:
            raise LamfastError(
                f"clean basis: {U.shape[1]} directions; the sketch path for {do} values allows "
                f"at most {limit} (its {it.l} cleaned columns lie outside them)"
            )
    itc = None if U is None else SubspaceIteration(do, it.k, over, seed, projector=U)
    thin = rows = None
    scale = {}
    if workers is not None or scheduler is not None:
        scale = {"workers": workers, "scheduler": scheduler}
    keep = accuracy and source.action_kind == "discrete" and not scale and checkpoint is None
    with contextlib.ExitStack() as stack:
        if scale:  # one cluster for every pass
            scale = {"client": stack.enter_context(dask_client(workers, scheduler))}
        for i in range(passes):
            last = i == passes - 1
            columns = it.columns()
            if itc is not None:  # the cleaned iteration beside, U for tr(P M P) in the last
                columns = np.hstack([columns, itc.columns(), *([U] if last else [])])
            path = None
            if checkpoint is not None:
                name = f"sketch{i + 1}" + ("" if itc is None else ".clean")
                path = side_checkpoint_path(checkpoint, name)
            # the last pass keeps every transition's narrow values when they fit in memory:
            # the action probes' argmax accuracies read them instead of one more pass
            keep_rows = last and keep and kept_rows_fit(source, columns, in_subspace)
            thin = thin_pass(
                source,
                columns,
                with_obs=last,
                with_actions=last,
                project_obs=last and in_subspace,  # the frames in span(Q): the fit's moments
                progress=progress,
                label=f"sketch {i + 1}/{passes}",
                checkpoint=path,
                variances=last,  # only the traces of the last pass read them
                keep_rows=keep_rows,
                **scale,
            )
            if keep_rows:
                thin, rows = thin
            it.update(thin, at=0)
            if itc is not None:
                itc.update(thin, at=it.l)
    # the scores from the last pass, each product on one BLAS thread: vector products over
    # the frames (traces, means) change their last bits with the BLAS thread count
    with one_blas_thread():
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
        fitted = [(it, tr_m, 0)]
        if itc is not None:
            ms = thin.narrow_moments()
            u = _sketch_slice(ms, it.l + itc.l, U.shape[1])  # U^T delta
            tr_u = float(np.trace(ms.cov[u, u]) + ms.mean[u] @ ms.mean[u])
            fitted.append((itc, max(tr_m - tr_u, 0.0), it.l))  # tr P M P = tr M - tr U^T M U
        probes, notes = [], []
        for j, (one, tr, at) in enumerate(fitted):
            if in_subspace:
                out, probe = subspace_fit(
                    source, thin, one, dz, variant, tr, solver, seed, accuracy, at=at, cleaned=j > 0
                )
            else:
                disc = tr - float(np.clip(one.eigenpairs("M", dz).values, 0.0, None).sum())
                out, probe = pca_probes(source, thin, one, dz, disc, accuracy, at=at)
            notes += out.pop("subspace_notes", [])
            if j == 0:
                result.update(out)
            else:
                for key in ("recon", "obs_mse", "act_mse"):
                    if key in out:
                        result[f"{key}_clean"] = out[key]
                if "subspace" in out:
                    result["subspace"]["clean"] = out["subspace"]
            probes.append(probe)
    if probes[0] is not None:  # the argmax accuracies, raw and cleaned
        if rows is not None:  # from the last pass's narrow rows
            accs = narrow_accuracies(rows, thin.narrow_moments(), probes)
        else:  # in one more pass over the frames
            frames = [frames_probe(W, G, h, thin, columns, in_subspace) for W, G, h in probes]
            accs = latent_probe_accuracies(source, frames, progress=progress)
        result["act_acc"] = accs[0]
        if len(accs) > 1:
            result["act_acc_clean"] = accs[1]
    result["notes"] = [
        f"sketch: PCA of E[delta delta^T] by {passes} passes of randomized subspace iteration "
        f"({it.l} columns); largest relative residual ||M v - lambda v|| / lambda_1 = "
        f"{float(pairs_m.residual.max()):.2g}",
    ]
    if itc is not None:
        pairs_c = itc.eigenpairs("M", dz)
        origin = "noop" if noop_action is not None else "basis"
        result["clean_dim"] = int(U.shape[1])
        result["clean_from"] = origin
        result["sketch"]["clean"] = {
            "columns": int(itc.l),
            "residuals": pairs_c.residual.tolist(),
            "discarded_variance": max(
                fitted[1][1] - float(np.clip(pairs_c.values, 0.0, None).sum()), 0.0
            ),
            **clean_info,
        }
        extra = probes[0] is not None and rows is None  # the accuracy pass
        reads = passes + (passes if clean_info else 0) + extra
        result["notes"].append(
            f"clean: P E[delta delta^T] P (P = I - U U^T, {U.shape[1]} direction(s) from "
            f"{origin}) by a second iteration in the same {passes} passes ({itc.l} more "
            f"columns, U's in the last); largest relative residual "
            f"{float(pairs_c.residual.max()):.2g}"
        )
        if clean_info:
            result["notes"].append(
                f"clean: U = the top {U.shape[1]} eigenvectors of E[delta delta^T] over the "
                f"{clean_info['noop_transitions']} transitions of action {noop_action}, by "
                f"{passes} passes of their own; largest relative residual "
                f"{max(clean_info['noop_residuals']):.2g}"
            )
        result["notes"].append(
            f"clean: the data were read {reads} times ("
            + (f"{passes} no-op passes, " if clean_info else "")
            + f"{passes} sketch passes"
            + (", 1 accuracy pass)" if extra else ")")
        )
    result["notes"] += notes
    return result


def kept_rows_fit(source, columns: np.ndarray, project_obs: bool) -> bool:
    """Whether the narrow values of every transition (the sketch columns' values, twice with
    ``Q^T o``, and the actions) fit within ``config.WIDE_KEPT_ROWS_BYTES``, counted twice: the
    blocks' rows and their stacked copy are held at once."""
    q = columns.shape[1] * (2 if project_obs else 1) + source.da
    return 2 * 8 * q * source.n_transitions <= config.WIDE_KEPT_ROWS_BYTES


def narrow_accuracies(rows: np.ndarray, ms: Moments, probes) -> list[float]:
    """Argmax accuracies of the action probes ``argmax(G z + h)`` of latents ``z = W y`` on the
    narrow rows ``y`` of the last pass (the actions one-hot in their block ``a``)."""
    ids = np.argmax(rows[:, ms.index("a")], axis=1)
    out = []
    with one_blas_thread():  # the same bits on any machine thread count
        for W, G, h in probes:
            pred = np.argmax((rows @ W.T) @ G.T + h, axis=1)
            out.append(float(np.count_nonzero(pred == ids)) / max(len(ids), 1))
    return out


def frames_probe(W, G, h, thin, columns: np.ndarray, project_obs: bool) -> tuple:
    """A probe on the narrow rows ``z = W y`` as a probe on the frames ``z = Wo o + Wd delta``
    (:func:`latent_probe_accuracies`): ``y`` holds ``columns^T delta`` (and ``columns^T o``)."""
    ms = thin.narrow_moments()
    Wd = W[:, ms.index(SKETCH)] @ columns.T
    Wo = W[:, ms.index(SKETCH_OBS)] @ columns.T if project_obs else None
    return Wd, G, h, Wo


def _sketch_slice(ms: Moments, at: int, width: int) -> slice:
    """The columns ``at .. at + width`` of the sketch block of a pass's narrow moments."""
    s = ms.index(SKETCH)
    return slice(s.start + at, s.start + at + width)


def pca_probes(source, thin, it, dz, discarded, accuracy, at: int = 0) -> tuple[dict, tuple]:
    """Scores of the PCA LAM (the top-``dz`` eigenvectors ``V`` of ``M``): exact within the
    sketch's accuracy, and the action probe whose argmax accuracy is measured (None
    without discrete actions or ``accuracy``). Its latent is ``z = V^T delta = G Q^T delta``, a
    map of the last pass's narrow block (the iteration's columns from column ``at`` of the
    sketch block), so the probes are Schur complements of the thin moments. With a projector
    (cleaning) the same holds for ``P M P``: ``V`` lies in ``range(P)``."""
    do = source.do
    G = it.ritz_map(dz)  # z = G [Q^T delta] from the last pass
    ms = thin.narrow_moments()
    s = _sketch_slice(ms, at, it.l)
    S_zz = G @ ms.cov[s, s] @ G.T
    mu_z = G @ ms.mean[s]
    cross_o = thin.block_cross("o", SKETCH)
    if cross_o.shape[1] != it.l:
        cross_o = cross_o[:, at : at + it.l]
    obs_mse, _ = schur_probe(S_zz, (cross_o @ G.T).T, float(thin.wide_var("o").sum()))
    # the identity-decoder PCA LAM loses the variance of M outside span(V)
    out = {"recon": max(discarded, 0.0) / do, "obs_mse": obs_mse}
    probe = None
    if source.da:
        a = ms.index("a")
        S_za = G @ ms.cov[s, a]
        S_aa = ms.cov[a, a]
        act_mse, Ga = schur_probe(S_zz, S_za, float(np.trace(S_aa)))
        out["act_mse"] = act_mse
        out.update(chance_scores(source, ms.mean[a]))
        if source.action_kind == "discrete" and accuracy:
            h = ms.mean[a] - Ga @ mu_z
            Wn = np.zeros((dz, ms.dim))  # z = V^T delta = G [Q^T delta]: a map of the narrow rows
            Wn[:, s] = G
            probe = (Wn, Ga, h)
    return out, probe


def subspace_moments(thin, it, m: int, at: int = 0) -> Moments:
    """The moments of ``[V_m^T o, V_m^T delta, a]``: the frames in the span of the top ``m``
    Ritz vectors ``V_m = Q U_m`` of ``M``, from the last pass's narrow block
    ``[Q^T delta, Q^T o, a]`` (an exact linear map of it: ``V_m^T x = U_m^T Q^T x``; the
    iteration's columns from column ``at`` of each sketch block)."""
    ms = thin.narrow_moments()
    T = subspace_map(ms, it.ritz_map(m), at)
    blocks = (("o", m), ("delta", m), *((("a", ms.size("a")),) if "a" in ms.names else ()))
    return Moments(ms.count, T @ ms.mean, T @ ms.cov @ T.T, blocks, ms.source)


def subspace_map(ms: Moments, Ut: np.ndarray, at: int = 0) -> np.ndarray:
    """``T`` with ``[V^T o, V^T delta, a] = T y`` on the narrow block ``y`` of a pass (``Ut``
    read from column ``at`` of its sketch blocks)."""
    m, q = Ut.shape
    da = ms.size("a") if "a" in ms.names else 0
    T = np.zeros((2 * m + da, ms.dim))
    so, sd = ms.index(SKETCH_OBS), ms.index(SKETCH)
    T[:m, so.start + at : so.start + at + q] = Ut
    T[m : 2 * m, sd.start + at : sd.start + at + q] = Ut
    if da:
        T[2 * m :, ms.index("a")] = np.eye(da)
    return T


def lifted_scores(lam, thin, it, mm: Moments, tr_m: float, at: int = 0) -> tuple[dict, np.ndarray]:
    """``(scores, W)``: recon, obs_mse, act_mse (with actions) and the part of
    ``E||delta||^2`` outside the subspace (per value) of ``lam``, fitted on the moments ``mm``
    of the top ``m`` Ritz coordinates (:func:`subspace_moments`), lifted to the frames, and
    ``W`` with ``z = W y`` on the last pass's narrow block ``y``.

    The lifted LAM predicts ``delta`` inside ``span(V_m)`` only, so its loss is its loss in
    the coordinates (``recon_loss`` per coordinate, times ``m``) plus the outside part
    ``tr M - tr V_m^T M V_m``; its latent reads ``V_m^T o`` and ``V_m^T delta``, so the probe
    of ``o`` is the Schur complement of ``Cov(z)`` and ``Cov(z, o) = W Cov(y, o)``. Scores are
    averaged over the fit's tie draws, as on narrow frames. For a cleaned fit (an iteration
    on ``P M P``, ``tr_m = tr P M P``) the same holds for ``P delta``: ``V_m^T P delta =
    V_m^T delta``."""
    ms = thin.narrow_moments()
    do, m = thin.wide_var("o").shape[0], mm.size("o")
    lams = (lam, *lam.draws_) if lam.draws_ else (lam,)
    outside = max(tr_m - float(np.trace(mm.second_moment("delta"))), 0.0)
    T = subspace_map(ms, it.ritz_map(m), at)
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


def frames_weighted(mm: Moments, do: int) -> Moments:
    """The moments of the subspace coordinates with the actions scaled by ``sqrt(do / m)``:
    the objective weighs the reconstruction per coordinate (``/ m`` in the ``m`` coordinates,
    ``/ do`` on the frames) against the action term, so unscaled actions would weigh the labels
    by ``w m / do`` instead of ``w``. Scaled, the objective is the frames' own times ``do / m``;
    the encoder and decoder are those of the frames' objective (the action head absorbs the
    scale; the probes and scores read ``mm`` itself)."""
    if "a" not in mm.names:
        return mm
    c = np.ones(mm.dim)
    c[mm.index("a")] = np.sqrt(do / mm.size("o"))
    return Moments(mm.count, c * mm.mean, mm.cov * np.outer(c, c), mm.blocks, mm.source)


def subspace_fit(
    source, thin, it, dz, variant, tr_m, solver, seed, accuracy, at=0, cleaned=False
) -> tuple[dict, tuple]:
    """Fit ``variant`` inside the top-``l`` eigenspace of ``M`` (all the sketch's columns) and
    score the fitted LAM, lifted to the full frames, exactly; also the action probe whose
    argmax accuracy is measured (None without discrete actions or ``accuracy``).

    The lifted LAM reads and writes the frames in ``span(V)`` only (``A = I`` outside it), so
    its loss is the loss inside plus the part of ``E||delta||^2`` outside ``span(V)``, and its
    latent is a map of the narrow block: the probes of ``o`` and ``a`` are exact Schur
    complements of the thin moments. What the restriction costs against a fit on the full
    frames is not known without the ``do x do`` moments: the outside part of ``delta`` (which
    the lifted LAM does not reconstruct) and the same fit inside a smaller subspace (how much
    the scores still move with the dimension) are reported to gauge it. ``cleaned``: ``it``
    iterates on ``P M P`` (its columns from column ``at``), and the fit is that of the cleaned
    differences ``P delta`` in ``range(P)``."""
    do, cols = source.do, it.l
    out = {"subspace": {"dim": int(cols)}}
    checks = {}
    check_dim = dz + (cols - dz) // 2
    # no smaller subspace to compare with when the sketch has only dz columns (dz near do)
    for m in (cols, check_dim) if check_dim < cols else (cols,):
        mm = subspace_moments(thin, it, m, at)
        lam = fit(frames_weighted(mm, do), int(dz), variant, solver=solver, seed=seed)
        checks[m] = (lam, mm, *lifted_scores(lam, thin, it, mm, tr_m, at))
    lam, mm, scores, W = checks[cols]
    out.update({k: v for k, v in scores.items() if k != "delta_outside"})
    out["subspace"].update(
        {
            "solver": lam.solver,
            "delta_outside": scores["delta_outside"],
            "delta_outside_fraction": scores["delta_outside"] * do / tr_m if tr_m > 0 else 0.0,
            "check": {"dim": int(check_dim), **checks[check_dim][2]} if check_dim < cols else None,
        }
    )
    probe = None
    if source.da:
        out.update(chance_scores(source, mm.block_mean("a")))
        if source.action_kind == "discrete" and accuracy:
            G, h = linear_probe(latent_map(lam, mm), mm, "a")
            probe = (W, G, h)  # z = W y on the narrow rows y
    c = out["subspace"]["check"]
    what = " of the cleaned differences P delta" if cleaned else ""
    space = "P E[delta delta^T] P" if cleaned else "E[delta delta^T]"
    out["subspace_notes"] = [
        f"subspace{' (clean)' if cleaned else ''}: the {variant.decoder}-decoder LAM{what} is "
        f"fitted inside the top {cols} eigenvectors of {space} (the frames outside them pass "
        f"through unchanged); "
        f"{100 * out['subspace']['delta_outside_fraction']:.3g}% of E||delta||^2 lies outside "
        "(the fit does not reconstruct it); "
        + (
            f"the same fit in the top {c['dim']} gives recon {c['recon']:.4g} (vs "
            f"{out['recon']:.4g}), obs_mse {c['obs_mse']:.4g} (vs {out['obs_mse']:.4g})"
            if c
            else "no smaller subspace holds dz dimensions to compare with"
        ),
        *(() if cleaned else lam.notes_),
    ]
    return out, probe
