"""Where the transitions of a frame dataset are, so that any range of them can be read directly:
the transition index, a cursor over it, and the picklable chunk function of the block executor.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from ...errors import LamfastError
from ...moments.accumulate import BlockAccumulator

# The selection of the labelled stream (partial labels); any other selection is a no-op action id.
LABELLED = "labelled"


@dataclasses.dataclass(frozen=True)
class TransitionIndex:
    """Selected transitions of a frame source, counted per run of ``stride`` frames.

    ``offsets[i]`` is the global number of the first transition of segment ``i`` (the last
    entry is the total); ``counts[i][c]`` the number of segment ``i``'s transitions ending
    before frame ``c * stride`` (pair ``c * stride`` for pairs data).
    """

    stride: int
    offsets: np.ndarray
    counts: tuple

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def locate(self, g: int) -> tuple[int, int, int]:
        """``(segment, start frame, transitions to skip from there)`` of transition ``g``."""
        if not 0 <= g < self.total:
            raise IndexError(f"transition {g} outside 0..{self.total - 1}")
        seg = int(np.searchsorted(self.offsets, g, side="right")) - 1
        local = g - int(self.offsets[seg])
        cum = self.counts[seg]
        c = int(np.searchsorted(cum, local, side="right")) - 1
        return seg, c * self.stride, local - int(cum[c])


class _Cursor:
    """A position in the transition stream of an index: ``take(n)`` yields the next ``n`` rows
    (in chunks) and leaves the cursor after them, so consecutive ranges read the files once."""

    def __init__(self, source, index: TransitionIndex, first: int, select):
        self.chunks = source.read_from(index, first, select)
        self.pos, self.pending, self.path = first, None, source.path

    def take(self, n: int):
        while n > 0:
            if self.pending is None:
                self.pending = next(self.chunks, None)
                if self.pending is None:
                    raise LamfastError(
                        f"{self.path}: fewer transitions than indexed (files changed?)"
                    )
            o, o2, acts = self.pending
            k = min(n, o.shape[0])
            yield o[:k], o2[:k], (None if acts is None else acts[:k])
            rest = None if acts is None else acts[k:]
            self.pending = (o[k:], o2[k:], rest) if k < o.shape[0] else None
            self.pos += k
            n -= k


class FrameChunks:
    """``chunk_fn(first, stop)`` of frame blocks, for :func:`lamfast.moments.tree.tree_moments`.

    Block ``k`` holds transitions ``k * block_rows ...`` of ``index`` (so the blocks are those
    of ``FrameSource.moments``). Pickles to the source's constructor arguments and the index;
    each thread that runs it (a Dask worker may run several tasks at once) opens the files
    itself, since readers of ``.npz`` members keep a position. A call that starts where the
    thread's previous call stopped continues the same read, so an in-process run (resumable with
    a checkpoint) reads every file once, in order.
    """

    def __init__(self, source, index: TransitionIndex, block_rows: int, select):
        # Workers reopen the dataset with the source's own class (a FrameSource; this module sits
        # below it, so it names no class) and its constructor arguments.
        self.reopen, self.spec = type(source), source.spec()
        self.index, self.block_rows, self.select = index, int(block_rows), select
        self.blocks = stream_blocks(source, select)
        self.with_actions = any(name == "a" for name, _ in self.blocks)
        noop = select is not None and select != LABELLED
        self.shift = None if noop else source.shift()  # no-op rows are delta alone
        self._owner = (threading.get_ident(), source)  # the creating thread reuses its source
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_owner"] = state["_local"] = None  # open files and memory maps stay behind
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    @property
    def n_blocks(self) -> int:
        return -(-self.index.total // self.block_rows)

    def _thread_state(self):
        local = self._local
        if not hasattr(local, "source"):
            if self._owner is not None and self._owner[0] == threading.get_ident():
                local.source = self._owner[1]
            else:
                spec = dict(self.spec)
                local.source = self.reopen(spec.pop("path"), **spec)
            local.cursor = None
        return local

    def __call__(self, first: int, stop: int) -> list:
        state = self._thread_state()
        src = state.source
        g0 = first * self.block_rows
        g1 = min(stop * self.block_rows, self.index.total)
        if state.cursor is None or state.cursor.pos != g0:
            state.cursor = _Cursor(src, self.index, g0, self.select)
        out = []
        shift = None if self.shift is None else src.full_shift(self.shift, self.blocks)
        acc = BlockAccumulator(self.blocks, self.block_rows, sink=out.append, shift=shift)
        for o, o2, acts in state.cursor.take(max(g1 - g0, 0)):
            if self.shift is None:
                acc.add(o2 - o)
            else:
                acc.add(src.joint_rows(o, o2, acts, with_actions=self.with_actions))
        acc.flush()
        return out


def stream_blocks(source, select) -> tuple:
    """The layout of a stream of ``source``: the main one (``select`` None), the labelled one,
    or the no-op one (``delta`` alone)."""
    if select is None:
        return source.blocks
    if select == LABELLED:
        return source.labelled_blocks
    return (("delta", source.do),)
