"""Frame files: readers, preprocessing, the transition index and range reads, and
:class:`FrameSource`.
"""

from .preprocess import Preprocess
from .source import ACTION_KINDS, FrameSource, frame_moments

__all__ = ["ACTION_KINDS", "FrameSource", "Preprocess", "frame_moments"]
