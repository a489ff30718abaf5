"""MIL tensor ops in numpy: element-wise, linear algebra, normalization and reductions,
shapes and indexing, and the classifier output (see the package docstring for precision)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numpy.polynomial import chebyshev

from .registry import register


def _acc(x: np.ndarray) -> np.ndarray:
    """The accumulation dtype: fp32 for fp16 inputs."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _like(result: np.ndarray, x: np.ndarray) -> np.ndarray:
    return result.astype(x.dtype, copy=False)


# --- element-wise binary -------------------------------------------------------------

def _binary(fn):
    def op(x, y):
        x, y = np.asarray(x), np.asarray(y)
        return np.asarray(fn(x, y)).astype(np.result_type(x.dtype, y.dtype), copy=False)
    return op


for _name, _fn in {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide,
    "maximum": np.maximum, "minimum": np.minimum, "pow": np.power, "floor_div": np.floor_divide,
}.items():
    register(_name)(_binary(_fn))


# --- element-wise unary --------------------------------------------------------------

_ERF_STEP = 0.5  # interval width of the piecewise fit
_ERF_ONE = 6.0  # erf(x) rounds to 1 in float64 from here on (erfc(6) = 2e-17)


@functools.lru_cache(maxsize=None)
def _erf_pieces() -> tuple[np.ndarray, ...]:
    """Chebyshev interpolants (degree 12) of erf on [k/2, (k+1)/2], k = 0..11, taken at
    Chebyshev points of ``math.erf``: erf to 2e-15 absolute on any CPU (numpy has no erf)."""
    exact = np.vectorize(math.erf, otypes=[np.float64])
    count = int(_ERF_ONE / _ERF_STEP)
    return tuple(chebyshev.chebinterpolate(lambda u, k=k: exact((k + (u + 1) / 2) * _ERF_STEP), 12)
                 for k in range(count))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64, accurate to 2e-15: piecewise Chebyshev fits of ``math.erf``."""
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    out = np.ones_like(z)
    piece = np.where(z < _ERF_ONE, np.floor(z / _ERF_STEP), -1).astype(np.intp)
    for k, coefficients in enumerate(_erf_pieces()):
        where = np.nonzero(piece == k)
        out[where] = chebyshev.chebval((z[where] / _ERF_STEP - k) * 2 - 1, coefficients)
    return np.copysign(out, x)


@register("gelu")
def gelu(x, mode="EXACT"):
    v = x.astype(np.float64)
    if mode == "EXACT":
        out = 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))
    elif mode == "TANH_APPROXIMATION":
        out = 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
    elif mode == "SIGMOID_APPROXIMATION":
        out = v / (1.0 + np.exp(-1.702 * v))
    else:
        raise ValueError(f"unknown gelu mode {mode!r}")
    return _like(out, x)


@register("relu")
def relu(x):
    return np.maximum(x, np.zeros((), x.dtype))


@register("sigmoid")
def sigmoid(x):
    return _like(1.0 / (1.0 + np.exp(-x.astype(np.float64))), x)


@register("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    return np.clip(alpha * x + beta, 0, 1).astype(x.dtype, copy=False)


@register("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    return np.where(x > alpha, x, np.zeros((), x.dtype))


@register("inverse")
def inverse(x, epsilon=1e-4):
    return (1.0 / (x + np.asarray(epsilon, x.dtype))).astype(x.dtype, copy=False)


for _name, _fn in {"exp": np.exp, "sqrt": np.sqrt, "tanh": np.tanh, "abs": np.abs, "erf": _erf,
                   "square": np.square, "floor": np.floor, "ceil": np.ceil}.items():
    register(_name)((lambda f: lambda x: _like(np.asarray(f(x)), x))(_fn))


@register("rsqrt")
def rsqrt(x, epsilon=1e-12):
    return _like(1.0 / np.sqrt(x + epsilon), x)


@register("clip")
def clip(x, alpha, beta):
    return np.clip(x, alpha, beta).astype(x.dtype, copy=False)


_CAST = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int32": np.int32, "int64": np.int64,
         "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


@register("cast")
def cast(x, dtype):
    return np.asarray(x).astype(_CAST[dtype])


# --- linear algebra ------------------------------------------------------------------

@register("linear")
def linear(x, weight, bias=None):
    out = _acc(x) @ _acc(weight).T
    if bias is not None:
        out = out + _acc(bias)
    return _like(out, x)


@register("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    a, b = _acc(np.asarray(x)), _acc(np.asarray(y))
    if transpose_x:
        a = np.swapaxes(a, -1, -2)
    if transpose_y:
        b = np.swapaxes(b, -1, -2)
    return _like(np.matmul(a, b), np.asarray(x))


def _conv_padding(pad_type: str, pad, size, kernel, stride, dilation) -> list[tuple[int, int]]:
    if pad_type == "valid":
        return [(0, 0)] * len(size)
    if pad_type == "custom":
        pad = [int(p) for p in pad]
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(size))]
    if pad_type in ("same", "same_lower"):
        result = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            low = total // 2 if pad_type == "same" else total - total // 2
            result.append((low, total - low))
        return result
    raise ValueError(f"unknown pad_type {pad_type!r}")


@register("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """2-D convolution (NCHW); depth-wise convs take a k*k multiply-add path."""
    if x.ndim != 4:
        raise ValueError(f"only 2-D convolution is implemented, got a rank-{x.ndim} input")
    a, w = _acc(x), _acc(weight)
    B, C, H, W = a.shape
    O, Cg, KH, KW = w.shape
    sh, sw = (int(s) for s in (strides if strides is not None else (1, 1)))
    dh, dw = (int(d) for d in (dilations if dilations is not None else (1, 1)))
    (pt, pb), (pl, pr) = _conv_padding(pad_type, pad, (H, W), (KH, KW), (sh, sw), (dh, dw))
    a = np.pad(a, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    Ho = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    groups = int(groups)

    def window(i: int, j: int) -> np.ndarray:  # (B, C, Ho, Wo)
        return a[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]

    if Cg == 1 and O == C == groups:  # depth-wise
        out = np.zeros((B, O, Ho, Wo), dtype=a.dtype)
        for i in range(KH):
            for j in range(KW):
                out += window(i, j) * w[:, 0, i, j][None, :, None, None]
    else:
        cols = np.stack([window(i, j) for i in range(KH) for j in range(KW)], axis=2)  # (B, C, KH*KW, Ho, Wo)
        cols = cols.reshape(B, groups, Cg * KH * KW, Ho * Wo)
        kernel = w.reshape(groups, O // groups, Cg * KH * KW)
        out = np.matmul(kernel[None], cols).reshape(B, O, Ho, Wo)
    if bias is not None:
        out = out + _acc(bias)[None, :, None, None]
    return _like(out, x)


# --- normalization and reductions ----------------------------------------------------

def _axes(axes, ndim: int):
    return None if axes is None else tuple(int(a) % ndim for a in np.atleast_1d(axes))


@register("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    a = _acc(x)
    ax = _axes(axes, a.ndim)
    mean = a.mean(axis=ax, keepdims=True)
    var = np.square(a - mean).mean(axis=ax, keepdims=True)
    out = (a - mean) / np.sqrt(var + np.float32(epsilon))
    if gamma is not None:
        out = out * _acc(gamma)
    if beta is not None:
        out = out + _acc(beta)
    return _like(out, x)


@register("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    a = _acc(x)
    shape = (1, -1) + (1,) * (a.ndim - 2)
    out = (a - _acc(mean).reshape(shape)) / np.sqrt(_acc(variance).reshape(shape) + np.float32(epsilon))
    if gamma is not None:
        out = out * _acc(gamma).reshape(shape)
    if beta is not None:
        out = out + _acc(beta).reshape(shape)
    return _like(out, x)


@register("softmax")
def softmax(x, axis=-1):
    a = _acc(x)
    e = np.exp(a - a.max(axis=int(axis), keepdims=True))
    return _like(e / e.sum(axis=int(axis), keepdims=True), x)


def _reduction(fn):
    def op(x, axes=None, keep_dims=False):
        return _like(np.asarray(fn(_acc(x), _axes(axes, x.ndim), bool(keep_dims))), x)
    return op


for _name, _fn in {
    "reduce_mean": lambda a, ax, k: a.mean(axis=ax, keepdims=k),
    "reduce_sum": lambda a, ax, k: a.sum(axis=ax, keepdims=k),
    "reduce_max": lambda a, ax, k: a.max(axis=ax, keepdims=k),
    "reduce_min": lambda a, ax, k: a.min(axis=ax, keepdims=k),
    "reduce_l2_norm": lambda a, ax, k: np.sqrt(np.square(a).sum(axis=ax, keepdims=k)),
}.items():
    register(_name)(_reduction(_fn))


# --- shapes and indexing -------------------------------------------------------------

@register("reshape", ("CoreML5", "CoreML6"))
def reshape(x, shape):
    """iOS15/16: a 0 copies the input dimension at the same position (from the left)."""
    shape = [int(s) for s in np.atleast_1d(shape)]
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@register("reshape", ("CoreML7", "CoreML8", "CoreML9"))
def reshape_ios17(x, shape):
    """iOS17+: a 0 copies the input dimension at the same position counted from the right,
    or is 1 where the input has no such dimension."""
    shape = [int(s) for s in np.atleast_1d(shape)]
    offset = x.ndim - len(shape)
    shape = [(x.shape[i + offset] if 0 <= i + offset else 1) if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@register("transpose")
def transpose(x, perm):
    return np.transpose(x, [int(p) for p in perm])


@register("concat")
def concat(values, axis, interleave=False):
    if interleave:
        raise ValueError("concat with interleave=True is not implemented")
    return np.concatenate([np.asarray(v) for v in values], axis=int(axis))


@register("tile")
def tile(x, reps):
    return np.tile(x, [int(r) for r in reps])


@register("squeeze")
def squeeze(x, axes=None):
    return np.squeeze(x, axis=_axes(axes, x.ndim))


@register("expand_dims")
def expand_dims(x, axes):
    out = x
    for axis in sorted(int(a) % (x.ndim + len(np.atleast_1d(axes))) for a in np.atleast_1d(axes)):
        out = np.expand_dims(out, axis)
    return out


@register("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    n = x.ndim
    stride = [1] * n if stride is None else [int(s) for s in stride]
    begin_mask = [False] * n if begin_mask is None else list(begin_mask)
    end_mask = [False] * n if end_mask is None else list(end_mask)
    squeeze_mask = [False] * n if squeeze_mask is None else list(squeeze_mask)
    index: list[Any] = []
    for i in range(n):
        b, e = int(begin[i]), int(end[i])
        if squeeze_mask[i]:
            index.append(b)
            continue
        index.append(slice(None if begin_mask[i] else b, None if end_mask[i] else e, stride[i]))
    return x[tuple(index)]


@register("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims):
        raise ValueError("gather with batch_dims is not implemented")
    return np.take(x, np.asarray(indices).astype(np.int64), axis=int(axis))


@register("split")
def split(x, num_splits=None, split_sizes=None, axis=0):
    axis = int(axis)
    if split_sizes is not None:
        bounds = np.cumsum([int(s) for s in split_sizes])[:-1]
        return tuple(np.split(x, bounds, axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


# --- classifier ----------------------------------------------------------------------

@register("classify")
def classify(probabilities, classes):
    """Core ML's classifier output: the top class and a class -> score dictionary (float64
    scores, as Core ML returns them), from one row of scores."""
    scores = np.asarray(probabilities).reshape(-1)
    if len(classes) != scores.size:
        raise ValueError(f"{len(classes)} classes for {scores.size} scores")
    return np.array(classes[int(np.argmax(scores))]), {c: float(v) for c, v in zip(classes, scores.astype(np.float64))}
