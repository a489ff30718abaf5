"""SLAB-Swin: Swin Transformer with simplified linear attention and PRepBN.

Layout and names follow the official SLAB repository (``classification/models/slab_swin.py``,
attention type "LLSS"): stages 1-2 use simplified linear attention over the whole feature
map (its window is the full resolution, so one positional encoding per stage), stages
3-4 use Swin's softmax window attention (window 7, shifted by 3 in every second block,
relative position bias). PRepBN replaces every LayerNorm: patch embedding, blocks,
patch merging and the final norm (LayerNorm eps 1e-5, as Swin's).

The model is built for one input size (positional encodings, windows and masks depend
on it); 224x224 for the registered model.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..reparam.folds import fold_into_next, fold_into_previous
from .slab_layers import Mlp, SimplifiedLinearAttention, init_vit_weights, make_norm
from .slab_layers import remap_checkpoint  # noqa: F401  (the loader looks it up here)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window*window, C)."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // window, window, W // window, window, C)  # (B, h, w, wy, wx, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def window_reverse(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """(B * windows, window*window, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.reshape(-1, H // window, W // window, window, window, C)  # (B, h, w, wy, wx, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(window: int) -> torch.Tensor:
    """Index into the (2w-1)^2 bias table for every pair of positions in a window: (w*w, w*w)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (w*w, w*w, 2)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def shifted_window_mask(H: int, W: int, window: int, shift: int) -> torch.Tensor:
    """Additive mask (windows, w*w, w*w): -100 between tokens from different regions."""
    regions = torch.zeros(1, H, W, 1)
    label = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, hs, ws, :] = label
            label += 1
    ids = window_partition(regions, window).squeeze(-1)  # (windows, w*w)
    mask = ids[:, None, :] - ids[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Swin's window softmax attention with a relative position bias, as matmuls."""

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        Bw, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(Bw, N, 3, h, C // h).permute(2, 0, 3, 1, 4)  # (3, Bw, heads, N, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1))  # (Bw, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(N, N, h).permute(2, 0, 1)[None]  # (1, heads, N, N)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.reshape(Bw // windows, windows, h, N, N) + mask[None, :, None]
            attn = attn.reshape(Bw, h, N, N)
        out = torch.matmul(attn.softmax(dim=-1), v).transpose(1, 2).reshape(Bw, N, C)  # (Bw, N, C)
        return self.proj(out)


class SwinBlock(nn.Module):
    """A Swin block; ``linear=True`` gives SLAB's global simplified linear attention."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int, linear: bool,
                 mlp_ratio: float, norm_layer) -> None:
        super().__init__()
        if resolution <= window:  # one window covers the map: no shifting (as Swin does)
            window, shift = resolution, 0
        if resolution % window:
            raise ValueError(f"feature map {resolution} is not a multiple of the window {window}")
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = norm_layer(dim)
        if linear:
            self.attn = SimplifiedLinearAttention(dim, window * window, num_heads=num_heads)
        else:
            self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        r, w = self.resolution, self.window
        y = self.norm1(x).reshape(B, r, r, C)  # (B, H, W, C)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(y, w)  # (B * windows, w*w, C)
        if isinstance(self.attn, WindowAttention):
            windows = self.attn(windows, self.attn_mask)
        else:
            windows = self.attn(windows)
        y = window_reverse(windows, w, r, r)  # (B, H, W, C)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(B, N, C)
        return x + self.mlp(self.norm2(x))

    def reparameterize(self) -> None:
        """norm1 is per channel, so it commutes with the roll and the window partition
        (no padding: the map is a multiple of the window) and folds into qkv."""
        fold_into_next(self, "norm1", self.attn.qkv, note="through the window partition")
        fold_into_next(self, "norm2", self.mlp.fc1)


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (4C), normalized, reduced to 2C (no bias)."""

    def __init__(self, dim: int, resolution: int, norm_layer) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        r = self.resolution
        x = x.reshape(B, r, r, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = x.reshape(B, (r // 2) * (r // 2), 4 * C)  # (B, N/4, 4C)
        return self.reduction(self.norm(x))

    def reparameterize(self) -> None:
        fold_into_next(self, "norm", self.reduction)


class BasicLayer(nn.Module):
    """One stage: blocks, then patch merging (except in the last stage)."""

    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window: int, linear: bool,
                 mlp_ratio: float, norm_layer, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, linear,
                      mlp_ratio, norm_layer)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, resolution, norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class SwinPatchEmbed(nn.Module):
    """Conv patch embedding followed by a norm over the channels of each token."""

    def __init__(self, patch_size: int, in_chans: int, dim: int, norm_layer) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))  # (B, N, C)

    def reparameterize(self) -> None:
        """RepBN after the conv: ``a*(Wx + c) + b``, alpha's share of the bias included."""
        fold_into_previous(self.proj, self, "norm")


class SlabSwinTransformer(nn.Module):
    """SLAB-Swin ("LLSS"): linear attention in the first ``linear_stages`` stages."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, linear_stages: int = 2,
                 mlp_ratio: float = 4.0, norm: str = "prepbn", prepbn_step: int = 60000) -> None:
        super().__init__()
        self.num_classes = num_classes
        norm_layer = make_norm(norm, ln_eps=1e-5, step=prepbn_step)
        self.patch_embed = SwinPatchEmbed(patch_size, in_chans, embed_dim, norm_layer)
        resolution = img_size // patch_size
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            linear = i < linear_stages
            res = resolution // 2 ** i
            self.layers.append(BasicLayer(
                embed_dim * 2 ** i, res, depth, num_heads[i], res if linear else window_size, linear,
                mlp_ratio, norm_layer, downsample=i < len(depths) - 1,
            ))
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(init_vit_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N, C)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(dim=1))  # (B, classes)

    def reparameterize(self) -> None:
        """The final norm commutes with the mean pooling and folds into the head."""
        fold_into_next(self, "norm", self.head, note="absorbed through the mean pooling")


def build_slab_swin(num_classes: int = 1000, **config) -> SlabSwinTransformer:
    """Builder used by the registry."""
    return SlabSwinTransformer(num_classes=num_classes, **config)
