"""How a batch travels from the coordinator to a device: as 8-bit pixels when that is exact.

A plan's inputs are images normalized with the plan's mean and std (:mod:`.inputs`), so a
batch made from images is, exactly, ``(pixels / 255 - mean) / std`` for 8-bit pixels: a
quarter of the float32 bytes. :func:`pack` sends those pixels when decoding them
reproduces the batch bit for bit (checked on the coordinator, every batch), and the
float32 values otherwise, so what a sub-model computes never changes. The bytes are cut in
chunks small enough for Ray to carry inside the task (below its 100 KB limit for an
argument), which spares each device a fetch from the coordinator's object store.
Torch-free: the devices unpack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CHUNK = 64 * 1024  # bytes per task argument: Ray inlines arguments below 100 KB


def from_pixels(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized float32 (N, C, H, W) from uint8 pixels: the same operations as an image input's."""
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    out = pixels.astype(np.float32)
    out /= 255.0  # in place: one float32 array, not four
    out -= m
    out /= s
    return out


def to_pixels(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray | None:
    """The uint8 pixels that normalize exactly to ``batch``, or None if there are none."""
    if batch.ndim != 4 or batch.shape[1] != len(mean) or len(std) != len(mean):
        return None
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    probe = batch.reshape(len(batch), batch.shape[1], -1)[:, :, :64][..., None]  # a cheap first look
    for part, pm, ps in ((probe, m, s), (batch, m, s)):
        values = np.rint((part * ps + pm) * 255.0)
        if values.min() < 0 or values.max() > 255:
            return None
        pixels = values.astype(np.uint8)
        if not np.array_equal(from_pixels(pixels, mean, std), part):
            return None
    return pixels


def pack(batch: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None
         ) -> tuple[dict[str, Any], list[bytes]]:
    """A header and the chunks of ``batch`` (float32 N, C, H, W), as pixels when exact."""
    pixels = to_pixels(batch, mean, std) if mean is not None and std is not None else None
    header: dict[str, Any] = {"shape": tuple(batch.shape), "pixels": pixels is not None}
    if pixels is not None:
        header.update(mean=list(mean or ()), std=list(std or ()))
    data = (pixels if pixels is not None else np.ascontiguousarray(batch, dtype=np.float32)).tobytes()
    return header, [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def unpack(header: dict[str, Any], chunks: Sequence[bytes]) -> np.ndarray:
    """The float32 batch that :func:`pack` packed."""
    data = b"".join(chunks)
    shape = tuple(header["shape"])
    if header["pixels"]:
        return from_pixels(np.frombuffer(data, dtype=np.uint8).reshape(shape), header["mean"], header["std"])
    return np.frombuffer(data, dtype=np.float32).reshape(shape).copy()
