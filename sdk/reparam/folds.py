"""Exact folds of per-channel affines into Conv and Linear layers.

Every training-time structure that edgevit removes at deploy time reduces to one idea: a
per-channel affine ``y = scale * x + shift`` (BatchNorm in eval mode, RepBN, layer-scale,
the affine left of a norm) sits next to a Conv or Linear layer and can be multiplied
into its weights. The arithmetic runs in float64 and is cast back once, so a fold changes
the result by float32 rounding only.

Two directions:

- :func:`fold_into_previous` — ``affine(layer(x))``: scale the layer's output rows.
- :func:`fold_into_next` — ``layer(affine(x))``: scale the layer's input columns and move
  the shift into its bias. Exact for a Conv only when its padding cannot mix the shift
  in (no zero padding, or padding that copies input values, or a zero shift).

Parents name the child to remove by attribute (``fold_into_next(self, "norm1",
self.attn.qkv)``); the child is replaced by ``nn.Identity`` and the fold is recorded in
the active :class:`~edgevit.reparam.report.FoldReport`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .report import record

Affine = tuple[torch.Tensor, torch.Tensor]  # (scale, shift), float64, one value per channel

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
FOLDABLE_LAYERS = (nn.Linear, *_CONVS)  # what an affine can be folded into


class ChannelAffine(nn.Module):
    """``x * scale + shift`` along one channel axis: what a BatchNorm is at inference.

    Kept in a deployed graph only where no neighbouring layer can absorb it; exports as a
    Mul and an Add.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, channel_axis: int = 1) -> None:
        super().__init__()
        self.channel_axis = channel_axis
        self.register_buffer("scale", scale.detach().to(torch.float32).clone())
        self.register_buffer("shift", shift.detach().to(torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.scale.numel()}, channel_axis={self.channel_axis}"


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> Affine:
    """The eval-mode BatchNorm as (scale, shift): gamma/sqrt(var+eps), beta - mean*scale."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics normalizes per batch and cannot fold")
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    inv_std = torch.rsqrt(var + bn.eps)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma * inv_std
    return scale, beta - mean * scale


def affine_of(module: nn.Module) -> Optional[Affine]:
    """(scale, shift) of a module that is a per-channel affine at inference, else None.

    A module can take part by defining ``inference_affine() -> (scale, shift)``
    (RepBN and PRepBN do); BatchNorm and :class:`ChannelAffine` are known here.
    """
    if hasattr(module, "inference_affine"):
        return module.inference_affine()
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
        return batchnorm_affine(module)
    if isinstance(module, ChannelAffine):
        return module.scale.double(), module.shift.double()
    return None


def _layer_kind(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return "linear"
    if isinstance(layer, _CONVS):
        return "conv"
    raise TypeError(f"can only fold into Conv or Linear layers, not {type(layer).__name__}")


def _channel_axis(layer: nn.Module) -> int:
    """The axis of a layer's input and output that holds its channels."""
    return -1 if _layer_kind(layer) == "linear" else 1


def _ensure_bias(layer: nn.Module) -> torch.Tensor:
    """The layer's bias as float64, creating a zero bias parameter if it has none."""
    if layer.bias is None:
        out = layer.weight.shape[0]
        layer.bias = nn.Parameter(torch.zeros(out, dtype=layer.weight.dtype, device=layer.weight.device))
    return layer.bias.detach().double()


def _assign(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.dtype))
        layer.bias.copy_(bias.to(layer.bias.dtype))


def check_output_fold(layer: nn.Module, scale: torch.Tensor, shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Raise ValueError if ``scale * layer(x) + shift`` cannot fold into ``layer``; returns
    the scale expanded to one value per output channel. Changes nothing."""
    _layer_kind(layer)
    out = layer.weight.shape[0]
    if scale.numel() == 1:
        scale = scale.reshape(1).expand(out)
    if scale.numel() != out or (shift is not None and shift.numel() != out):
        raise ValueError(f"affine of {scale.numel()} channels does not match {out} output channels")
    return scale


def scale_output_channels(layer: nn.Module, scale: torch.Tensor, shift: Optional[torch.Tensor] = None) -> None:
    """Make ``layer(x)`` compute ``scale * layer(x) + shift`` (per output channel), exactly."""
    scale = check_output_fold(layer, scale, shift)
    bias = _ensure_bias(layer)
    weight = layer.weight.detach().double()
    view = (-1,) + (1,) * (weight.dim() - 1)
    new_bias = bias * scale + (shift if shift is not None else 0.0)
    _assign(layer, weight * scale.reshape(view), new_bias)


def _padding_mixes_shift(layer: nn.Module, shift: torch.Tensor) -> bool:
    """True when a Conv's zero padding would see the shift the unfolded graph never adds."""
    if not isinstance(layer, _CONVS) or not torch.any(shift != 0):
        return False
    if layer.padding_mode != "zeros":  # reflect/replicate/circular pad with copies of input values
        return False
    padding = layer.padding
    return padding == "same" or (padding != "valid" and any(p != 0 for p in padding))


def check_input_fold(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Raise ValueError if ``layer(scale * x + shift)`` cannot fold into ``layer``; returns
    the scale expanded to one value per input channel. Changes nothing."""
    kind = _layer_kind(layer)
    in_channels = layer.in_features if kind == "linear" else layer.in_channels
    if scale.numel() == 1:
        scale = scale.reshape(1).expand(in_channels)
    if scale.numel() != in_channels or shift.numel() != in_channels:
        raise ValueError(f"affine of {scale.numel()} channels does not match {in_channels} input channels")
    if _padding_mixes_shift(layer, shift):
        raise ValueError("its zero padding would mix the affine shift into the border outputs")
    return scale


def fold_affine_into_inputs(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make ``layer(x)`` compute ``layer(scale * x + shift)`` (per input channel), exactly.

    Raises ValueError where that is impossible (a Conv whose zero padding would mix the
    shift in, or a channel count that does not match).
    """
    scale = check_input_fold(layer, scale, shift)
    kind = _layer_kind(layer)
    weight = layer.weight.detach().double()
    in_channels = scale.numel()
    bias = _ensure_bias(layer)
    if kind == "linear":
        new_weight = weight * scale[None, :]
        new_bias = bias + weight @ shift
    else:
        groups = layer.groups
        per_group = in_channels // groups
        out = weight.shape[0]
        # input channel used by weight[o, j]: (o // (out // groups)) * per_group + j
        group_of_out = torch.arange(out) // (out // groups)
        index = group_of_out[:, None] * per_group + torch.arange(per_group)[None, :]  # (out, per_group)
        view = index.shape + (1,) * (weight.dim() - 2)
        new_weight = weight * scale[index].reshape(view)
        new_bias = bias + (weight * shift[index].reshape(view)).flatten(1).sum(1)
    _assign(layer, new_weight, new_bias)


def _child(parent: nn.Module, name: str) -> nn.Module:
    module = getattr(parent, name)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} is not a module")
    return module


def _fold_child(parent: nn.Module, name: str, layers: Sequence[nn.Module], side: str, apply, check,
                note: str) -> bool:
    """Fold the affine child ``parent.<name>`` into every one of ``layers`` with
    ``apply(layer, scale, shift)``, or into none of them.

    ``check(layer, scale, shift)`` raises ValueError for a layer that cannot take the fold;
    every layer is checked before any changes. Replaces the child by ``nn.Identity`` and
    records the fold; returns False (recording why, if it is an affine) when the child is
    not an affine or a layer refuses.
    """
    child = _child(parent, name)
    affine = affine_of(child)
    if affine is None:
        return False
    kind = type(child).__name__
    target = " and ".join(type(layer).__name__ for layer in layers)
    for layer in layers:
        if isinstance(child, ChannelAffine) and child.channel_axis != _channel_axis(layer):
            record("kept", name, f"{kind} on axis {child.channel_axis} is not along the channels of the {side} "
                   f"{type(layer).__name__} (axis {_channel_axis(layer)})")
            return False
    try:
        for layer in layers:
            check(layer, *affine)
    except ValueError as exc:
        record("kept", name, f"{kind} not folded into the {side} {target}: {exc}")
        return False
    for layer in layers:
        apply(layer, *affine)
    setattr(parent, name, nn.Identity())
    record("folded", name, f"{kind} -> {side} {target}" + (f" ({note})" if note else ""))
    return True


def fold_into_next(parent: nn.Module, name: str, layer: nn.Module | Sequence[nn.Module], *,
                   note: str = "") -> bool:
    """Fold the affine child ``parent.<name>`` into ``layer``, which consumes its output.

    ``layer`` may be several layers that all read the affine's output (a query projection
    and a key/value path): the affine folds into each of them, or into none.
    """
    layers = [layer] if isinstance(layer, nn.Module) else list(layer)
    return _fold_child(parent, name, layers, "next", fold_affine_into_inputs, check_input_fold, note)


def fold_into_previous(layer: nn.Module, parent: nn.Module, name: str, *, note: str = "") -> bool:
    """Fold the affine child ``parent.<name>``, applied to ``layer``'s output, into ``layer``."""
    return _fold_child(parent, name, [layer], "previous", scale_output_channels, check_output_fold, note)


def fold_layer_scale(layer: nn.Module, parent: nn.Module, name: str) -> bool:
    """Fold a layer-scale parameter ``parent.<name>`` (gamma * layer(x)) into ``layer``.

    The parameter becomes None; the parent's forward must skip a None layer-scale.
    """
    gamma = getattr(parent, name)
    if gamma is None:
        return False
    scale_output_channels(layer, gamma.detach().double().reshape(-1))
    setattr(parent, name, None)  # stays a registered (empty) parameter slot
    record("folded", name, f"layer-scale -> previous {type(layer).__name__}")
    return True


def keep_as_affine(parent: nn.Module, name: str, reason: str, channel_axis: int = 1) -> bool:
    """Replace an affine child that cannot fold by a :class:`ChannelAffine` (a Mul and an Add)."""
    child = _child(parent, name)
    affine = affine_of(child)
    if affine is None or isinstance(child, ChannelAffine):
        return False
    setattr(parent, name, ChannelAffine(*affine, channel_axis=channel_axis))
    record("kept", name, f"{type(child).__name__} kept as a multiply-add: {reason}")
    return True


def norm_affine(norm: nn.Module) -> Optional[Affine]:
    """(weight, bias) of a layer norm over one channel axis, float64; None when it has none.

    ``nn.LayerNorm`` over one axis qualifies, and any module that declares it normalizes
    then applies ``weight``/``bias`` per channel (``normalizes_then_scales = True``)."""
    one_axis = isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1
    if not (one_axis or getattr(norm, "normalizes_then_scales", False)) or norm.weight is None:
        return None
    bias = norm.bias.detach().double() if norm.bias is not None else torch.zeros_like(norm.weight, dtype=torch.float64)
    return norm.weight.detach().double(), bias


def fold_norm_affine(parent: nn.Module, name: str, layer: nn.Module) -> bool:
    """Fold the affine of the layer norm ``parent.<name>`` into ``layer``, which alone reads
    its output: ``layer(w * n + b)`` with ``n`` the normalized input. The normalization
    stays (its statistics come from each input); its weight and bias become None."""
    norm = _child(parent, name)
    affine = norm_affine(norm)
    if affine is None:
        return False
    kind, target = type(norm).__name__, type(layer).__name__
    try:
        check_input_fold(layer, *affine)
    except ValueError as exc:
        record("kept", name, f"{kind} affine not folded into the next {target}: {exc}")
        return False
    fold_affine_into_inputs(layer, *affine)
    norm.weight = None
    norm.bias = None
    record("folded", name, f"{kind} affine -> next {target} (normalization kept)")
    return True
