"""The frame-fitting pipeline: read frames, clean, fit, probe, save, encode
(``lamfast fit FRAMES_PATH`` and ``lamfast encode``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from .. import config
from .._files import ARCHIVE_ERRORS, atomic_output, check_input, check_output
from ..errors import LamfastError
from ..estimator import LinearLAM, fit
from ..moments.cleaning import clean_moments, noise_basis_from_noop, orthonormal_basis
from ..moments.core import Moments
from ..moments.eigen import top_eigh
from ..probes.closed import latent_map, linear_probe, probe_mse
from ..probes.frames import probe_accuracy
from ..solvers.fitted import recon_loss
from ..solvers.variant import Variant, check_dz
from ..sources.frames.preprocess import Preprocess
from ..sources.frames.source import FrameSource
from .fitwide import chance_scores, fit_wide, frames_summary

# How fit_frames computes: the full moments, the thin passes of the sketch, or by the width.
METHODS = ("auto", "exact", "sketch")


def compose_cleaning(lam, U: np.ndarray):
    """The same latent as a function of raw ``(o, o')``: ``z = C o + D (o + P delta)``.

    A LAM fitted on cleaned moments sees ``o'' = o + P delta`` with ``P = I - U U^T``; its latent
    on raw frames is ``(C + D - D P) o + D P o'``. Returned as a new fitted ``LinearLAM``.
    """
    P = np.eye(U.shape[0]) - U @ U.T
    out = copy.copy(lam)
    DP = lam.D_ @ P
    out.C_, out.D_ = lam.C_ + lam.D_ - DP, DP
    out.draws_ = tuple(compose_cleaning(d, U) for d in lam.draws_)
    return out


def delta_spectrum(m: Moments, k: int) -> np.ndarray:
    """Top-``k`` eigenvalues of the frame-difference covariance ``Cov(delta)``."""

    w, _ = top_eigh(m.block_cov("delta"), k)
    return np.clip(w, 0.0, None)


def fit_frames(
    path,
    dz: int,
    variant=None,
    *,
    solver: str = "auto",
    seed: int = 0,
    offset: int = 1,
    method: str = "auto",
    save: bool = False,
    block_rows: int | None = None,
    clean_basis=None,
    noop_action: int | None = None,
    clean_k: int | None = None,
    accuracy: bool = True,
    progress=None,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
    **read,
) -> tuple[dict, object]:
    """Fit a linear LAM to recorded frames and probe its latent.

    Parameters
    ----------
    path : str or Path
        Frame dataset (see :class:`FrameSource`).
    dz : int
        Latent dimension.
    variant : Variant or dict, optional
        LAM variant (default: identity decoder, tied encoder).
    solver : {"auto", "eig", "moment-gd"}
        ``auto``: the closed form where one exists, else moment-gd (the result says which ran).
    **read
        How the frames are read: ``preprocess``, ``actions``, ``n_actions``,
        ``chunk_frames``, ``reader`` (options of the video, image, HDF5 and LeRobot readers,
        :class:`~lamfast.sources.frames.formats.ReaderOptions`), ``label_budget`` and
        ``label_unit`` (keep a random fraction of the transitions or episodes labelled, drawn
        with ``seed``): the arguments of :class:`FrameSource`.
    offset : int
        Frame gap ``K``: fit on ``(o_t, o_{t+K})`` (:func:`fit_offsets` compares several).
    method : {"auto", "exact", "sketch"}
        ``exact``: the full moments of ``[o, delta, a]``; ``sketch``: thin passes for frames too
        wide for them (:mod:`lamfast.experiments.fitwide`, cleaning included; no saved fit
        yet, so the LAM returned is None); ``auto``: the sketch above ``config.WIDE_AUTO_DO``
        values.
    save : bool
        The caller will save the fit: refuse the sketch path before any work.
    clean_basis : array or path, optional
        Noise directions (do x k) removed from ``delta`` before fitting.
    noop_action : int, optional
        Estimate the noise basis as the top ``clean_k`` directions of no-op frame differences.
    accuracy : bool
        For discrete actions, run a second pass for the argmax accuracy of the action probe
        (always in this process).
    workers, scheduler, checkpoint
        Compute the moments on Dask and / or resumably (see :meth:`FrameSource.moments`); the
        result is the same bit for bit.

    Partial labels (missing actions in the data, or ``label_budget``) make the fit supervised:
    the action terms use the labelled transitions only, with ``label_fraction`` their share of
    all transitions (``variant.label_weighting`` as given). The result then also holds the same
    LAM fitted without labels (``without_labels``), so the effect of the labels is one line.

    Returns
    -------
    (dict, LinearLAM)
        JSON-ready results and the fitted LAM (cleaning composed into its encoder).
    """

    start = time.perf_counter()
    variant = variant if isinstance(variant, Variant) else Variant(**(variant or {}))
    source = FrameSource(path, label_seed=seed, offset=offset, **read)
    do = source.do
    dz = check_dz(dz, do)
    if method not in METHODS:
        raise LamfastError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if variant.label_fraction > 0 and source.action_kind is None:
        raise LamfastError("action supervision (--label-fraction) needs actions in the data")
    if clean_basis is not None and noop_action is not None:
        raise LamfastError("give either a clean basis or a noop action, not both")
    if method == "sketch" or (method == "auto" and do > config.WIDE_AUTO_DO):
        if save:
            raise LamfastError(
                f"the sketch path for wide frames ({do} values) has no saved fit (--out) yet; "
                "use --method exact on narrower frames (--downsample, --crop)"
            )
        if isinstance(clean_basis, str | os.PathLike):
            clean_basis = load_basis(clean_basis)
        if source.partial:
            raise LamfastError(
                f"{source.path}: the sketch path for wide frames ({do} values) does not read "
                "partial labels yet; shrink the frames (--downsample, --crop) for --method exact"
            )
        result = fit_wide(
            source,
            dz,
            variant,
            seed=seed,
            accuracy=accuracy,
            progress=progress,
            workers=workers,
            scheduler=scheduler,
            checkpoint=checkpoint,
            solver=solver,
            clean_basis=clean_basis,
            noop_action=noop_action,
            clean_k=clean_k,
        )
        result["solver_requested"] = solver
        result["seconds"] = time.perf_counter() - start
        return result, None
    partial = source.partial
    if partial and variant.label_fraction > 0:
        raise LamfastError(
            f"{source.n_labelled} of {source.n_transitions} transitions are labelled, which "
            "fixes the label fraction; drop --label-fraction (it weights the labels of a fully "
            "labelled dataset)"
        )
    scale = dict(workers=workers, scheduler=scheduler, checkpoint=checkpoint, progress=progress)
    with_labels = source.action_kind is not None
    got = source.moments(
        block_rows=block_rows, noop_action=noop_action, labelled=with_labels, **scale
    )
    got = list(got) if isinstance(got, tuple) else [got]
    m = got.pop(0)
    mL = got.pop(0) if with_labels else None  # labelled rows ([o, delta, a]); m when all are
    U = None
    if noop_action is not None:
        noop = got.pop(0)
        if noop is None:
            raise LamfastError(f"no transitions with the noop action {noop_action}")
        U = noise_basis_from_noop(noop, 1 if clean_k is None else int(clean_k))  # 0 is refused
    elif clean_basis is not None:
        if isinstance(clean_basis, str | os.PathLike):
            clean_basis = load_basis(clean_basis)
        U = orthonormal_basis(clean_basis, do, "clean basis")
    if partial:  # supervised on the labels the data have: m = their share of the transitions
        variant = dataclasses.replace(variant, label_fraction=mL.count / m.count)

    def fit_one(mm, ml, v):
        extra = {"labels": ml} if partial else {}  # the labelled rows' moments, when not mm
        return fit(mm, int(dz), v, solver=solver, seed=seed, **extra)

    lam = fit_one(m, mL, variant)
    fits = [("raw", lam, m, mL)]
    if U is not None:
        mc = clean_moments(m, U)
        mLc = clean_moments(mL, U) if partial else mc if mL is not None else None
        lam_c = fit_one(mc, mLc, variant)
        fits.append(("clean", compose_cleaning(lam_c, U), mc, mLc))
        recon_clean = recon_loss(lam_c, mc)
    if partial:  # the same LAM without labels: what the labels changed
        v0 = dataclasses.replace(variant, label_fraction=0.0)
        unsup = fit(m, int(dz), v0, solver=solver, seed=seed)
        fits.append(("without_labels", unsup, m, mL))

    k = min(do, max(16, dz + 8))
    result = {
        **frames_summary(source, m.count, dz, variant),
        "path": str(path),
        "solver": lam.solver,  # with "auto": the solver that ran (its notes say why)
        "solver_requested": solver,
        "delta_spectrum": delta_spectrum(m, k).tolist(),
        "delta_total_variance": float(np.trace(m.block_cov("delta"))),
        "recon": recon_loss(lam, m),
    }
    if mL is not None:
        result["labelled_transitions"] = int(mL.count)
        result["labels"] = "partial" if partial else "all"
        if source.label_budget is not None:
            result["label_budget"] = {
                "fraction": source.label_budget,
                "unit": source.label_unit,
                "seed": source.label_seed,
            }
    probes = []
    for tag, one, _, ml in fits:
        lams = (one, *one.draws_) if one.draws_ else (one,)
        suffix = {"raw": "", "clean": "_clean", "without_labels": "_without_labels"}[tag]
        # the latent uses o and delta only, so its map reads the same columns of m and mL
        result["obs_mse" + suffix] = _mean_probe(lams, m, "o")
        if ml is not None:  # action probes on the labelled transitions
            result["act_mse" + suffix] = _mean_probe(lams, ml, "a")
            W = latent_map(one, ml)
            probes.append((W, *linear_probe(W, ml, "a")))
    if partial:
        result["recon_without_labels"] = recon_loss(fits[-1][1], m)
    if U is not None:
        result["recon_clean"] = recon_clean
        result["clean_dim"] = int(U.shape[1])
        result["clean_from"] = "noop" if noop_action is not None else "basis"
    if mL is not None:
        result.update(chance_scores(source, mL.block_mean("a")))
    if source.action_kind == "discrete" and accuracy:
        accs = probe_accuracy(source, probes, progress=progress)
        for (tag, *_), acc in zip(fits, accs, strict=True):
            suffix = {"raw": "", "clean": "_clean", "without_labels": "_without_labels"}[tag]
            result["act_acc" + suffix] = acc
    if offset != 1:
        result["offset"] = int(offset)
    result["notes"] = list(lam.notes_)
    result["seconds"] = time.perf_counter() - start
    final = fits[1][1] if U is not None else fits[0][1]
    final.frames_meta_ = {
        "preprocess": source.preprocess.to_dict(),
        "frame_shape": list(source.frame_shape),
        "dtype": str(source.raw_dtype),
        "scale": source.scale,
        "do": do,
        "actions": source.action_kind,
        "n_actions": source.n_actions,
        "cleaned": U is not None,
    }
    return result, final


def _mean_probe(lams, m: Moments, target: str) -> float:
    """A probe's normalised MSE averaged over a fit and its tie draws."""
    return float(np.mean([probe_mse(latent_map(x, m), m, target) for x in lams]))


def action_share(m: Moments) -> float:
    """Share of the frame-difference variance that the actions explain linearly:
    ``1 - MSE`` of the probe from ``a`` to ``delta`` (docs/theory.md)."""
    W = np.zeros((m.size("a"), m.dim))
    W[:, m.index("a")] = np.eye(m.size("a"))
    return 1.0 - probe_mse(W, m, "delta")


def fit_offsets(
    path,
    dz: int,
    offsets,
    variant=None,
    *,
    solver: str = "auto",
    seed: int = 0,
    block_rows: int | None = None,
    progress=None,
    **read,
) -> dict:
    """Fit the same LAM at several frame gaps, from one read of the data, side by side.

    ``read``: how the frames are read, as for :func:`fit_frames`. Each row of ``offsets`` (the
    result's list) holds the gap's transitions, the top of the
    frame-difference spectrum and the share of its variance the top ``dz`` directions hold, the
    share the actions explain (``action_share``; ``noise_share`` is the rest: exogenous change
    and whatever actions do not explain linearly), the LAM's reconstruction loss and its
    ``obs_mse`` and ``act_mse`` probes, as :func:`fit_frames` at that ``offset`` reports them.
    Partial labels are handled as there (labelled transitions only for the action terms).
    """
    start = time.perf_counter()
    variant = variant if isinstance(variant, Variant) else Variant(**(variant or {}))
    source = FrameSource(path, label_seed=seed, **read)
    dz = check_dz(dz, source.do)
    if variant.label_fraction > 0 and source.action_kind is None:
        raise LamfastError("action supervision (--label-fraction) needs actions in the data")
    offsets = tuple(int(k) for k in offsets)
    got = source.offset_moments(offsets, block_rows=block_rows, progress=progress)
    rows = []
    for K, (m, mL) in zip(offsets, got, strict=True):
        partial = source.with_offset(K).partial
        v = variant
        if partial:
            if variant.label_fraction > 0:
                raise LamfastError(
                    f"offset {K}: {int(mL.count)} of {int(m.count)} transitions are labelled, "
                    "which fixes the label fraction; drop --label-fraction"
                )
            v = dataclasses.replace(variant, label_fraction=mL.count / m.count)
        extra = {"labels": mL} if partial else {}
        lam = fit(m, dz, v, solver=solver, seed=seed, **extra)
        lams = (lam, *lam.draws_) if lam.draws_ else (lam,)
        total = float(np.trace(m.block_cov("delta")))
        spectrum = delta_spectrum(m, min(source.do, max(8, dz)))
        row = {
            "offset": K,
            "transitions": int(m.count),
            "delta_spectrum": spectrum.tolist(),
            "delta_total_variance": total,
            "top_dz_share": float(spectrum[:dz].sum() / total) if total > 0 else 0.0,
            "recon": recon_loss(lam, m),
            "obs_mse": _mean_probe(lams, m, "o"),
            "solver": lam.solver,
        }
        if mL is not None:
            share = action_share(mL)
            row.update(
                labelled_transitions=int(mL.count),
                action_share=share,
                noise_share=1.0 - share,
                act_mse=_mean_probe(lams, mL, "a"),
            )
        rows.append(row)
    head = frames_summary(source, rows[0]["transitions"], dz, variant)
    del head["transitions"]  # one count per gap, in the rows
    return {
        **head,
        "path": str(path),
        "solver_requested": solver,
        "offsets": rows,
        "seconds": time.perf_counter() - start,
    }


def load_basis(path) -> np.ndarray:
    """A noise basis from ``.npy`` (or the first array of a ``.npz``)."""
    path = check_input(path, "clean basis")
    try:
        data = np.load(path, allow_pickle=False)
    except ARCHIVE_ERRORS as e:
        raise LamfastError(f"{path}: cannot read the clean basis ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if not data.files:
                raise LamfastError(f"{path}: empty archive")
            return np.asarray(data[data.files[0]])
    return np.asarray(data)


# Formats of fit files: 1 had no "format" key (frame shape and width only), 2 also stores the
# frames' dtype and pixel scale, which encode must reproduce.
FIT_FORMATS = ("lamfast-fit-1", "lamfast-fit-2")


def save_lam(lam, out) -> Path:
    """Save a fitted ``LinearLAM`` (and its frame preprocessing) to ``.npz``, atomically."""
    lam._check_fitted()
    meta = {
        "dz": int(lam.dz),
        "variant": dataclasses.asdict(lam.variant),
        "solver": lam.solver,
        "seed": int(lam.seed),
        "loss": float(lam.loss_),
        "notes": list(lam.notes_),
        "frames": getattr(lam, "frames_meta_", None),
        "format": FIT_FORMATS[-1],
    }
    arrays = {"A": lam.A_, "B": lam.B_, "C": lam.C_, "D": lam.D_, "spectrum": lam.spectrum_}
    if lam.E_ is not None:
        arrays["E"], arrays["h"] = lam.E_, lam.h_
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    return Path(out)


def _fit_error(path, why: str) -> LamfastError:
    return LamfastError(f"{path}: not a readable lamfast fit file ({why})")


def _check_frames_meta(path, frames) -> None:
    """The frame metadata encode relies on: preprocessing options, raw shape, scale."""
    if not isinstance(frames, dict):
        raise _fit_error(path, "its frame metadata is not a JSON object")
    pre = frames.get("preprocess") or {}
    if not isinstance(pre, dict):
        raise _fit_error(path, "its preprocessing is not a JSON object")
    try:
        Preprocess(**pre)
    except (TypeError, ValueError) as e:
        raise _fit_error(path, f"bad preprocessing: {str(e).splitlines()[0]}") from None
    shape = frames.get("frame_shape")
    if shape is not None and not (
        isinstance(shape, list) and all(isinstance(n, int) and n > 0 for n in shape)
    ):
        raise _fit_error(path, f"bad frame shape {shape!r}")
    scale = frames.get("scale")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0
    ):
        raise _fit_error(path, f"bad pixel scale {scale!r}")


def load_lam(path):
    """Load a ``LinearLAM`` saved by :func:`save_lam` (with ``frames_meta_``).

    Every damage (not an archive, ``meta`` not JSON, missing keys, a newer format or an unknown
    variant option, matrices of inconsistent shapes) is one :class:`LamfastError` line.
    """
    path = check_input(path, "fit file")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as z:
                arrays = {k: z[k] for k in z.files}
    except ARCHIVE_ERRORS as e:
        raise _fit_error(path, f"{type(e).__name__}: {e}") from None
    if arrays is None:
        raise _fit_error(path, "a .npy array, not a .npz archive")
    missing = [k for k in ("meta", "A", "B", "C", "D") if k not in arrays]
    if missing:
        raise _fit_error(path, f"missing {', '.join(missing)}")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError:
        raise _fit_error(path, "meta is not JSON") from None
    if not isinstance(meta, dict):
        raise _fit_error(path, "meta is not a JSON object")
    fmt = meta.get("format", FIT_FORMATS[0])
    if fmt not in FIT_FORMATS:
        raise _fit_error(path, f"format {fmt!r}; this lamfast reads {', '.join(FIT_FORMATS)}")
    try:
        dz, solver, seed = int(meta["dz"]), str(meta["solver"]), int(meta["seed"])
        variant = Variant(**meta["variant"])
    except KeyError as e:
        raise _fit_error(path, f"meta lacks {e}") from None
    except (TypeError, ValueError, LamfastError) as e:
        raise _fit_error(path, f"bad meta: {str(e).splitlines()[0]}") from None
    A, B, C, D = (np.asarray(arrays[k]) for k in "ABCD")
    E, h = arrays.get("E"), arrays.get("h")
    do = A.shape[0] if A.ndim == 2 else -1
    shapes_ok = (
        A.shape == (do, do)
        and B.shape == (do, dz)
        and C.shape == (dz, do)
        and D.shape == (dz, do)
        and (E is None) == (h is None)
        and (E is None or (E.ndim == 2 and E.shape[1] == dz and h.shape == (E.shape[0],)))
        and all(x.dtype.kind == "f" for x in (A, B, C, D))
    )
    if not shapes_ok:
        got = ", ".join(f"{k} {x.shape}" for k, x in zip("ABCD", (A, B, C, D), strict=True))
        raise _fit_error(path, f"matrices of inconsistent shapes for dz = {dz}: {got}")
    frames = meta.get("frames")
    if frames is not None:
        _check_frames_meta(path, frames)
    lam = LinearLAM._fitted(
        dz,
        variant,
        solver,
        seed,
        A,
        B,
        C,
        D,
        arrays.get("spectrum", np.empty(0)),
        loss=meta.get("loss", float("nan")),
        E=E,
        h=h,
        notes=meta.get("notes", ()),
    )
    lam.frames_meta_ = frames
    return lam


def encode_frames(
    fit_path, frames_path, out, *, chunk_frames=None, progress=None, force: bool = False
) -> dict:
    """Encode the transitions of ``frames_path`` with a saved LAM into ``out`` (n x dz ``.npy``).

    The preprocessing stored with the fit is applied; episode rules are those of
    :class:`FrameSource`. The output is written to a temporary file and renamed when complete.
    """
    check_output(out, inputs=[("fit file", fit_path), ("frames", frames_path)], force=force)
    lam = load_lam(fit_path)
    meta = lam.frames_meta_ or {}
    pre = Preprocess(**(meta.get("preprocess") or {}))
    source = FrameSource(frames_path, preprocess=pre, actions="none", chunk_frames=chunk_frames)
    fitted_shape = meta.get("frame_shape")
    if fitted_shape is not None and tuple(fitted_shape) != tuple(source.frame_shape):
        raise LamfastError(
            f"{frames_path}: frames of shape {'x'.join(map(str, source.frame_shape))}, but the "
            f"fit was made on frames of shape {'x'.join(map(str, fitted_shape))}"
        )
    if "scale" in meta and float(meta["scale"]) != source.scale:
        raise LamfastError(
            f"{frames_path}: {source.raw_dtype} frames are scaled by {source.scale:g}, but the "
            f"fit scaled its {meta.get('dtype')} frames by {float(meta['scale']):g}; convert the "
            "frames to the fit's dtype (or refit with an explicit --scale)"
        )
    if source.do != lam.C_.shape[1]:
        raise LamfastError(
            f"{frames_path}: frames have {source.do} values after preprocessing but the fit "
            f"expects {lam.C_.shape[1]}"
        )
    n = source.n_transitions
    with atomic_output(out) as tmp:
        Z = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(n, lam.dz))
        i = 0
        for o, o2, _ in source.transitions(progress=progress, label="encode"):
            Z[i : i + o.shape[0]] = lam.encode(o, o2)
            i += o.shape[0]
        Z.flush()
        del Z
        if i != n:  # pragma: no cover - guards the counting pass against the streaming pass
            raise LamfastError(f"internal: counted {n} transitions but streamed {i}")
    return {"out": str(out), "transitions": n, "dz": int(lam.dz)}
