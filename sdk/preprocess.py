"""Image -> normalized NCHW float32 array, the evaluation transform of the model zoo."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, MissingDependencyError


def load_image(path: str | Path, size: tuple[int, int], mean: Sequence[float] = (0.485, 0.456, 0.406),
               std: Sequence[float] = (0.229, 0.224, 0.225), crop_pct: float = 0.875,
               normalize: bool = True) -> np.ndarray:
    """Resize the shorter side to ``size / crop_pct`` (bicubic), center-crop ``size``.

    Returns (1, 3, H, W) float32: normalized with mean/std, or raw 0-255 when
    ``normalize`` is False (for artifacts with the normalization baked in).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise MissingDependencyError("pillow", "onnx", "to read images") from None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            height, width = size
            scale = max(height, width) / crop_pct / min(img.size)
            resized = (max(width, round(img.size[0] * scale)), max(height, round(img.size[1] * scale)))
            img = img.resize(resized, Image.BICUBIC)
            left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
            img = img.crop((left, top, left + width, top + height))
            pixels = np.asarray(img, dtype=np.float32)  # (H, W, 3)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    if normalize:
        pixels = (pixels / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
