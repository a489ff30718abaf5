"""Building blocks of the target forms (:mod:`edgevit.reparam.forms`) that models share."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def channel_layer_norm(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                       eps: float) -> torch.Tensor:
    """LayerNorm over axis 1 of (B, C, ...), written as the pattern Core ML fuses into one
    ``layer_norm`` op (mean, centre, mean of squares, rsqrt; no transposes)."""
    centered = x - x.mean(dim=1, keepdim=True)
    y = centered * torch.rsqrt((centered * centered).mean(dim=1, keepdim=True) + eps)
    view = (1, -1) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(view)
    if bias is not None:
        y = y + bias.reshape(view)
    return y


def channel_scaled(gamma: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``gamma * x`` along axis 1 of (B, C, H, W); None (folded away) leaves ``x``."""
    return x if gamma is None else gamma.reshape(1, -1, 1, 1) * x


def conv1x1(linear: nn.Linear) -> nn.Conv2d:
    """The 1x1 convolution that computes ``linear`` on every pixel of an NCHW tensor."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(*linear.weight.shape, 1, 1))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def conv_nhwc(conv, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (an NCHW layer, or a function of NCHW tensors) on an NHWC tensor; converters
    cancel the transposes against the ones they put around their own NHWC convolutions."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
