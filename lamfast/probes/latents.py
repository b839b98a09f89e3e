"""Score any model's latents against the transitions they belong to, in two streamed passes.

Pass 1 accumulates, per held-out fold, the moments of the joint vector
``x = [z, o, delta, a, noise]`` (``z``: the latent's features; codes one-hot or embedded through
their codebook vectors), and the code x action contingency table (on Dask, in pass 2). Every
probe, reference and leakage score is then closed form (:mod:`lamfast.probes.scores`). Pass 2,
with discrete actions, replays the stream to count the argmax predictions of the fitted action
probes (accuracy and balanced accuracy), which moments cannot give.

Folds are drawn over episodes (or runs of consecutive transitions, ``config.PROBE_RUN_ROWS``, when
the data have fewer episodes than folds) with a seeded permutation, so a probe is never scored on
transitions of an episode it was fitted on (with the fallback runs, folds are cut without regard to
episodes: consecutive runs, never single rows). Blocks are cut from the stream of scored rows, and
each block gives one entry per fold (a grouped
:class:`~lamfast.moments.accumulate.BlockAccumulator`; empty where a fold has no row), so every
fold's merge tree has the shape of the block stream: the moments are bitwise identical for any read
chunk size, and on Dask (:class:`ProbeChunks` over :func:`~lamfast.moments.tree.tree_moments`);
memory is the blocks in flight, never the dataset.

Frames wider than ``config.FRAMES_MAX_DIM`` values (:func:`wide_frames`) are scored from thin
moments instead (:func:`_score_thin`): per fold the narrow block ``[z, a]`` in full and its cross
terms with the wide ``[o, noise]``, in the same fold and block scheme (the same bits for any
chunking and thread count), and the same keys; what needs ``do x do`` moments (the references,
the leakage) or Dask is refused or left out, in words (:func:`check_wide`, docs/probe.md).
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from .. import config
from .._blas import one_blas_thread
from .._progress import Progress
from ..errors import LamfastError
from ..moments.accumulate import BlockAccumulator, block_threads
from ..moments.thin import ThinReducer
from ..moments.tree import tree_moments
from ..sources.frames.index import _Cursor
from ..sources.frames.source import FrameSource
from ..sources.frames.wide import grouped_threads, wide_block_rows
from ..sources.latents import RowArray, codebook_sizes, load_codebook
from .closed import _target, linear_probe
from .codes import code_stats
from .scores import MAPS, fold_maps, map_scores, noise_target, select
from .thin import thin_map_scores

METRICS = ("act_mse", "act_r2", "obs_mse", "noi_mse", "leak", "llo")
_FOLD_KEY = 11  # spawn key of the fold permutation (docs/architecture.md, determinism)


class LatentFeatures:
    """Latent rows to the ``z`` block: continuous rows as they are; codes one-hot per codebook,
    or their codebook vectors when given."""

    def __init__(self, latents: RowArray, codebook_size=None, codebook=None):
        self.kind = latents.kind
        self.codebook = None
        self.sizes = None
        if self.kind == "codes":
            if codebook is not None:
                self.codebook = load_codebook(codebook, latents.width)
            self.sizes = codebook_sizes(latents, codebook_size, self.codebook)
            if self.codebook is not None:
                self.width = sum(int(cb.shape[1]) for cb in self.codebook)
            else:
                self.width = sum(self.sizes)
            self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        else:
            if codebook is not None or codebook_size is not None:
                raise LamfastError("a codebook applies to integer codes, not continuous latents")
            self.width = latents.width

    @property
    def labels(self) -> list:
        """The tables of code statistics: each codebook, and with several codebooks their
        joint code while it has at most ``config.MAX_JOINT_CODES`` cells."""
        out = list(range(len(self.sizes)))
        if len(self.sizes) > 1 and np.prod(self.sizes, dtype=float) <= config.MAX_JOINT_CODES:
            out.append("joint")
        return out

    def table_sizes(self) -> list[int]:
        return [int(np.prod(self.sizes)) if g == "joint" else self.sizes[g] for g in self.labels]

    def tables(self, codes: np.ndarray):
        """``(label, size, ids)`` of every table for a chunk of codes."""
        for g, K in zip(self.labels, self.table_sizes(), strict=True):
            ids = np.ravel_multi_index(codes.T, self.sizes) if g == "joint" else codes[:, g]
            yield g, K, ids

    @property
    def ref_dz(self) -> int:
        """Latent size of the references: the width of a continuous or embedded latent; for
        one-hot codes the ``K - 1`` values each codebook can carry beside the intercept."""
        if self.kind == "codes" and self.codebook is None:
            return sum(k - 1 for k in self.sizes) or 1
        return self.width

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.kind != "codes":
            return rows
        if self.codebook is not None:
            return np.hstack([cb[rows[:, g]] for g, cb in enumerate(self.codebook)])
        out = np.zeros((rows.shape[0], self.width))
        out[np.arange(rows.shape[0])[:, None], rows + self.starts] = 1.0
        return out


def check_index(index, latents: RowArray, n_transitions: int) -> np.ndarray | None:
    """The transition ids of the latent rows: sorted, no repeats, inside the data."""
    if index is None:
        return None
    ids = RowArray(index, name="index", kind="codes")
    if ids.width != 1:
        raise LamfastError(f"index must be one transition id per latent row, got {ids.row_shape}")
    ids = ids.read(0, ids.n)[:, 0]
    if len(ids) != latents.n:
        raise LamfastError(f"index has {len(ids)} ids but there are {latents.n} latent rows")
    step = np.diff(ids)
    if (step == 0).any():
        i = int(np.flatnonzero(step == 0)[0])
        raise LamfastError(f"index repeats transition {int(ids[i])} (rows {i} and {i + 1})")
    if (step < 0).any():
        i = int(np.flatnonzero(step < 0)[0])
        raise LamfastError(
            f"index is not increasing at row {i + 1} ({int(ids[i])} then {int(ids[i + 1])}); "
            "sort the latents and the index by transition id"
        )
    if ids[0] < 0 or ids[-1] >= n_transitions:
        bad = int(ids[0] if ids[0] < 0 else ids[-1])
        raise LamfastError(
            f"index names transition {bad}, outside the data's {n_transitions} transitions "
            f"(0..{n_transitions - 1})"
        )
    return ids


def _check_alignment(latents: RowArray, lengths: np.ndarray, n: int, ids) -> None:
    if ids is not None:
        return
    if latents.per_episode and len(latents.parts) > 1:
        eps = lengths[lengths > 0]
        if len(eps) != len(latents.parts):
            raise LamfastError(
                f"{latents.label}: {len(latents.parts)} latent files but the data have "
                f"{len(eps)} episodes with transitions (one file per episode)"
            )
        bad = np.flatnonzero(eps != latents.lengths)
        if bad.size:
            e = int(bad[0])
            raise LamfastError(
                f"{latents.parts[e].name}: {int(latents.lengths[e])} rows but episode {e} has "
                f"{int(eps[e])} transitions"
            )
    if latents.n != n:
        raise LamfastError(
            f"{latents.label}: {latents.n} latent rows but the data have {n} transitions in "
            f"{int(np.count_nonzero(lengths))} episodes (one latent per transition, episodes "
            "never crossed); pass --index if the model skipped transitions"
        )


def fold_units(lengths: np.ndarray, folds: int) -> tuple[np.ndarray, str]:
    """Ends (exclusive transition ids) of the units folds are drawn over, and their name."""
    n = int(lengths.sum())
    if np.count_nonzero(lengths) >= folds:
        return np.cumsum(lengths[lengths > 0]), "episodes"
    run = max(1, min(int(config.PROBE_RUN_ROWS), n // folds))
    ends = np.arange(run, n + run, run)
    ends[-1] = n
    return ends, f"runs of {run} consecutive transitions"


def _fold_of_unit(n_units: int, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_FOLD_KEY,)))
    out = np.empty(n_units, dtype=np.int64)
    out[rng.permutation(n_units)] = np.arange(n_units) % folds
    return out


class _Stream:
    """The joint rows of the scored transitions with their folds: the whole stream in order
    (:meth:`chunks`), or any range of scored rows read directly (:meth:`range_chunks`)."""

    def __init__(self, source, latents, features, ids, noise, ends, fold_of_unit):
        self.source, self.latents, self.features = source, latents, features
        self.ids, self.noise, self.ends, self.fold_of_unit = ids, noise, ends, fold_of_unit
        blocks = [("z", features.width), ("o", source.do), ("delta", source.do)]
        if source.da:
            blocks.append(("a", source.da))
        if noise is not None:
            blocks.append(("noise", noise.width))
        self.blocks = tuple(blocks)
        self.p = sum(s for _, s in blocks)
        self.n_data = int(ends[-1])
        self.n = self.n_data if ids is None else len(ids)

    def _scored(self, o, o2, acts, t0, joint=True):
        """The scored rows of a chunk of transitions ``t0 ..``: ``(X, fold, codes, ids)``; with
        ``joint=False`` the parts ``(features, o, delta)`` instead of the joint rows ``X``."""
        n = o.shape[0]
        t = np.arange(t0, t0 + n)
        if self.ids is None:
            j0, j1 = t0, t0 + n
        else:
            j0, j1 = (int(j) for j in np.searchsorted(self.ids, [t0, t0 + n]))
            local = self.ids[j0:j1] - t0
            o, o2, t = o[local], o2[local], t[local]
            acts = None if acts is None else acts[local]
        if j1 == j0:
            return None
        raw = self.latents.read(j0, j1)
        fold = self.fold_of_unit[np.searchsorted(self.ends, t, side="right")]
        ids = acts.astype(np.int64) if self.source.action_kind == "discrete" else None
        codes = raw if self.features.kind == "codes" else None
        if not joint:
            return self._parts(raw, o, o2), fold, codes, ids
        return self._joint(raw, o, o2, acts, t), fold, codes, ids

    def _parts(self, raw, o, o2):
        """What pass 2 reads of a chunk: the ``z`` features, ``o`` and ``delta`` rows."""
        return self.features(raw), o, o2 - o

    def _noise_rows(self, t):
        return self.noise.read(int(t[0]), int(t[-1]) + 1)[t - t[0]]

    def _joint(self, raw, o, o2, acts, t):
        """The joint rows of the scored transitions ``t``, written in place block by block
        (no concatenated copies)."""
        X = np.empty((o.shape[0], self.p))
        q, do = self.features.width, self.source.do
        X[:, :q] = self.features(raw)
        X[:, q : q + do] = o
        np.subtract(o2, o, out=X[:, q + do : q + 2 * do])
        end = q + 2 * do
        if self.source.da:
            X[:, end : end + self.source.da] = self.source.action_rows(acts)
            end += self.source.da
        if self.noise is not None:
            X[:, end:] = self._noise_rows(t)
        return X

    def shift(self) -> np.ndarray:
        """The fixed row every joint row is shifted by: the first latent, the first frame."""
        shift = np.zeros(self.p)
        q = self.features.width
        shift[:q] = self.features(self.latents.read(0, 1))[0]
        shift[q : q + self.source.do] = self.source.shift()
        return shift

    def chunks(self, progress, label, joint=True):
        """Yield ``(X, fold, codes, action_ids)`` for every chunk of scored transitions."""
        t0 = 0
        for o, o2, acts in self.source.transitions(progress=progress, label=label):
            out = self._scored(o, o2, acts, t0, joint)
            t0 += o.shape[0]
            if out is not None:
                yield out

    def transition_range(self, a: int, b: int) -> tuple[int, int]:
        """The transitions ``[t0, t1)`` that hold scored rows ``a .. b - 1``."""
        if self.ids is None:
            return a, b
        return int(self.ids[a]), int(self.ids[b - 1]) + 1

    def range_chunks(self, cursor, t0: int, t1: int, joint=True):
        """Yield the scored rows of transitions ``t0 .. t1 - 1``, read through ``cursor``."""
        for o, o2, acts in cursor.take(t1 - t0):
            out = self._scored(o, o2, acts, t0, joint)
            t0 += o.shape[0]
            if out is not None:
                yield out


class _ThinStream(_Stream):
    """The rows of the thin pass on wide frames: the wide part ``[o, noise]`` (``noise``: the
    exogenous pixels of ``o' = o + delta``, or the noise arrays, when given) and the narrow
    part ``[z, a]``; no map reads ``delta`` (the references are not scored on wide frames)."""

    def __init__(self, source, latents, features, ids, noise, ends, fold_of_unit, pixels):
        super().__init__(source, latents, features, ids, noise, ends, fold_of_unit)
        self.pixels = pixels
        wide = [("o", source.do)]
        if pixels is not None:
            wide.append(("noise", len(pixels)))
        elif noise is not None:
            wide.append(("noise", noise.width))
        narrow = [("z", features.width)] + ([("a", source.da)] if source.da else [])
        self.wide, self.narrow = tuple(wide), tuple(narrow)
        self.blocks = self.wide + self.narrow
        self.pw = sum(size for _, size in wide)
        self.p = self.pw + sum(size for _, size in narrow)

    def _parts(self, raw, o, o2):
        return self.features(raw), None  # the latent and chance probes read z only

    def _joint(self, raw, o, o2, acts, t):
        X = np.empty((o.shape[0], self.p))
        do, pw, q = self.source.do, self.pw, self.features.width
        X[:, :do] = o
        if self.pixels is not None:
            X[:, do:pw] = o2[:, self.pixels]
        elif self.noise is not None:
            X[:, do:pw] = self._noise_rows(t)
        X[:, pw : pw + q] = self.features(raw)
        if self.source.da:
            X[:, pw + q :] = self.source.action_rows(acts)
        return X

    def shift(self) -> np.ndarray:
        """The first frame on ``o`` and on the exogenous pixels of ``o'``, the first latent."""
        shift = np.zeros(self.p)
        do, pw, q = self.source.do, self.pw, self.features.width
        first = self.source.shift()
        shift[:do] = first
        if self.pixels is not None:
            shift[do:pw] = first[self.pixels]
        shift[pw : pw + q] = self.features(self.latents.read(0, 1))[0]
        return shift


class ProbeChunks:
    """``chunk_fn(first, stop)`` of the probe's pass 1 for
    :func:`lamfast.moments.tree.tree_moments`: blocks ``first .. stop - 1`` of scored rows, one
    entry per fold each (``groups``), the same bits as the sequential pass.

    Pickles to the constructor arguments of the source and of the latent (and noise) files;
    each thread that runs it reopens them, and a call that starts where the thread's previous
    call stopped continues the same read (as :class:`~lamfast.sources.frames.index.FrameChunks`).
    """

    def __init__(self, stream: _Stream, block_rows: int, shift, folds: int):
        self.stream, self.block_rows, self.shift, self.groups = stream, block_rows, shift, folds
        self.n_rows, self.blocks = stream.n, stream.blocks
        self.n_blocks = -(-stream.n // block_rows)
        self.index = stream.source.index()
        self.parts = (stream.features, stream.ids, stream.ends, stream.fold_of_unit)
        self.specs = (
            type(stream.source),
            stream.source.spec(),
            stream.latents.spec(),
            None if stream.noise is None else stream.noise.spec(),
        )
        self._owner = threading.get_ident()
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_owner"] = state["_local"] = None
        state["stream"] = None  # open files and memory maps stay behind
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def _thread_state(self):
        local = self._local
        if not hasattr(local, "stream"):
            if self.stream is not None and self._owner == threading.get_ident():
                local.stream = self.stream
            else:
                reopen, spec, lat, noi = self.specs
                spec = dict(spec)
                source = reopen(spec.pop("path"), **spec)
                features, ids, ends, fold_of_unit = self.parts
                noise = None if noi is None else RowArray(**noi)
                local.stream = _Stream(
                    source, RowArray(**lat), features, ids, noise, ends, fold_of_unit
                )
            local.cursor = None
        return local

    def rows(self, first_row: int, stop_row: int, joint=True):
        """Yield the chunks of scored rows ``first_row .. stop_row - 1``."""
        state = self._thread_state()
        stream = state.stream
        t0, t1 = stream.transition_range(first_row, stop_row)
        if state.cursor is None or state.cursor.pos != t0:
            state.cursor = _Cursor(stream.source, self.index, t0, None)
        yield from stream.range_chunks(state.cursor, t0, t1, joint)

    def __call__(self, first: int, stop: int) -> list:
        out = []
        acc = BlockAccumulator(
            self.blocks, self.block_rows, sink=out.append, shift=self.shift,
            groups=self.groups,
        )  # fmt: skip
        a, b = first * self.block_rows, min(stop * self.block_rows, self.n_rows)
        for X, fold, _, _ in self.rows(a, b):
            acc.add(X, fold)
        acc.flush()
        return out


def _contingency(counts, codes, acts, features, n_actions):
    for table, (_, K, ids) in zip(counts, features.tables(codes), strict=True):
        if acts is None:
            table += np.bincount(ids, minlength=K)
        else:
            cell = ids * n_actions + acts
            table += np.bincount(cell, minlength=K * n_actions).reshape(K, n_actions)


def _summary(per_fold: list[float], in_sample: float) -> dict:
    v = np.array(per_fold, dtype=np.float64)
    out = {"in_sample": float(in_sample)}
    if v.size and not np.isfinite(v).any():  # every fold undefined: report the pooled value
        out["mean"], out["sd"], out["folds"] = float(in_sample), float("nan"), v.tolist()
    elif v.size:
        ok = v[np.isfinite(v)]
        out["mean"] = float(ok.mean()) if ok.size else float("nan")
        out["sd"] = float(ok.std(ddof=1)) if ok.size > 1 else float("nan")
        out["folds"] = v.tolist()
    else:  # one fold: in-sample only
        out["mean"], out["sd"], out["folds"] = float(in_sample), float("nan"), []
    return out


def _accuracies(conf: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present) of a confusion
    matrix ``conf[true, pred]``."""
    total = conf.sum()
    if total == 0:
        return float("nan"), float("nan")
    per_class = conf.sum(axis=1)
    present = per_class > 0
    recall = np.diag(conf)[present] / per_class[present]
    return float(np.trace(conf) / total), float(recall.mean())


def score_latents(
    latents,
    source: FrameSource,
    *,
    index=None,
    codebook_size=None,
    codebook=None,
    noise_pixels: np.ndarray | None = None,
    noise=None,
    folds: int | None = None,
    seed: int = 0,
    references: bool = True,
    ref_dz: int | None = None,
    accuracy: bool = True,
    block_rows: int | None = None,
    progress=None,
    client=None,
) -> dict:
    """Probe scores of ``latents`` on the transitions of ``source`` (module docstring).

    Parameters
    ----------
    latents : RowArray
        One row per transition (or per id of ``index``).
    source : FrameSource
    index : array_like or path, optional
        Sorted transition ids of the latent rows, for models that skip transitions.
    codebook_size, codebook
        Codes only: the size of each codebook, or the codebook vectors (``K x d``,
        ``G x K x d``), which embed the codes instead of one-hot columns.
    noise_pixels : ndarray, optional
        Flat pixel ids of the exogenous part of the frame (probed in ``o'``).
    noise : RowArray, optional
        Noise arrays, one row per transition of the data (as ``lamfast simulate`` writes them).
    folds : int
        Held-out folds (default ``config.PROBE_FOLDS``); 1 scores in-sample only.
    references : bool
        Also score the linear LAM of the same size, the supervised ceiling and chance.
    ref_dz : int, optional
        Latent size of the references (default :attr:`LatentFeatures.ref_dz`).
    accuracy : bool
        Second pass for the argmax accuracy of the action probes (discrete actions).
    client : distributed.Client, optional
        Compute both passes on Dask (files only, every worker seeing them at the same path):
        the same bits as in process.

    Frames wider than ``config.FRAMES_MAX_DIM`` values are scored from thin moments (module
    docstring): ``references`` and ``client`` are refused there, ``leak`` is NaN.

    Returns
    -------
    dict
        ``transitions``, ``latent``, ``folds``, ``scores`` (per map: per metric ``mean``,
        ``sd``, ``folds``, ``in_sample``), ``codes`` (per codebook), ``noise``, ``warnings``.
    """
    folds = int(config.PROBE_FOLDS if folds is None else folds)
    if folds < 1:
        raise LamfastError(f"folds must be >= 1, got {folds}")
    thin = wide_frames(source)
    if thin:
        check_wide(source, references, client is not None)
    rows_given = block_rows
    block_rows = int(block_rows or config.BLOCK_ROWS)
    if noise_pixels is not None and noise is not None:
        raise LamfastError("give a noise region or noise arrays, not both")
    lengths = source.episode_lengths()
    n_data = int(lengths.sum())
    if n_data == 0:
        raise LamfastError(f"{source.path}: no transitions (every frame starts an episode?)")
    ids = check_index(index, latents, n_data)
    _check_alignment(latents, lengths, n_data, ids)
    if noise is not None and noise.n != n_data:
        raise LamfastError(
            f"{noise.label}: {noise.n} noise rows but the data have {n_data} transitions"
        )
    features = LatentFeatures(latents, codebook_size, codebook)
    ends, unit = fold_units(lengths, folds)
    fold_of_unit = _fold_of_unit(len(ends), folds, seed)
    head = dict(lengths=lengths, ends=ends, unit=unit, seed=seed, ids=ids, n_data=n_data)
    if thin:
        stream = _ThinStream(
            source, latents, features, ids, noise, ends, fold_of_unit, noise_pixels
        )
        return _score_thin(stream, folds, accuracy, rows_given, progress, head)
    stream = _Stream(source, latents, features, ids, noise, ends, fold_of_unit)
    # per fold a merge tree (log2(blocks) co-moments), the merged and training moments, the
    # blocks in flight: check the co-moments held at once, not one
    blocks = max(1, -(-stream.n // block_rows))
    held = folds * (int(np.log2(blocks)) + 3) + 4
    need = 8 * stream.p**2 * held
    if need > config.MAX_MOMENT_BYTES:
        raise LamfastError(
            f"the latents ({features.width} features) with the frames make rows of {stream.p} "
            f"values: {held} co-moments of {stream.p} columns at once over {folds} folds need "
            f"{need / 2**30:.3g} GiB (the limit, config.MAX_MOMENT_BYTES, is "
            f"{config.MAX_MOMENT_BYTES / 2**30:.3g} GiB); embed codes with --codebook, use fewer "
            "folds, or --downsample the frames"
        )
    if ref_dz is None:
        ref_dz = min(features.ref_dz, source.do)
    ref_dz = int(ref_dz) if references else 0
    if references and not 1 <= ref_dz <= source.do:
        raise LamfastError(f"reference latent size must be in 1..{source.do}, got {ref_dz}")

    # ---- pass 1: moments per fold (and, in process, the contingency table)
    na = source.n_actions if source.action_kind == "discrete" else None
    counts = None
    if features.kind == "codes":
        counts = [np.zeros((K, na) if na else K, dtype=np.int64) for K in features.table_sizes()]
    # every row is shifted by one fixed row (the first latent, the first frame), as every
    # accumulator in lamfast does, so large offsets cost no precision; both paths use it
    shift = stream.shift()
    chunk_fn = None
    if client is not None:
        chunk_fn = ProbeChunks(stream, block_rows, shift, folds)
        moments = tree_moments(
            chunk_fn,
            chunk_fn.n_blocks,
            stream.blocks,
            client=client,
            progress=progress,
            total_rows=stream.n,
            source="probe",
            shift=shift,
        )  # the contingency table is counted in pass 2
    else:
        acc = BlockAccumulator(
            stream.blocks, block_rows, threads=block_threads(stream.p, block_rows), shift=shift,
            groups=folds,
        )  # fmt: skip
        moments = _fold_pass(acc, stream, counts, na, progress)
    everything, trains = _fold_totals(moments, folds, head)

    # ---- closed-form scores
    all_maps = fold_maps(everything, ref_dz, seed)
    per_fold_maps = [fold_maps(tr, ref_dz, seed) for tr in trains]
    scores = {}
    for name in (n for n in MAPS if n in all_maps):
        ins = map_scores(all_maps[name], everything, everything, noise_pixels)
        held = [
            map_scores(maps[name], tr, te, noise_pixels)
            for maps, tr, te in zip(per_fold_maps, trains, moments[: len(trains)], strict=True)
        ]
        scores[name] = {k: _summary([h[k] for h in held], ins[k]) for k in METRICS}

    # ---- pass 2: argmax accuracy of the action probes (on Dask also the contingency table)
    want_acc = accuracy and na is not None
    if want_acc or (chunk_fn is not None and counts is not None):
        probes = _action_probes(all_maps, per_fold_maps, everything, trains) if want_acc else None
        widths = (features.width, source.do, source.do)
        on_dask_codes = chunk_fn is not None and counts is not None
        tally = _Tally(probes, na, widths, features if on_dask_codes else None, counts)
        if chunk_fn is None:
            for parts, fold, codes, y in stream.chunks(progress, "accuracy", joint=False):
                tally.add(parts, fold, codes, y)
        else:
            _tally_on_dask(client, chunk_fn, tally, progress)
        if want_acc:
            tally.report(scores)

    T = noise_target(everything, noise_pixels)
    variance = None if T is None else _target(everything, T)[2]
    return _result(stream, everything.count, variance, folds, ref_dz, scores, counts, head)


def _result(stream, count, noise_variance, folds, ref_dz, scores, counts, head) -> dict:
    """The record :func:`score_latents` returns, from the scores and the code tables."""
    source, latents, features = stream.source, stream.latents, stream.features
    na = source.n_actions if source.action_kind == "discrete" else None
    ids, n_data = head["ids"], head["n_data"]
    out = {
        "transitions": int(count),
        "noise_variance": noise_variance,
        "data_transitions": n_data,
        "episodes": int(np.count_nonzero(head["lengths"])),
        "latent": _describe(latents, features),
        "folds": folds,
        "fold_unit": head["unit"],
        "seed": int(head["seed"]),
        "ref_dz": ref_dz or None,
        "actions": source.action_kind,
        "n_actions": na,
        "scores": scores,
        "codes": None,
        "warnings": [],
    }
    if counts is not None:
        out["codes"] = [
            {"codebook": g, **code_stats(c, na)}
            for g, c in zip(features.labels, counts, strict=True)
        ]
        for c in out["codes"]:
            if c["collapse"] and c["codebook"] != "joint":
                out["warnings"].append(
                    f"codebook {c['codebook']} collapsed: {c['perplexity']:.2f} codes in "
                    f"effective use of {c['size']} ({c['dead']} never used)"
                )
    if ids is not None:
        out["warnings"].append(
            f"scored {len(ids)} of {n_data} transitions (the index skips {n_data - len(ids)})"
        )
    return out


def wide_frames(source) -> bool:
    """Whether the frames are too wide for the full moments of ``[z, o, delta, a]``
    (``config.FRAMES_MAX_DIM``): then the probes are scored from thin moments."""
    return source.do > config.FRAMES_MAX_DIM


def check_wide(source, references: bool, dask: bool) -> None:
    """Refuse, in one line, what the thin path of wide frames does not score."""
    what = (
        f"{source.path}: frames of {source.do} values are too wide for the full moments "
        f"(config.FRAMES_MAX_DIM = {config.FRAMES_MAX_DIM}), so they are probed from thin moments"
    )
    if references:
        raise LamfastError(
            f"{what}, where the references (the linear LAM of the same size, the supervised "
            "ceiling) need the do x do moments; pass --no-references (references=False) to score "
            "the latent beside chance, or --downsample / --crop the frames"
        )
    if dask:
        raise LamfastError(
            f"{what}, in process only; drop --workers / --scheduler, or --downsample the frames"
        )


def _fold_pass(acc, stream, counts, na, progress) -> list:
    """Pass 1 in process: the rows of ``stream`` into the grouped accumulator ``acc`` (one
    group a fold; full or thin moments) and the codes into the contingency ``counts``."""
    for X, fold, codes, acts in stream.chunks(progress, "probe"):
        acc.add(X, fold)
        if counts is not None:
            _contingency(counts, codes, acts, stream.features, na)
    return acc.result("probe")


def _fold_totals(moments: list, folds: int, head) -> tuple:
    """``(all rows, training rows of each fold)`` from the moments of every fold (full or
    thin), after the check that no fold is empty."""
    _check_folds(moments, folds, head)
    everything = moments[0]
    for m in moments[1:]:
        everything = everything.merge(m)
    trains = [_merge_except(moments, f) for f in range(folds)] if folds > 1 else []
    return everything, trains


def _score_thin(stream: _ThinStream, folds, accuracy, block_rows, progress, head) -> dict:
    """:func:`score_latents` on wide frames: pass 1 accumulates, per fold, the thin moments of
    ``[o, noise | z, a]`` (a grouped :class:`BlockAccumulator` of thin moments: the
    narrow ``[z, a]`` in full, its cross terms with ``o`` and the exogenous pixels, their
    variances), from which the latent's and chance's probes are scored in closed form
    (:func:`lamfast.probes.thin.thin_map_scores`); pass 2 counts the action probes' argmax
    predictions, which read ``z`` alone. Memory: per fold ``log2(blocks)`` entries of
    ``(do + r) x (dz + da)`` values, never ``do x do``."""
    source, features = stream.source, stream.features
    rows = int(block_rows) if block_rows else wide_block_rows(stream.p)
    q = stream.p - stream.pw
    blocks = max(1, -(-stream.n // rows))
    entries = folds * (int(np.log2(blocks)) + 3) + 4  # as the full path counts them
    need = 8 * (stream.pw * q + q * q + stream.p) * entries
    if need > config.MAX_MOMENT_BYTES:
        raise LamfastError(
            f"the latents ({features.width} features) beside frames of {source.do} values: "
            f"{entries} thin moments of {stream.pw} x {q} cross terms at once over {folds} folds "
            f"need {need / 2**30:.3g} GiB (the limit, config.MAX_MOMENT_BYTES, is "
            f"{config.MAX_MOMENT_BYTES / 2**30:.3g} GiB); embed codes with --codebook, use fewer "
            "folds, or --downsample the frames"
        )
    na = source.n_actions if source.action_kind == "discrete" else None
    counts = None
    if features.kind == "codes":
        counts = [np.zeros((K, na) if na else K, dtype=np.int64) for K in features.table_sizes()]

    # ---- pass 1: thin moments per fold (and the contingency table)
    reducer = ThinReducer(stream.pw, stream.narrow)
    threads = grouped_threads(stream.p, q, rows, folds)
    acc = BlockAccumulator(
        stream.blocks, rows, threads=threads, shift=stream.shift(), groups=folds, reducer=reducer
    )
    moments = _fold_pass(acc, stream, counts, na, progress)
    everything, trains = _fold_totals(moments, folds, head)

    # ---- closed-form scores of the latent and chance (maps of the narrow block [z, a])
    narrow_all = everything.narrow_moments()
    narrow_trains = [tr.narrow_moments() for tr in trains]
    maps = {"latent": select(narrow_all, "z"), "chance": np.zeros((0, narrow_all.dim))}
    scores = {}
    # one BLAS thread: products over the do values of the frames (cross terms with o, traces)
    # change their last bits with the BLAS thread count
    with one_blas_thread():
        for name, W in maps.items():
            ins = thin_map_scores(W, everything, everything, narrow_all, narrow_all, True)
            held = [
                thin_map_scores(W, tr, te, ntr, te.narrow_moments(), False)
                for tr, te, ntr in zip(trains, moments[: len(trains)], narrow_trains, strict=True)
            ]
            scores[name] = {k: _summary([h[k] for h in held], ins[k]) for k in METRICS}

    # ---- pass 2: argmax accuracy of the action probes, which read z alone
    if accuracy and na is not None:
        probes = _action_probes(maps, [maps] * len(trains), narrow_all, narrow_trains)
        tally = _Tally(probes, na, (features.width, source.da))
        for parts, fold, codes, y in stream.chunks(progress, "accuracy", joint=False):
            tally.add(parts, fold, codes, y)
        tally.report(scores)

    has_noise = stream.pw > source.do
    variance = float(everything.wide_var("noise").sum()) if has_noise else None
    out = _result(stream, everything.count, variance, folds, 0, scores, counts, head)
    if has_noise:
        out["warnings"].append(
            f"frames of {source.do} values are probed from thin moments: the future-exogenous "
            "leakage (a probe from all of o) needs the do x do moments of o and is not scored"
        )
    return out


def _check_folds(moments, folds, head) -> None:
    empty = [f for f, m in enumerate(moments) if m is None]
    if empty:
        raise LamfastError(
            f"fold {empty[0]} of {folds} holds no transitions ({len(head['ends'])} "
            f"{head['unit'].split()[0]}); use fewer --folds"
        )


def _merge_except(moments: list, f: int):
    """The training moments of fold ``f``: every other fold, merged in fold order."""
    rest = [m for g, m in enumerate(moments) if g != f]
    out = rest[0]
    for m in rest[1:]:
        out = out.merge(m)
    return out


def _action_probes(all_maps, per_fold_maps, everything, trains):
    """``(in-sample, [held-out per fold])`` action probes ``(W, G, h)`` of every map."""
    names = list(all_maps)
    inside = {k: (all_maps[k], *linear_probe(all_maps[k], everything, "a")) for k in names}
    held = [
        {k: (maps[k], *linear_probe(maps[k], tr, "a")) for k in names}
        for maps, tr in zip(per_fold_maps, trains, strict=True)
    ]
    return inside, held


class _Tally:
    """Integer counts of pass 2: confusion matrices of the action probes (in-sample, and each
    fold's held-out probe on its own rows), and the contingency table when ``features``. Sums of
    integers, so any order of chunks or tasks gives the same counts.

    Every probe ``y^ = G (W x) + h`` is the affine map ``(G W) x + h`` of the joint row, so all
    of them (maps x {in-sample, each fold}) are stacked into one matrix and applied to a chunk
    in one product per block of ``x`` it reads (``z``, ``o``, ``delta``: no map reads ``a`` or
    the noise, so the joint rows are never assembled); each probe then takes the argmax over
    its own ``n_actions`` columns.
    """

    def __init__(self, probes, na, widths, features=None, counts=None):
        self.probes, self.na, self.widths = probes, na, widths
        self.features, self.counts = features, counts
        if probes is not None:
            inside, held = probes
            self.names = list(inside)
            sets = [inside, *held]  # set 0: in-sample; set f + 1: fold f's held-out probes
            M = np.vstack([G @ W for probes in sets for W, G, _ in probes.values()])
            self.c = np.concatenate([h for probes in sets for _, _, h in probes.values()])
            edges = np.cumsum([0, *widths])
            # per block of the row, only the probes that read it (the latent's probes read z,
            # the references' o and delta, chance nothing): (their rows, their matrix)
            self.M = []
            for a, b in itertools.pairwise(edges):
                rows = np.flatnonzero(np.any(M[:, a:b] != 0, axis=1))
                self.M.append((rows, np.ascontiguousarray(M[rows, a:b].T)))
            self.conf = np.zeros((len(sets), len(self.names), na, na), dtype=np.int64)

    def add(self, parts, fold, codes, y):
        """Count one chunk: ``parts`` are the ``z`` features, ``o`` and ``delta`` rows."""
        if self.features is not None:
            _contingency(self.counts, codes, y, self.features, self.na)
        if self.probes is None:
            return
        na, k = self.na, len(self.names)
        logits = np.tile(self.c, (parts[0].shape[0], 1))
        for x, (rows, M) in zip(parts, self.M, strict=True):
            if rows.size:
                logits[:, rows] += x @ M
        logits = logits.reshape(parts[0].shape[0], -1, k, na)
        pred = np.argmax(logits, axis=3)  # (rows, sets, maps)
        for s in range(pred.shape[1]):
            rows = slice(None) if s == 0 else fold == s - 1
            for m in range(k):
                cell = y[rows] * na + pred[rows, s, m]
                self.conf[s, m] += np.bincount(cell, minlength=na * na).reshape(na, na)

    def merge(self, other: _Tally):
        if self.features is not None:
            for mine, theirs in zip(self.counts, other.counts, strict=True):
                mine += theirs
        if self.probes is not None:
            self.conf += other.conf

    def empty(self) -> _Tally:
        counts = None if self.counts is None else [np.zeros_like(c) for c in self.counts]
        return _Tally(self.probes, self.na, self.widths, self.features, counts)

    def report(self, scores):
        for m, k in enumerate(self.names):
            acc_in, bal_in = _accuracies(self.conf[0, m])
            per = [_accuracies(c) for c in self.conf[1:, m]]
            scores[k]["accuracy"] = _summary([a for a, _ in per], acc_in)
            scores[k]["balanced_accuracy"] = _summary([b for _, b in per], bal_in)


def _tally_task(chunk_fn, tally, first_row, stop_row):
    """Pass 2 over scored rows ``first_row .. stop_row - 1`` (on a Dask worker)."""
    out = tally.empty()
    for parts, fold, codes, y in chunk_fn.rows(first_row, stop_row, joint=False):
        out.add(parts, fold, codes, y)
    return out


def _tally_on_dask(client, chunk_fn, tally, progress):
    step = chunk_fn.block_rows * int(config.DASK_TASK_BLOCKS)
    fn = client.scatter(chunk_fn, broadcast=True, hash=False)
    base = client.scatter(tally.empty(), broadcast=True, hash=False)
    spans = [(a, min(a + step, chunk_fn.n_rows)) for a in range(0, chunk_fn.n_rows, step)]
    futures = [client.submit(_tally_task, fn, base, a, b, pure=False) for a, b in spans]
    with Progress(total=chunk_fn.n_rows, label="accuracy", enabled=progress) as bar:
        for future, (a, b) in zip(futures, spans, strict=True):
            tally.merge(future.result())
            future.release()
            bar.update(b - a)


def _describe(latents: RowArray, features: LatentFeatures) -> dict:
    out = {"path": latents.label, "kind": features.kind, "rows": latents.n}
    if features.kind == "codes":
        out["codebooks"] = len(features.sizes)
        out["codebook_sizes"] = features.sizes
        out["embedded"] = features.codebook is not None
    out["features"] = features.width
    return out
