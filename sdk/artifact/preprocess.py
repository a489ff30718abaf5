"""Inputs from files: an image -> RGB pixels or the normalized NCHW float32 array (resized
as the model zoo evaluates, or as MediaPipe Tasks does), and ``.npy`` arrays read only
after their header fits what is expected."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..optional import require
from .input_form import DEFAULT_MEAN, DEFAULT_STD, InputForm

RESIZE_MODES = ("crop", "stretch")


def shape_text(shape: Sequence[int | None]) -> str:
    """``1x3x?x?``: a shape as users read it (``?`` for a dynamic axis)."""
    return "x".join("?" if d is None else str(d) for d in shape)


def shape_fits(want: Sequence[int | None], got: Sequence[int]) -> bool:
    """``got`` has ``want``'s rank and sizes (None in ``want``: any size)."""
    return len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got))


def load_pixels(path: str | Path, size: tuple[int, int], crop_pct: float = 0.875, resize: str = "crop"
                ) -> np.ndarray:
    """An image file as (1, 3, H, W) float32 RGB values 0-255, resized two ways:

    - ``crop`` (default): the model zoo's evaluation transform: the shorter side to
      ``size / crop_pct`` (bicubic), then the center ``size``;
    - ``stretch``: MediaPipe Tasks' (and so the Android/iOS task libraries'): the whole
      image to ``size`` (aspect ratio not kept), bilinear with source positions
      ``dst * in / out`` rounded to 1/32 pixel, edge pixels repeated, rounded to 8 bits.
      An image already at ``size`` is taken as it is.
    """
    if resize not in RESIZE_MODES:
        raise InputError(f"unknown resize {resize!r}: choose {' or '.join(RESIZE_MODES)}")
    require("PIL", "to read images")
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return frame_pixels(img, size, crop_pct, resize)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None


def frame_array(image, size: tuple[int, int], crop_pct: float = 0.875, resize: str = "crop") -> np.ndarray:
    """A PIL image or an RGB(A) / grayscale uint8 array (H x W [x 3|4]: a camera or video
    frame) as (1, 3, H, W) float32 RGB 0-255, resized as :func:`load_pixels` says."""
    if resize not in RESIZE_MODES:
        raise InputError(f"unknown resize {resize!r}: choose {' or '.join(RESIZE_MODES)}")
    require("PIL", "to read images")
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) \
                or 0 in image.shape:
            raise InputError(f"a frame must be an H x W x 3 (RGB) uint8 array, got {image.dtype} "
                             f"{'x'.join(map(str, image.shape))}")
        image = Image.fromarray(np.ascontiguousarray(image))
    elif not isinstance(image, Image.Image):
        raise InputError(f"an image must be a path, a PIL image or a uint8 array, not {type(image).__name__}")
    return frame_pixels(image, size, crop_pct, resize)


def frame_pixels(img, size: tuple[int, int], crop_pct: float = 0.875, resize: str = "crop") -> np.ndarray:
    """A PIL image as (1, 3, H, W) float32 RGB 0-255, resized as :func:`load_pixels` says."""
    from PIL import Image

    height, width = size
    img = img.convert("RGB")
    if resize == "stretch":
        return _stretch(np.asarray(img), height, width)
    scale = max(height, width) / crop_pct / min(img.size)
    resized = (max(width, round(img.size[0] * scale)), max(height, round(img.size[1] * scale)))
    img = img.resize(resized, Image.BICUBIC)
    left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    img = img.crop((left, top, left + width, top + height))
    pixels = np.asarray(img, dtype=np.float32)  # (H, W, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def _stretch(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (h, w, 3) -> (1, 3, height, width) float32: MediaPipe's bilinear stretch, exactly
    (OpenCV's fixed-point warp: 5 fractional bits of position, 15 of weight)."""
    rows, cols = image.shape[:2]
    ys = np.rint(np.arange(height) * (rows / height) * 32).astype(np.int64)
    xs = np.rint(np.arange(width) * (cols / width) * 32).astype(np.int64)
    y0, fy = ys >> 5, (ys & 31)[:, None, None]
    x0, fx = xs >> 5, (xs & 31)[None, :, None]

    def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return image[np.clip(y, 0, rows - 1)[:, None], np.clip(x, 0, cols - 1)[None, :]].astype(np.int64)

    weighted = ((at(y0, x0) * (32 - fx) + at(y0, x0 + 1) * fx) * (32 - fy)
                + (at(y0 + 1, x0) * (32 - fx) + at(y0 + 1, x0 + 1) * fx) * fy) * 32
    pixels = ((weighted + (1 << 14)) >> 15).astype(np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def load_image(path: str | Path, size: tuple[int, int], mean: Sequence[float] = DEFAULT_MEAN,
               std: Sequence[float] = DEFAULT_STD, crop_pct: float = 0.875, resize: str = "crop") -> np.ndarray:
    """An image file as the normalized (1, 3, H, W) float32 tensor the model is trained on."""
    return InputForm(mean=tuple(mean), std=tuple(std)).from_pixels(load_pixels(path, size, crop_pct, resize))


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy_header(file) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from an open .npy stream (ValueError when it is not one)."""
    version = np.lib.format.read_magic(file)
    if version not in _NPY_HEADER_READERS:
        raise ValueError(f".npy format version {version} is not supported")
    return _NPY_HEADER_READERS[version](file, max_header_size=10_000)


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
            shape, _, stored = read_npy_header(file)
            header_end = file.tell()
            available = file.seek(0, 2) - header_end
    except (OSError, ValueError, SyntaxError, TypeError) as exc:
        raise InputError(f"cannot read array {path}: not a valid .npy file ({str(exc)[:120]})") from None
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
