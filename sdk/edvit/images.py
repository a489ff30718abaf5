"""Image files read on access: a folder data set that never sits in memory whole.

:class:`ImageFiles` stands where an array of normalized images (N, 3, S, S) float32 would:
it has ``shape``, ``dtype``, ``len`` and indexing, but holds only file names. Indexing
with an integer, a slice or an array of indices decodes those files (a thread pool of
PIL decoders: PIL lets go of the GIL while it decodes and resizes), resizes them
bilinearly to S x S and normalizes them with the data set's mean and std, and returns a
numpy array; indexing with a boolean mask returns another :class:`ImageFiles` over the
chosen files (nothing is read). So the loops that take ``x[i:i + batch]`` or
``x[indices]`` hold one batch of images at a time, and ``x[mask]`` stays lazy.

:func:`batches` iterates over batches of any such array (or a plain one), reading the
next batch of files in the background while the caller works on the current one.
:func:`channel_stats` is the per-channel mean and std of a set of images, a batch at a
time (float64 sums).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..optional import require

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def decoders() -> ThreadPoolExecutor:
    """The process's pool of image decoders (one per core, at most 4; made on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                       thread_name_prefix="edgevit-decode")
        return _POOL


def read_rgb_uint8(file: str | Path, height: int, width: int) -> np.ndarray:
    """An image file as uint8 RGB (height, width, 3), resized bilinearly."""
    image_module = require("PIL.Image", "to read image files")
    try:
        with image_module.open(file) as image:
            rgb = image.convert("RGB")
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), image_module.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, image_module.UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"cannot read image {file}: {exc}") from None


class ImageFiles:
    """Images (N, 3, size, size) float32, normalized, read from ``files`` on access."""

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, files: Sequence[str | Path], size: int, mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        self.files = np.asarray([str(f) for f in files], dtype=object)
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files at {self.size}x{self.size})"

    def normalized(self, mean: Sequence[float], std: Sequence[float]) -> ImageFiles:
        """The same files, normalized with ``mean`` and ``std`` (per channel, of [0, 1] pixels)."""
        return ImageFiles(self.files, self.size, mean, std)

    def __getitem__(self, key):
        if isinstance(key, np.ndarray) and key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"a mask of shape {key.shape} does not fit {len(self)} images")
            chosen = ImageFiles.__new__(ImageFiles)
            chosen.files, chosen.size, chosen.mean, chosen.std = self.files[key], self.size, self.mean, self.std
            return chosen
        if isinstance(key, (int, np.integer)):
            return self.read(np.asarray([key]))[0]
        return self.read(np.arange(len(self))[key])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every image at once: what ``np.asarray`` asks for (all in memory; avoid on big folders)."""
        images = self.read(np.arange(len(self)))
        return images if dtype is None else images.astype(dtype)

    def pixels(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The chosen images as uint8 (n, size, size, 3), decoded in parallel."""
        files = self.files[np.asarray(indices, dtype=np.int64)]
        out = np.empty((len(files), self.size, self.size, 3), dtype=np.uint8)

        def decode(i: int) -> None:
            out[i] = read_rgb_uint8(files[i], self.size, self.size)

        for _ in decoders().map(decode, range(len(files))):
            pass
        return out

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The chosen images, normalized float32 (n, 3, size, size)."""
        x = self.pixels(indices).transpose(0, 3, 1, 2).astype(np.float32)  # one copy, then in place
        x /= np.float32(255.0)
        x -= self.mean[None, :, None, None]
        x /= self.std[None, :, None, None]
        return x


def channel_stats(images: ImageFiles, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``images``' [0, 1] pixels, read a batch at a time."""
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for start in range(0, len(images), batch_size):
        x = images.pixels(np.arange(start, min(start + batch_size, len(images)))).astype(np.float64) / 255.0
        total += x.sum(axis=(0, 1, 2))
        squares += (x * x).sum(axis=(0, 1, 2))
        count += x.shape[0] * x.shape[1] * x.shape[2]
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean * mean, 0.0))


def batches(x, index_batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """``x[index]`` for every index array in turn; for :class:`ImageFiles` the next batch is
    read in the background while the current one is used."""
    if not isinstance(x, ImageFiles):
        for index in index_batches:
            yield x[index]
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgevit-prefetch") as ahead:
        pending = None
        for index in index_batches:
            following = ahead.submit(x.read, np.asarray(index))
            if pending is not None:
                yield pending.result()
            pending = following
        if pending is not None:
            yield pending.result()
