"""LeRobot v3 datasets, read from a local folder (optional extra ``lamfast[lerobot]``).

Layout read (nothing is downloaded)
-----------------------------------
- ``meta/info.json``: ``codebase_version`` (``v3.*``), ``fps``, ``features`` (name ->
  ``dtype``, ``shape``; video features have ``dtype: "video"``), ``video_path`` (default
  ``videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4``);
- ``data/chunk-XXX/file-YYY.parquet``: one row per frame, several episodes a file, with the
  columns ``episode_index``, ``frame_index``, ``timestamp`` (seconds from the episode's start),
  the state and action columns; files are read in (chunk, file) order, through pyarrow, only
  the columns needed;
- ``meta/episodes/chunk-XXX/file-YYY.parquet`` (video observations only): per episode
  ``videos/<key>/chunk_index``, ``videos/<key>/file_index``, ``videos/<key>/from_timestamp``
  and ``videos/<key>/to_timestamp``: where the episode lies in a video file that packs several
  episodes.

Observations and actions
------------------------
``obs_key`` (default: the first ``observation.*`` video feature, else ``observation.state``)
is a video key, decoded with PyAV (``uint8`` ``T x H x W x 3``, or ``T x H x W`` with
``grey``; ``resize=(h, w)`` scales when decoding), or a numeric column read as a ``T x d``
array (``resize`` and ``grey`` are refused for it). ``action_key`` (default ``action``; a
dataset without that column then has no actions) gives one action per frame: integer ids
(discrete) or vectors (continuous). The action of a row labels the transition from that row's
frame to the next frame of its episode; the last row's action of an episode is unused.

Episodes
--------
One segment per episode, in the order of the data tables: an episode is a run of rows with one
``episode_index`` (an episode whose rows are not contiguous, or whose ``frame_index`` does not
go up by one, is refused). ``stride=k`` keeps rows ``0, k, 2k, ...`` of each episode, with their
actions (so a transition spans ``k`` recorded frames and carries the action of its first).

Video frames are matched to rows as LeRobot does: the frame of row ``i`` of an episode is the
frame of its video file whose presentation time is nearest to ``from_timestamp +
timestamp[i]``, and must lie within half a frame period (``0.5 / fps``), else the dataset is
refused; the timestamps of the video packets are read (demuxed, not decoded) when the dataset
is opened, so a video that does not cover its episodes fails at once. Every frame decoded later
is checked against the timestamp it was matched to.

Cost
----
Opening reads the needed parquet columns and demuxes each video file the observations use once
(cheap: no decoding); the state and action columns are held in memory (as stored, e.g.
float32). Reading decodes each episode's frames once, sequentially, starting with a seek to the
keyframe before the episode in its video file; memory is one chunk of frames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ...errors import LamfastError
from . import video
from .readers import _ArrayMember, _check_segment, _Segment

NAME = "lerobot"
OPTIONS = ("obs_key", "action_key", "stride", "resize", "grey")
_HINT = "pip install 'lamfast[lerobot]'"
_DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
# Columns every LeRobot table has; never an observation or an action.
_BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def detect(path: Path) -> bool:
    """A folder with ``meta/info.json``."""
    return path.is_dir() and (path / "meta" / "info.json").is_file()


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise LamfastError(f"reading LeRobot datasets needs pyarrow: {_HINT}") from None
    return pa, pc, pq


def _info(root: Path) -> dict:
    f = root / "meta" / "info.json"
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LamfastError(f"{f}: not a readable JSON file ({e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise LamfastError(f"{f}: has no 'features' table (not a LeRobot dataset?)")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise LamfastError(
            f"{root}: LeRobot dataset version {version or '(none)'}; only v3 datasets are read "
            "(convert with lerobot's convert_dataset_v21_to_v30)"
        )
    return info


def _order(p: Path):
    """Natural order of paths (``file-1000`` after ``file-999``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.as_posix())]


def _parquets(folder: Path, root: Path) -> list[Path]:
    files = sorted((p for p in folder.rglob("*.parquet") if p.is_file()), key=_order)
    if not files:
        raise LamfastError(f"{root}: no parquet files under {folder.relative_to(root)}/")
    return files


def _column(arrow, column, name: str, label: str) -> np.ndarray:
    """A parquet column as a numpy array: ``(n,)`` for scalars, ``(n, d)`` for vectors."""
    pa, pc, _ = arrow
    arr = column.combine_chunks()
    if arr.null_count:
        raise LamfastError(f"{label}: column {name!r} has {arr.null_count} missing values")
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        lengths = np.unique(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise LamfastError(
                f"{label}: rows of column {name!r} have different lengths "
                f"({', '.join(str(n) for n in lengths[:4])})"
            )
        values = pc.list_flatten(arr)
        if pa.types.is_nested(values.type) or values.null_count:
            raise LamfastError(f"{label}: column {name!r} is not a vector of numbers per row")
        width = int(lengths[0]) if len(lengths) else 0
        out = values.to_numpy(zero_copy_only=False).reshape(len(arr), width)
    elif pa.types.is_nested(t):
        raise LamfastError(f"{label}: column {name!r} is {t}, not numbers")
    else:
        out = arr.to_numpy(zero_copy_only=False)
    if out.dtype.kind not in "biuf":
        raise LamfastError(f"{label}: column {name!r} holds {t}, not numbers")
    return out


def _read(arrow, files: list[Path], columns: list[str], root: Path) -> dict[str, np.ndarray]:
    """``columns`` of the parquet ``files``, concatenated in order."""
    pa, _, pq = arrow
    parts: dict[str, list] = {c: [] for c in columns}
    for f in files:
        label = str(f.relative_to(root))
        try:
            names = pq.read_schema(f).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise LamfastError(
                    f"{root}: {label} has no column {missing[0]!r} (columns: {', '.join(names)})"
                )
            table = pq.read_table(f, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise LamfastError(f"{root}: {label} is not a readable parquet file ({e})") from None
        for c in columns:
            parts[c].append(_column(arrow, table.column(c), c, f"{root.name}/{label}"))
    out = {}
    for c, arrays in parts.items():
        try:
            out[c] = np.concatenate(arrays)
        except ValueError:
            raise LamfastError(
                f"{root}: column {c!r} has different widths in different files"
            ) from None
    return out


def _index(a: np.ndarray, name: str, root: Path) -> np.ndarray:
    """An integer bookkeeping column as ``(n,)`` int64."""
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise LamfastError(f"{root}: column {name!r} must hold one integer per row")
    return a.astype(np.int64, copy=False)


def _usable(features: dict) -> list[str]:
    return [k for k in features if k not in _BOOKKEEPING]


def _obs_key(features: dict, options, root: Path) -> str:
    if options.obs_key is not None:
        if options.obs_key not in features or options.obs_key in _BOOKKEEPING:
            raise LamfastError(
                f"obs_key {options.obs_key!r} is not a feature of {root}; it has: "
                f"{', '.join(_usable(features))}"
            )
        return options.obs_key
    videos = [k for k, v in features.items() if isinstance(v, dict) and v.get("dtype") == "video"]
    preferred = [k for k in videos if k.startswith("observation.")] + videos
    if preferred:
        return preferred[0]
    if "observation.state" in features:
        return "observation.state"
    raise LamfastError(
        f"{root}: no observation video and no 'observation.state'; pass obs_key, one of: "
        f"{', '.join(_usable(features))}"
    )


def _action_key(features: dict, options, root: Path) -> str | None:
    key = options.action_key or "action"
    if key in features and key not in _BOOKKEEPING:
        return key
    if options.action_key is None:
        return None  # no 'action' column: the data have no actions
    raise LamfastError(
        f"action_key {key!r} is not a feature of {root}; it has: {', '.join(_usable(features))}"
    )


def _episodes(ep: np.ndarray, frame_index: np.ndarray | None, root: Path):
    """``(episode index, first row, stop row)`` of the runs of rows of each episode."""
    n = len(ep)
    change = np.flatnonzero(ep[1:] != ep[:-1]) + 1
    bounds = np.concatenate([[0], change, [n]])
    ids = ep[bounds[:-1]]
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        e = int(uniq[counts > 1][0])
        raise LamfastError(
            f"{root}: the rows of episode {e} are not contiguous in the data tables (a LeRobot "
            "dataset stores each episode's rows together)"
        )
    if frame_index is not None and n > 1:
        step = np.diff(frame_index)
        bad = step != 1
        bad[change - 1] = False  # across an episode boundary frame_index restarts
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            e = int(ep[row])
            raise LamfastError(
                f"{root}: episode {e}: frame_index goes from {int(frame_index[row - 1])} to "
                f"{int(frame_index[row])} at row {row}; rows must be in frame order"
            )
    return [(int(e), int(a), int(b)) for e, a, b in zip(ids, bounds[:-1], bounds[1:], strict=True)]


def _demux(av, path: Path, label: str) -> dict:
    """Packet timestamps (sorted) and frame size of a video file, without decoding."""
    if not path.is_file():
        raise LamfastError(f"{label}: no such video file")
    container, stream = video._open_container(av, path, label)
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the end-of-stream marker; frames an edit list cuts
            if packet.pts is None:
                raise LamfastError(f"{label}: a video packet has no timestamp")
            pts.append(packet.pts)
        size = (stream.codec_context.height, stream.codec_context.width)
        tb = stream.time_base
    except (av.FFmpegError, OSError) as e:
        raise LamfastError(f"{label}: corrupt or truncated video ({video._reason(e)})") from None
    finally:
        container.close()
    if not pts or tb is None:
        raise LamfastError(f"{label}: the video holds no frames")
    keys = np.sort(np.asarray(pts, dtype=np.int64))
    if (np.diff(keys) == 0).any():
        raise LamfastError(f"{label}: two video frames share one timestamp")
    times = keys * (tb.numerator / tb.denominator)
    return {"keys": keys, "times": times, "size": size}


def _video_members(av, root, info, obs_key, runs, rows, stamps, options, arrow):
    """One video member per episode, its rows matched to frames by timestamp."""
    prefix = f"videos/{obs_key}/"
    cols = [f"{prefix}{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    meta_files = _parquets(root / "meta" / "episodes", root)
    meta = _read(arrow, meta_files, ["episode_index", *cols], root)
    where = {}
    meta_eps = _index(meta["episode_index"], "episode_index", root)
    chunk = _index(meta[cols[0]], cols[0], root)
    file = _index(meta[cols[1]], cols[1], root)
    start = meta[cols[2]].astype(np.float64).reshape(len(meta_eps), -1)[:, 0]
    stop = meta[cols[3]].astype(np.float64).reshape(len(meta_eps), -1)[:, 0]
    for i, e in enumerate(meta_eps.tolist()):
        where[e] = (int(chunk[i]), int(file[i]), float(start[i]), float(stop[i]))
    fps = info.get("fps") or info["features"][obs_key].get("info", {}).get("video.fps")
    try:
        tol = 0.5 / float(fps)
    except (TypeError, ValueError, ZeroDivisionError):
        raise LamfastError(f"{root}: meta/info.json gives no frame rate ('fps')") from None
    template = str(info.get("video_path") or _DEFAULT_VIDEO_PATH)
    files: dict[Path, dict] = {}
    members = []
    for (e, _, _), keep in zip(runs, rows, strict=True):
        if e not in where:
            raise LamfastError(f"{root}: episode {e} is not in meta/episodes")
        c, f, t0, t1 = where[e]
        try:
            rel = template.format(video_key=obs_key, chunk_index=c, file_index=f)
        except (KeyError, IndexError, ValueError):
            raise LamfastError(
                f"{root}: cannot use video_path {template!r} of meta/info.json"
            ) from None
        path = root / rel
        if path not in files:
            files[path] = _demux(av, path, f"{root.name}/{rel}")
        vid = files[path]
        q = t0 + stamps[keep]
        late = q > t1 - tol
        if late.any():
            i = int(np.flatnonzero(late)[0])
            raise LamfastError(
                f"{root}: episode {e}, frame {i * options.stride} at {q[i]:.4f} s lies past the "
                f"episode's span {t0:.4f}..{t1:.4f} s of {rel} (meta/episodes)"
            )
        times = vid["times"]
        hi = np.clip(np.searchsorted(times, q), 1, len(times) - 1) if len(times) > 1 else None
        if hi is None:
            best = np.zeros(len(q), dtype=np.int64)
        else:
            best = np.where(np.abs(times[hi - 1] - q) <= np.abs(times[hi] - q), hi - 1, hi)
        off = np.abs(times[best] - q)
        if (off >= tol).any():
            i = int(np.flatnonzero(off >= tol)[0])
            raise LamfastError(
                f"{root}: episode {e}, frame {i * options.stride}: no frame of {rel} within half "
                f"a frame of {q[i]:.4f} s (nearest at {times[best[i]]:.4f} s)"
            )
        keys = vid["keys"][best]
        size = tuple(options.resize) if options.resize is not None else vid["size"]
        members.append(
            video._VideoMember(
                path,
                f"{root.name}/{obs_key}[episode {e}]",
                keys,
                by_pts=True,
                first_key=int(vid["keys"][0]),
                size=size,
                grey=options.grey,
                hint=_HINT,
            )
        )
    return members


def open(path: Path, options) -> list[_Segment]:
    """One segment per episode (see the module docstring)."""
    root = Path(path)
    arrow = _arrow()
    video.check_options(options)
    info = _info(root)
    features = info["features"]
    obs_key = _obs_key(features, options, root)
    spec = features[obs_key] if isinstance(features[obs_key], dict) else {}
    kind = spec.get("dtype")
    if kind == "image":
        raise LamfastError(
            f"{root}: {obs_key} is an image feature (images inside the parquet tables), which "
            "lamfast does not read; choose a video key or a state column with obs_key"
        )
    is_video = kind == "video"
    av = video._import_av(_HINT) if is_video else None
    if not is_video and (options.resize is not None or options.grey):
        flag = "--resize" if options.resize is not None else "--grey"
        raise LamfastError(f"{flag} applies to video observations; {obs_key} is a column")
    action_key = _action_key(features, options, root)
    data_files = _parquets(root / "data", root)
    columns = ["episode_index"]
    if "frame_index" in features:
        columns.append("frame_index")
    if is_video and "timestamp" in features:
        columns.append("timestamp")
    if not is_video:
        columns.append(obs_key)
    if action_key is not None and action_key not in columns:
        columns.append(action_key)
    table = _read(arrow, data_files, columns, root)
    ep = _index(table["episode_index"], "episode_index", root)
    if len(ep) == 0:
        raise LamfastError(f"{root}: the data tables have no rows")
    fi = _index(table["frame_index"], "frame_index", root) if "frame_index" in table else None
    runs = _episodes(ep, fi, root)
    rows = [np.arange(a, b, options.stride) for _, a, b in runs]
    if is_video:
        if "timestamp" in table:
            stamps = table["timestamp"].astype(np.float64).reshape(len(ep), -1)[:, 0]
        else:  # no timestamps: frame i of an episode at i / fps
            fps = float(info.get("fps") or 0) or 1.0
            stamps = np.concatenate([np.arange(b - a) / fps for _, a, b in runs])
        frames = _video_members(av, root, info, obs_key, runs, rows, stamps, options, arrow)
    else:
        obs = table[obs_key]
        obs = obs.reshape(len(obs), -1)
        frames = [
            _ArrayMember(obs[keep], f"{root.name}/{obs_key}[episode {e}]")
            for (e, _, _), keep in zip(runs, rows, strict=True)
        ]
    actions = None
    if action_key is not None:
        actions = table[action_key]
        if actions.ndim == 2 and actions.shape[1] == 1 and actions.dtype.kind in "biu":
            actions = actions[:, 0]  # one integer per row: ids of discrete actions
    segments = []
    for (e, _, _), keep, member in zip(runs, rows, frames, strict=True):
        seg = _Segment(f"{root.name}[episode {e}]", frames=member)
        if actions is not None:
            seg.actions = _ArrayMember(actions[keep], f"{root.name}/{action_key}[episode {e}]")
        _check_segment(seg)
        segments.append(seg)
    return segments
