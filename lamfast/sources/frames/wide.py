"""Passes of a frame dataset into thin moments (frames too wide for the full co-moment).

One pass streams the transitions of a :class:`~lamfast.sources.frames.source.FrameSource` into
the :class:`~lamfast.moments.thin.ThinMoments` of ``[o (optional), delta | Q^T delta, a
(optional)]``: the wide frame blocks and a few narrow columns, ``Q`` given (a sketch basis,
``lamfast.moments.sketch``). Blocks are fixed by the global transition index and merged by the
same tree as the full moments, so a pass is bitwise identical for any read chunk size and thread
count; memory is one chunk of frames, the blocks in flight and ``(2 do) x q`` partial results.
"""

from __future__ import annotations

import numpy as np

from ... import config
from ...errors import LamfastError
from ...moments.accumulate import BlockAccumulator, block_threads
from ...moments.sketch import SKETCH
from ...moments.thin import ThinMoments, ThinReducer


def wide_block_rows(width: int) -> int:
    """Rows per block of a thin pass: a power of two with the block's rows within
    ``config.WIDE_BLOCK_BYTES`` (a function of the width alone, so the blocks, hence the bits,
    never depend on the machine)."""
    rows = max(int(config.WIDE_BLOCK_BYTES) // (8 * int(width)), 64)
    return 1 << (rows.bit_length() - 1)


def thin_pass(
    source,
    columns: np.ndarray,
    *,
    with_obs: bool = False,
    with_actions: bool = False,
    block_rows: int | None = None,
    progress=None,
    label: str = "sketch",
) -> ThinMoments:
    """Thin moments of ``[o?, delta | columns^T delta, a?]`` over the transitions of ``source``.

    ``columns`` (``do x q``) are the sketch's; ``with_obs`` adds the ``o`` block to the wide part
    (for the observation probe), ``with_actions`` the actions to the narrow part. Partial labels
    are refused (the action columns would be missing).
    """
    do = source.do
    if columns.shape[0] != do:
        raise LamfastError(f"sketch columns of width {columns.shape[0]} for frames of {do} values")
    with_actions = bool(with_actions and source.da)
    if with_actions and source.partial:
        raise LamfastError(
            f"{source.path}: partial labels are not read by the sketch path yet; label every "
            "transition, pass --actions none, or fit narrower frames (--downsample)"
        )
    wide = ([("o", do)] if with_obs else []) + [("delta", do)]
    narrow = [(SKETCH, columns.shape[1])] + ([("a", source.da)] if with_actions else [])
    pw = sum(size for _, size in wide)
    p = pw + (source.da if with_actions else 0)  # the columns fed; the block adds the sketch
    rows = int(block_rows or wide_block_rows(pw + columns.shape[1]))
    shift = np.zeros(p)
    if with_obs:  # frames near a large common value keep their precision (FrameSource.shift)
        shift[:do] = source.shift()
    delta = slice(pw - do, pw)
    Q = np.ascontiguousarray(columns, dtype=np.float64)
    acc = BlockAccumulator(  # the rows fed: the wide blocks and the actions; blocks add the sketch
        (*wide, *narrow[1:]),
        rows,
        threads=block_threads(pw + columns.shape[1], rows),
        shift=shift if with_obs else None,
        reducer=ThinReducer(pw, narrow, sketch=(delta, Q)),
    )
    for o, o2, acts in source.transitions(progress=progress, label=label):
        parts = ([o] if with_obs else []) + [o2 - o]
        if with_actions:
            parts.append(source.action_rows(acts))
        acc.add(np.hstack(parts) if len(parts) > 1 else parts[0])
    if acc.added == 0:
        raise LamfastError(f"{source.path}: no transitions (every frame starts an episode?)")
    return acc.result("frames")
