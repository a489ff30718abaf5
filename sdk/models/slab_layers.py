"""SLAB's building blocks (Guo et al., ICML 2024): RepBN, progressive RepBN, simplified
linear attention.

Parameter and buffer names follow the official repository (xinghaochen/SLAB,
``classification/models/prepbn.py`` and ``slab_deit.py``) so its checkpoints load as
they are: ``PRepBN`` is the official ``LinearNorm`` (``norm1`` the LayerNorm, ``norm2``
the RepBN, buffers ``warm``/``iter``/``total_step``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..reparam.folds import batchnorm_affine, scale_output_channels
from ..reparam.forms import FORMS, record_change
from .form_layers import channel_layer_norm, conv1x1


class RepBN(nn.Module):
    """``BN(x) + alpha * x`` over the channels of a token tensor (B, N, C); alpha is one scalar.

    At inference it is the per-channel affine ``a*x + b`` with
    ``a = gamma/sqrt(var+eps) + alpha`` and ``b = beta - gamma*mean/sqrt(var+eps)``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, C, N)
        x = self.bn(x) + self.alpha * x
        return x.transpose(1, 2)  # (B, N, C)

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) per channel, float64: what this module computes in eval mode."""
        scale, shift = batchnorm_affine(self.bn)
        return scale + self.alpha.detach().double(), shift


class PRepBN(nn.Module):
    """Progressive RepBN: ``lam * LayerNorm(x) + (1 - lam) * RepBN(x)`` while training.

    ``lam = r0 * iter / total_step`` falls linearly from ``r0`` (1) to 0: each training
    forward decrements ``iter`` until it reaches 0, after ``warm`` LayerNorm-only steps.
    The counters are buffers, so the schedule resumes from a checkpoint. In eval mode
    only the RepBN branch runs (it is what gets deployed).
    """

    def __init__(self, dim: int, step: int = 300000, warm: int = 0, r0: float = 1.0,
                 ln_eps: float = 1e-6) -> None:
        super().__init__()
        if step < 1:
            raise ValueError(f"the PRepBN step budget must be positive, got {step}")
        self.register_buffer("warm", torch.tensor(int(warm)))
        self.register_buffer("iter", torch.tensor(int(step)))
        self.register_buffer("total_step", torch.tensor(int(step)))
        self.r0 = r0
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.norm2 = RepBN(dim)

    @property
    def lam(self) -> float:
        """The current LayerNorm weight of the training mix (1 during warm-up)."""
        if int(self.warm) > 0:
            return 1.0
        return float(self.r0 * self.iter.item() / self.total_step.item())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.norm2(x)
        if int(self.warm) > 0:
            self.warm.sub_(1)
            return self.norm1(x)
        lam = self.lam
        if int(self.iter) > 0:
            self.iter.sub_(1)
        if lam == 0.0:
            return self.norm2(x)
        return lam * self.norm1(x) + (1.0 - lam) * self.norm2(x)

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode affine: the RepBN branch's."""
        return self.norm2.inference_affine()


def channel_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm`` (in eval mode) over axis 1 of (B, C, ...): a norm left after the folds
    (LayerNorm, RepBN, PRepBN's RepBN branch) or a folded one (Identity)."""
    if isinstance(norm, nn.Identity):
        return x
    if isinstance(norm, PRepBN):
        norm = norm.norm2
    if isinstance(norm, RepBN):
        bn = norm.bn
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps) \
            + norm.alpha * x
    if isinstance(norm, nn.LayerNorm):
        return channel_layer_norm(x, norm.weight, norm.bias, norm.eps)
    raise ValueError(f"no channel-axis form of {type(norm).__name__}")


def finish_schedules(model: nn.Module) -> None:
    """Set every PRepBN in ``model`` to the end of its schedule (RepBN only, in training
    too), so that further training trains what is deployed."""
    for module in model.modules():
        if isinstance(module, PRepBN):
            module.warm.zero_()
            module.iter.zero_()


def make_norm(kind: str, ln_eps: float = 1e-6, step: int = 300000) -> Callable[[int], nn.Module]:
    """A norm factory: ``"prepbn"`` (PRepBN), ``"repbn"`` or ``"layernorm"``."""
    if kind == "prepbn":
        return lambda dim: PRepBN(dim, step=step, ln_eps=ln_eps)
    if kind == "repbn":
        return lambda dim: RepBN(dim)
    if kind == "layernorm":
        return lambda dim: nn.LayerNorm(dim, eps=ln_eps)
    raise ValueError(f"unknown norm {kind!r}: use prepbn, repbn or layernorm")


class Mlp(nn.Module):
    """Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def to_channels_first(self) -> None:
        """The Linears as 1x1 convs, on (B, C, H, W) (a channels-first model's form)."""
        self.fc1, self.fc2 = conv1x1(self.fc1), conv1x1(self.fc2)


class SimplifiedLinearAttention(nn.Module):
    """SLAB's simplified linear attention over the N tokens of a square grid.

    ``O = ReLU(Q) (ReLU(K+P)^T V) / (ReLU(Q) sum_n ReLU(K+P) + 1e-6) + DWC(V)``, per head,
    with one depth-wise ``kernel_size`` conv on V shared by all heads (its channels are
    the head dimension). Written as matmuls (no einsum). The product order follows the
    official code: ``Q (K^T V)`` when there are more tokens than head channels.
    """

    def __init__(self, dim: int, num_tokens: int, num_heads: int = 8, qkv_bias: bool = True,
                 kernel_size: int = 5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        head_dim = dim // num_heads
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"simplified linear attention needs a square token grid, got {num_tokens} tokens")
        self.num_heads = num_heads
        self.side = side
        self.head_dim = head_dim  # independent of dim once heads or channels are pruned
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, num_tokens, inner))
        self.form: str | None = None  # None: as trained (edgevit.reparam.forms)
        self.channels_io = False  # channels_first inside a channels-first model: (B, C, H, W)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """The linear attention without the conv (PyTorch ops; see edgevit.use_native)."""
        return simplified_linear_attention(qkv, self.positional_encoding, self.num_heads)

    def local_mixing(self, qkv: torch.Tensor) -> torch.Tensor:
        """DWC(V): the depth-wise conv on each head's v over the token grid, as (B, N, C)."""
        B, N, _ = qkv.shape
        h, d, s = self.num_heads, self.head_dim, self.side
        v = qkv[..., 2 * h * d:].reshape(B, N, h, d).permute(0, 2, 3, 1)  # (B, heads, d, N)
        grid = v.reshape(B * h, d, s, s)  # (B*heads, d, s, s): the heads share the conv
        return self.dwc(grid).reshape(B, h, d, N).permute(0, 3, 1, 2).reshape(B, N, h * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form is not None:
            return self._forward_blocks(x)
        qkv = self.qkv(x)
        return self.proj(self.attend(qkv) + self.local_mixing(qkv))  # (B, N, C)

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The target forms: each head as a (d, N) block, attention by
        :func:`fp16_safe_linear_attention`; the conv on V reads V's block as it lies, and every
        product reads a transposed operand only on its right (what XNNPACK delegates).

        Tokens in and out (``x`` (B, N, C) or, inside a model that flattens its tokens,
        (B*N, C)): one transpose of qkv in and one of the result out. Channels first
        (``channels_io``, the Linears as 1x1 convs): ``x`` (B, C, H, W) or (B, C, 1, N), no
        transposes."""
        h, d, s = self.num_heads, self.head_dim, self.side
        N = s * s
        if self.channels_io:
            qkv = self.qkv(x).reshape(-1, 3 * h, d, N)  # (B, 3*heads, d, N)
            return self.proj(self._attend_blocks(qkv).reshape(-1, h * d, *x.shape[2:]))  # (B, C, H, W) / (B, C, 1, N)
        out = self.attend_tokens(self.qkv(x).reshape(-1, N, 3 * h * d))  # (B, N, heads*d)
        return self.proj(out.reshape(*x.shape[:-1], h * d))

    def attend_tokens(self, qkv: torch.Tensor) -> torch.Tensor:
        """The target forms' attention and conv on tokens, (B, N, 3C) -> (B, N, C): one
        transpose in, one out."""
        h, d, N = self.num_heads, self.head_dim, qkv.shape[1]
        out = self._attend_blocks(qkv.reshape(-1, N, 3 * h, d).permute(0, 2, 3, 1))  # (B, heads, d, N)
        return out.reshape(-1, h * d, N).transpose(1, 2)

    def _attend_blocks(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, 3*heads, d, N) -> (B, heads, d, N): the fp16-safe attention plus the DWC on V."""
        h, d, s = self.num_heads, self.head_dim, self.side

        def local(v: torch.Tensor) -> torch.Tensor:  # DWC on each head's (d, N) block: (B, heads, d, N)
            return self.dwc(v.reshape(-1, d, s, s)).reshape(-1, h, d, s * s)

        return fp16_safe_linear_attention(qkv, self.positional_blocks(), h, local)

    def positional_blocks(self) -> torch.Tensor:
        """P as (1, heads, d, N) blocks (a constant in the traced graph)."""
        h, d = self.num_heads, self.head_dim
        return self.positional_encoding.reshape(1, -1, h, d).permute(0, 2, 3, 1)

    def to_form(self, form: str) -> None:
        """Both forms: heads as (d, N) blocks, attention fp16-safe, always in the order
        ``q (K^T V)`` (the official code's for more tokens than head channels; with fewer it
        costs d/N times the attention's few products, and bounds every sum the same way);
        tokens in and out until the model's own form makes it channels first
        (:meth:`to_channels_first`)."""
        if form in FORMS:
            self.form = form
            if self.dwc.bias is not None:  # DWC runs on a scaled V: its bias goes into proj's
                shift = self.proj.weight.detach().double() @ self.dwc.bias.detach().double().repeat(self.num_heads)
                scale_output_channels(self.proj, torch.ones_like(shift), shift)
                self.dwc.bias = None
            record_change("", "SimplifiedLinearAttention: heads as (d, N) blocks, fp16-safe (scaled) sums")

    def to_channels_first(self) -> None:
        """Take and return (B, C, H, W): projections as 1x1 convs, no transposes (called by
        a model whose channels_first form carries that layout between its blocks)."""
        self.channels_io = True
        self.qkv, self.proj = conv1x1(self.qkv), conv1x1(self.proj)


FP16_MAX = 65504.0
TINY = 2.0 ** -14  # fp16's smallest normal: a maximum below it counts as this
FLOOR = 2.0 ** -24  # fp16's smallest subnormal: the denominator never divides below it
SUM_BOUND = 2 ** 12  # every sum of the scaled operands stays below this (16x under FP16_MAX)


def fp16_safe_linear_attention(qkv: torch.Tensor, positional: torch.Tensor, heads: int,
                               local: Callable[[torch.Tensor], torch.Tensor], eps: float = 1e-6) -> torch.Tensor:
    """SLAB's linear attention plus ``local(V)`` (its DWC, without bias) on (d, N) blocks, with
    no intermediate that can leave the fp16 range: (B, 3*heads, d, N) -> (B, heads, d, N).

    ``(q (K^T V)) / (q sum_n k + eps) + local(V)`` (``q = ReLU(Q)``, ``k = ReLU(K+P)``) is
    unchanged when q and k are scaled by positive numbers and eps by their product, and
    V's scale (``local`` is linear) divides out at the end. Per batch and head, with ``m``
    the largest magnitude of Q, of K (plus P's largest) and of V, each plus ``TINY``, and
    ``2^g = max(1, 2^ceil(log2(N d)) / SUM_BOUND)``: ``q' = ReLU(Q/m_Q) < 1``,
    ``k' = ReLU((K+P)/(m_K 2^g)) < 2^-g``, ``|v'| = |V|/m_V < 1``. Then, for every
    intermediate (partial sums included):

    - ``sum_n k'`` and ``|k'^T v'|`` are at most ``N 2^-g``;
    - ``D' = q' . sum_n k'`` and ``|numerator|`` at most ``d N 2^-g <= SUM_BOUND`` (2^12);
    - ``eps' = eps / (m_Q m_K 2^g)``, formed as ``(eps/(m_K 2^g)) / m_Q``: at most
      ``1e-6 * 2^28 < 270``; the denominator ``D' + eps'`` stays under 4400 (7x under the
      range check of an fp16 export, 32752);
    - the quotient is at most 1 in magnitude (``|numerator| <= D'``), ``local(v')`` at most
      the conv's absolute weight sum, and the result, divided by V's scale ``1/m_V``, what the
      model as trained computes: nothing grows past the operands, so an fp16 input (every
      value under 65504) gives no inf. The scales themselves are at most 2^14.

    For the trained PRepBN ViT whose as-trained fp16 program overflowed (k up to ~516, v up
    to ~13, 64 tokens, d = 64: K^T V reached ~4e5) the largest sum here is 4096. At the low
    end the operands are the maxima's fractions (g = 0 until N d exceeds 2^12), so the
    values that matter stay normal fp16 numbers. Exact in real arithmetic: the denominator
    is floored at ``FLOOR`` (2^-24, fp16's smallest number) only to keep a token with
    ``q = 0`` at 0 in fp16 (where eps' rounds to 0 and 0/0 would be nan); that changes a
    result only where ``D' + eps' < 2^-24``. The scales are data-dependent maxima
    (abs, reduce_max, divide: ops every converter and XNNPACK take), so the float32 result
    is within rounding of the model as trained. No constant is larger than P.
    """
    h = heads
    d, N = qkv.shape[-2:]
    g = max(0, math.ceil(math.log2(N * d)) - int(math.log2(SUM_BOUND)))
    offsets = torch.cat((torch.full((h,), TINY, dtype=qkv.dtype),
                         positional.detach().abs().amax(dim=(0, 2, 3)).to(qkv.dtype) + TINY,
                         torch.full((h,), TINY, dtype=qkv.dtype))).reshape(1, 3 * h, 1, 1)  # a constant
    largest = qkv.abs().amax(dim=(-2, -1), keepdim=True) + offsets  # (B, 3*heads, 1, 1): m_Q, m_K, m_V
    numerators = torch.tensor([1.0] * h + [2.0 ** -g] * h + [1.0] * h, dtype=qkv.dtype).reshape(1, 3 * h, 1, 1)
    scale = numerators / largest  # (B, 3*heads, 1, 1): q, k and v's scales
    q, k, v = (qkv * scale).split(h, dim=1)  # (B, heads, d, N) each
    scale_q, scale_k, scale_v = scale.split(h, dim=1)
    q, k = F.relu(q), F.relu(k + positional * scale_k)
    vk = torch.matmul(v, k.transpose(-2, -1))  # (B, heads, d, d): (K^T V) transposed
    k_sum = torch.matmul(torch.ones(1, 1, 1, N, dtype=qkv.dtype), k.transpose(-2, -1))  # (B, heads, 1, d)
    denominator = torch.clamp_min(torch.matmul(k_sum, q) + (scale_k * eps) * scale_q, FLOOR)  # (B, heads, 1, N)
    out = torch.matmul(vk, q) / denominator  # out[j, n] = sum_i (K^T V)[i, j] q[i, n] / D[n]
    return (out + local(v)) / scale_v  # (B, heads, d, N)


def simplified_linear_attention(qkv: torch.Tensor, positional: torch.Tensor, heads: int) -> torch.Tensor:
    """SLAB's linear attention without DWC(V): (B, N, 3C) -> (B, N, C).

    ``ReLU(Q) (ReLU(K+P)^T V) / (ReLU(Q) sum_n ReLU(K+P) + 1e-6)`` per head, with the
    positional table ``P`` of N x C values. The product order follows the official code:
    ``Q (K^T V)`` when there are more tokens than head channels. The reference that
    :mod:`edgevit.native`'s fused kernel is checked against.
    """
    B, N, C3 = qkv.shape
    d = C3 // 3 // heads
    qkv = qkv.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, d)
    q, k, v = qkv[0], qkv[1], qkv[2]
    pos = positional.reshape(1, N, heads, d).transpose(1, 2)  # (1, heads, N, d)
    q, k = F.relu(q), F.relu(k + pos)
    k_sum = k.sum(dim=2, keepdim=True)  # (B, heads, 1, d)
    z = 1.0 / (torch.matmul(q, k_sum.transpose(-2, -1)) + 1e-6)  # (B, heads, N, 1)
    if N > d:
        out = torch.matmul(q, torch.matmul(k.transpose(-2, -1), v)) * z  # (B, heads, N, d)
    else:
        out = torch.matmul(torch.matmul(q, k.transpose(-2, -1)), v) * z  # (B, heads, N, d)
    return out.transpose(1, 2).reshape(B, N, heads * d)


def init_vit_weights(module: nn.Module) -> None:
    """timm's ViT init: truncated normal (std .02) Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def remap_checkpoint(state_dict: dict[str, torch.Tensor], layout: str) -> tuple[dict[str, torch.Tensor], str]:
    """Official SLAB checkpoints into edgevit's PRepBN models; returns (state_dict, layout).

    ``"official"`` (PRepBN/``LinearNorm`` keys, edgevit's own names) loads as is.
    ``"repbn"`` is the official baselines that train with plain RepBN (e.g. the official
    DeiT-T-PRepBN): each ``P.alpha``/``P.bn.*`` moves to ``P.norm2.*`` and the PRepBN is
    completed as a finished schedule (LayerNorm identity, ``iter`` 0), which computes
    exactly the RepBN in both train and eval mode. ``"auto"`` tells them apart by the
    PRepBN ``total_step`` buffers.
    """
    if layout == "auto":
        has_prepbn = any(k.endswith(".total_step") for k in state_dict)
        has_repbn = any(k.endswith(".alpha") for k in state_dict)
        layout = "repbn" if has_repbn and not has_prepbn else "official"
    if layout in ("official", "edgevit"):
        return dict(state_dict), layout
    if layout != "repbn":
        raise ValueError(f"unknown checkpoint layout {layout!r}: use auto, official, repbn or edgevit")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith(".alpha"):
            prefix, leaf = key[: -len(".alpha")], "alpha"
        elif ".bn." in key:
            prefix, _, rest = key.partition(".bn.")
            leaf = f"bn.{rest}"
        else:
            out[key] = value
            continue
        out[f"{prefix}.norm2.{leaf}"] = value
        if leaf == "bn.weight":  # complete the PRepBN around this RepBN: a finished schedule
            channels = value.shape[0]
            out[f"{prefix}.norm1.weight"] = torch.ones(channels)
            out[f"{prefix}.norm1.bias"] = torch.zeros(channels)
            out[f"{prefix}.warm"] = torch.tensor(0)
            out[f"{prefix}.iter"] = torch.tensor(0)
            out[f"{prefix}.total_step"] = torch.tensor(1)
    return out, layout
