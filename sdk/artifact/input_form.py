"""The input form of an artifact: how its image goes in (layout and value range).

An image model is trained on normalized NCHW tensors, ``(pixels / 255 - mean) / std``.
An artifact may instead take

- **pixels**: RGB values 0-255 as float32, with mean/std applied inside the model (what
  app runtimes feed: Core ML image inputs, MediaPipe Tasks, which refuses per-channel
  normalization), and/or
- **NHWC**: channels last, ``1 x H x W x 3`` (what TFLite/XNNPACK and the phone task
  libraries take; the converter then starts with the convolution, not a transpose).

The form is recorded in the artifact's metadata (``layout``, ``image_input``), so
``predict``, ``verify`` and apps feed it the right array. This module is numpy only (the
device profile uses it); :mod:`edgevit.pipeline.artifact_module` builds the matching torch module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError

LAYOUTS = ("NCHW", "NHWC")
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


def parse_layout(layout: str) -> str:
    """``"nchw"``/``"NHWC"`` -> the canonical upper-case name (unknown names are an InputError)."""
    name = str(layout).upper()
    if name not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: choose nchw or nhwc")
    return name


@dataclass(frozen=True)
class InputForm:
    """Layout and value range of an artifact's image input."""

    layout: str = "NCHW"
    pixels: bool = False  # True: RGB 0-255 in, mean/std applied inside the model
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD

    @classmethod
    def of(cls, metadata, image_input: bool = False) -> "InputForm":
        """The form an artifact records (``metadata`` None: the plain normalized NCHW tensor;
        ``image_input``: the runtime itself declares an image input, as Core ML does)."""
        if metadata is None:
            return cls(pixels=image_input)
        return cls(metadata.layout, bool(metadata.image_input or image_input), tuple(metadata.mean), tuple(metadata.std))

    @property
    def is_plain(self) -> bool:
        """The normalized NCHW tensor the model itself takes."""
        return self.layout == "NCHW" and not self.pixels

    def describe(self) -> str:
        values = "RGB pixels 0-255 (mean/std inside the model)" if self.pixels else "normalized tensor"
        return f"{self.layout}, {values}"

    def model_shape(self, shape: Sequence[int | None]) -> tuple[int | None, ...]:
        """The model's NCHW shape for the artifact's input ``shape``."""
        shape = tuple(shape)
        return (shape[0], shape[3], shape[1], shape[2]) if self.layout == "NHWC" else shape

    def image_size(self, shape: Sequence[int | None]) -> tuple[int, int]:
        """(height, width) of an image input of ``shape`` (an InputError unless rank 4, fixed size)."""
        if len(shape) != 4:
            raise InputError(f"the artifact takes a rank-{len(shape)} input, not an image; pass a .npy input")
        height, width = (shape[1], shape[2]) if self.layout == "NHWC" else (shape[2], shape[3])
        if height is None or width is None:
            raise InputError("the artifact's image size is dynamic; pass a .npy input")
        return height, width

    def arrange(self, x: np.ndarray) -> np.ndarray:
        """An NCHW batch in this form's layout (values unchanged)."""
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def from_normalized(self, x: np.ndarray) -> np.ndarray:
        """A normalized NCHW batch (what the model is trained on) as this artifact's input."""
        if self.pixels:
            mean = np.asarray(self.mean, np.float64).reshape(1, -1, 1, 1)
            std = np.asarray(self.std, np.float64).reshape(1, -1, 1, 1)
            x = (x.astype(np.float64) * std + mean) * 255.0
        return self.arrange(x)

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """An NCHW batch of RGB values 0-255 as this artifact's input."""
        if not self.pixels:
            mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
            pixels = (pixels.astype(np.float32) / np.float32(255.0) - mean) / std
        return self.arrange(pixels)
