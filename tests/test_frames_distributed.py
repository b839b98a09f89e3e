"""Frame files on Dask and with checkpoints: indexed block reads, bitwise equal to one pass.

The sequential pass (``FrameSource.moments`` without executor arguments) is the reference: it
reads every transition once, in order. The indexed path reads block ranges directly (through
``FrameSource.index``) and merges them with the same tree, so it must give the same bits for
any task size, read chunk, index stride, worker count or resume point.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lamfast.moments.checkpoint as dist_checkpoint
import lamfast.moments.tree as dist_tree
import lamfast.sources.frames.distributed as dist_distributed
from lamfast import LamfastError
from lamfast.experiments.fitframes import fit_frames
from lamfast.moments.core import MergeTree
from lamfast.sources.frames.index import FrameChunks
from lamfast.sources.frames.preprocess import Preprocess
from lamfast.sources.frames.source import FrameSource, frame_moments

from . import naive
from .conftest import fit_json
from .helpers import assert_bitwise

ACTIONS = 4


def _episodes(rng, T, flag):
    starts = rng.random(T) < 0.04
    starts[0] = True
    if flag == "episode_starts":
        return {"episode_starts": starts}
    return {"dones": np.r_[starts[1:], False]}


@pytest.fixture
def frame_dir(tmp_path, rng):
    """A directory of four files: trajectories with starts / dones / none, and pairs; one file
    has a single frame (no transition at all)."""
    d = tmp_path / "frames"
    d.mkdir()
    for i, (T, flag) in enumerate([(410, "episode_starts"), (1, None), (333, "dones")]):
        kw = _episodes(rng, T, flag) if flag else {}
        frames = rng.standard_normal((T, 4, 6)).astype(np.float32) + 5.0
        np.savez(d / f"{i}.npz", frames=frames, actions=rng.integers(0, ACTIONS, T), **kw)
    o = rng.standard_normal((150, 4, 6))
    np.savez(
        d / "3.npz", o=o, o_next=o + rng.standard_normal(o.shape), actions=rng.integers(0, 4, 150)
    )
    np.save(d / "4.npy", rng.standard_normal((97, 4, 6)))  # no actions: needs --actions none
    return d


def _src(path, **kw):
    kw.setdefault("actions", "none")
    return FrameSource(path, **kw)


# ------------------------------------------------------------------------------ index and reads
@pytest.mark.parametrize("stride", [1, 7, 64, 10_000])
def test_read_range_equals_slices_of_the_sequential_stream(frame_dir, rng, stride):
    (frame_dir / "4.npy").unlink()
    src = FrameSource(frame_dir, chunk_frames=13)
    whole = [np.hstack([o, o2]) for o, o2, _ in src.transitions(progress=False)]
    rows = np.vstack(whole)
    acts = np.concatenate([a for _, _, a in src.transitions(progress=False)])
    index = src.index(stride=stride)
    assert index.total == len(rows) == src.n_transitions
    for first, stop in [(0, 1), (0, len(rows)), (len(rows) - 1, len(rows) + 5), (409, 411)] + [
        tuple(sorted(rng.integers(0, len(rows), 2))) for _ in range(10)
    ]:
        got = list(src.read_range(index, first, stop))
        want = rows[first:stop]
        if not len(want):
            assert got == []
            continue
        np.testing.assert_array_equal(np.vstack([np.hstack([o, o2]) for o, o2, _ in got]), want)
        np.testing.assert_array_equal(np.concatenate([a for *_, a in got]), acts[first:stop])


def test_noop_index_counts_the_noop_transitions(frame_dir):
    (frame_dir / "4.npy").unlink()
    src = FrameSource(frame_dir)
    acts = np.concatenate([a for *_, a in src.transitions(progress=False)])
    for noop in range(ACTIONS):
        index = src.index(noop, stride=5)
        assert index.total == int(np.count_nonzero(acts == noop))
        got = np.concatenate([a for *_, a in src.read_range(index, 3, 40, noop)])
        assert (got == noop).all() and len(got) == 37


# ------------------------------------------------------------------------------ in process
@pytest.fixture(autouse=True)
def short_index_stride(monkeypatch):
    """Index runs of 11 frames (default 4096): tasks then start mid-file, after a carry frame."""
    from lamfast import config

    monkeypatch.setattr(config, "FRAME_CHUNK", 11)


@pytest.mark.parametrize("block_rows", [1, 16, 100, 5000])
@pytest.mark.parametrize("task_blocks", [1, 4])
def test_indexed_blocks_bitwise_equal_to_one_pass(frame_dir, block_rows, task_blocks):
    src = _src(frame_dir, chunk_frames=29)
    ref = src.moments(block_rows=block_rows)
    other = _src(frame_dir, chunk_frames=5)  # another read chunk: still the same bits
    got = dist_distributed.frame_moments_tree(other, block_rows=block_rows, task_blocks=task_blocks)
    assert_bitwise(got, ref)
    assert got.source == ref.source == "frames"
    # and the moments are right: one file against rows built one transition at a time
    frames = np.load(frame_dir / "4.npy")
    n, mean, cov = naive.moments(naive.frame_rows(frames))
    one = dist_distributed.frame_moments_tree(_src(frame_dir / "4.npy"), block_rows=block_rows)
    # sums of <= 96 products of O(1) numbers: float64 error ~1e-14, far inside 1e-12
    np.testing.assert_allclose(one.cov, cov, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(one.mean, mean, rtol=1e-12, atol=1e-13)
    assert one.count == n


def test_indexed_with_downsample_and_noop(tmp_path, rng):
    T = 700
    frames = rng.integers(0, 256, (T, 8, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", frames=frames, actions=rng.integers(0, 3, T - 1),
             **_episodes(rng, T, "dones"))  # fmt: skip
    pre = Preprocess(crop=(1, 7, 0, 6), downsample=2)
    ref, ref_noop = FrameSource(tmp_path / "d.npz", preprocess=pre).moments(
        block_rows=64, noop_action=1
    )
    src = FrameSource(tmp_path / "d.npz", preprocess=pre, chunk_frames=1)
    got, got_noop = dist_distributed.frame_moments_tree(
        src, block_rows=64, noop_action=1, task_blocks=2
    )
    assert_bitwise(got, ref)
    assert_bitwise(got_noop, ref_noop)


def test_checkpoint_resumes_bitwise_from_every_kind_of_stop(tmp_path, frame_dir, monkeypatch):
    from lamfast import config

    src = FrameSource(frame_dir, actions="none")
    block_rows = 32
    ref = src.moments(block_rows=block_rows)
    index = src.index()
    fn = FrameChunks(src, index, block_rows, None)
    fp = dist_distributed.frame_fingerprint(src, index, block_rows, None)
    monkeypatch.setattr(config, "CHECKPOINT_BLOCKS", 2)
    computed = []
    real_call = FrameChunks.__call__

    def counting(self, first, stop):
        out = real_call(self, first, stop)
        computed.append(len(out))
        return out

    monkeypatch.setattr(FrameChunks, "__call__", counting)
    for stop in (1, 6, 13, fn.n_blocks - 1, fn.n_blocks):
        path = tmp_path / f"ck{stop}.npz"
        tree = MergeTree(fn.blocks)
        for block in fn(0, stop):  # a run killed after `stop` blocks
            tree.push(*block)
        dist_checkpoint.Checkpoint(path, fp).save(tree)
        computed.clear()
        got = src.moments(block_rows=block_rows, checkpoint=path)
        assert_bitwise(got, ref)
        # the resumed run computed only the blocks the checkpoint did not hold
        assert sum(computed) == fn.n_blocks - stop
        # re-running a finished command returns the same bits from the final checkpoint
        computed.clear()
        assert_bitwise(src.moments(block_rows=block_rows, checkpoint=path), ref)
        assert sum(computed) == 0


def test_checkpoint_of_other_frames_is_refused(tmp_path, rng):
    f = tmp_path / "f.npy"
    np.save(f, rng.standard_normal((300, 5)))
    ck = tmp_path / "ck.npz"
    FrameSource(f).moments(block_rows=50, checkpoint=ck)
    with pytest.raises(LamfastError, match="block_rows"):
        FrameSource(f).moments(block_rows=60, checkpoint=ck)
    np.save(f, rng.standard_normal((300, 5)))  # same shape, new content (new mtime)
    with pytest.raises(LamfastError, match="files differ"):
        FrameSource(f).moments(block_rows=50, checkpoint=ck)


def test_frame_moments_function_takes_a_checkpoint(tmp_path, rng):
    np.save(tmp_path / "f.npy", rng.standard_normal((300, 5)))
    got = frame_moments(tmp_path / "f.npy", block_rows=30, checkpoint=tmp_path / "ck.npz")
    assert_bitwise(got, frame_moments(tmp_path / "f.npy", block_rows=30))
    assert (tmp_path / "ck.npz").exists()


def test_noop_stream_checkpoints_beside_the_main_one(tmp_path, rng):
    T = 400
    np.savez(tmp_path / "d.npz", frames=rng.standard_normal((T, 6)),
             actions=rng.integers(0, 3, T))  # fmt: skip
    src = FrameSource(tmp_path / "d.npz")
    ref = src.moments(block_rows=40, noop_action=2)
    got = src.moments(block_rows=40, noop_action=2, checkpoint=tmp_path / "run.npz")
    for a, b in zip(got, ref, strict=True):
        assert_bitwise(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "run.noop.npz", "run.npz"]


def test_in_process_run_reads_an_npz_once(tmp_path, rng, monkeypatch):
    """Consecutive blocks continue one read: a checkpointed run over a (stream-read) .npz
    member never goes back to its start (review: each task used to rewind it)."""
    from lamfast import config
    from lamfast.sources.frames.readers import _ZipMember

    T = 3000
    np.savez_compressed(tmp_path / "d.npz", frames=rng.standard_normal((T, 4)))
    rewinds = []
    real = _ZipMember._rewind
    monkeypatch.setattr(_ZipMember, "_rewind", lambda self: rewinds.append(1) or real(self))
    monkeypatch.setattr(config, "CHECKPOINT_BLOCKS", 4)  # tasks of 4 blocks: 24 tasks
    src = FrameSource(tmp_path / "d.npz", chunk_frames=50)
    ref = src.moments(block_rows=32)
    rewinds.clear()
    got = src.moments(block_rows=32, checkpoint=tmp_path / "ck.npz")
    assert_bitwise(got, ref)
    assert len(rewinds) <= 2  # the index pass and the shift read; never once per task


def test_checkpoint_inside_a_dataset_directory_is_refused(frame_dir):
    with pytest.raises(LamfastError, match="inside the dataset directory"):
        _src(frame_dir).moments(checkpoint=frame_dir / "ck.npz")


def test_chunks_reopen_by_absolute_path(tmp_path, rng, monkeypatch):
    import pickle

    np.save(tmp_path / "f.npy", rng.standard_normal((200, 3)))
    monkeypatch.chdir(tmp_path)
    src = FrameSource("f.npy")
    fn = FrameChunks(src, src.index(), 16, None)
    monkeypatch.chdir(tmp_path.parent)  # a worker started elsewhere
    again = pickle.loads(pickle.dumps(fn))
    for a, b in zip(again(0, 13), fn(0, 13), strict=True):
        np.testing.assert_array_equal(a[2], b[2])


# ------------------------------------------------------------------------------ Dask
@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    with dist_tree.dask_client(workers=2) as c:
        yield c


def test_threaded_worker_reads_npz_correctly(tmp_path, rng):
    """Several tasks at once in one worker process: each thread opens its own readers (an
    .npz member reader keeps a file position; review: shared readers gave wrong frames)."""
    distributed = pytest.importorskip("distributed")
    T = 6000
    np.savez_compressed(tmp_path / "c.npz", frames=rng.standard_normal((T, 5)),
                        dones=rng.random(T) < 0.02)  # fmt: skip
    np.savez(tmp_path / "u.npz", frames=rng.standard_normal((T, 5)))
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=4, processes=True, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as c:  # fmt: skip
        for name in ("c.npz", "u.npz"):
            src = FrameSource(tmp_path / name)
            ref = src.moments(block_rows=64)
            got = dist_distributed.frame_moments_tree(
                src, block_rows=64, client=c, task_blocks=1, window=8
            )
            assert_bitwise(got, ref)


@pytest.mark.parametrize(("task_blocks", "window"), [(1, 3), (4, None)])
def test_two_workers_bitwise_on_a_frame_directory(client, frame_dir, task_blocks, window):
    src = _src(frame_dir, chunk_frames=37)
    ref = src.moments(block_rows=24)
    got = dist_distributed.frame_moments_tree(
        src, block_rows=24, client=client, task_blocks=task_blocks, window=window
    )
    assert_bitwise(got, ref)


def test_dask_frames_with_noop_and_checkpoint(client, frame_dir, tmp_path):
    (frame_dir / "4.npy").unlink()
    src = FrameSource(frame_dir)
    ref = src.moments(block_rows=50, noop_action=0)
    got = dist_distributed.frame_moments_tree(
        src, block_rows=50, noop_action=0, client=client, checkpoint=tmp_path / "ck.npz"
    )
    for a, b in zip(got, ref, strict=True):
        assert_bitwise(a, b)


def test_a_bad_frame_on_a_worker_is_one_clear_error(client, tmp_path, rng):
    frames = rng.standard_normal((500, 3))
    frames[321, 2] = np.inf
    np.save(tmp_path / "f.npy", frames)
    with pytest.raises(LamfastError, match="frame 321 contains NaN or inf"):
        dist_distributed.frame_moments_tree(
            FrameSource(tmp_path / "f.npy"), block_rows=20, client=client
        )


def test_cli_fit_frames_with_workers_and_checkpoint(frame_dir, tmp_path):
    (frame_dir / "4.npy").unlink()
    args = ["fit", str(frame_dir), "--dz", "3", "--noop-action", "1", "--clean-k", "2"]
    scaled = ["--workers", "2", "--checkpoint", str(tmp_path / "ck.npz")]
    assert fit_json(args) == fit_json(args + scaled)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.noop.npz", "ck.npz", "frames"]


# ------------------------------------------------------------------------------ robustness
# The bar: 1e-10 relative to the largest entry of a two-pass float64 reference. The
# o rows are accumulated minus the first frame (exact by Sterbenz's lemma for values within a
# factor 2), so the error is that of O(spread) numbers: ~sqrt(n) eps relative, 1e-14 here.
REL = 1e-10


def rel_err(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize(
    ("offset", "spread", "dtype"), [(1e6, 1e-3, np.float64), (1e3, 0.5, np.float32)]
)
def test_offset_frames_match_a_two_pass_reference(tmp_path, rng, offset, spread, dtype):
    frames = (offset + spread * rng.standard_normal((20_001, 5))).astype(dtype)
    np.save(tmp_path / "f.npy", frames)
    _, mean, cov = naive.moments_two_pass(naive.frame_rows(frames.astype(np.float64)))
    for workers in (None, "tree"):
        src = FrameSource(tmp_path / "f.npy", chunk_frames=3000)
        m = (
            src.moments(block_rows=1000)
            if workers is None
            else dist_distributed.frame_moments_tree(src)
        )
        assert rel_err(m.cov, cov) < REL
        np.testing.assert_allclose(m.mean, mean, rtol=0, atol=2.4e-10 * offset / 1e6 + 1e-15)


def test_constant_frames_fit_cleanly(tmp_path):
    np.savez(tmp_path / "c.npz", frames=np.full((300, 4, 4), 7, np.uint8),
             actions=np.arange(300) % 3)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, _ = fit_frames(tmp_path / "c.npz", 2)
    assert result["recon"] == 0.0 and result["delta_total_variance"] == 0.0
    numbers = [v for v in result.values() if isinstance(v, float)]
    assert np.isfinite(numbers).all()
    assert result["act_mse"] == 1.0 and result["obs_mse"] == 1.0


def test_one_frame_file_with_no_actions(tmp_path, rng):
    # T = 1 frame and T - 1 = 0 actions: no transition, and no traceback (review finding)
    d = tmp_path / "one"
    d.mkdir()
    np.save(d / "frames.npy", rng.standard_normal((1, 4)))
    np.save(d / "actions.npy", np.zeros(0, dtype=np.int64))
    with pytest.raises(LamfastError, match="no transitions"):
        FrameSource(d, n_actions=3).moments()
    # and beside other files it simply contributes nothing
    np.savez(tmp_path / "a.npz", frames=rng.standard_normal((1, 4)), actions=np.zeros(0, int))
    np.savez(tmp_path / "b.npz", frames=rng.standard_normal((9, 4)), actions=np.arange(9) % 3)
    (d / "frames.npy").unlink()
    (d / "actions.npy").unlink()
    d.rmdir()
    m = FrameSource(tmp_path).moments()
    assert m.count == 8


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sequential_pass_bitwise_for_any_thread_count(tmp_path, rng, monkeypatch, threads):
    """The sequential pass computes blocks on threads while it reads on: same bits."""
    from lamfast import config

    T = 2000
    np.savez(tmp_path / "d.npz", frames=rng.standard_normal((T, 6)),
             actions=rng.integers(0, 3, T))  # fmt: skip
    monkeypatch.setattr(config, "STREAM_THREADS", 1)
    ref, ref_noop = FrameSource(tmp_path / "d.npz").moments(block_rows=37, noop_action=1)
    monkeypatch.setattr(config, "STREAM_THREADS", threads)
    got, got_noop = FrameSource(tmp_path / "d.npz", chunk_frames=111).moments(
        block_rows=37, noop_action=1
    )
    assert_bitwise(got, ref)
    assert_bitwise(got_noop, ref_noop)
    # and right: against rows built one transition at a time
    frames = np.load(tmp_path / "d.npz")["frames"]
    actions = np.load(tmp_path / "d.npz")["actions"]
    n, mean, cov = naive.moments(naive.frame_rows(frames, actions))
    np.testing.assert_allclose(got.cov, cov, rtol=1e-12, atol=1e-13)


def test_checkpoint_beside_a_dataset_that_would_not_read_it_is_allowed(tmp_path, rng):
    # an unpacked .npz directory reads only its known members; a subfolder is never read
    d = tmp_path / "lin"
    d.mkdir()
    np.save(d / "frames.npy", rng.standard_normal((300, 4)))
    (d / "sub").mkdir()
    src = FrameSource(d)
    ref = src.moments(block_rows=50)
    assert_bitwise(src.moments(block_rows=50, checkpoint=d / "ck.npz"), ref)
    assert_bitwise(src.moments(block_rows=50, checkpoint=d / "sub" / "ck.npz"), ref)
    assert_bitwise(FrameSource(d).moments(block_rows=50, checkpoint=d / "ck.npz"), ref)


def test_in_flight_blocks_are_capped_by_memory(tmp_path, rng, monkeypatch):
    """Wide frames on many cores: the threads of the sequential pass are capped so that blocks in
    flight stay within config.FRAME_INFLIGHT_BYTES; the bits never change."""
    from lamfast import config
    from lamfast.moments import accumulate

    np.save(tmp_path / "f.npy", rng.standard_normal((700, 30)))
    seen = []
    real = accumulate.BlockAccumulator.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.threads)

    monkeypatch.setattr(accumulate.BlockAccumulator, "__init__", spy)
    monkeypatch.setattr(config, "STREAM_THREADS", 8)
    ref = FrameSource(tmp_path / "f.npy").moments(block_rows=64)
    per_block = 64 * 60 * 16 + 60 * 60 * 8
    monkeypatch.setattr(config, "FRAME_INFLIGHT_BYTES", 3 * per_block)
    got = FrameSource(tmp_path / "f.npy").moments(block_rows=64)
    assert seen == [8, 3]
    assert_bitwise(got, ref)
