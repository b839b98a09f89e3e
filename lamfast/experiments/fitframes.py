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
    preprocess: Preprocess | None = None,
    actions: str = "auto",
    n_actions: int | None = None,
    chunk_frames: int | None = None,
    reader=None,
    block_rows: int | None = None,
    clean_basis=None,
    noop_action: int | None = None,
    clean_k: int | None = None,
    accuracy: bool = True,
    progress=None,
    workers: int | None = None,
    scheduler: str | None = None,
    checkpoint=None,
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
    preprocess, actions, n_actions, chunk_frames, reader
        How the frames are read (:class:`FrameSource`; ``reader``: options of video, image,
        HDF5 and LeRobot readers, :class:`~lamfast.sources.frames.formats.ReaderOptions`).
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

    Returns
    -------
    (dict, LinearLAM)
        JSON-ready results and the fitted LAM (cleaning composed into its encoder).
    """

    start = time.perf_counter()
    variant = variant if isinstance(variant, Variant) else Variant(**(variant or {}))
    source = FrameSource(
        path,
        preprocess=preprocess,
        actions=actions,
        n_actions=n_actions,
        chunk_frames=chunk_frames,
        reader=reader,
    )
    do = source.do
    dz = check_dz(dz, do)
    if clean_basis is not None and noop_action is not None:
        raise LamfastError("give either a clean basis or a noop action, not both")
    scale = dict(workers=workers, scheduler=scheduler, checkpoint=checkpoint, progress=progress)
    if noop_action is not None:
        m, noop = source.moments(block_rows=block_rows, noop_action=noop_action, **scale)
        if noop is None:
            raise LamfastError(f"no transitions with the noop action {noop_action}")
        U = noise_basis_from_noop(noop, int(clean_k or 1))
    else:
        m = source.moments(block_rows=block_rows, **scale)
        U = None
        if clean_basis is not None:
            if isinstance(clean_basis, str | os.PathLike):
                clean_basis = load_basis(clean_basis)
            U = orthonormal_basis(clean_basis, do, "clean basis")
    if variant.label_fraction > 0 and not m.has("a"):
        raise LamfastError("action supervision (--label-fraction) needs actions in the data")

    lam = fit(m, int(dz), variant, solver=solver, seed=seed)
    fits = [("raw", lam, m)]
    if U is not None:
        mc = clean_moments(m, U)
        lam_c = fit(mc, int(dz), variant, solver=solver, seed=seed)
        fits.append(("clean", compose_cleaning(lam_c, U), mc))
        recon_clean = recon_loss(lam_c, mc)

    k = min(do, max(16, dz + 8))
    result = {
        "path": str(path),
        "frames": source.n_frames,
        "transitions": int(m.count),
        "frame_shape": list(source.frame_shape),
        "do": do,
        "da": source.da,
        "actions": source.action_kind,
        "dz": int(dz),
        "variant": dataclasses.asdict(variant),
        "solver": lam.solver,  # with "auto": the solver that ran (its notes say why)
        "solver_requested": solver,
        "delta_spectrum": delta_spectrum(m, k).tolist(),
        "delta_total_variance": float(np.trace(m.block_cov("delta"))),
        "recon": recon_loss(lam, m),
    }
    probes = []
    for tag, one, _ in fits:
        lams = (one, *one.draws_) if one.draws_ else (one,)
        suffix = "" if tag == "raw" else "_clean"
        obs = [probe_mse(latent_map(x, m), m, "o") for x in lams]
        result["obs_mse" + suffix] = float(np.mean(obs))
        if m.has("a"):
            acts = [probe_mse(latent_map(x, m), m, "a") for x in lams]
            result["act_mse" + suffix] = float(np.mean(acts))
            W = latent_map(one, m)
            probes.append((W, *linear_probe(W, m, "a")))
    if U is not None:
        result["recon_clean"] = recon_clean
        result["clean_dim"] = int(U.shape[1])
        result["clean_from"] = "noop" if noop_action is not None else "basis"
    if m.has("a"):
        result["act_mse_chance"] = 1.0
    if source.action_kind == "discrete":
        freq = m.block_mean("a")
        result["action_freq"] = freq.tolist()
        result["act_acc_chance"] = float(freq.max())
        if accuracy:
            accs = probe_accuracy(source, probes, progress=progress)
            result["act_acc"] = accs[0]
            if U is not None:
                result["act_acc_clean"] = accs[1]
    result["notes"] = list(lam.notes_)
    result["seconds"] = time.perf_counter() - start
    final = fits[-1][1]
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
