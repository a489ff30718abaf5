"""EdgeNeXt (Maaz et al., 2022), written for deployment.

Module and parameter names follow the official repository (mmaaz60/EdgeNeXt), so its
checkpoints load as they are; timm's layout is converted by
:func:`.edgenext_checkpoint.remap_checkpoint`.
The blocks (conv encoder, SDTA, their BN + Hardswish variants) and the network are here;
the layers they are made of (norm, positional encoding, XCA) in :mod:`.edgenext_layers`.
Deploy-friendly forward: static split sizes (no uneven ``torch.split``), the Fourier
positional encoding computed once per input size as a constant, matmuls, no einsum.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..reparam.folds import fold_into_next, fold_into_previous, fold_layer_scale, fold_norm_affine, keep_as_affine
from ..reparam.forms import convert_children, record_change
from .edgenext_checkpoint import remap_checkpoint  # noqa: F401  (the loader looks it up here)
from .edgenext_layers import XCA, LayerNorm2d, PositionalEncodingFourier, norm_last
from .form_layers import channel_layer_norm, channel_scaled, conv1x1, conv_nhwc


_FORM_CHANGES = {
    "channels_first": "NCHW end to end, Linears as 1x1 convs, LayerNorm over axis 1",
    "channels_last": "NHWC end to end, dw convs the only NCHW ops",
}
_BNHS_FORM_CHANGES = {**_FORM_CHANGES, "channels_first": "NCHW end to end, Linears as 1x1 convs"}


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
        self.form: str | None = None  # None: as trained (edgevit.reparam.forms)

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

    form_changes = _FORM_CHANGES  # what its forms change, as reported

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
        self.form: str | None = None  # None: as trained (edgevit.reparam.forms)

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
        record_change("", f"{type(self).__name__}: {self.form_changes[form]}")


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
        self.form: str | None = None  # None: as trained (edgevit.reparam.forms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_first":  # (B, C, H, W), pointwise layers as 1x1 convs
            return x + channel_scaled(self.gamma, self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x))))))
        if self.form == "channels_last":  # (B, H, W, C); BN beside the dw conv, pointwise on (pixels, C)
            y = conv_nhwc(lambda t: self.norm(self.dwconv(t)), x)
            y = self.pwconv2(self.act(self.pwconv1(y.reshape(-1, y.shape[-1]))))
            return x + _layer_scaled(self.gamma, y).reshape(x.shape)
        shortcut = x
        x = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        x = _layer_scaled(self.gamma, x).permute(0, 3, 1, 2)  # (B, C, H, W)
        return shortcut + x

    def reparameterize(self) -> None:
        """BatchNorm into the depth-wise conv before it, layer-scale into pwconv2."""
        fold_into_previous(self.dwconv, self, "norm")
        fold_layer_scale(self.pwconv2, self, "gamma")

    def to_form(self, form: str) -> None:
        self.form = form
        if form == "channels_first":
            self.pwconv1, self.pwconv2 = conv1x1(self.pwconv1), conv1x1(self.pwconv2)
        record_change("", f"ConvEncoderBNHS: {_BNHS_FORM_CHANGES[form]}")


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

    form_changes = _BNHS_FORM_CHANGES

    def _forward_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        _, _, H, W = x.shape
        shortcut = x
        x = self.norm_xca(self._multi_scale(x, one_split=True))
        if self.pos_embd is not None:
            x = x + self.pos_embd(H, W)
        x = x + channel_scaled(self.gamma_xca, self.xca.forward_channels_first(x))
        return shortcut + channel_scaled(self.gamma, self.pwconv2(self.act(self.pwconv1(self.norm(x)))))

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        shortcut = x
        x = conv_nhwc(lambda t: self.norm_xca(self._multi_scale(t)), x)  # one transpose in, one out
        if self.pos_embd is not None:
            x = x + self.pos_embd(H, W).permute(0, 2, 3, 1)  # a constant once traced
        tokens = x.reshape(B, H * W, C)
        tokens = tokens + _layer_scaled(self.gamma_xca, self.xca.forward_channels_last(tokens))
        y = self.pwconv2(self.act(self.pwconv1(norm_last(self.norm, tokens.reshape(B * H * W, C)))))
        return shortcut + _layer_scaled(self.gamma, y).reshape(B, H, W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_first":
            return self._forward_channels_first(x)
        if self.form == "channels_last":
            return self._forward_channels_last(x)
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

        self.form: str | None = None  # None: as trained (edgevit.reparam.forms)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_last":  # the stem's output and everything after it is NHWC
            stem_conv, stem_norm = self.downsample_layers[0]
            x = self.stages[0](norm_last(stem_norm, stem_conv(x).permute(0, 2, 3, 1)))
            for (norm, conv), stage in zip(self.downsample_layers[1:], self.stages[1:]):
                x = stage(conv_nhwc(conv, norm_last(norm, x)))
            if self.bn_hs:
                return norm_last(self.norm, x).mean(dim=(1, 2))  # (B, C)
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
        """Both forms, both variants: every block, norm and the pooling take the form's
        layout (bn_hs: its BatchNorms, folded away or not, act on the channel axis wherever
        the form puts it)."""
        self.form = form
        convert_children(self, form)
        record_change("", f"EdgeNeXt: {(_BNHS_FORM_CHANGES if self.bn_hs else _FORM_CHANGES)[form]}")


def init_conv_linear_weights(m: nn.Module) -> None:
    """Truncated normal (std .02) Conv2d/Linear weights, zero biases (EdgeNeXt's init)."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_edgenext(num_classes: int = 1000, **config) -> EdgeNeXt:
    """Builder used by the registry."""
    return EdgeNeXt(num_classes=num_classes, **config)
