"""FMViT (Tan, Geng and Xie, 2023), reconstructed from the paper's description.

**This is a reconstruction, not the authors' model.** FMViT's code was never released
and only the abstract is public: a hybrid that blends high-frequency (convolution) and
low-frequency (attention) features "with varying frequencies", built from three
deploy-friendly parts — convolutional multi-group re-parameterization (gMLP), a
lightweight multi-head self-attention (RLMHSA) and a convolutional fusion block (CFB) —
in five sizes (T/S/M/B/L: 2.0/6.4/12.8/24.3/35.3 M parameters, 0.3/0.8/2.0/4.2/7.1
GFLOPs at 224x224). No official weights exist. Everything below the abstract is our
design, written down here and in ``docs/fmvit.md``:

- **Layout.** A 4-stage pyramid (strides 4, 8, 16, 32): a two-conv stem, a strided 3x3
  conv + BatchNorm between stages, BatchNorm + global average pooling + a Linear head.
  Only BatchNorm is used (no LayerNorm), so every normalization folds at deploy time;
  everything runs NCHW with 1x1 convolutions instead of Linear layers.
- **Frequency mixing per stage.** Each stage stacks conv blocks (:class:`ConvBlock`,
  high frequency only) and ends its groups of blocks with frequency-mixing blocks
  (:class:`FrequencyMixingBlock`). A mixing block splits the channels statically into a
  high-frequency part (a re-parameterizable depth-wise 3x3 conv) and a low-frequency part
  (RLMHSA over keys and values pooled to a coarse grid). The "varying frequencies" are
  two ramps over depth: the attention's share of the channels grows (about 1/4 in stage 1
  to 3/4 in stage 4) and the key/value pooling shrinks (8, 4, 2, 1), so early stages mix
  in only a little, very low-frequency context and late stages mostly global context.
- **gMLP** (:class:`GroupMLP`): the channel MLP (1x1 conv, GELU, 1x1 conv). Each 1x1 conv
  trains as parallel branches with 1, 2 and 4 groups, each with its own BatchNorm
  (:class:`~edgevit.reparam.branches.MultiBranchConv2d`); at deploy time they fold into
  one dense 1x1 conv.
- **RLMHSA** (:class:`RLMHSA`): BatchNorm, then multi-head softmax attention whose queries
  are every token and whose keys and values come from a strided depth-wise conv +
  BatchNorm that pools the grid by ``sr`` (N x N/sr^2 attention). At deploy time the
  pre-norm folds into the query projection and the pooling conv (neither pads), the
  pooling's BatchNorm folds into its conv, and the 1/sqrt(d) attention scale folds into
  the query projection: the deployed block is convs, two MatMuls and a Softmax.
- **CFB** (:class:`ConvFusionBlock`): concatenates the two paths, mixes them locally with a
  re-parameterizable depth-wise 3x3 (3x3, 1x1 and identity branches) and across channels
  with a re-parameterizable 1x1 (1x1 and identity branches), every branch with its own
  BatchNorm. The block is linear, so it deploys as one depth-wise 3x3 and one 1x1 conv.

Sizes: see the catalog; ``edgevit info --model fmvit_s`` prints parameters and GFLOPs
(multiply-adds) of the deployed graph. Parameter and GFLOP counts are checked against
the published figures in the tests (within 10%).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from ..reparam.branches import MultiBranchConv2d
from ..reparam.engine import fold_children
from ..reparam.folds import fold_into_next, scale_output_channels
from ..reparam.forms import convert_children, record_change
from ..reparam.report import record
from .edgenext import init_conv_linear_weights

GMLP_GROUPS = (1, 2, 4)  # the multi-group branches of every gMLP 1x1 conv


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
            groups: int = 1, padding: int | None = None) -> nn.Sequential:
    """Conv2d (no bias) + BatchNorm2d: folds into one conv (the engine's generic fold)."""
    padding = kernel_size // 2 if padding is None else padding
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        bn=nn.BatchNorm2d(out_channels),
    ))


class FoldableBlock(nn.Module):
    """An FMViT block whose ``reparameterize()`` folds the whole block for deployment:
    every parallel branch into one conv and every BatchNorm into a conv, exactly.

    Target forms (:mod:`edgevit.reparam.forms`): the network is NCHW with 1x1 convs as
    trained, the layout all three converters run best (docs/fmvit.md), so the forms change
    only the attention and the channel split; a block hands its children their own.
    """

    form: str | None = None  # None: as trained

    def reparameterize(self) -> None:
        fold_children(self)

    def to_form(self, form: str) -> None:
        convert_children(self, form)


def depthwise_rep(channels: int) -> MultiBranchConv2d:
    """A depth-wise 3x3 with 1x1 and identity branches: one depth-wise 3x3 at deploy time."""
    return MultiBranchConv2d(channels, channels, kernel_sizes=(3, 1), groups=(channels, channels), identity=True)


class GroupMLP(FoldableBlock):
    """gMLP: 1x1 conv (C -> rC), GELU, 1x1 conv (rC -> C); each conv is multi-group."""

    def __init__(self, dim: int, mlp_ratio: float = 3.0, groups: Sequence[int] = GMLP_GROUPS) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = MultiBranchConv2d(dim, hidden, kernel_sizes=(1,) * len(groups), groups=groups)
        self.act = nn.GELU()
        self.fc2 = MultiBranchConv2d(hidden, dim, kernel_sizes=(1,) * len(groups), groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def pooled_attention(q: torch.Tensor, kv: torch.Tensor, heads: int) -> torch.Tensor:
    """RLMHSA's attention between the projections: q (B, C, H, W) (already scaled), kv
    (B, 2C, H', W') (keys, then values) -> (B, C, H, W); per head, every token attends
    over the M = H' W' pooled tokens with a softmax. The reference that
    :mod:`edgevit.native`'s fused kernel is checked against."""
    B, C, H, W = q.shape
    d = C // heads
    qh = q.reshape(B, heads, d, H * W).transpose(-2, -1)  # (B, h, N, d)
    kv = kv.reshape(B, 2, heads, d, -1)
    k, v = kv[:, 0], kv[:, 1]  # (B, h, d, M)
    attn = torch.matmul(qh, k).softmax(dim=-1)  # (B, h, N, M)
    out = torch.matmul(attn, v.transpose(-2, -1))  # (B, h, N, d)
    return out.transpose(-2, -1).reshape(B, C, H, W)


class RLMHSA(FoldableBlock):
    """Lightweight multi-head self-attention: all tokens query keys/values pooled by ``sr``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide {dim} channels")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5  # 1.0 once folded into the query projection
        self.sr_ratio = sr_ratio
        self.norm = nn.BatchNorm2d(dim)
        self.q = nn.Conv2d(dim, dim, 1)
        self.reduce = (conv_bn(dim, dim, kernel_size=sr_ratio, stride=sr_ratio, groups=dim, padding=0)
                       if sr_ratio > 1 else nn.Identity())
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q = self.q(x)  # (B, C, H, W)
        if self.scale != 1.0:
            q = q * self.scale
        return self.proj(self.attend(q, self.kv(self.reduce(x))))

    def attend(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """The attention between the projections, in the block's form (PyTorch ops; see
        edgevit.use_native): q (B, C, H, W) scaled, kv (B, 2C, H/sr, W/sr) -> (B, C, H, W)."""
        if self.form == "channels_first":
            return self._attend_blocks(q, kv)
        if self.form == "channels_last":
            return self._attend_right_transposed(q, kv)
        return pooled_attention(q, kv, self.num_heads)

    def _split(self, q: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, h, d, N), k and v (B, h, d, M) by one split."""
        heads, d = self.num_heads, self.head_dim
        k, v = kv.reshape(kv.shape[0], 2 * heads, d, -1).split([heads, heads], dim=1)
        return q.reshape(q.shape[0], heads, d, -1), k, v

    def _attend_blocks(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """channels_first (Core ML): each head's (d, tokens) block as it lies; the map is
        computed transposed, (M, N) = k^T q with the softmax over the keys' axis, so that
        ``v @ map`` is the output in NCHW order: no transposes."""
        qb, k, v = self._split(q, kv)
        attn = torch.matmul(k.transpose(-2, -1), qb).softmax(dim=-2)  # (B, h, M, N)
        return torch.matmul(v, attn).reshape(q.shape)

    def _attend_right_transposed(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """channels_last (TFLite, ONNX Runtime): q transposed once, then both products read
        a transposed operand only on their right (what XNNPACK takes), the output lands in
        NCHW order. With a single head each product would be one 2-D matrix product, which
        litert-torch writes as a FULLY_CONNECTED with computed weights: XNNPACK refuses it
        and the graph splits; two halves of the queries against copies of k and v keep
        them batched products (one transpose more)."""
        B = q.shape[0]
        qb, k, v = self._split(q, kv)
        qb = qb.transpose(-2, -1)  # (B, h, N, d)
        if self.num_heads == 1:
            qb, k, v = qb.reshape(B, 2, -1, self.head_dim), torch.cat((k, k), dim=1), torch.cat((v, v), dim=1)
        attn = torch.matmul(qb, k).softmax(dim=-1)  # (B, h, N, M)
        out = torch.matmul(v, attn.transpose(-2, -1))  # (B, h, d, N)
        if self.num_heads == 1:
            out = out.transpose(1, 2)  # (B, d, 2, N/2): the two halves side by side
        return out.reshape(q.shape)

    def to_form(self, form: str) -> None:
        self.form = form
        record_change("", "RLMHSA: " + ("attention on (heads, d, tokens) blocks, no transposes"
                                        if form == "channels_first" else "one transpose (q), products "
                                        "transposed only on their right"))

    def reparameterize(self) -> None:
        """Pre-norm into the query projection and the pooling conv (or the key/value
        projection when nothing pools); the attention scale into the query projection."""
        fold_children(self)  # the pooling conv's own BatchNorm first
        readers = [self.q, self.reduce.conv if self.sr_ratio > 1 else self.kv]
        fold_into_next(self, "norm", readers)
        if self.scale != 1.0:
            scale_output_channels(self.q, torch.tensor(self.scale, dtype=torch.float64))
            self.scale = 1.0
            record("folded", "q", "attention scale -> previous Conv2d")


class ConvFusionBlock(FoldableBlock):
    """CFB: concatenate the high- and low-frequency paths, mix them locally (depth-wise
    3x3 + 1x1 + identity) and across channels (1x1 + identity), every branch with its
    BatchNorm. Linear throughout, so it deploys as two convolutions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.local = depthwise_rep(dim)
        self.channel = MultiBranchConv2d(dim, dim, kernel_sizes=(1,), groups=(1,), identity=True)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.channel(self.local(torch.cat((high, low), dim=1)))


class ConvBlock(FoldableBlock):
    """High-frequency block: re-parameterizable depth-wise 3x3 token mixer, then gMLP."""

    def __init__(self, dim: int, mlp_ratio: float = 3.0) -> None:
        super().__init__()
        self.mixer = depthwise_rep(dim)
        self.mlp = GroupMLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mixer(x)  # the identity branch is the residual
        return x + self.mlp(x)


class FrequencyMixingBlock(FoldableBlock):
    """High-frequency conv path and low-frequency RLMHSA path on a channel split, fused by
    a CFB, then gMLP."""

    def __init__(self, dim: int, attn_dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float = 3.0) -> None:
        super().__init__()
        if not 0 < attn_dim < dim:
            raise ValueError(f"the attention path needs between 1 and {dim - 1} channels, got {attn_dim}")
        self.conv_dim = dim - attn_dim
        self.high = depthwise_rep(self.conv_dim)
        self.low = RLMHSA(attn_dim, num_heads, sr_ratio)
        self.fuse = ConvFusionBlock(dim)
        self.mlp = GroupMLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form is None:
            high, low = x[:, :self.conv_dim], x[:, self.conv_dim:]
        else:  # one split op
            high, low = x.split([self.conv_dim, x.shape[1] - self.conv_dim], dim=1)
        x = self.fuse(self.high(high), low + self.low(low))
        return x + self.mlp(x)

    def to_form(self, form: str) -> None:
        self.form = form
        convert_children(self, form)
        record_change("", "FrequencyMixingBlock: the channel split by one split op")


def mixing_positions(depth: int, mixers: int) -> set[int]:
    """Indices of the mixing blocks in a stage: spread evenly, the last block always one."""
    if not 0 <= mixers <= depth:
        raise ValueError(f"a stage of {depth} blocks cannot hold {mixers} mixing blocks")
    return {depth - 1 - round(i * depth / mixers) for i in range(mixers)} if mixers else set()


class FMViT(FoldableBlock):
    """FMViT classifier (reconstruction): stem, 4 stages of conv and mixing blocks, head."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 dims: Sequence[int] = (32, 64, 128, 256), depths: Sequence[int] = (2, 2, 6, 2),
                 mixers: Sequence[int] = (1, 1, 2, 1), attn_dims: Sequence[int] = (8, 24, 64, 192),
                 head_dim: int = 8, sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 mlp_ratio: float = 3.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        stem_dim = dims[0] // 2
        self.stem = nn.Sequential(
            conv_bn(in_chans, stem_dim, 3, stride=2), nn.GELU(), conv_bn(stem_dim, dims[0], 3, stride=2),
        )
        self.downsamples = nn.ModuleList(
            [nn.Identity()] + [conv_bn(dims[i], dims[i + 1], 3, stride=2) for i in range(3)]
        )
        self.stages = nn.ModuleList()
        for i in range(4):
            mixing = mixing_positions(depths[i], mixers[i])
            blocks = [
                FrequencyMixingBlock(dims[i], attn_dims[i], attn_dims[i] // head_dim, sr_ratios[i], mlp_ratio)
                if j in mixing else ConvBlock(dims[i], mlp_ratio)
                for j in range(depths[i])
            ]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(init_conv_linear_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for down, stage in zip(self.downsamples, self.stages):
            x = stage(down(x))
        return self.norm(x).mean(dim=(-2, -1))  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def reparameterize(self) -> None:
        """Every block, then the BatchNorm before the global pooling (it commutes with the
        mean) into the head."""
        fold_children(self)
        fold_into_next(self, "norm", self.head, note="absorbed through the mean pooling")


def build_fmvit(num_classes: int = 1000, **config) -> FMViT:
    """Builder used by the registry."""
    return FMViT(num_classes=num_classes, **config)
