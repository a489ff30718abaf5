"""Parallel convolution branches that fold into one convolution at deploy time.

:class:`MultiBranchConv2d` trains as a sum of parallel ``Conv2d + BatchNorm2d`` branches
that may differ in kernel size and in group count, plus an optional BatchNorm-only
identity branch (RepVGG / MobileOne / FMViT's multi-group re-parameterization). All of
them are linear in the input, so at deploy time their sum is one convolution:

- each BatchNorm folds into its branch's weights (scale) and a bias (shift);
- a smaller kernel is zero-padded to the largest one, centred (odd kernels, each padded
  by ``k // 2``, so every branch sees the same window centre);
- a grouped weight is rewritten for the coarsest grouping all branches share (the gcd
  of the group counts): a branch with ``g`` groups is block-diagonal inside each of the
  ``gcd`` groups. Group counts (1, 2, 4) merge into one dense convolution; depth-wise
  branches stay depth-wise;
- the identity branch is its BatchNorm's scale on the kernel centre of channel ``o``.

The arithmetic runs in float64 and the fused weight is cast once, so folding changes
the output by float32 rounding only.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import nn

from .folds import affine_of, batchnorm_affine
from .report import record


class MultiBranchConv2d(nn.Module):
    """``sum_i BN_i(conv_i(x)) [+ BN_id(x)]``; :meth:`reparameterize` makes it one conv.

    ``kernel_sizes`` and ``groups`` give one branch each (same length). All branches use
    ``stride`` and "same" padding ``k // 2``. ``identity=True`` adds a BatchNorm of the
    input itself (needs ``in_channels == out_channels`` and ``stride == 1``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (3, 1),
                 groups: Sequence[int] = (1, 1), *, stride: int = 1, identity: bool = False) -> None:
        super().__init__()
        if len(kernel_sizes) != len(groups) or not kernel_sizes:
            raise ValueError("give one kernel size and one group count per branch")
        for k, g in zip(kernel_sizes, groups):
            if k % 2 == 0:
                raise ValueError(f"branch kernels must be odd to share a centre, got {k}")
            if in_channels % g or out_channels % g:
                raise ValueError(f"{g} groups do not divide {in_channels} -> {out_channels} channels")
        if identity and (in_channels != out_channels or stride != 1):
            raise ValueError("an identity branch needs in_channels == out_channels and stride 1")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.branches = nn.ModuleList(
            nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=k // 2, groups=g, bias=False),
                bn=nn.BatchNorm2d(out_channels),
            ))
            for k, g in zip(kernel_sizes, groups)
        )
        self.identity = nn.BatchNorm2d(in_channels) if identity else None
        self.fused: Optional[nn.Conv2d] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        out = self.identity(x) if self.identity is not None else None
        for branch in self.branches:
            y = branch(x)
            out = y if out is None else out + y
        return out

    def reparameterize(self) -> None:
        """Replace the branches by the one convolution they sum to (idempotent)."""
        if self.fused is not None:
            return
        convs = [branch.conv for branch in self.branches]
        count = len(convs) + (self.identity is not None)
        kernel = max(conv.kernel_size[0] for conv in convs)
        groups = math.gcd(*(conv.groups for conv in convs))
        weight = torch.zeros(self.out_channels, self.in_channels // groups, kernel, kernel, dtype=torch.float64)
        bias = torch.zeros(self.out_channels, dtype=torch.float64)
        for branch in self.branches:
            branch_weight, branch_bias = _conv_with_affine(branch.conv, branch.bn)
            weight += _regroup(branch_weight, branch.conv.groups, groups, self.in_channels, kernel)
            bias += branch_bias
        if self.identity is not None:
            scale, shift = batchnorm_affine(self.identity)
            per_group = self.in_channels // groups
            channels = torch.arange(self.out_channels)
            weight[channels, channels % per_group, kernel // 2, kernel // 2] += scale
            bias += shift
        reference = convs[0]
        fused = nn.Conv2d(self.in_channels, self.out_channels, kernel, stride=self.stride, padding=kernel // 2,
                          groups=groups, bias=True).to(device=reference.weight.device, dtype=reference.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(weight.to(fused.weight.dtype))
            fused.bias.copy_(bias.to(fused.bias.dtype))
        described = ", ".join(f"{c.kernel_size[0]}x{c.kernel_size[0]}/g{c.groups}" for c in convs)
        if self.identity is not None:
            described += ", identity"
        self.fused = fused
        self.branches = nn.ModuleList()
        self.identity = None
        record("folded", "", f"{count} parallel branches -> one Conv2d "
               f"({described} -> {kernel}x{kernel}/g{groups})")


def _conv_with_affine(conv: nn.Conv2d, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``norm(conv(x))`` as one (weight, bias) in float64. ``norm`` may already have been
    folded into ``conv`` (an ``nn.Identity``: the engine folds each branch's Sequential first)."""
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    affine = affine_of(norm)
    if affine is None:
        return weight, bias
    scale, shift = affine
    return weight * scale.reshape(-1, 1, 1, 1), bias * scale + shift


def _regroup(weight: torch.Tensor, groups: int, target_groups: int, in_channels: int, kernel: int) -> torch.Tensor:
    """A ``groups``-grouped weight (out, in/groups, k, k) as the equivalent weight with
    ``target_groups`` groups (``target_groups`` divides ``groups``), zero-padded to
    ``kernel`` x ``kernel``."""
    out = weight.shape[0]
    k = weight.shape[-1]
    per_group_in = in_channels // groups
    target_in = in_channels // target_groups
    result = torch.zeros(out, target_in, kernel, kernel, dtype=weight.dtype)
    pad = (kernel - k) // 2
    out_group = torch.arange(out) // (out // groups)  # the branch group of each output channel
    target_group = torch.arange(out) // (out // target_groups)
    offsets = out_group * per_group_in - target_group * target_in  # where its inputs start in the target group
    columns = offsets[:, None] + torch.arange(per_group_in)[None, :]  # (out, per_group_in)
    rows = torch.arange(out)[:, None].expand_as(columns)
    result[rows, columns, pad:pad + k, pad:pad + k] = weight
    return result
