"""MIL ops for compressed weights (``constexpr_*``: affine, blockwise, palettes) and
quantized activations (``quantize`` / ``dequantize``), decompressed on every run as the
coremltools op definitions decompress them."""

from __future__ import annotations

import math

import numpy as np

from ..mil_program import packed_size, unpack_bits
from .registry import ALL_OPSETS, register

_QUANTIZED = {"int8": np.int8, "uint8": np.uint8}
_LUT_BITS = {2: 1, 4: 2, 16: 4, 64: 6, 256: 8}  # iOS16 palette size -> bits per index


def _along(param, shape: tuple[int, ...], axis) -> np.ndarray:
    """A scale or zero point (a scalar, or a vector along ``axis``) shaped to broadcast over
    a tensor of ``shape``."""
    param = np.asarray(param)
    if param.ndim == 0:
        return param
    if param.ndim != 1 or axis is None or not -len(shape) <= int(axis) < len(shape) \
            or param.size != shape[int(axis)]:
        raise ValueError(f"a scale or zero point of shape {param.shape} along axis {axis} of a {shape} tensor")
    aligned = [1] * len(shape)
    aligned[int(axis)] = param.size
    return param.reshape(aligned)


def _affine(data, scale, zero_point, axis) -> np.ndarray:
    """``scale * (data - zero_point)`` in fp32, returned in the dtype of ``scale``."""
    out = np.asarray(data).astype(np.float32)
    if zero_point is not None:
        out = out - _along(zero_point, out.shape, axis).astype(np.float32)
    return (out * _along(scale, out.shape, axis)).astype(np.asarray(scale).dtype)


def _block_number(blocks, shape) -> np.ndarray:
    """For a tensor of ``shape`` cut into ``blocks[i]`` equal blocks along axis ``i``, the
    row-major number of the block each element lies in."""
    if len(blocks) != len(shape):
        raise ValueError(f"{len(blocks)} block counts for a rank-{len(shape)} tensor")
    number = np.zeros((), np.intp)
    for count, size in zip(blocks, shape):
        if count < 1 or size % count:
            raise ValueError(f"an axis of {size} elements does not split into {count} equal blocks")
        number = number[..., None] * count + np.arange(size) // (size // count)
    return number


@register("constexpr_affine_dequantize", ALL_OPSETS[1:])
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    """iOS16+: int8/uint8 weights, ``scale * (data - zero_point)`` per tensor or per channel."""
    return _affine(quantized_data, scale, zero_point, axis)


@register("constexpr_blockwise_shift_scale", ("CoreML8", "CoreML9"))
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    """iOS18+: ``scale * (data - offset)`` with one scale (and offset) per block; the block
    size along each axis is ``data.shape[i] // scale.shape[i]``. Computed in the scale's dtype."""
    block = _block_number(scale.shape, data.shape)
    out = data.astype(scale.dtype)
    if offset is not None:
        if offset.shape != scale.shape:
            raise ValueError(f"offset of shape {offset.shape} for scales of shape {scale.shape}")
        out = out - offset.reshape(-1)[block]
    return (scale.reshape(-1)[block] * out).astype(scale.dtype)


@register("constexpr_lut_to_dense", ("CoreML6", "CoreML7"))
def constexpr_lut_to_dense(indices, lut, shape):
    """iOS16/17: one palette of 2, 4, 16, 64 or 256 entries; ``indices`` packs one index of
    log2(entries) bits per element, least significant bit first."""
    shape = [int(s) for s in np.atleast_1d(shape)]
    count = math.prod(shape)
    bits = _LUT_BITS.get(lut.size) if lut.ndim == 1 else None
    if bits is None or indices.size != packed_size(count, bits):
        raise ValueError(f"a palette of shape {lut.shape} with {indices.size} index bytes for {count} elements")
    return lut[unpack_bits(np.asarray(indices, np.uint8).reshape(-1), bits, count)].reshape(shape)


@register("constexpr_lut_to_dense", ("CoreML8", "CoreML9"))
def constexpr_lut_to_dense_ios18(indices, lut, vector_axis=None):
    """iOS18+: ``lut`` is (palettes per axis of ``indices``..., entries, vector size), one
    palette per block of ``indices``; a vector entry fills that many consecutive elements
    along ``vector_axis``."""
    if lut.ndim != indices.ndim + 2:
        raise ValueError(f"a rank-{lut.ndim} palette for rank-{indices.ndim} indices")
    palettes = lut.reshape(-1, *lut.shape[-2:])
    values = palettes[_block_number(lut.shape[:-2], indices.shape), indices]  # (*indices.shape, vector)
    if lut.shape[-1] == 1:
        return values[..., 0]
    if vector_axis is None or not -indices.ndim <= int(vector_axis) < indices.ndim:
        raise ValueError(f"a vector palette needs a vector_axis within rank {indices.ndim}")
    axis = int(vector_axis) % indices.ndim
    shape = list(indices.shape)
    shape[axis] *= lut.shape[-1]
    return np.moveaxis(values, -1, axis + 1).reshape(shape)


@register("quantize", ALL_OPSETS[2:])
def quantize(input, scale, output_dtype, zero_point=None, axis=None):
    """iOS17+: ``clip(round(input / scale) + zero_point)`` to int8/uint8, rounding half to
    even (numpy's round, as coremltools evaluates this op)."""
    dtype = _QUANTIZED.get(str(output_dtype))
    if dtype is None:
        raise ValueError(f"quantize to {output_dtype!r}: int8 or uint8 only")
    out = np.round(input / _along(scale, input.shape, axis))
    if zero_point is not None:
        out = out + _along(zero_point, input.shape, axis).astype(np.float32)
    return np.clip(out, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)


@register("dequantize", ALL_OPSETS[2:])
def dequantize(input, scale, zero_point=None, axis=None):
    """iOS17+: ``scale * (input - zero_point)`` of int8/uint8 activations."""
    return _affine(input, scale, zero_point, axis)
