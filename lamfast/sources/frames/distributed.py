"""Frame files on Dask and resumable: blocks of transitions read by range through a
:class:`~lamfast.sources.frames.index.TransitionIndex` (the frames' adapter over
:func:`lamfast.moments.tree.tree_moments`); bitwise equal to the sequential pass.
"""

from __future__ import annotations

import contextlib
import os

from ... import config
from ...errors import LamfastError
from ...moments.checkpoint import Checkpoint, fingerprint
from ...moments.tree import dask_client, tree_moments
from .index import LABELLED, FrameChunks, stream_blocks


# ------------------------------------------------------------------------------------ frames
def frame_fingerprint(source, index, block_rows: int, select) -> str:
    """What defines a frame stream: its files (path, size, mtime), reading options, blocks."""
    layout = stream_blocks(source, select)
    noop_action = None if select == LABELLED else select
    extra = {}
    if select == LABELLED:
        extra["stream"] = LABELLED
    if source.offset != 1:
        extra["offset"] = source.offset
    if source.label_budget is not None:  # the same files with another draw are another stream
        extra["label_budget"] = [source.label_budget, source.label_unit, source.label_seed]
    return fingerprint(
        source="frames",
        files=source.files(),
        preprocess=source.preprocess.to_dict(),
        reader={k: getattr(source.reader, k) for k in source.reader.given()},
        actions=source.action_kind,
        n_actions=source.n_actions,
        noop_action=noop_action,
        transitions=index.total,
        block_rows=int(block_rows),
        layout=[[name, size] for name, size in layout],
        **extra,
    )


def noop_checkpoint_path(path) -> str:
    """Checkpoint file of the no-op stream of a frame run: ``run.npz`` -> ``run.noop.npz``."""
    return side_checkpoint_path(path, "noop")


def side_checkpoint_path(path, stream: str) -> str:
    """Checkpoint file of a side stream of a frame run: ``run.npz`` -> ``run.<stream>.npz``."""
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}.{stream}{ext or '.npz'}"


def frame_moments_tree(
    source,
    *,
    block_rows: int | None = None,
    noop_action: int | None = None,
    labelled: bool = False,
    progress: bool | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    checkpoint=None,
    task_blocks: int | None = None,
    window: int | None = None,
):
    """Moments of a :class:`~lamfast.sources.frames.source.FrameSource`, blocks as tasks; bitwise
    equal to
    ``source.moments()`` (the sequential pass).

    Blocks of transitions are read directly through the source's :meth:`index`, so they can be
    computed in any order: on Dask (``client``, or a cluster made for the call from ``workers``
    / ``scheduler``; every worker must see the files at the same path) or in process. With
    ``checkpoint`` (a ``.npz`` path) the run saves its progress and resumes from it. With
    ``labelled`` and ``noop_action`` returns the side streams too, as ``FrameSource.moments``
    does; the labelled stream checkpoints to ``run.labelled.npz`` and the no-op stream to
    :func:`noop_checkpoint_path`.

    ``.npz`` members are streams: a worker keeps them open between tasks and reads forward,
    decompressing the ranges of other workers' tasks too, so each worker reads the whole archive
    once. Prefer ``.npy`` files, directories or zarr (read by range) for distributed runs.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from lamfast.sources.frames import FrameSource
    >>> p = os.path.join(tempfile.mkdtemp(), "f.npy")
    >>> np.save(p, np.random.default_rng(0).standard_normal((1000, 4)))
    >>> src = FrameSource(p)
    >>> m = frame_moments_tree(src, block_rows=64, checkpoint=p[:-4] + "-run.npz")
    >>> bool((m.cov == src.moments(block_rows=64).cov).all())
    True
    """
    if client is not None and (workers is not None or scheduler is not None):
        raise LamfastError("give a client, or workers/scheduler, not both")
    source.check_full_width()
    block_rows = int(block_rows or config.BLOCK_ROWS)
    if block_rows < 1:
        raise LamfastError(f"block_rows must be >= 1, got {block_rows}")

    selects = [None]
    if labelled:
        selects.append(LABELLED if source.partial else "same")
    if noop_action is not None:
        selects.append(noop_action)
    runs = []
    for select in selects:
        if select == "same":  # every transition labelled: the main stream is the labelled one
            runs.append((None, None))
            continue
        index = source.index(select)
        if select is None and index.total == 0:
            raise LamfastError(f"{source.path}: no transitions (every frame starts an episode?)")
        if select == LABELLED and index.total == 0:
            raise LamfastError(f"{source.path}: no transition has an action label")
        path = checkpoint
        if checkpoint is not None and select is not None:
            name = LABELLED if select == LABELLED else "noop"
            path = side_checkpoint_path(checkpoint, name)
        if path is not None and source.would_read(path):
            raise LamfastError(
                f"checkpoint {path} is inside the dataset directory {source.path} (it would be "
                "read as frames next time); put it elsewhere"
            )
        cp = None
        if path is not None:
            cp = Checkpoint(path, frame_fingerprint(source, index, block_rows, select))
            cp.check()  # a foreign or damaged file fails now, not after a cluster starts
        runs.append((FrameChunks(source, index, block_rows, select), cp))
    if client is not None or (workers is None and scheduler is None):
        context = contextlib.nullcontext(client)
    else:
        context = dask_client(workers, scheduler)
    results = []
    with context as own:
        for chunk_fn, cp in runs:
            if chunk_fn is None:
                results.append(results[0])
                continue
            if chunk_fn.index.total == 0:  # no no-op transitions
                results.append(None)
                continue
            shift = None
            if chunk_fn.shift is not None:
                shift = source.full_shift(chunk_fn.shift, chunk_fn.blocks)
            results.append(
                tree_moments(
                    chunk_fn,
                    chunk_fn.n_blocks,
                    chunk_fn.blocks,
                    client=own,
                    task_blocks=task_blocks,
                    window=window,
                    checkpoint=cp,
                    progress=progress,
                    total_rows=chunk_fn.index.total,
                    source="frames",
                    shift=shift,
                )
            )
    return results[0] if len(results) == 1 else tuple(results)
