"""Real frames: stream recorded frame files into ``[o, delta, a]`` moments.

Formats
-------
- ``.npy`` (memory-mapped): frames shaped ``T x d`` or ``T x H x W [x C]``, any real dtype; one
  trajectory.
- ``.npz`` (streamed member by member, compressed or not): key ``frames`` and optionally
  ``actions``, ``label_mask`` and ``episode_starts`` (or ``dones``); or pairs data ``o`` /
  ``o_next`` (and optionally ``actions``, ``label_mask``).
- a directory holding ``frames.npy`` or ``o.npy`` + ``o_next.npy`` (an unpacked ``.npz``: the
  layout ``lamfast simulate linear`` writes); any other directory is read as its ``.npy`` /
  ``.npz`` files in natural name order, each file starting a new episode.
- zarr (optional extra): an array of frames or a group with the ``.npz`` keys.

Transitions
-----------
Transition ``t`` goes from frame ``t`` to frame ``t + 1`` with action ``actions[t]`` (so
``actions`` has ``T`` or ``T - 1`` rows). It exists unless frame ``t + 1`` starts an episode
(``episode_starts[t + 1]``, or ``dones[t]``); frame differences therefore never cross an episode
boundary, and frames are read in chunks with the last frame (and action and done flag) of a chunk
carried into the next, so chunk edges change nothing.

Partial labels
--------------
An action is missing where its id is ``-1`` (discrete), its row is all NaN (continuous), or the
``label_mask`` says so; a label budget (``label_budget``) keeps a seeded random share of the
transitions or episodes labelled and drops the rest. When any transition is unlabelled the main
stream holds ``[o, delta]`` of every transition and a second stream ``[o, delta, a]`` of the
labelled ones (``moments(labelled=True)``); the action block never sees a missing action.

Determinism
-----------
Valid transitions are numbered globally in file order; block ``k`` holds transitions
``k * block_rows ... (k + 1) * block_rows - 1`` and block moments are merged by
:class:`~lamfast.moments.MergeTree`. The read chunk size is therefore invisible in the result: any
``chunk_frames`` gives bitwise-identical moments (tests/test_frames.py). Memory is bounded by one
chunk of frames, the blocks in flight (one per thread, at most ``config.FRAME_INFLIGHT_BYTES``;
each holds its rows, their centred copy and a co-moment) and ``log2(blocks)`` co-moment matrices.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ... import config
from ..._progress import Progress
from ...errors import LamfastError
from ...moments.accumulate import BlockAccumulator, block_threads
from ...moments.core import Blocks, Moments, check_moment_size
from .distributed import frame_moments_tree
from .formats import ReaderOptions, open_dataset
from .index import LABELLED, TransitionIndex, _Cursor
from .preprocess import Preprocess
from .readers import (
    _FRAME_KEYS,
    _Member,
    _NpyMember,
    _Segment,
    _ZipMember,
    open_arrays,
)

ACTION_KINDS = ("auto", "discrete", "continuous", "none")

# What a label budget draws: single transitions (the paper's labelled subset) or whole episodes.
LABEL_UNITS = ("transition", "episode")


class FrameSource:
    """A frame dataset on disk, read as a stream of transitions ``(o, o', action)``.

    Parameters
    ----------
    path : str, Path or mapping of arrays
        ``.npy``, ``.npz``, a directory, or a zarr store (see the module docstring); or arrays in
        memory under the keys of an ``.npz`` (``{"frames": F, "actions": a}``,
        ``{"o": O, "o_next": O2}``), which cannot be sent to Dask workers or checkpointed.
    preprocess : Preprocess, optional
        Crop, downsample, scale.
    actions : {"auto", "discrete", "continuous", "none"}
        ``auto``: integer 1-d actions are discrete (one-hot), real ones continuous.
    n_actions : int, optional
        Number of discrete actions; inferred as ``max id + 1`` when not given.
    chunk_frames : int, optional
        Frames read per chunk (default ``config.FRAME_CHUNK``); never changes a result.
    reader : ReaderOptions, optional
        Options of the readers of other formats (:mod:`lamfast.sources.frames.formats`).
    label_budget : float, optional
        Keep a seeded random fraction in (0, 1] of the transitions (or episodes, see
        ``label_unit``) labelled and treat the others as unlabelled: a label budget simulated
        honestly on a fully labelled dataset. The draw is over the one-frame transitions, so
        an ``offset`` changes which frames pair up but not which actions are kept.
    label_unit : {"transition", "episode"}
        What the budget draws.
    label_seed : int
        Seed of the budget's draw.
    offset : int
        Frame gap ``K``: transitions are ``(o_t, o_{t+K})`` with action ``actions[t]``, never
        across an episode boundary (default 1).

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "f.npy")
    >>> np.save(p, np.arange(12.0).reshape(6, 2))
    >>> src = FrameSource(p)
    >>> src.do, src.n_transitions
    (2, 5)
    """

    def __init__(
        self,
        path,
        *,
        preprocess: Preprocess | None = None,
        actions: str = "auto",
        n_actions: int | None = None,
        chunk_frames: int | None = None,
        reader: ReaderOptions | None = None,
        label_budget: float | None = None,
        label_unit: str = "transition",
        label_seed: int = 0,
        offset: int = 1,
    ):
        self.in_memory = isinstance(path, Mapping)
        self.reader = reader or ReaderOptions()
        self.path = Path("<arrays>") if self.in_memory else Path(path)
        self.preprocess = preprocess or Preprocess()
        if actions not in ACTION_KINDS:
            raise LamfastError(f"actions must be one of {', '.join(ACTION_KINDS)}, got {actions!r}")
        self.chunk_frames = int(chunk_frames or config.FRAME_CHUNK)  # narrowed below by width
        if self.chunk_frames < 1:
            raise LamfastError("chunk_frames must be >= 1")
        if self.in_memory:
            if self.reader.given():
                raise LamfastError("reader options apply to files, not to arrays in memory")
            self.segments = open_arrays(path)
        else:
            self.segments = open_dataset(self.path, self.reader)
        first = self.segments[0].first
        self.frame_shape = tuple(first.shape[1:])
        self.raw_dtype = first.dtype
        self.scale = self.preprocess.scale_for(self.raw_dtype)  # what every pixel is multiplied by
        for seg in self.segments:
            for m in (seg.frames, seg.o, seg.o_next):
                if m is not None and tuple(m.shape[1:]) != self.frame_shape:
                    raise LamfastError(
                        f"{m.name}: frame shape {tuple(m.shape[1:])} differs from "
                        f"{self.frame_shape} of {first.name}"
                    )
                scale = None if m is None else self.preprocess.scale_for(m.dtype)
                if scale is not None and scale != self.scale:
                    raise LamfastError(
                        f"{m.name}: dtype {m.dtype} is scaled by {scale:g} but {first.name} "
                        f"({self.raw_dtype}) by {self.scale:g}: the files would be scaled "
                        "differently in one fit; convert them to one dtype or pass --scale"
                    )
        self.shape = self.preprocess.out_shape(self.frame_shape, first.name)
        self.do = int(np.prod(self.shape))
        if not chunk_frames:  # wide frames: chunks of at most FRAME_CHUNK_BYTES as float64
            fit = int(config.FRAME_CHUNK_BYTES) // (8 * max(self.do, 1))
            self.chunk_frames = max(16, min(self.chunk_frames, fit))
        if isinstance(offset, bool) or not isinstance(offset, int | np.integer) or offset < 1:
            raise LamfastError(f"offset must be a whole number of frames >= 1, got {offset!r}")
        self.offset = int(offset)
        if self.offset > 1 and any(seg.kind == "pairs" for seg in self.segments):
            raise LamfastError(
                f"{self.path}: pairs data (o, o_next) fix the gap; an offset needs frames"
            )
        self._setup_actions(actions, n_actions)
        self.label_budget, self.label_unit = label_budget, label_unit
        self.label_seed = int(label_seed)
        self._setup_budget()

    # ------------------------------------------------------------------ actions
    def _setup_actions(self, kind: str, n_actions):
        acts = [seg.actions for seg in self.segments]
        have = [a is not None for a in acts]
        if kind == "none" or not any(have):
            if kind in ("discrete", "continuous") and not any(have):
                raise LamfastError(f"{self.path}: --actions {kind} but the data have no actions")
            self.action_kind, self.da, self.n_actions = None, 0, None
            for seg in self.segments:
                seg.actions = None
            return
        if not all(have):
            missing = [s.label for s, h in zip(self.segments, have, strict=True) if not h]
            raise LamfastError(f"{missing[0]}: has no actions while other files do")
        dtypes = {a.dtype.kind for a in acts}
        ndims = {len(a.shape) for a in acts}
        if kind == "auto":
            kind = "discrete" if dtypes <= set("biu") and ndims == {1} else "continuous"
        if kind == "discrete":
            if ndims != {1}:
                raise LamfastError(f"{acts[0].name}: discrete actions must be a 1-d array of ids")
            if not dtypes <= set("biu"):
                raise LamfastError(f"{acts[0].name}: discrete actions must be integers")
            if n_actions is None:  # one cheap pass over the ids (never the frames)
                top = -1
                for a in acts:
                    for s in range(0, len(a), 1 << 20):
                        ids = a.read(s, s + (1 << 20))
                        if ids.size:
                            top = max(top, int(ids.max()))
                n_actions = top + 1
                if n_actions > config.MAX_ACTIONS:
                    raise LamfastError(
                        f"{acts[0].name}: action ids go up to {top}, more than "
                        f"config.MAX_ACTIONS = {config.MAX_ACTIONS} one-hot columns; pass "
                        "--n-actions if that many discrete actions is right, or --actions "
                        "continuous"
                    )
            if int(n_actions) < 1:
                raise LamfastError("n_actions must be >= 1")
            self.action_kind, self.n_actions, self.da = "discrete", int(n_actions), int(n_actions)
        else:
            if n_actions is not None:
                raise LamfastError("n_actions applies to discrete actions only")
            widths = {1 if len(a.shape) == 1 else a.shape[1] for a in acts}
            if len(widths) != 1:
                raise LamfastError(f"action widths differ between files: {sorted(widths)}")
            self.action_kind, self.n_actions, self.da = "continuous", None, widths.pop()

    def _setup_budget(self) -> None:
        """Draw the transitions (or episodes) a label budget keeps labelled (``seg.budget``).

        One scan of the episode flags; the draw is over the valid transitions in global order
        (or the episodes that have one), keyed by ``label_seed`` alone, so every worker that
        reopens the source draws the same set.
        """
        F, unit = self.label_budget, self.label_unit
        if unit not in LABEL_UNITS:
            raise LamfastError(f"label_unit must be one of {', '.join(LABEL_UNITS)}, got {unit!r}")
        if F is None:
            return
        if isinstance(F, bool) or not isinstance(F, int | float) or not 0 < F <= 1:
            raise LamfastError(f"label budget must be a fraction in (0, 1], got {F!r}")
        if self.action_kind is None:
            raise LamfastError(f"{self.path}: a label budget needs actions in the data")
        rows, episodes, n_ep = [], [], 0
        for seg in self.segments:
            T = len(seg.first)
            if seg.kind == "pairs":  # a file of pairs is one episode (episode_lengths)
                rows.append(np.arange(T))
                episodes.append(np.full(T, n_ep))
                n_ep += 1
                continue
            b = self._boundary(seg, 0, T) if T else np.zeros(0, dtype=bool)
            valid = ~b
            rows.append(np.flatnonzero(valid) - 1)  # transition into frame j carries action j - 1
            episodes.append(n_ep + np.cumsum(b)[valid] - 1)
            n_ep += int(b.sum())
        ep_of = np.concatenate(episodes)
        N = len(ep_of)
        if N == 0:
            return  # no transitions: moments() says so
        rng = np.random.default_rng(np.random.SeedSequence(self.label_seed, spawn_key=(12,)))
        if unit == "transition":
            keep = np.zeros(N, dtype=bool)
            keep[rng.choice(N, size=max(1, round(F * N)), replace=False)] = True
        else:
            used, inverse = np.unique(ep_of, return_inverse=True)  # episodes with a transition
            pick = np.zeros(len(used), dtype=bool)
            pick[rng.choice(len(used), size=max(1, round(F * len(used))), replace=False)] = True
            keep = pick[inverse]
        start = 0
        for seg, r in zip(self.segments, rows, strict=True):
            seg.budget = np.zeros(len(seg.actions), dtype=bool)
            seg.budget[r] = keep[start : start + len(r)]
            start += len(r)

    # ------------------------------------------------------------------ labels
    def _read_actions(self, seg: _Segment, start: int, stop: int) -> np.ndarray:
        """Action rows ``start..stop-1`` of ``seg`` with the unlabelled ones marked missing
        (id ``-1``, a NaN row) by the label mask and the label budget."""
        acts = seg.actions.read(start, stop)
        drop = None
        if seg.mask is not None:
            drop = ~np.asarray(seg.mask.read(start, stop), dtype=bool)
        if seg.budget is not None:
            keep = seg.budget[start:stop]
            drop = ~keep if drop is None else drop | ~keep
        if drop is None or not drop.any():
            return acts
        if self.action_kind == "discrete":
            acts = acts.astype(np.int64)  # a copy, and room for -1 in unsigned ids
            acts[drop] = -1
        else:
            acts = acts.astype(np.float64)
            acts[drop] = np.nan
        return acts

    def labelled(self, acts: np.ndarray) -> np.ndarray:
        """Which rows of raw actions carry a label (not ``-1``, not a NaN row)."""
        if self.action_kind == "discrete":
            return np.asarray(acts).astype(np.int64, copy=False) != -1
        a = np.asarray(acts, dtype=np.float64).reshape(len(acts), -1)
        return ~np.isnan(a).all(axis=1)

    @functools.cached_property
    def n_labelled(self) -> int:
        """Number of labelled transitions (one pass over the actions and episode flags)."""
        if self.action_kind is None:
            return 0
        return self.index(LABELLED).total

    @property
    def partial(self) -> bool:
        """Whether some transitions have actions and others not (partial labels)."""
        return self.action_kind is not None and self.n_labelled < self.n_transitions

    # ------------------------------------------------------------------ layout
    @property
    def blocks(self) -> Blocks:
        """Layout of the main stream: ``[o, delta]``, plus ``a`` when every transition has an
        action (with partial labels ``a`` lives in :attr:`labelled_blocks` only)."""
        layout = [("o", self.do), ("delta", self.do)]
        if self.da and not self.partial:
            layout.append(("a", self.da))
        return tuple(layout)

    @property
    def labelled_blocks(self) -> Blocks:
        """Layout of the labelled stream: ``[o, delta, a]``."""
        return (("o", self.do), ("delta", self.do), ("a", self.da))

    @property
    def n_frames(self) -> int:
        return sum(len(seg.first) for seg in self.segments)

    @property
    def n_transitions(self) -> int:
        """Number of valid transitions (reads only the episode flags)."""
        return int(self.episode_lengths().sum())

    def episode_lengths(self) -> np.ndarray:
        """Transitions of each episode, in order (reads only the episode flags).

        An episode starts at frame 0 of every file and wherever ``episode_starts`` (or the
        ``dones`` of the frame before) says; pairs data (``o``, ``o_next``) carry no episodes,
        so each such file counts as one. Episodes of a single frame have 0 transitions.
        """
        out = []
        step = 1 << 20
        for seg in self.segments:
            T = len(seg.first)
            if seg.kind == "pairs":
                out.append(T)
                continue
            if T == 0:
                continue
            starts = [np.zeros(0, dtype=np.int64)]
            for s in range(0, T, step):
                e = min(T, s + step)
                starts.append(s + np.flatnonzero(self._boundary(seg, s, e)))
            first = np.concatenate(starts)
            # an episode from frame f to the next start g - 1 has g - f - K transitions
            out.extend(np.maximum(np.diff(np.append(first, T)) - self.offset, 0).tolist())
        return np.asarray(out, dtype=np.int64)

    def _check_actions(self, acts: np.ndarray, rows: np.ndarray, member: _Member) -> None:
        """Validate the actions of valid transitions (``rows``: their indices in ``member``).

        Only actions that label a transition are checked, so padding in the unused last action
        of an episode (NaN, -1) is harmless.
        """
        if len(acts) == 0:  # a chunk without a transition (every frame starts an episode)
            return
        missing = ~self.labelled(acts)  # unlabelled (partial labels): -1, or a row all NaN
        if self.action_kind == "continuous":
            bad = ~np.isfinite(acts.reshape(len(acts), -1)).all(axis=1) & ~missing
            what = "contains NaN or inf (a missing action is a row all NaN)"
        else:
            bad = ((acts < 0) & ~missing) | (acts >= self.n_actions)
            what = (
                f"is not an action id in 0..{self.n_actions - 1} (n_actions={self.n_actions}; "
                "-1 marks a missing action)"
            )
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = "" if self.action_kind == "continuous" else f" = {int(acts[i])}"
            raise LamfastError(f"{member.name}: action {int(rows[i])}{value} {what}")

    def action_rows(self, raw: np.ndarray) -> np.ndarray:
        """Action ids or vectors (n,) / (n, da) to rows of the ``a`` block (one-hot if discrete)."""
        if not self.labelled(raw).all():  # guards every caller: -1 would one-hot the last id
            raise LamfastError(
                f"{self.path}: some transitions have no action label; this needs every "
                "transition labelled (or --actions none)"
            )
        if self.action_kind == "discrete":
            ids = raw.astype(np.int64, copy=False)
            out = np.zeros((ids.shape[0], self.da))
            out[np.arange(ids.shape[0]), ids] = 1.0
            return out
        return np.asarray(raw, dtype=np.float64).reshape(raw.shape[0], self.da)

    # ------------------------------------------------------------------ streaming
    def _frames(self, member: _Member, start: int, stop: int) -> np.ndarray:
        x = self.preprocess.apply(member.read(start, stop))
        if not np.isfinite(x).all():
            bad = start + int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise LamfastError(f"{member.name}: frame {bad} contains NaN or inf")
        return x

    def transitions(self, progress: bool | None = None, label: str = "frames") -> Iterator[tuple]:
        """Yield chunks ``(o, o_next, actions)`` of valid transitions, in global order.

        ``actions`` is the raw id / vector array of the chunk's transitions, or None.
        """
        with Progress(total=self.n_frames, label=label, enabled=progress) as bar:
            for seg in self.segments:
                if seg.kind == "pairs":
                    yield from self._pairs(seg, bar)
                else:
                    yield from self._trajectories(seg, bar)

    def _pairs(self, seg: _Segment, bar, start: int = 0):
        T, cf = len(seg.o), self.chunk_frames
        for s in range(start, T, cf):
            e = min(T, s + cf)
            o, o2 = self._frames(seg.o, s, e), self._frames(seg.o_next, s, e)
            acts = None
            if seg.actions is not None:
                acts = self._read_actions(seg, s, e)
                self._check_actions(acts, np.arange(s, e), seg.actions)
            bar.update(e - s)
            yield o, o2, acts

    @staticmethod
    def _boundary(seg: _Segment, s: int, e: int) -> np.ndarray:
        """``boundary[i]``: frame ``s + i`` starts an episode, so no transition ends there.

        Stateless (reads ``dones[s - 1]`` itself), so a read can start at any frame.
        """
        if seg.starts is not None:
            b = np.asarray(seg.starts.read(s, e), dtype=bool).copy()
        elif seg.dones is not None:
            d = np.asarray(seg.dones.read(max(s - 1, 0), e - 1), dtype=bool)
            b = np.concatenate([[True], d]) if s == 0 else d.copy()
        else:
            b = np.zeros(e - s, dtype=bool)
        if s == 0:
            b[0] = True  # there is no transition into frame 0
        return b

    def _trajectories(self, seg: _Segment, bar, start: int = 0):
        for chunk in self._offset_chunks(seg, bar, start, (self.offset,)):
            o, o2, acts = chunk[0]
            if o.shape[0]:
                yield o, o2, acts

    def _offset_chunks(self, seg: _Segment, bar, start: int, offsets: tuple):
        """Per chunk of frames, one ``(o, o_next, actions)`` per offset ``K`` in ``offsets``:
        the transitions ``t -> t + K`` ending in the chunk, in order, with action ``actions[t]``.

        A transition exists when frames ``t + 1 .. t + K`` start no episode, i.e. when the
        frames since the last episode start (``since``, capped at ``max(offsets)``) reach ``K``
        at its end frame. The last ``max(offsets)`` frames, their actions and ``since`` are
        carried from chunk to chunk (and read before ``start`` when a read starts mid-file), so
        chunk edges change nothing and one read serves every offset.
        """
        T, cf, kmax = len(seg.frames), self.chunk_frames, max(offsets)
        n_act = len(seg.actions) if seg.actions is not None else 0
        c0 = max(0, start - kmax)
        carry_f = self._frames(seg.frames, c0, start) if start else np.zeros((0, self.do))
        carry_a = None
        if seg.actions is not None:
            carry_a = self._read_actions(seg, c0, min(start, n_act))
        since = self._since(self._boundary(seg, c0, start), kmax, kmax)[-1] if start else kmax
        for s in range(start, T, cf):
            e = min(T, s + cf)
            F = self._frames(seg.frames, s, e)
            sn = self._since(self._boundary(seg, s, e), since, kmax)
            since = sn[-1]
            buf = np.concatenate([carry_f, F]) if len(carry_f) else F
            lead = len(carry_f)  # buf[lead + i] is frame s + i
            acts_buf = None
            if seg.actions is not None:
                A = self._read_actions(seg, s, min(e, n_act))
                acts_buf = np.concatenate([carry_a, A]) if len(carry_a) else A
            out = []
            for K in offsets:
                idx = np.flatnonzero(sn >= K)
                if len(idx) == e - s and K == lead:  # every frame ends a transition
                    o, o2 = buf[: e - s], F
                else:
                    o, o2 = buf[lead + idx - K], F[idx]
                acts = None
                if acts_buf is not None:
                    acts = acts_buf[lead + idx - K]
                    self._check_actions(acts, s + idx - K, seg.actions)
                out.append((o, o2, acts))
            keep = min(kmax, len(buf))
            carry_f = buf[len(buf) - keep :]
            if acts_buf is not None:
                carry_a = acts_buf[max(len(acts_buf) - keep, 0) :]
            bar.update(e - s)
            yield out

    @staticmethod
    def _since(boundary: np.ndarray, before: int, cap: int) -> np.ndarray:
        """Frames since the last episode start at each frame (0 at a start), capped at ``cap``;
        ``before`` is the value at the frame before the first."""
        idx = np.arange(len(boundary))
        last = np.maximum.accumulate(np.where(boundary, idx, -1))
        since = np.where(last >= 0, idx - last, int(before) + 1 + idx)
        return np.minimum(since, cap)

    # ------------------------------------------------------------------ indexed reads
    def _selected(self, acts, select) -> np.ndarray:
        """Which rows of raw actions a stream ``select`` holds: ``LABELLED`` (those with a
        label) or an action id (the no-op transitions)."""
        if select == LABELLED:
            return self.labelled(acts)
        return np.asarray(acts).astype(np.int64, copy=False) == select

    def index(self, select=None, stride: int | None = None) -> TransitionIndex:
        """Where the transitions are, so that any range of them can be read directly.

        Reads only the episode flags (and, with ``select``, the actions): counts the valid
        transitions (those ``select`` holds: ``LABELLED`` or a no-op action id) ending in each
        run of ``stride`` frames. Used by executors that compute blocks out of order (Dask,
        resumed runs).
        """
        stride = int(stride or config.FRAME_CHUNK)
        if stride < 1:
            raise LamfastError("stride must be >= 1")
        if select == LABELLED and self.action_kind is None:
            raise LamfastError(f"{self.path}: no actions, so no labelled transitions")
        if select is not None and select != LABELLED:
            self._check_noop(select)
        counts, offsets, K = [], [0], self.offset
        for seg in self.segments:
            T = len(seg.first)
            per, since = [], K
            for s in range(0, T, stride):
                e = min(T, s + stride)
                if seg.kind == "pairs":
                    sel = np.ones(e - s, dtype=bool)
                    if select is not None:
                        sel &= self._selected(self._read_actions(seg, s, e), select)
                else:
                    sn = self._since(self._boundary(seg, s, e), since, K)
                    since = sn[-1]
                    sel = sn >= K
                    if select is not None and sel.any():
                        # the transition ending at frame j carries actions[j - K]; j < K has none
                        lo = s - K
                        a = self._read_actions(seg, max(lo, 0), e - K)
                        chosen = self._selected(a, select)
                        if lo < 0:
                            chosen = np.concatenate([np.zeros(-lo, dtype=bool), chosen])
                        sel &= chosen
                per.append(int(np.count_nonzero(sel)))
            counts.append(np.concatenate([[0], np.cumsum(per, dtype=np.int64)]))
            offsets.append(offsets[-1] + int(counts[-1][-1]))
        return TransitionIndex(stride, np.asarray(offsets, dtype=np.int64), tuple(counts))

    def read_from(self, index: TransitionIndex, first: int, select=None):
        """Yield chunks ``(o, o_next, actions)`` of the transitions of ``index`` from ``first``
        to the end: the same rows, in the same order, as :meth:`transitions` yields (filtered by
        ``select`` when the index was built with it)."""
        if not 0 <= first < index.total:
            return
        seg_i, start, skip = index.locate(first)
        bar = Progress(total=0, enabled=False)
        for seg in self.segments[seg_i:]:
            if seg.kind == "pairs":
                chunks = self._pairs(seg, bar, start)
            else:
                chunks = self._trajectories(seg, bar, start)
            for o, o2, acts in chunks:
                if select is not None:
                    sel = self._selected(acts, select)
                    o, o2, acts = o[sel], o2[sel], acts[sel]
                n = o.shape[0]
                if skip >= n:
                    skip -= n
                    continue
                if skip:
                    o, o2, acts = o[skip:], o2[skip:], (None if acts is None else acts[skip:])
                    skip = 0
                yield o, o2, acts
            start = 0

    def read_range(self, index: TransitionIndex, first: int, stop: int, select=None):
        """Yield chunks of transitions ``first..stop-1`` of ``index`` (see :meth:`read_from`)."""
        need = int(min(stop, index.total)) - int(first)
        if need > 0:
            yield from _Cursor(self, index, int(first), select).take(need)

    def spec(self) -> dict:
        """Constructor arguments that reopen this source (on a Dask worker) without a scan."""
        if self.in_memory:
            raise LamfastError(
                "arrays in memory cannot be sent to Dask workers or checkpointed; save them as "
                ".npz (np.savez) and pass the file"
            )
        return {
            "path": str(self.path.resolve()),  # workers may run in another directory
            "preprocess": self.preprocess,
            "actions": self.action_kind or "none",
            "n_actions": self.n_actions,
            "chunk_frames": self.chunk_frames,
            "reader": self.reader,
            "label_budget": self.label_budget,
            "label_unit": self.label_unit,
            "label_seed": self.label_seed,
            "offset": self.offset,
        }

    def files(self) -> list[list]:
        """``[path, size, mtime_ns]`` of every file the dataset is read from (a checkpoint's
        identity; other files beside them, such as the checkpoint itself, do not count)."""
        paths = set()
        for seg in self.segments:
            for m in (seg.frames, seg.o, seg.o_next, seg.actions, seg.mask, seg.starts, seg.dones):
                if isinstance(m, _NpyMember | _ZipMember) or getattr(m, "path", None):
                    paths.add(Path(m.path).resolve())  # the file a member reads
                elif m is not None and not self.in_memory:  # zarr: the whole store
                    paths.update(f.resolve() for f in self.path.rglob("*") if f.is_file())
        out = []
        for f in sorted(paths):
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
        return out

    def shift(self) -> np.ndarray:
        """The first frame: subtracted from the ``o`` rows before accumulating, added back to the
        mean, so a large common offset costs no precision (as in ``moments_from_rows``)."""
        for seg in self.segments:
            if len(seg.first):
                return self._frames(seg.first, 0, 1)[0]
        return np.zeros(self.do)  # no frames at all: moments() reports "no transitions"

    def joint_rows(self, o, o2, acts, with_actions: bool | None = None) -> np.ndarray:
        """Rows ``[o, o_next - o, (a)]``: of the main stream's layout (:attr:`blocks`), or with
        ``with_actions`` given, with or without the ``a`` block."""
        if with_actions is None:
            with_actions = any(name == "a" for name, _ in self.blocks)
        cols = [o, o2 - o]
        if with_actions:
            cols.append(self.action_rows(acts))
        return np.hstack(cols)

    def would_read(self, path) -> bool:
        """Whether a file at ``path`` would be read as part of this dataset (a directory of
        ``.npy``/``.npz`` files reads every such file at its top level)."""
        # resolved: a checkpoint reached through a symbolic link is still inside the dataset
        path = Path(os.path.realpath(path))
        if not self.path.is_dir() or path.parent != Path(os.path.realpath(self.path)):
            return False
        if (self.path / "frames.npy").exists() or (self.path / "o.npy").exists():
            # an unpacked .npz directory (open_segments): only its known members are read
            return path.suffix.lower() == ".npy" and path.stem in _FRAME_KEYS
        return path.suffix.lower() in (".npy", ".npz")

    def check_full_width(self) -> None:
        """Refuse frames too wide for the full co-moment of ``[o, delta, a]`` (``(2 do)^2``
        floats, ``log2(blocks)`` of them in the merge tree) before any is allocated."""
        if self.do > config.FRAMES_MAX_DIM:
            raise LamfastError(
                f"frames have {self.do} values after preprocessing (max {config.FRAMES_MAX_DIM} "
                "for the full moments: the co-moment is (2d)^2 floats); fit them with "
                "--method sketch, or use --downsample or --crop"
            )
        what = " actions" if self.action_kind == "discrete" else "-dim actions"
        check_moment_size(  # many one-hot columns can be too wide on their own
            2 * self.do + self.da, f"{self.path}" + (f" with {self.da}{what}" if self.da else "")
        )

    def _check_noop(self, noop_action) -> None:
        if self.action_kind != "discrete":
            raise LamfastError("--noop-action needs discrete actions")
        if not 0 <= noop_action < self.n_actions:
            raise LamfastError(
                f"noop action {noop_action} is not an action id (0..{self.n_actions - 1})"
            )

    # ------------------------------------------------------------------ moments
    def moments(
        self,
        *,
        block_rows: int | None = None,
        noop_action: int | None = None,
        labelled: bool = False,
        progress: bool | None = None,
        workers: int | None = None,
        scheduler: str | None = None,
        client=None,
        checkpoint=None,
    ) -> Moments | tuple:
        """Moments of the main stream (:attr:`blocks`) over every valid transition.

        With ``labelled`` also returns the moments of ``[o, delta, a]`` over the labelled
        transitions (the main moments themselves when every transition is labelled); with
        ``noop_action`` also the moments of ``delta`` over the transitions whose (discrete)
        action is ``noop_action`` (None when there are none). Extra results follow the main
        moments in that order: ``m``, ``(m, labelled)``, ``(m, noop)`` or ``(m, labelled, noop)``.

        ``workers`` / ``scheduler`` / ``client`` compute the blocks on Dask and ``checkpoint``
        (a ``.npz`` path) makes the run resumable; both read block ranges through
        :meth:`index` and give the same bits as the single sequential pass
        (``lamfast.sources.frames.distributed.frame_moments_tree``).
        """
        self.check_full_width()
        block_rows = int(block_rows or config.BLOCK_ROWS)
        if block_rows < 1:
            raise LamfastError("block_rows must be >= 1")
        if noop_action is not None:
            self._check_noop(noop_action)
        if labelled and self.action_kind is None:
            raise LamfastError(f"{self.path}: no actions, so no labelled transitions")
        if any(x is not None for x in (workers, scheduler, client, checkpoint)):
            return frame_moments_tree(
                self,
                block_rows=block_rows,
                noop_action=noop_action,
                labelled=labelled,
                progress=progress,
                workers=workers,
                scheduler=scheduler,
                client=client,
                checkpoint=checkpoint,
            )
        # Blocks are computed on threads while the next chunk is read (same bits for any count).
        shift = self.shift()
        threads = block_threads(sum(size for _, size in self.blocks), block_rows)
        acc = BlockAccumulator(
            self.blocks, block_rows, threads=threads, shift=self.full_shift(shift, self.blocks)
        )
        lab = None
        if labelled and self.partial:
            lab = BlockAccumulator(
                self.labelled_blocks,
                block_rows,
                threads=threads,
                shift=self.full_shift(shift, self.labelled_blocks),
            )
        noop = (  # the smaller no-op side stream is computed in this thread
            BlockAccumulator((("delta", self.do),), block_rows) if noop_action is not None else None
        )
        for o, o2, acts in self.transitions(progress=progress):
            acc.add(self.joint_rows(o, o2, acts))
            if lab is not None:
                sel = self.labelled(acts)
                if sel.any():
                    lab.add(self.joint_rows(o[sel], o2[sel], acts[sel], with_actions=True))
            if noop is not None:
                sel = acts.astype(np.int64) == noop_action
                if sel.any():
                    noop.add(o2[sel] - o[sel])
        if acc.added == 0:
            raise LamfastError(f"{self.path}: no transitions (every frame starts an episode?)")
        out = [acc.result("frames")]
        if labelled:
            out.append(out[0] if lab is None else self._labelled_result(lab))
        if noop is not None:
            out.append(noop.result("frames") if noop.added else None)
        return out[0] if len(out) == 1 else tuple(out)

    def with_offset(self, offset: int) -> FrameSource:
        """The same dataset read at another frame gap (files shared, nothing reread)."""
        if offset == self.offset:
            return self
        if offset > 1 and any(seg.kind == "pairs" for seg in self.segments):
            raise LamfastError(
                f"{self.path}: pairs data (o, o_next) fix the gap; an offset needs frames"
            )
        other = copy.copy(self)
        other.offset = int(offset)
        other.__dict__.pop("n_labelled", None)  # depends on the gap
        return other

    def offset_moments(
        self, offsets, *, block_rows: int | None = None, progress: bool | None = None
    ) -> list[tuple[Moments, Moments | None]]:
        """``(moments, labelled moments)`` at each frame gap of ``offsets``, in one read.

        Entry ``i`` is bit for bit ``self.with_offset(offsets[i]).moments(labelled=True)`` (the
        same rows in the same order, the same first-frame shift; labelled moments None without
        actions): the frames are read once and every gap's transitions are cut from the same
        chunks (:meth:`_offset_chunks`).
        """
        self.check_full_width()
        offsets = tuple(int(k) for k in offsets)
        if not offsets or min(offsets) < 1 or len(set(offsets)) != len(offsets):
            raise LamfastError(f"offsets must be distinct whole numbers >= 1, got {offsets}")
        block_rows = int(block_rows or config.BLOCK_ROWS)
        if block_rows < 1:
            raise LamfastError("block_rows must be >= 1")
        views = [self.with_offset(k) for k in offsets]
        shift = self.shift()
        accs = []
        for v in views:
            threads = block_threads(sum(size for _, size in v.blocks), block_rows)
            main = BlockAccumulator(
                v.blocks, block_rows, threads=threads, shift=v.full_shift(shift, v.blocks)
            )
            lab = None
            if v.action_kind is not None and v.partial:
                lab = BlockAccumulator(
                    v.labelled_blocks,
                    block_rows,
                    threads=threads,
                    shift=v.full_shift(shift, v.labelled_blocks),
                )
            accs.append((main, lab))
        with Progress(total=self.n_frames, label="frames", enabled=progress) as bar:
            for seg in self.segments:
                if seg.kind == "pairs":  # offsets == (1,): with_offset refused the others
                    chunks = ([c] for c in self._pairs(seg, bar))
                else:
                    chunks = self._offset_chunks(seg, bar, 0, offsets)
                for per_offset in chunks:
                    for v, (main, lab), (o, o2, acts) in zip(views, accs, per_offset, strict=True):
                        if not o.shape[0]:
                            continue
                        main.add(v.joint_rows(o, o2, acts))
                        if lab is not None:
                            sel = v.labelled(acts)
                            if sel.any():
                                lab.add(v.joint_rows(o[sel], o2[sel], acts[sel], True))
        out = []
        for v, (main, lab) in zip(views, accs, strict=True):
            if main.added == 0:
                raise LamfastError(
                    f"{self.path}: no transitions at offset {v.offset} (episodes too short?)"
                )
            m = main.result("frames")
            mL = None if v.action_kind is None else m if lab is None else v._labelled_result(lab)
            out.append((m, mL))
        return out

    def _labelled_result(self, lab: BlockAccumulator) -> Moments:
        if lab.added == 0:
            raise LamfastError(f"{self.path}: no transition has an action label")
        return lab.result("frames")

    def full_shift(self, shift: np.ndarray, blocks: Blocks | None = None) -> np.ndarray:
        """``shift`` padded to a joint layout (default :attr:`blocks`; only ``o`` is shifted)."""
        width = sum(size for _, size in (self.blocks if blocks is None else blocks))
        return np.concatenate([shift, np.zeros(width - self.do)])


def frame_moments(
    path,
    *,
    block_rows: int | None = None,
    progress=None,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    checkpoint=None,
    **source_options,
):
    """Moments ``[o, delta, (a)]`` of a frame dataset (see :class:`FrameSource` for options).

    ``workers`` / ``scheduler`` / ``client`` (Dask) and ``checkpoint`` as in
    :meth:`FrameSource.moments`: the same bits, computed elsewhere or resumably.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "f.npz")
    >>> np.savez(p, frames=np.arange(8.0).reshape(4, 2), actions=np.array([0, 1, 0, 1]))
    >>> m = frame_moments(p)
    >>> m.blocks, m.count
    ((('o', 2), ('delta', 2), ('a', 2)), 3.0)
    """
    return FrameSource(path, **source_options).moments(
        block_rows=block_rows,
        progress=progress,
        workers=workers,
        scheduler=scheduler,
        client=client,
        checkpoint=checkpoint,
    )
