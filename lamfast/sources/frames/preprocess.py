"""Frame preprocessing: crop, block-average downsampling, scale, flattening to float64 rows."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ...errors import LamfastError


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """Parse ``"y0:y1,x0:x1"`` into a crop box (``None`` passes through)."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*(\d+):(\d+)\s*,\s*(\d+):(\d+)\s*", str(text))
    if not m:
        raise LamfastError(f"crop must look like 'y0:y1,x0:x1', got {text!r}")
    y0, y1, x0, x1 = (int(g) for g in m.groups())
    if y1 <= y0 or x1 <= x0:
        raise LamfastError(f"crop {text!r} is empty")
    return (y0, y1, x0, x1)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Frame preprocessing: crop (rows y0:y1, columns x0:x1), block-average downsampling, scale.

    ``scale=None`` means 1/255 for ``uint8`` frames and 1 otherwise. Frames are flattened to
    vectors of float64 (in C order: row, column, channel).
    """

    crop: tuple[int, int, int, int] | None = None
    downsample: int = 1
    scale: float | None = None

    def __post_init__(self):
        if isinstance(self.crop, str):
            object.__setattr__(self, "crop", parse_crop(self.crop))
        if self.crop is not None:
            object.__setattr__(self, "crop", tuple(int(c) for c in self.crop))
        if int(self.downsample) < 1:
            raise LamfastError(f"downsample must be a whole number >= 1, got {self.downsample!r}")
        object.__setattr__(self, "downsample", int(self.downsample))
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise LamfastError(f"scale must be a positive number, got {self.scale!r}")

    def scale_for(self, dtype: np.dtype) -> float:
        if self.scale is not None:
            return float(self.scale)
        return 1.0 / 255.0 if np.dtype(dtype) == np.uint8 else 1.0

    def out_shape(self, frame_shape: tuple, label: str) -> tuple:
        """Shape of one frame after crop and downsampling."""
        shape = tuple(frame_shape)
        if self.crop is None and self.downsample == 1:
            return shape
        if len(shape) < 2:
            raise LamfastError(f"{label}: crop/downsample need frames shaped T x H x W [x C]")
        H, W = shape[0], shape[1]
        y0, y1, x0, x1 = self.crop if self.crop else (0, H, 0, W)
        if y1 > H or x1 > W:
            raise LamfastError(f"{label}: crop {self.crop} exceeds the frame size {H} x {W}")
        h, w = (y1 - y0) // self.downsample, (x1 - x0) // self.downsample
        if h < 1 or w < 1:
            raise LamfastError(f"{label}: downsample {self.downsample} leaves an empty frame")
        return (h, w, *shape[2:])

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Chunk of raw frames (n x ...) to float64 rows (n x d)."""
        x = raw
        if self.crop is not None or self.downsample > 1:
            H, W = x.shape[1], x.shape[2]
            y0, y1, x0, x1 = self.crop if self.crop else (0, H, 0, W)
            f = self.downsample
            h, w = (y1 - y0) // f, (x1 - x0) // f
            x = x[:, y0 : y0 + h * f, x0 : x0 + w * f]
            if f > 1:
                x = x.reshape(x.shape[0], h, f, w, f, *x.shape[3:]).astype(np.float64)
                x = x.mean(axis=(2, 4))
        out = np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float64)
        s = self.scale_for(raw.dtype)
        if s != 1.0:
            # float64 frames are a read-only view of the memory map: scale a copy of those
            out = np.multiply(out, s, out=out) if out.flags.writeable else out * s
        return out

    def to_dict(self) -> dict:
        return {
            "crop": list(self.crop) if self.crop else None,
            "downsample": self.downsample,
            "scale": self.scale,
        }
