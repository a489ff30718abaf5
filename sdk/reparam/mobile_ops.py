"""The ``mobile`` form's operators: what ONNX Runtime Mobile's NNAPI and Core ML execution
providers take, for the few ops of the zoo they do not.

ONNX Runtime's mobile checker splits the channels-last ONNX graphs at every op an
execution provider lacks: NNAPI has no ``Gelu``, ``Erf``, ``LayerNormalization``,
``ReduceL2``, ``ReduceMax`` or ``Abs``-free alternatives beyond ``Max``; Core ML's
MLProgram lacks ``ReduceL2``, ``Abs`` and ``Neg``; NNAPI splits only evenly. While the
model runs (traced by torch.export, or checked in float64), :class:`MobileOps` computes
those functions from ops both providers take:

- GELU ``x Φ(x) = relu(x) - |x| (1 - Φ(|x|))`` with ``1 - Φ`` from Abramowitz & Stegun
  7.1.26 (``Exp``, ``Div``, ``Mul``, ``Add``; |erf error| <= 1.5e-7, measured 2.1e-7 on
  the GELU in float64), and ``|x| = Max(x, -1·x)``;
- LayerNorm as means: ``(x - E x) / Sqrt(E (x - E x)² + eps)`` (``ReduceMean``, ``Sqrt``,
  ``Div``): the same arithmetic as the fused op;
- an L2 norm over an axis as ``Sqrt(ReduceMean(x²) · n)`` (and ``F.normalize`` with it);
- the largest magnitude over the last two axes of a 4-D tensor as a ``MaxPool`` over them;
- an uneven split as slices, ``x[:, i]`` as a slice (Core ML's MLProgram has no Gather);
- hard-swish as ``x · Clip(x + 3, 0, 6) / 6`` (NNAPI has no HardSigmoid).

:func:`lower_for_mobile` installs it on a model, in place; the form check then runs the
model with it, in float64, against the model as trained, as for every form.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# Abramowitz & Stegun 7.1.26: erfc(z) ~ t (a1 + t (a2 + ...)) exp(-z²), t = 1 / (1 + p z), z >= 0
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def magnitude(x: torch.Tensor) -> torch.Tensor:
    """|x| as ``Max(x, -1·x)`` (NNAPI and Core ML MLProgram take both; MLProgram has no Abs)."""
    return torch.maximum(x, x * -1.0)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The exact (erf) GELU to within 2.1e-7, without Erf."""
    size = magnitude(x)
    z = size * (1.0 / math.sqrt(2.0))
    t = torch.ones((), dtype=x.dtype) / (z * _P + 1.0)  # a Div: NNAPI has no Reciprocal
    poly = t * (_A[0] + t * (_A[1] + t * (_A[2] + t * (_A[3] + t * _A[4]))))
    upper_tail = poly * torch.exp(z * z * -1.0) * 0.5  # 1 - Φ(|x|)
    return torch.relu(x) - size * upper_tail


def layer_norm(x: torch.Tensor, shape, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last ``len(shape)`` axes from means, a Sqrt and a Div."""
    axes = tuple(range(-len(shape), 0))
    centered = x - x.mean(dim=axes, keepdim=True)
    y = centered / torch.sqrt((centered * centered).mean(dim=axes, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def l2_norm(x: torch.Tensor, dim, keepdim: bool = False) -> torch.Tensor:
    """The L2 norm over ``dim`` as ``Sqrt(ReduceMean(x²) · n)``."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    count = math.prod(x.shape[d] for d in dims)
    return torch.sqrt((x * x).mean(dim=dims, keepdim=keepdim) * float(count))


class MobileOps(TorchFunctionMode):
    """Routes the functions above in place of the ops the mobile providers lack."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        lowered = _lowered(func, args, kwargs)
        return lowered() if lowered is not None else func(*args, **kwargs)


def _lowered(func, args, kwargs):
    """A thunk computing ``func(*args, **kwargs)`` from mobile ops, or None to run it as is."""
    def arg(position: int, *names_and_default):
        """The argument at ``position``, else the first keyword of ``names`` given, else the default."""
        *names, default = names_and_default
        if len(args) > position:
            return args[position]
        return next((kwargs[name] for name in names if name in kwargs), default)

    if func is F.gelu and kwargs.get("approximate", "none") == "none":
        return lambda: gelu(args[0])
    if func is F.layer_norm:
        return lambda: layer_norm(*args, **kwargs)
    if func is F.normalize and arg(1, "p", 2.0) in (2, 2.0):
        x, dim, eps = args[0], arg(2, "dim", 1), arg(3, "eps", 1e-12)
        return lambda: x / l2_norm(x, dim, keepdim=True).clamp_min(eps)
    if func is F.hardswish:
        return lambda: args[0] * torch.clamp(args[0] + 3.0, 0.0, 6.0) * (1.0 / 6.0)
    if func is torch.Tensor.__getitem__:
        return _sliced(*args)
    if func in (torch.abs, torch.Tensor.abs):
        return lambda: magnitude(args[0])
    if func in (torch.linalg.vector_norm, torch.Tensor.norm, torch.norm):
        dim, keepdim = arg(2, "dim", None), arg(3, "keepdim", False)
        if arg(1, "ord", "p", 2) in (2, 2.0, "fro") and dim is not None:
            return lambda: l2_norm(args[0], dim, keepdim)
    if func in (torch.amax, torch.Tensor.amax):
        x, dim, keepdim = args[0], arg(1, "dim", None), arg(2, "keepdim", False)
        dims = (dim,) if isinstance(dim, int) else tuple(dim or ())
        if x.dim() == 4 and sorted(d % 4 for d in dims) == [2, 3]:
            pooled = lambda: F.max_pool2d(x, kernel_size=tuple(x.shape[2:]))  # noqa: E731  (B, C, 1, 1)
            return pooled if keepdim else (lambda: pooled().flatten(1))
    if func in (torch.split, torch.Tensor.split):
        x, sizes, dim = args[0], arg(1, "split_size_or_sections", None), arg(2, "dim", 0)
        if isinstance(sizes, (list, tuple)) and len(set(sizes)) > 1:
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            return lambda: tuple(x.narrow(dim, start, size) for start, size in zip(starts, sizes))
    return None


def _sliced(x: torch.Tensor, index):
    """``x[:, i]``-style indexing (whole slices and integers) as Slice and Squeeze, not Gather."""
    entries = index if isinstance(index, tuple) else (index,)
    whole = slice(None)
    plain = [isinstance(e, int) and not isinstance(e, bool) or isinstance(e, slice) and e == whole for e in entries]
    if not all(plain) or not any(isinstance(e, int) for e in entries) or len(entries) > x.dim():
        return None

    def run() -> torch.Tensor:
        y, dropped = x, []
        for dim, entry in enumerate(entries):
            if isinstance(entry, int):
                y = y.narrow(dim, entry % x.shape[dim], 1)
                dropped.append(dim)
        return y.squeeze(tuple(dropped))
    return run


def lower_for_mobile(model: torch.nn.Module) -> None:
    """Run ``model``'s forward under :class:`MobileOps` from now on (in place; survives
    deepcopy: forward hooks)."""
    model.register_forward_pre_hook(_enter)
    model.register_forward_hook(_leave, always_call=True)


def _enter(module: torch.nn.Module, args) -> None:
    mode = MobileOps()
    mode.__enter__()
    module.__dict__.setdefault("_edgevit_mobile_modes", []).append(mode)


def _leave(module: torch.nn.Module, args, output) -> None:
    module.__dict__["_edgevit_mobile_modes"].pop().__exit__(None, None, None)
