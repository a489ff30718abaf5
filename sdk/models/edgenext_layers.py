"""The layers EdgeNeXt's blocks are made of: the channel-axis LayerNorm, the Fourier
positional encoding (a constant per input size) and cross-covariance attention (XCA), each
in its trained form and its target forms (:mod:`edgevit.reparam.forms`), and the BN-HS
variant's BatchNorms on channels-last tensors.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..reparam.folds import ChannelAffine
from ..reparam.forms import record_change
from .form_layers import channel_layer_norm, conv1x1


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (official "channels_first").

    In the ``channels_last`` form it takes NHWC; in ``channels_first`` it normalizes
    axis 1 in place of the two transposes around a last-axis LayerNorm.
    """

    normalizes_then_scales = True  # its affine can fold into the next layer

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.form: str | None = None  # None: as trained (edgevit.reparam.forms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_first":
            return channel_layer_norm(x, self.weight, self.bias, self.eps)
        if self.form == "channels_last":  # (B, H, W, C)
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)

    def to_form(self, form: str) -> None:
        self.form = form
        record_change("", f"LayerNorm2d: {'axis 1, no transposes' if form == 'channels_first' else 'NHWC in and out'}")


def norm_last(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A BatchNorm (or kept per-channel affine) of NCHW tensors on ``x`` with its channels
    on the last axis (the BN-HS variant's ``channels_last`` form): no op at all once folded
    away (Identity); any other module (one that took the form itself) is called as it is."""
    if isinstance(norm, nn.Identity):
        return x
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):  # on (pixels, C) the channels are axis 1 again
        rows = F.batch_norm(x.reshape(-1, x.shape[-1]), norm.running_mean, norm.running_var, norm.weight,
                            norm.bias, False, 0.0, norm.eps)
        return rows.reshape(x.shape)
    if isinstance(norm, ChannelAffine) and norm.channel_axis == 1:
        return norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
    return norm(x)


@functools.lru_cache(maxsize=16)
def fourier_grid(height: int, width: int, hidden_dim: int = 32,
                 temperature: float = 10000.0) -> np.ndarray:
    """The weight-free part of EdgeNeXt's Fourier positional encoding: (1, 2*hidden, H, W).

    Computed in numpy (float32, as the official code does in torch) so that tracing for
    export records it as a constant instead of a chain of Sin/Cos/CumSum ops.
    """
    f32 = np.float32
    eps, scale = f32(1e-6), f32(2 * math.pi)
    y = np.arange(1, height + 1, dtype=f32)[:, None].repeat(width, axis=1)
    x = np.arange(1, width + 1, dtype=f32)[None, :].repeat(height, axis=0)
    y = y / (f32(height) + eps) * scale
    x = x / (f32(width) + eps) * scale
    dim_t = np.arange(hidden_dim, dtype=f32)
    dim_t = f32(temperature) ** (2 * (dim_t // 2) / f32(hidden_dim))
    pos_x = x[:, :, None] / dim_t  # (H, W, hidden)
    pos_y = y[:, :, None] / dim_t
    pos_x = np.stack((np.sin(pos_x[:, :, 0::2]), np.cos(pos_x[:, :, 1::2])), axis=3).reshape(height, width, -1)
    pos_y = np.stack((np.sin(pos_y[:, :, 0::2]), np.cos(pos_y[:, :, 1::2])), axis=3).reshape(height, width, -1)
    grid = np.concatenate((pos_y, pos_x), axis=2).transpose(2, 0, 1)  # (2*hidden, H, W)
    return np.ascontiguousarray(grid[None], dtype=f32)


class PositionalEncodingFourier(nn.Module):
    """Fourier features of the pixel grid, projected by a 1x1 conv.

    The grid depends only on (H, W): it is computed once per size (numpy, cached) and is a
    constant in an exported graph, where the projection folds into it.
    """

    def __init__(self, hidden_dim: int = 32, dim: int = 768, temperature: float = 10000.0) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.hidden_dim = hidden_dim
        self.temperature = temperature

    def forward(self, height: int, width: int) -> torch.Tensor:
        grid = torch.from_numpy(fourier_grid(height, width, self.hidden_dim, self.temperature))
        grid = grid.to(self.token_projection.weight)
        return self.token_projection(grid)  # (1, dim, H, W)


def cross_covariance_attention(qkv: torch.Tensor, temperature: torch.Tensor, heads: int) -> torch.Tensor:
    """XCA between the qkv and output projections: (B, N, 3C) -> (B, N, C).

    Per head: softmax over d x d of ``temperature * normalize(q) normalize(k)^T`` (q and k
    L2-normalized over the tokens), applied to v. ``temperature`` holds one value per head.
    The reference that :mod:`edgevit.native`'s fused kernel is checked against.
    """
    B, N, C3 = qkv.shape
    C = C3 // 3
    qkv = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 4, 1)  # (3, B, heads, d, N)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    attn = torch.matmul(q, k.transpose(-2, -1)) * temperature.reshape(heads, 1, 1)  # (B, heads, d, d)
    attn = attn.softmax(dim=-1)
    out = torch.matmul(attn, v)  # (B, heads, d, N)
    return out.permute(0, 3, 1, 2).reshape(B, N, C)  # (B, N, C)


class XCA(nn.Module):
    """Cross-covariance attention: attention over channels (d x d), not tokens."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """The attention between the projections (PyTorch ops; see edgevit.use_native)."""
        return cross_covariance_attention(qkv, self.temperature, self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x)))

    def forward_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """XCA on (B, C, H, W) with 1x1-conv projections (the ``channels_first`` form): the
        tokens are already the last axis of each head's (d, N) block, so no transposes."""
        B, C, H, W = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(B, 3, heads, C // heads, H * W)
        qk, v = qkv.split([2, 1], dim=1)  # q and k are L2-normalized over the tokens together
        qk = qk / torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(1e-12)
        q, k = qk.split([1, 1], dim=1)  # (B, 1, heads, d, N)
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.temperature  # (B, 1, heads, d, d)
        out = torch.matmul(attn.softmax(dim=-1), v)  # (B, 1, heads, d, N)
        return self.proj(out.reshape(B, C, H, W))

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """XCA on tokens (B, N, C) (the ``channels_last`` form)."""
        return self.proj(self.attend_channels_last(self.qkv(x)))

    def attend_channels_last(self, qkv: torch.Tensor) -> torch.Tensor:
        """The attention of the ``channels_last`` form, (B, N, 3C) -> (B, N, C): one transpose
        in, one out; the products over the tokens read their operands transposed (MatMul's
        own transpose flags) instead of moving them."""
        B, N, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        heads = self.num_heads
        qkv = qkv.reshape(B, N, 3 * heads, C // heads).transpose(1, 2)  # (B, 3*heads, N, d)
        qk, v = qkv.split([2 * heads, heads], dim=1)
        qk = qk / torch.linalg.vector_norm(qk, dim=-2, keepdim=True).clamp_min(1e-12)  # over the tokens
        q, k = qk.split([heads, heads], dim=1)  # (B, heads, N, d)
        attn = torch.matmul(q.transpose(-2, -1), k) * self.temperature  # (B, heads, d, d)
        out = torch.matmul(v, attn.softmax(dim=-1).transpose(-2, -1))  # (B, heads, N, d)
        return out.transpose(1, 2).reshape(B, N, C)

    def to_channels_first(self) -> None:
        """Projections as 1x1 convolutions, for :meth:`forward_channels_first`."""
        self.qkv, self.proj = conv1x1(self.qkv), conv1x1(self.proj)
