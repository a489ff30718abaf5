"""EdgeNeXt (Maaz et al., 2022), written for deployment.

Module and parameter names follow the official repository (mmaaz60/EdgeNeXt), so its
checkpoints load as they are; timm's layout is converted by :mod:`.checkpoints`.
Deploy-friendly forward: static split sizes (no uneven ``torch.split``), the Fourier
positional encoding computed once per input size as a constant, matmuls, no einsum.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..forms import convert_children, record_change
from ..reparam.folds import fold_into_next, fold_into_previous, fold_layer_scale, fold_norm_affine, keep_as_affine
from .form_layers import channel_layer_norm, channel_scaled, conv1x1, conv_nhwc


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
        self.form: str | None = None  # None: as trained (edgevit.forms)

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
        """XCA on tokens (B, N, C) (the ``channels_last`` form): one transpose in, one out;
        the products over the tokens read their operands transposed (MatMul's own
        transpose flags) instead of moving them."""
        B, N, C = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3 * heads, C // heads).transpose(1, 2)  # (B, 3*heads, N, d)
        qk, v = qkv.split([2 * heads, heads], dim=1)
        qk = qk / torch.linalg.vector_norm(qk, dim=-2, keepdim=True).clamp_min(1e-12)  # over the tokens
        q, k = qk.split([heads, heads], dim=1)  # (B, heads, N, d)
        attn = torch.matmul(q.transpose(-2, -1), k) * self.temperature  # (B, heads, d, d)
        out = torch.matmul(v, attn.softmax(dim=-1).transpose(-2, -1))  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))

    def to_channels_first(self) -> None:
        """Projections as 1x1 convolutions, for :meth:`forward_channels_first`."""
        self.qkv, self.proj = conv1x1(self.qkv), conv1x1(self.proj)


def _layer_scaled(gamma: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``gamma * x``; after re-parameterization gamma lives in the previous Linear (None)."""
    return x if gamma is None else gamma * x


class ConvEncoder(nn.Module):
    """Depth-wise kxk conv, LayerNorm, pointwise MLP (4x), layer-scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, expan_ratio: int = 4,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, expan_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(expan_ratio * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.form: str | None = None  # None: as trained (edgevit.forms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_first":  # (B, C, H, W), pointwise layers as 1x1 convs
            y = channel_layer_norm(self.dwconv(x), self.norm.weight, self.norm.bias, self.norm.eps)
            return x + channel_scaled(self.gamma, self.pwconv2(self.act(self.pwconv1(y))))
        if self.form == "channels_last":  # (B, H, W, C); the pointwise layers see 2-D (pixels, C)
            y = conv_nhwc(self.dwconv, x)
            y = self.pwconv2(self.act(self.pwconv1(self.norm(y.reshape(-1, y.shape[-1])))))
            return x + _layer_scaled(self.gamma, y).reshape(x.shape)
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = _layer_scaled(self.gamma, x).permute(0, 3, 1, 2)  # (B, C, H, W)
        return shortcut + x

    def reparameterize(self) -> None:
        """Layer-scale into pwconv2, the LayerNorm's affine into pwconv1 (its
        normalization is data-dependent and stays)."""
        fold_layer_scale(self.pwconv2, self, "gamma")
        fold_norm_affine(self, "norm", self.pwconv1)

    def to_form(self, form: str) -> None:
        self.form = form
        if form == "channels_first":
            self.pwconv1, self.pwconv2 = conv1x1(self.pwconv1), conv1x1(self.pwconv2)
        record_change("", f"ConvEncoder: {_FORM_CHANGES[form]}")


def split_sizes(dim: int, scales: int) -> list[int]:
    """Channel group sizes of SDTA's Res2Net-style split (static, the last group smaller)."""
    width = max(int(math.ceil(dim / scales)), int(math.floor(dim // scales)))
    sizes, remaining = [], dim
    while remaining > 0:
        sizes.append(min(width, remaining))
        remaining -= width
    return sizes


class SDTAEncoder(nn.Module):
    """Split depth-wise transposed attention: multi-scale dw convs, XCA, MLP."""

    def __init__(self, dim: int, expan_ratio: int = 4, use_pos_emb: bool = True,
                 num_heads: int = 8, qkv_bias: bool = True, scales: int = 1,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.sizes = split_sizes(dim, scales)
        self.nums = 1 if scales == 1 else scales - 1
        width = self.sizes[0]
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, padding=1, groups=width) for _ in range(self.nums)
        )
        self.pos_embd = PositionalEncodingFourier(dim=dim) if use_pos_emb else None
        self.norm_xca = nn.LayerNorm(dim, eps=1e-6)
        self.gamma_xca = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.xca = XCA(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, expan_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(expan_ratio * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.form: str | None = None  # None: as trained (edgevit.forms)

    def _multi_scale(self, x: torch.Tensor, one_split: bool = False) -> torch.Tensor:
        """Res2Net-style dw convs over channel groups (NCHW), sliced with static bounds (no
        uneven ``torch.split``) or, with ``one_split``, taken apart by one split op."""
        if one_split:
            groups = x.split(self.sizes, dim=1)
        else:
            bounds = [0]
            for size in self.sizes:
                bounds.append(bounds[-1] + size)
            groups = [x[:, bounds[i]:bounds[i + 1]] for i in range(len(self.sizes))]
        outs = []
        sp = groups[0]
        for i, conv in enumerate(self.convs):
            sp = groups[0] if i == 0 else sp + groups[i]
            sp = conv(sp)
            outs.append(sp)
        outs.extend(groups[self.nums:])
        return torch.cat(outs, dim=1)

    def _forward_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        _, _, H, W = x.shape
        shortcut = x
        x = self._multi_scale(x, one_split=True)
        if self.pos_embd is not None:
            x = x + self.pos_embd(H, W)
        attended = self.xca.forward_channels_first(channel_layer_norm(x, self.norm_xca.weight, self.norm_xca.bias,
                                                                      self.norm_xca.eps))
        x = x + channel_scaled(self.gamma_xca, attended)
        y = channel_layer_norm(x, self.norm.weight, self.norm.bias, self.norm.eps)
        return shortcut + channel_scaled(self.gamma, self.pwconv2(self.act(self.pwconv1(y))))

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        shortcut = x
        x = conv_nhwc(self._multi_scale, x)  # one transpose in, one out
        if self.pos_embd is not None:
            x = x + self.pos_embd(H, W).permute(0, 2, 3, 1)  # a constant once traced
        tokens = x.reshape(B, H * W, C)
        tokens = tokens + _layer_scaled(self.gamma_xca, self.xca.forward_channels_last(self.norm_xca(tokens)))
        y = self.pwconv2(self.act(self.pwconv1(self.norm(tokens.reshape(B * H * W, C)))))
        return shortcut + _layer_scaled(self.gamma, y).reshape(B, H, W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_first":
            return self._forward_channels_first(x)
        if self.form == "channels_last":
            return self._forward_channels_last(x)
        shortcut = x
        B, C, H, W = x.shape
        x = self._multi_scale(x)
        x = x.reshape(B, C, H * W).permute(0, 2, 1)  # (B, N, C)
        if self.pos_embd is not None:
            pos = self.pos_embd(H, W).reshape(1, C, H * W).permute(0, 2, 1)  # (1, N, C)
            x = x + pos
        x = x + _layer_scaled(self.gamma_xca, self.xca(self.norm_xca(x)))
        x = x.reshape(B, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = _layer_scaled(self.gamma, x).permute(0, 3, 1, 2)  # (B, C, H, W)
        return shortcut + x

    def reparameterize(self) -> None:
        """Layer-scales into pwconv2 and the XCA projection, the LayerNorms' affines into
        pwconv1 and the qkv projection."""
        fold_layer_scale(self.pwconv2, self, "gamma")
        fold_layer_scale(self.xca.proj, self, "gamma_xca")
        fold_norm_affine(self, "norm", self.pwconv1)
        fold_norm_affine(self, "norm_xca", self.xca.qkv)

    def to_form(self, form: str) -> None:
        self.form = form
        if form == "channels_first":
            self.pwconv1, self.pwconv2 = conv1x1(self.pwconv1), conv1x1(self.pwconv2)
            self.xca.to_channels_first()
        record_change("", f"SDTAEncoder: {_FORM_CHANGES[form]}")


class ConvEncoderBNHS(nn.Module):
    """Deployment variant of :class:`ConvEncoder`: BatchNorm instead of LN, Hardswish."""

    def __init__(self, dim: int, kernel_size: int = 7, expan_ratio: int = 4,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, expan_ratio * dim)
        self.act = nn.Hardswish()
        self.pwconv2 = nn.Linear(expan_ratio * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        x = _layer_scaled(self.gamma, x).permute(0, 3, 1, 2)  # (B, C, H, W)
        return shortcut + x

    def reparameterize(self) -> None:
        """BatchNorm into the depth-wise conv before it, layer-scale into pwconv2."""
        fold_into_previous(self.dwconv, self, "norm")
        fold_layer_scale(self.pwconv2, self, "gamma")


class SDTAEncoderBNHS(SDTAEncoder):
    """Deployment variant of :class:`SDTAEncoder`: BatchNorm instead of LN, Hardswish.

    As in the official code, ``norm_xca`` normalizes the residual stream itself (the XCA
    branch adds onto the normalized tensor), so it cannot be folded into a neighbour.
    """

    def __init__(self, dim: int, expan_ratio: int = 4, use_pos_emb: bool = True,
                 num_heads: int = 8, qkv_bias: bool = True, scales: int = 1,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__(dim, expan_ratio, use_pos_emb, num_heads, qkv_bias, scales, layer_scale_init_value)
        self.norm_xca = nn.BatchNorm2d(dim)
        self.norm = nn.BatchNorm2d(dim)
        self.act = nn.Hardswish()

    to_form = None  # no target forms for the BatchNorm + Hardswish variant (edgevit.forms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        B, C, H, W = x.shape
        x = self.norm_xca(self._multi_scale(x))
        x = x.reshape(B, C, H * W).permute(0, 2, 1)  # (B, N, C)
        if self.pos_embd is not None:
            pos = self.pos_embd(H, W).reshape(1, C, H * W).permute(0, 2, 1)  # (1, N, C)
            x = x + pos
        x = x + _layer_scaled(self.gamma_xca, self.xca(x))
        x = self.norm(x.permute(0, 2, 1).reshape(B, C, H, W)).permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        x = _layer_scaled(self.gamma, x).permute(0, 3, 1, 2)  # (B, C, H, W)
        return shortcut + x

    def reparameterize(self) -> None:
        """``norm`` reads only into pwconv1 and folds there. ``norm_xca`` cannot fold:
        its output is the residual stream itself (XCA's branch is added onto it), its
        input channels come partly straight from the block input (the split's last
        group passes through untouched) and partly from chained dw convs whose outputs
        also feed the next conv, so no layer on either side sees only its output.
        It stays as a per-channel multiply-add."""
        fold_into_next(self, "norm", self.pwconv1)
        keep_as_affine(self, "norm_xca", "it normalizes the SDTA residual stream (the XCA branch adds "
                       "onto its output and part of its input is the block input itself)", channel_axis=1)
        fold_layer_scale(self.pwconv2, self, "gamma")
        fold_layer_scale(self.xca.proj, self, "gamma_xca")


class EdgeNeXt(nn.Module):
    """EdgeNeXt classifier: 4 stages of conv encoders, SDTA blocks at the end of stages 2-4.

    ``bn_hs=True`` builds the official BatchNorm + Hardswish deployment variant: BN in the
    stem, downsamples and blocks, and a BN before (not after) the global pooling.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (24, 48, 88, 168),
                 global_block: Sequence[int] = (0, 1, 1, 1), kernel_sizes: Sequence[int] = (3, 5, 7, 9),
                 heads: Sequence[int] = (8, 8, 8, 8), d2_scales: Sequence[int] = (2, 2, 3, 4),
                 use_pos_embd_xca: Sequence[bool] = (False, True, False, False),
                 expan_ratio: int = 4, layer_scale_init_value: float = 1e-6,
                 bn_hs: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bn_hs = bn_hs
        norm2d = nn.BatchNorm2d if bn_hs else LayerNorm2d
        conv_block = ConvEncoderBNHS if bn_hs else ConvEncoder
        sdta_block = SDTAEncoderBNHS if bn_hs else SDTAEncoder
        conv_bias = not bn_hs
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4, bias=conv_bias), norm2d(dims[0])
        ))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                norm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2, bias=conv_bias)
            ))
        self.stages = nn.ModuleList()
        for i in range(4):
            blocks: list[nn.Module] = []
            for j in range(depths[i]):
                if j > depths[i] - global_block[i] - 1:
                    blocks.append(sdta_block(dims[i], expan_ratio=expan_ratio, scales=d2_scales[i],
                                              use_pos_emb=use_pos_embd_xca[i], num_heads=heads[i],
                                              layer_scale_init_value=layer_scale_init_value))
                else:
                    blocks.append(conv_block(dims[i], kernel_size=kernel_sizes[i], expan_ratio=expan_ratio,
                                              layer_scale_init_value=layer_scale_init_value))
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.BatchNorm2d(dims[-1]) if bn_hs else nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(init_conv_linear_weights)

        self.form: str | None = None  # None: as trained (edgevit.forms)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_last":  # the stem's output and everything after it is NHWC
            stem_conv, stem_norm = self.downsample_layers[0]
            x = self.stages[0](stem_norm(stem_conv(x).permute(0, 2, 3, 1)))
            for (norm, conv), stage in zip(self.downsample_layers[1:], self.stages[1:]):
                x = stage(conv_nhwc(conv, norm(x)))
            return self.norm(x.mean(dim=(1, 2)))  # (B, C)
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        if self.bn_hs:
            return self.norm(x).mean(dim=(-2, -1))  # (B, C)
        return self.norm(x.mean(dim=(-2, -1)))  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def reparameterize(self) -> None:
        """bn_hs: the BatchNorm before the global pooling commutes with the mean and folds
        into the head. The LayerNorm variant keeps its normalizations and folds the last
        one's affine into the head (the downsampling ones fold into their strided convs as
        any norm before a layer in an nn.Sequential; the stem's feeds the residual stream)."""
        if self.bn_hs:
            fold_into_next(self, "norm", self.head, note="absorbed through the mean pooling")
            return
        fold_norm_affine(self, "norm", self.head)

    def to_form(self, form: str) -> None:
        """Both forms for the LayerNorm variant (none for bn_hs): every block, norm and
        the pooling take the form's layout."""
        if self.bn_hs:
            return
        self.form = form
        convert_children(self, form)
        record_change("", f"EdgeNeXt: {_FORM_CHANGES[form]}")


_FORM_CHANGES = {
    "channels_first": "NCHW end to end, Linears as 1x1 convs, LayerNorm over axis 1",
    "channels_last": "NHWC end to end, dw convs the only NCHW ops",
}


def init_conv_linear_weights(m: nn.Module) -> None:
    """Truncated normal (std .02) Conv2d/Linear weights, zero biases (EdgeNeXt's init)."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_edgenext(num_classes: int = 1000, **config) -> EdgeNeXt:
    """Builder used by the registry."""
    return EdgeNeXt(num_classes=num_classes, **config)


# timm renames (official -> timm) in the order timm applies them; inverted below.
_TIMM_TO_OFFICIAL = (
    (re.compile(r"^stem\."), "downsample_layers.0."),
    (re.compile(r"^stages\.(\d+)\.downsample\.(\d+)"), r"downsample_layers.\1.\2"),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)"), r"stages.\1.\2"),
    (re.compile(r"\.conv_dw\."), ".dwconv."),
    (re.compile(r"\.mlp\.fc(\d)\."), r".pwconv\1."),
    (re.compile(r"^head\.fc\."), "head."),
    (re.compile(r"^head\.norm\."), "norm."),
)


def detect_checkpoint_layout(state_dict: dict[str, object]) -> str:
    """``"timm"`` or ``"official"`` (edgevit's own names are the official ones)."""
    if any(k.startswith(("stem.", "head.fc.")) or ".blocks." in k for k in state_dict):
        return "timm"
    return "official"


def remap_checkpoint(state_dict: dict[str, object], layout: str) -> tuple[dict[str, object], str]:
    """Rename a checkpoint's keys into edgevit's layout; returns (state_dict, layout used)."""
    if layout == "auto":
        layout = detect_checkpoint_layout(state_dict)
    if layout in ("official", "edgevit"):
        return dict(state_dict), layout
    if layout != "timm":
        raise ValueError(f"unknown checkpoint layout {layout!r}: use auto, official, timm or edgevit")
    renamed = {}
    for key, value in state_dict.items():
        for pattern, repl in _TIMM_TO_OFFICIAL:
            key = pattern.sub(repl, key)
        renamed[key] = value
    return renamed, layout
