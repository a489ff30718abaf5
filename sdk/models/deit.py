"""DeiT-style vision transformers: plain DeiT, SLAB-DeiT and the DeiT PRepBN baselines.

Names follow the official SLAB repository (``classification/models/slab_deit.py`` and
``deit.py``, themselves timm's DeiT layout), so its checkpoints load unchanged:

- SLAB-DeiT (``attention="linear"``, ``class_token=False``): simplified linear attention,
  PRepBN everywhere, no class token in the forward (the official model still owns an
  unused ``cls_token`` parameter; it is kept so checkpoints load strictly), mean pooling.
- DeiT-PRepBN (``attention="softmax"``, ``class_token=True``): plain DeiT with PRepBN.
- DeiT (``attention="softmax"``, ``class_token=True``, ``norm="layernorm"``): Touvron et
  al.'s DeiT (timm's ``deit_*_patch16_224`` layout), also the model ED-ViT splits.

Attention heads keep their own ``head_dim``: a pruned model (:mod:`edgevit.edvit`) may
have fewer heads, or fewer embedding channels, than ``embed_dim // num_heads`` implies.

``norm`` picks the normalization: ``"prepbn"`` (training schedule LayerNorm -> RepBN),
``"repbn"`` or ``"layernorm"`` (the unmodified DeiT, used as the LayerNorm baseline).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..reparam.folds import fold_into_next, fold_norm_affine, keep_as_affine, scale_output_channels
from ..reparam.forms import FORMS, convert_children, record_change
from .form_layers import conv1x1
from .slab_layers import (
    Mlp,
    SimplifiedLinearAttention,
    channel_norm,
    init_vit_weights,
    make_norm,
    remap_checkpoint,  # noqa: F401  (the loader looks it up here)
)


class SoftmaxAttention(nn.Module):
    """Multi-head softmax self-attention (DeiT), as matmuls."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.head_dim = head_dim  # independent of dim once heads or channels are pruned
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * head_dim, dim)
        self.form: str | None = None  # None: as trained (edgevit.reparam.forms)
        self.tokens: int | None = None  # the token count, once its model flattens the tokens
        self.channels_io = False  # channels_first inside a channels-first model: (B, C, 1, T) or (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_io:
            return self._forward_channels_first(x)
        if self.form is not None:
            return self._forward_channels_last(x)
        B, N, _ = x.shape
        h, d = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, N)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(B, N, h * d)  # (B, N, heads*d)
        return self.proj(out)

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """One transpose of qkv in, one of the result out; q, k, v by one split; the scale
        lives in the query rows of ``qkv``. ``x``: (B, N, C), or (B*N, C) with ``tokens``."""
        h, d = self.num_heads, self.head_dim
        tokens = self.tokens if x.dim() == 2 else x.shape[1]
        qkv = self.qkv(x).reshape(-1, tokens, 3 * h, d).transpose(1, 2)  # (B, 3*heads, N, d)
        q, k, v = qkv.split(h, dim=1)
        attn = torch.matmul(q, k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, N)
        out = torch.matmul(attn, v).transpose(1, 2)  # (B, N, heads, d)
        return self.proj(out.reshape(*x.shape[:-1], h * d))

    def _forward_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 1, T) or (B, C, H, W) in and out, 1x1-conv projections, each head a (d, T) block: the
        scores as keys x queries (``k^T q``, softmax over the keys), so that ``v`` times them
        is the output block as it lies; the only transposed operand is the left one of
        ``k^T q`` (Core ML's matmul takes it as a flag)."""
        h, d = self.num_heads, self.head_dim
        T = x.shape[-2] * x.shape[-1]
        q, k, v = self.qkv(x).reshape(-1, 3 * h, d, T).split(h, dim=1)  # (B, heads, d, T) each
        attn = torch.matmul(k.transpose(-2, -1), q).softmax(dim=-2)  # (B, heads, T keys, T queries)
        out = torch.matmul(v, attn)  # (B, heads, d, T)
        return self.proj(out.reshape(-1, h * d, *x.shape[2:]))  # as x: (B, C, 1, T) or (B, C, H, W)

    def to_channels_first(self) -> None:
        """Take and return (B, C, H, W) or (B, C, 1, T), projections as 1x1 convs (its model's
        channels_first form)."""
        self.channels_io = True
        self.qkv, self.proj = conv1x1(self.qkv), conv1x1(self.proj)

    def to_form(self, form: str) -> None:
        """Both forms: q, k, v by one split, the scale folded into the query projection;
        tokens in and out until the model makes it channels first (:meth:`to_channels_first`)."""
        if form not in FORMS:
            return
        self.form = form
        scale = torch.ones(self.qkv.out_features, dtype=torch.float64)
        scale[: self.num_heads * self.head_dim] = self.scale
        scale_output_channels(self.qkv, scale)
        record_change("", "SoftmaxAttention: q, k, v by one split, scale folded into the query projection")


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int, mlp_ratio: float, attention: str,
                 norm_layer) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        if attention == "linear":
            self.attn = SimplifiedLinearAttention(dim, num_tokens, num_heads=num_heads)
        elif attention == "softmax":
            self.attn = SoftmaxAttention(dim, num_heads=num_heads)
        else:
            raise ValueError(f"unknown attention {attention!r}: use linear or softmax")
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.channels_first = False  # its model's channels_first form: (B, C, H, W) or (B, C, 1, T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            x = x + self.attn(channel_norm(self.norm1, x))
            return x + self.mlp(channel_norm(self.norm2, x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def to_channels_first(self) -> None:
        """(B, C, H, W) or (B, C, 1, T) in and out: norms over the channel axis, Linears as 1x1 convs."""
        self.channels_first = True
        self.attn.to_channels_first()
        self.mlp.to_channels_first()

    def reparameterize(self) -> None:
        """Each norm's inference affine (a RepBN's, or a LayerNorm's weight and bias) goes
        into the Linear that reads it."""
        fold_into_next(self, "norm1", self.attn.qkv) or fold_norm_affine(self, "norm1", self.attn.qkv)
        fold_into_next(self, "norm2", self.mlp.fc1) or fold_norm_affine(self, "norm2", self.mlp.fc1)


class PatchEmbed(nn.Module):
    """Non-overlapping patches: a strided conv, flattened to tokens (B, N, C)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C)


class VisionTransformer(nn.Module):
    """DeiT with a choice of attention, normalization and pooling (see the module doc)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
                 attention: str = "linear", class_token: bool = False, norm: str = "prepbn",
                 prepbn_step: int = 300000) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.use_class_token = class_token
        self.input_size = (in_chans, img_size, img_size)  # the position table fixes it
        norm_layer = make_norm(norm, ln_eps=1e-6, step=prepbn_step)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        tokens = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # unused when class_token=False
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + int(class_token), embed_dim))
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, tokens, mlp_ratio, attention, norm_layer) for _ in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.flat_tokens = False  # channels_last form: the blocks see (B*N, C)
        self.channels_first = False  # channels_first form: (B, C, H, W) (or (B, C, 1, T)) throughout
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            return self._features_channels_first(x)
        x = self.patch_embed(x)  # (B, N, C)
        if self.use_class_token:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # (B, 1+N, C)
        x = x + self.pos_embed
        if self.flat_tokens:  # Linears and LayerNorms on a 2-D matrix: no reshapes around them
            B, N, C = x.shape
            x = self.blocks(x.reshape(B * N, C)).reshape(B, N, C)
        else:
            x = self.blocks(x)
        x = self.norm(x)
        return x[:, 0] if self.use_class_token else x.mean(dim=1)  # (B, C)

    def _features_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """The channels_first form: the patch embedding's NCHW output as it is, or, with a class
        token, read as (B, C, 1, N) and the token prepended on the last axis; the position
        table in the same layout."""
        x = self.patch_embed.proj(x)  # (B, C, H, W)
        if self.use_class_token:
            B, C = x.shape[:2]
            x = torch.cat((self.cls_token.reshape(1, C, 1, 1).expand(B, -1, -1, -1), x.reshape(B, C, 1, -1)),
                          dim=-1)  # (B, C, 1, 1+N)
        x = channel_norm(self.norm, self.blocks(x + self.pos_embed_channels_first))
        return x[:, :, 0, 0] if self.use_class_token else x.mean(dim=(-2, -1))  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def reparameterize(self) -> None:
        """The last norm is a per-channel affine at the end of the residual stream: it
        commutes with the token pooling (mean or class-token pick) and folds into the head.
        Without a head (a feature extractor) it stays as a multiply-add."""
        if not isinstance(self.head, nn.Linear):
            keep_as_affine(self, "norm", "there is no head to absorb it (the model outputs features)", channel_axis=-1)
            return
        pooling = "class-token selection" if self.use_class_token else "mean pooling"
        fold_into_next(self, "norm", self.head, note=f"absorbed through the {pooling}") \
            or fold_norm_affine(self, "norm", self.head)


    def to_form(self, form: str) -> None:
        """Every attention rewritten (their own ``to_form``); then, when every attention took
        the form, channels_first: (B, C, H, W), with a class token (B, C, 1, T), from the patch
        embedding to the pooling (no transposes between the blocks); channels_last: the tokens
        flattened to one (B*N, C) matrix through the blocks when every norm left works on it
        (LayerNorm, or folded away)."""
        if form not in FORMS:
            return
        convert_children(self, form)
        if form == "channels_first":
            self._to_channels_first()
            return
        norms = [m for block in self.blocks for m in (block.norm1, block.norm2)]
        if all(isinstance(m, (nn.Identity, nn.LayerNorm)) for m in norms) \
                and all(block.attn.form == form for block in self.blocks):  # each one reads (B*N, C)
            self.flat_tokens = True
            tokens = self.pos_embed.shape[1]
            for block in self.blocks:
                block.attn.tokens = tokens
            record_change("", "VisionTransformer: tokens as one (B*N, C) matrix through the blocks")


    def _to_channels_first(self) -> None:
        if not all(block.attn.form == "channels_first" for block in self.blocks):
            return  # an attention without the form (SLAB's with fewer tokens than head channels)
        self.channels_first = True
        for i, block in enumerate(self.blocks):
            block.to_channels_first()
            record_change(f"blocks.{i}", "Block: channels first, norms over the channel axis, Linears as 1x1 convs")
        _, T, C = self.pos_embed.shape  # pos_embed keeps its shape for its readers
        side = math.isqrt(T)
        layout = (1, C, 1, T) if self.use_class_token else (1, C, side, side)
        self.register_buffer("pos_embed_channels_first",
                             self.pos_embed.detach().transpose(1, 2).reshape(layout).contiguous(), persistent=False)
        record_change("", "VisionTransformer: channels first from the patch embedding to the pooling, (B, C, H, W) "
                          "or with a class token (B, C, 1, T)")


def build_deit(num_classes: int = 1000, **config) -> VisionTransformer:
    """Builder used by the registry."""
    return VisionTransformer(num_classes=num_classes, **config)
