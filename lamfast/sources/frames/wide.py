"""Passes of a frame dataset into thin moments (frames too wide for the full co-moment).

One pass streams the transitions of a :class:`~lamfast.sources.frames.source.FrameSource` into
the :class:`~lamfast.moments.thin.ThinMoments` of ``[o (optional), delta | Q^T delta, a
(optional)]``: the wide frame blocks and a few narrow columns, ``Q`` given (a sketch basis,
``lamfast.moments.sketch``). Blocks are fixed by the global transition index and merged by the
same tree as the full moments, so a pass is bitwise identical for any read chunk size, thread
count and Dask worker count, and after a resume (:class:`ThinChunks` reads block ranges through
the source's index, like :class:`~lamfast.sources.frames.index.FrameChunks`); memory is one
chunk of frames, the blocks in flight and ``(2 do) x q`` partial results.
"""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np

from ... import config
from ...errors import LamfastError
from ...moments.accumulate import BlockAccumulator, block_threads
from ...moments.checkpoint import Checkpoint, fingerprint
from ...moments.sketch import SKETCH
from ...moments.thin import ThinMoments, ThinReducer
from ...moments.tree import dask_client, tree_moments
from .distributed import frame_fingerprint
from .index import FrameChunks, _Cursor


def wide_block_rows(width: int) -> int:
    """Rows per block of a thin pass: a power of two with the block's rows within
    ``config.WIDE_BLOCK_BYTES`` (a function of the width alone, so the blocks, hence the bits,
    never depend on the machine)."""
    rows = max(int(config.WIDE_BLOCK_BYTES) // (8 * int(width)), 64)
    return 1 << (rows.bit_length() - 1)


class ThinLayout:
    """What a thin pass feeds its blocks (``[o?, delta, a?]``, ``rows``), how they reduce
    (``reducer``: the sketch columns are computed inside each block), the block size and the
    shift of the ``o`` rows."""

    def __init__(self, source, columns: np.ndarray, with_obs: bool, with_actions: bool):
        do = source.do
        self.with_obs, self.with_actions = bool(with_obs), bool(with_actions)
        wide = ([("o", do)] if with_obs else []) + [("delta", do)]
        narrow = [(SKETCH, columns.shape[1])] + ([("a", source.da)] if with_actions else [])
        pw = sum(size for _, size in wide)
        Q = np.ascontiguousarray(columns, dtype=np.float64)
        self.reducer = ThinReducer(pw, narrow, sketch=(slice(pw - do, pw), Q))
        self.blocks = (*wide, *narrow[1:])  # the rows fed; each block adds the sketch columns
        self.width = pw + columns.shape[1] + (source.da if with_actions else 0)
        self.block_rows = wide_block_rows(self.width)
        self.shift = None
        if with_obs:  # frames near a large common value keep their precision
            self.shift = np.zeros(sum(size for _, size in self.blocks))
            self.shift[:do] = source.shift()

    def rows(self, o, o2, acts, source) -> np.ndarray:
        parts = ([o] if self.with_obs else []) + [o2 - o]
        if self.with_actions:
            parts.append(source.action_rows(acts))
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def accumulator(self, **kw) -> BlockAccumulator:
        return BlockAccumulator(
            self.blocks, self.block_rows, shift=self.shift, reducer=self.reducer, **kw
        )


class ThinChunks(FrameChunks):
    """``chunk_fn(first, stop)`` of a thin pass, for :func:`lamfast.moments.tree.tree_moments`:
    the blocks of :func:`thin_pass`, read by range through the source's index (its
    ``reducer`` tells the executor what a block holds)."""

    def __init__(self, source, index, layout: ThinLayout):
        super().__init__(source, index, layout.block_rows, None)
        self.layout, self.reducer, self.blocks = layout, layout.reducer, layout.blocks

    def __call__(self, first: int, stop: int) -> list:
        state = self._thread_state()
        g0 = first * self.block_rows
        g1 = min(stop * self.block_rows, self.index.total)
        if state.cursor is None or state.cursor.pos != g0:
            state.cursor = _Cursor(state.source, self.index, g0, None)
        out = []
        acc = self.layout.accumulator(sink=out.append)
        for o, o2, acts in state.cursor.take(max(g1 - g0, 0)):
            acc.add(self.layout.rows(o, o2, acts, state.source))
        acc.flush()
        return out


def thin_fingerprint(source, index, layout: ThinLayout) -> str:
    """A thin pass's identity: the frame stream's, the layout and the sketch columns' bits."""
    _, q, Q = layout.reducer.sketch
    return fingerprint(
        stream=frame_fingerprint(source, index, layout.block_rows, None),
        fed=[[name, size] for name, size in layout.blocks],
        sketch_columns=int(q),
        sketch_sha256=hashlib.sha256(np.ascontiguousarray(Q).tobytes()).hexdigest(),
    )


def thin_pass(
    source,
    columns: np.ndarray,
    *,
    with_obs: bool = False,
    with_actions: bool = False,
    progress=None,
    label: str = "sketch",
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    checkpoint=None,
) -> ThinMoments:
    """Thin moments of ``[o?, delta | columns^T delta, a?]`` over the transitions of ``source``.

    ``columns`` (``do x q``) are the sketch's; ``with_obs`` adds the ``o`` block to the wide part
    (for the observation probe), ``with_actions`` the actions to the narrow part. Partial labels
    are refused (the action columns would be missing). ``workers`` / ``scheduler`` / ``client``
    run the blocks on Dask and ``checkpoint`` (a ``.npz`` path) makes the pass resumable, with
    the same bits as the sequential pass; a checkpoint of other columns (another pass, another
    seed, another frame width) is refused in one line.
    """
    do = source.do
    if columns.ndim != 2 or columns.shape[0] != do:
        raise LamfastError(f"sketch columns of shape {columns.shape} for frames of {do} values")
    with_actions = bool(with_actions and source.da)
    if with_actions and source.partial:
        raise LamfastError(
            f"{source.path}: partial labels are not read by the sketch path yet; label every "
            "transition, pass --actions none, or fit narrower frames (--downsample)"
        )
    layout = ThinLayout(source, columns, with_obs, with_actions)
    if any(x is not None for x in (workers, scheduler, client, checkpoint)):
        return _thin_tree(source, layout, progress, workers, scheduler, client, checkpoint)
    acc = layout.accumulator(threads=block_threads(layout.width, layout.block_rows))
    for o, o2, acts in source.transitions(progress=progress, label=label):
        acc.add(layout.rows(o, o2, acts, source))
    if acc.added == 0:
        raise LamfastError(f"{source.path}: no transitions (every frame starts an episode?)")
    return acc.result("frames")


def _thin_tree(source, layout, progress, workers, scheduler, client, checkpoint):
    if client is not None and (workers is not None or scheduler is not None):
        raise LamfastError("give a client, or workers/scheduler, not both")
    index = source.index()
    if index.total == 0:
        raise LamfastError(f"{source.path}: no transitions (every frame starts an episode?)")
    cp = None
    if checkpoint is not None:
        if source.would_read(checkpoint):
            raise LamfastError(
                f"checkpoint {checkpoint} is inside the dataset directory {source.path} (it "
                "would be read as frames next time); put it elsewhere"
            )
        cp = Checkpoint(checkpoint, thin_fingerprint(source, index, layout))
        cp.check()  # a foreign or damaged file fails now, not after a cluster starts
    chunks = ThinChunks(source, index, layout)
    if client is not None or (workers is None and scheduler is None):
        context = contextlib.nullcontext(client)
    else:
        context = dask_client(workers, scheduler)
    with context as own:
        return tree_moments(
            chunks,
            chunks.n_blocks,
            layout.blocks,
            client=own,
            checkpoint=cp,
            progress=progress,
            total_rows=index.total,
            source="frames",
            shift=layout.shift,
        )
