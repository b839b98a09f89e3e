"""Passes of a frame dataset into thin moments (frames too wide for the full co-moment).

One pass streams the transitions of a :class:`~lamfast.sources.frames.source.FrameSource` into
the :class:`~lamfast.moments.thin.ThinMoments` of ``[o (optional), delta | Q^T delta, a
(optional)]``: the wide frame blocks and a few narrow columns, ``Q`` given (a sketch basis,
``lamfast.moments.sketch``). Blocks are fixed by the global transition index and merged by the
same tree as the full moments, so a pass is bitwise identical for any read chunk size, thread
count and Dask worker count, and after a resume (:class:`ThinChunks` reads block ranges through
the source's index, like :class:`~lamfast.sources.frames.index.FrameChunks`); memory is one
chunk of frames, the blocks in flight and ``(2 do) x q`` partial results.

How a pass spends its time (profiled 2026-12-02, 2e4 frames of 64 x 64 RGB, 2-core Xeon): the
frames are read as stored (:func:`frames_as_stored`: a ``uint8`` chunk is an eighth of its
float64 rows, and its conversion was most of a ``FrameSource.transitions`` read), one kernel
(``_fill``) converts them and writes the block rows ``[o - shift, o2 - o, a]`` with their
column sums, and the blocks are reduced on the thread pool (:meth:`ThinLayout.threads`; the
full moments' ``block_threads`` allowed one thread, counting a ``p x p`` co-moment a thin block
does not have), where the two products ``X Q`` and ``Yc^T W`` run near the flop rate of one
BLAS thread and take most of the time.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib

import numpy as np

from ... import config
from ..._blas import usable_cores
from ..._jit import njit
from ...errors import LamfastError
from ...moments.accumulate import BlockPipeline
from ...moments.checkpoint import Checkpoint, fingerprint
from ...moments.core import MergeTree, padded
from ...moments.sketch import SKETCH, SKETCH_OBS
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
    """What a thin pass feeds its blocks (``[o?, delta, a?]``, ``blocks``), how they reduce
    (``reducer``: the sketch columns are computed inside each block), the block size and the
    shift of the ``o`` rows."""

    def __init__(
        self,
        source,
        columns: np.ndarray,
        with_obs: bool,
        with_actions: bool,
        variances=True,
        project_obs: bool = False,
    ):
        do = source.do
        self.do, self.da = do, (source.da if with_actions else 0)
        self.with_obs, self.with_actions = bool(with_obs), bool(with_actions)
        self.variances = bool(variances)
        self.project_obs = bool(project_obs and with_obs)
        wide = ([("o", do)] if with_obs else []) + [("delta", do)]
        q = columns.shape[1]
        narrow = [(SKETCH, q)] + ([(SKETCH_OBS, q)] if self.project_obs else [])
        narrow += [("a", source.da)] if with_actions else []
        pw = sum(size for _, size in wide)
        Q = np.ascontiguousarray(columns, dtype=np.float64)
        sketch = [(slice(pw - do, pw), Q)] + ([(slice(0, do), Q)] if self.project_obs else [])
        self.reducer = ThinReducer(pw, narrow, sketch=sketch, variances=self.variances)
        n_sketch = len(sketch)
        self.blocks = (*wide, *narrow[n_sketch:])  # the rows fed; blocks add the sketch columns
        self.fed = pw + self.da
        self.width = pw + n_sketch * q + self.da
        self.block_rows = wide_block_rows(self.width)
        self.shift = None
        if with_obs:  # frames near a large common value keep their precision
            self.shift = np.zeros(self.fed)
            self.shift[:do] = source.shift()

    def accumulator(self, sink=None, threads: int = 1, keep_rows=False) -> ThinAccumulator:
        return ThinAccumulator(self, sink=sink, threads=threads, keep_rows=keep_rows)

    def threads(self) -> int:
        """Threads over the blocks of a sequential pass: the usable cores (or
        ``config.STREAM_THREADS``), capped so that the blocks in flight (their rows and
        ``q x pw`` products; a thin block has no ``p x p`` co-moment) stay within
        ``config.FRAME_INFLIGHT_BYTES``. Never changes a bit."""
        q = padded(self.width - self.fed, 8) + 8  # the narrow columns of a block, padded
        per_block = 8 * (self.block_rows * self.fed + 3 * q * self.fed)
        threads = int(config.STREAM_THREADS) or usable_cores()
        return max(1, min(threads, int(config.FRAME_INFLIGHT_BYTES) // per_block))


class _AsStored:
    """In place of a source's :class:`~lamfast.sources.frames.preprocess.Preprocess` when it
    only scales: the frames stay as stored (flattened, not converted), for the fused kernels
    that convert them (:func:`frames_as_stored`)."""

    def __init__(self, preprocess):
        self.preprocess = preprocess

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return raw.reshape(raw.shape[0], -1)

    def __getattr__(self, name):
        return getattr(self.preprocess, name)


def frames_as_stored(source):
    """``(view, scale)``: a copy of ``source`` whose transitions yield the frames as stored
    (flattened ``uint8``, say) and the scale that turns them into the source's values; or
    ``(source, 1.0)`` when its preprocessing crops or downsamples, or a file holds frames of
    another type than native integers, float32 or float64 (the types the kernels compile for).

    A pass then reads a chunk in its stored width (a ``uint8`` chunk is an eighth of its
    float64 rows) and converts it once, inside the kernel that forms the rows: ``float64(x) *
    scale`` (the multiplication skipped at scale 1), the operations of ``Preprocess.apply``,
    so the rows are the same bits as from ``source.transitions`` (tests/test_wide.py). NaN and
    inf are still refused (the source's check on float frames sees the stored values).
    """
    pre = source.preprocess
    if pre.crop is not None or pre.downsample != 1:
        return source, 1.0
    for seg in source.segments:
        for m in (seg.frames, seg.o, seg.o_next):
            if m is not None and not _kernel_dtype(np.dtype(m.dtype)):
                return source, 1.0
    view = copy.copy(source)
    view.preprocess = _AsStored(pre)
    return view, float(source.scale)


def _kernel_dtype(dtype: np.dtype) -> bool:
    return dtype.isnative and (dtype.kind in "ui" or dtype in (np.float32, np.float64))


@njit
def _fill(X, r0, o, o2, scale, shift, a, sums, with_obs):
    """Rows ``r0 ..`` of the block ``X``: ``[o - shift (with_obs), o2 - o, a]`` of frames
    ``o``, ``o2`` as stored times ``scale`` (see :func:`frames_as_stored`), and their values
    added to the column sums ``sums`` row by row (the order of ``column_means``, so ``sums /
    n`` is the block mean bit for bit). One sweep, no row copied twice."""
    k, do = o2.shape
    da = a.shape[1]
    scaled = scale != 1.0
    c0 = do if with_obs else 0
    for i in range(k):
        r = r0 + i
        for j in range(do):
            u = np.float64(o[i, j])
            w = np.float64(o2[i, j])
            if scaled:
                u *= scale
                w *= scale
            if with_obs:
                v = u - shift[j]
                X[r, j] = v
                sums[j] += v
            v = w - u
            X[r, c0 + j] = v
            sums[c0 + j] += v
        c = c0 + do
        for j in range(da):
            v = a[i, j]
            X[r, c + j] = v
            sums[c + j] += v


def frame_rows(o: np.ndarray, o2: np.ndarray, scale: float) -> np.ndarray:
    """The rows ``[o, delta]`` of transitions read through :func:`frames_as_stored`
    (float64, ``o`` unshifted: the values of ``source.transitions``)."""
    n, do = o2.shape
    out = np.empty((n, 2 * do))
    _fill(out, 0, o, o2, float(scale), np.zeros(do), np.zeros((n, 0)), np.zeros(2 * do), True)
    return out


def frame_differences(o: np.ndarray, o2: np.ndarray, scale: float) -> np.ndarray:
    """The rows ``delta`` of transitions read through :func:`frames_as_stored` (float64)."""
    n, do = o2.shape
    out = np.empty((n, do))
    # the delta columns of _fill (the column sums are a by-product, unused here)
    _fill(out, 0, o, o2, float(scale), np.zeros(0), np.zeros((n, 0)), np.zeros(do), False)
    return out


class ThinAccumulator(BlockPipeline):
    """Transitions ``(o, o2, actions)`` into the fixed blocks of a thin pass, and their tree
    entries into ``sink`` (default: a :class:`~lamfast.moments.core.MergeTree`) in block order.

    The rows ``[o - shift, o2 - o, a]`` are written straight into the block buffer by one
    kernel that also sums the columns, so the block's means cost no extra sweep; the same
    values and entries, bit for bit, as feeding :func:`numpy.hstack` of them to a
    :class:`~lamfast.moments.accumulate.BlockAccumulator` with the layout's reducer (tested).
    With ``threads > 1`` full blocks are reduced on the shared thread pool while the caller
    reads on; each block is computed alone with one BLAS thread, so the bits do not change.
    ``keep_rows`` also keeps every transition's narrow values (:meth:`narrow_rows`).
    """

    def __init__(self, layout: ThinLayout, sink=None, threads: int = 1, keep_rows=False):
        self.layout, self.reducer = layout, layout.reducer
        self.tree = MergeTree(layout.blocks, layout.reducer)
        self.sink = sink or self._push
        self.kept = [] if keep_rows else None
        self.rows, self.threads = layout.block_rows, max(int(threads), 1)
        self.shift = layout.shift if layout.shift is not None else np.zeros(0)
        self.free: list[tuple] = []
        self.pending: collections.deque = collections.deque()  # (future, buffers)
        self.buf = self._buffers()
        self.fill = 0
        self.added = 0  # rows so far (blocks may still be computing)

    def _buffers(self) -> tuple:
        return np.empty((self.rows, self.layout.fed)), np.zeros(self.layout.fed)

    def _push(self, entry):
        if self.kept is not None:  # blocks arrive in order: the rows stay in stream order
            entry, rows = entry
            self.kept.append(rows)
        self.tree.push(*entry)

    def narrow_rows(self) -> np.ndarray:
        """The narrow values ``[sketch columns, a]`` of every transition so far, in stream
        order, with the shift's image added back (``n x q``)."""
        self.flush()
        q = sum(size for _, size in self.reducer.narrow)
        rows = np.vstack(self.kept) if self.kept else np.zeros((0, q))
        if self.layout.shift is not None:
            rows += self.reducer.narrow_shift(self.layout.shift)
        return rows

    def add(self, o, o2, acts, source, scale: float = 1.0):
        """The transitions ``o -> o2`` with raw actions ``acts``: float64 rows of ``source``,
        or its frames as stored and their ``scale`` (:func:`frames_as_stored`)."""
        n = o2.shape[0]
        a = source.action_rows(acts) if self.layout.with_actions else np.zeros((n, 0))
        self.added += n
        i = 0
        while i < n:
            k = min(self.rows - self.fill, n - i)
            X, sums = self.buf
            if self.fill == 0:
                sums[:] = 0.0
            _fill(X, self.fill, o[i : i + k], o2[i : i + k], float(scale), self.shift,
                  a[i : i + k], sums, self.layout.with_obs)  # fmt: skip
            self.fill += k
            i += k
            if self.fill == self.rows:
                self._block(self.buf, self.rows)
                self.fill = 0

    def _compute(self, buffers, n):
        X, sums = buffers
        return self.reducer.block(X[:n], mean=sums / n, rows=self.kept is not None)

    def result(self, source: str) -> ThinMoments:
        """The merged thin moments, the shift added back to the means."""
        self.flush()
        m = self.tree.result(source)
        if self.layout.shift is None:
            return m
        return self.reducer.shifted(m, self.layout.shift)


def grouped_threads(fed: int, q: int, block_rows: int, groups: int) -> int:
    """Threads over the blocks of thin moments of ``fed`` given columns, ``q`` of them narrow,
    kept for ``groups`` groups of rows (a grouped
    :class:`~lamfast.moments.accumulate.BlockAccumulator` with a
    :class:`~lamfast.moments.thin.ThinReducer`: the pass of ``lamfast probe`` on wide frames):
    as :meth:`ThinLayout.threads`, a block in flight holding its rows, their copy by group and
    one ``q x (fed - q)`` product per group. Never changes a bit."""
    q8 = padded(q, 8) + 8
    per_block = 8 * (2 * block_rows * fed + 3 * q8 * fed * max(int(groups), 1))
    threads = int(config.STREAM_THREADS) or usable_cores()
    return max(1, min(threads, int(config.FRAME_INFLIGHT_BYTES) // per_block))


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
        if not hasattr(state, "stored"):  # the thread's source, its frames as stored
            state.stored = frames_as_stored(state.source)
        stored, scale = state.stored
        if state.cursor is None or state.cursor.pos != g0:
            state.cursor = _Cursor(stored, self.index, g0, None)
        out = []
        acc = self.layout.accumulator(sink=out.append)
        for o, o2, acts in state.cursor.take(max(g1 - g0, 0)):
            acc.add(o, o2, acts, state.source, scale)
        acc.flush()
        return out


# 2: the fused row kernel, cross terms kept transposed in the tree and by yc^T W products
# (2026-12-02): a checkpoint of the former kernels would resume into other bits, so it is
# refused as another configuration.
THIN_KERNEL = 2


def thin_fingerprint(source, index, layout: ThinLayout) -> str:
    """A thin pass's identity: the frame stream's, the layout and the sketch columns' bits."""
    _, q, Q = layout.reducer.sketch[0]
    extra = {"project_obs": True} if layout.project_obs else {}
    return fingerprint(
        stream=frame_fingerprint(source, index, layout.block_rows, None),
        fed=[[name, size] for name, size in layout.blocks],
        sketch_columns=int(q),
        sketch_sha256=hashlib.sha256(np.ascontiguousarray(Q).tobytes()).hexdigest(),
        thin_kernel=THIN_KERNEL,
        variances=layout.variances,
        **extra,
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
    variances: bool = True,
    project_obs: bool = False,
    keep_rows: bool = False,
):
    """Thin moments of ``[o?, delta | columns^T delta, columns^T o?, a?]`` over the transitions
    of ``source``.

    ``columns`` (``do x q``) are the sketch's; ``with_obs`` adds the ``o`` block to the wide part
    (for the observation probe), ``with_actions`` the actions to the narrow part. Partial labels
    are refused (the action columns would be missing). ``workers`` / ``scheduler`` / ``client``
    run the blocks on Dask and ``checkpoint`` (a ``.npz`` path) makes the pass resumable, with
    the same bits as the sequential pass; a checkpoint of other columns (another pass, another
    seed, another frame width) is refused in one line. ``variances=False`` skips the variances
    of the wide values (``var_w`` is NaN), which only traces need. ``project_obs`` (with
    ``with_obs``) adds ``columns^T o`` to the narrow part (block ``sketch_o``): with it the
    narrow moments are those of the frames in the span of ``columns``, where any variant fits.
    ``keep_rows`` returns ``(thin, rows)`` with every transition's narrow values (``n x q``,
    in stream order: what a probe of the sketch's latents reads, so no further pass is needed);
    ``rows`` is None on the Dask and checkpoint paths, whose blocks are reduced elsewhere.
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
    layout = ThinLayout(source, columns, with_obs, with_actions, variances, project_obs)
    if any(x is not None for x in (workers, scheduler, client, checkpoint)):
        thin = _thin_tree(source, layout, progress, workers, scheduler, client, checkpoint)
        return (thin, None) if keep_rows else thin
    acc = layout.accumulator(threads=layout.threads(), keep_rows=keep_rows)
    stored, scale = frames_as_stored(source)
    for o, o2, acts in stored.transitions(progress=progress, label=label):
        acc.add(o, o2, acts, source, scale)
    if acc.added == 0:
        raise LamfastError(f"{source.path}: no transitions (every frame starts an episode?)")
    thin = acc.result("frames")
    return (thin, acc.narrow_rows()) if keep_rows else thin


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
