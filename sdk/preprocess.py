"""Inputs from files: an image -> normalized NCHW float32 array (the evaluation transform
of the model zoo), and ``.npy`` arrays read only after their header fits what is expected."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError
from .optional import require


def load_image(path: str | Path, size: tuple[int, int], mean: Sequence[float] = (0.485, 0.456, 0.406),
               std: Sequence[float] = (0.229, 0.224, 0.225), crop_pct: float = 0.875,
               normalize: bool = True) -> np.ndarray:
    """Resize the shorter side to ``size / crop_pct`` (bicubic), center-crop ``size``.

    Returns (1, 3, H, W) float32: normalized with mean/std, or raw 0-255 when
    ``normalize`` is False (for artifacts with the normalization baked in).
    """
    require("PIL", "to read images")
    from PIL import Image, UnidentifiedImageError
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


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy(path: str | Path, shapes: Sequence[Sequence[int | None]], dtype: str, name: str = "the input"
             ) -> np.ndarray:
    """An .npy array whose header was checked before anything is allocated: its shape must
    fit one of ``shapes`` (None: any size), its dtype be ``dtype``, and the file really hold
    that many bytes. An InputError otherwise."""
    path = Path(path)
    if not path.is_file():  # also keeps a FIFO from blocking the open
        raise InputError(f"array not found (or not a regular file): {path}")
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version not in _NPY_HEADER_READERS:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, stored = _NPY_HEADER_READERS[version](file, max_header_size=10_000)
            header_end = file.tell()
            available = file.seek(0, 2) - header_end
    except (OSError, ValueError, SyntaxError, TypeError) as exc:
        raise InputError(f"cannot read array {path}: not a valid .npy file ({str(exc)[:120]})") from None
    from edgevit.runtimes.base import shape_fits, shape_text

    if not any(shape_fits(want, shape) for want in shapes):
        wanted = " or ".join(shape_text(want) for want in shapes)
        raise InputError(f"input shape {shape_text(shape)} does not match {name} ({wanted})")
    if stored.hasobject or stored != np.dtype(dtype):
        raise InputError(f"input dtype {stored} does not match {name} ({dtype}); convert with x.astype(np.{dtype})")
    if available < math.prod(shape) * stored.itemsize:
        raise InputError(f"cannot read array {path}: the file is shorter than its header says (truncated)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read array {path}: {str(exc)[:120]}") from None
