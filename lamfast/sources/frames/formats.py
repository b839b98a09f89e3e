"""Which reader opens a frame dataset, and the options readers of other formats take.

numpy arrays (``.npy``, ``.npz``, folders of them) and zarr are read by
:mod:`lamfast.sources.frames.readers`; video files and folders of videos, image folders, HDF5
files and LeRobot datasets by a module of their own each, behind an optional extra. Every reader
returns the same thing, segments of members read by ranges of their first axis
(:class:`~lamfast.sources.frames.readers._Segment`), so everything downstream (preprocessing,
the transition stream, threads, Dask, checkpoints, bitwise chunk invariance) is shared.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..._files import check_input
from ...errors import LamfastError
from . import hdf5, images, lerobot, readers, video

# The readers of other formats, tried in this order: modules with NAME (str), OPTIONS (the
# ReaderOptions fields they take), detect(path) -> bool and open(path, options) -> segments.
READERS = (lerobot, hdf5, video, images)

# Which options each format takes; every other option given is refused with one line.
_OPTIONS = {"numpy": (), "zarr": (), **{r.NAME: tuple(r.OPTIONS) for r in READERS}}


@dataclasses.dataclass(frozen=True)
class ReaderOptions:
    """Options of the readers of video, image, HDF5 and LeRobot data (each takes a subset).

    Parameters
    ----------
    obs_key : str, optional
        HDF5: the dataset of observations; LeRobot: the ``observation.*`` column or video key.
    action_key : str, optional
        HDF5 / LeRobot: the dataset or column of actions.
    stride : int
        Keep every ``stride``-th frame (video, images).
    time_range : (float, float), optional
        Seconds ``start, stop`` of each video.
    resize : (int, int), optional
        Height and width frames are scaled to when decoded (video, images).
    grey : bool
        Decode to one grey channel instead of RGB (video, images).
    actions_file : str, optional
        Actions beside videos or image folders (``.npy``, one row per frame of all episodes in
        order).
    episodes_file : str, optional
        Episode table of a video (``.npy`` of episode start frames).
    """

    obs_key: str | None = None
    action_key: str | None = None
    stride: int = 1
    time_range: tuple[float, float] | None = None
    resize: tuple[int, int] | None = None
    grey: bool = False
    actions_file: str | None = None
    episodes_file: str | None = None

    def __post_init__(self):
        if int(self.stride) < 1:
            raise LamfastError(f"stride must be a whole number >= 1, got {self.stride!r}")
        object.__setattr__(self, "stride", int(self.stride))
        for name in ("actions_file", "episodes_file"):  # workers may run in another directory
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(Path(value).resolve()))

    def given(self) -> list[str]:
        """The options set to something other than their default."""
        default = ReaderOptions()
        return [
            f.name
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]


def detect(path: Path) -> str:
    """The format of a dataset path (``numpy``, ``zarr``, or a registered reader's name)."""
    for reader in READERS:
        if reader.detect(path):
            return reader.NAME
    if path.suffix.lower() == ".zarr" or (
        path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())
    ):
        return "zarr"
    return "numpy"


def open_dataset(path, options: ReaderOptions | None = None) -> list:
    """The segments of the dataset at ``path``, opened by the reader of its format."""
    options = options or ReaderOptions()
    path = check_input(path, "frames", folder_ok=True)  # never open a FIFO or a device
    kind = detect(Path(path))
    extra = [o for o in options.given() if o not in _OPTIONS[kind]]
    if extra:
        flag = "--" + extra[0].replace("_", "-")
        takes = [k for k, opts in _OPTIONS.items() if extra[0] in opts]
        raise LamfastError(
            f"{flag} applies to {', '.join(takes) or 'no'} data, not to {path} ({kind})"
        )
    for reader in READERS:
        if reader.NAME == kind:
            return reader.open(Path(path), options)
    return readers.open_segments(path)
