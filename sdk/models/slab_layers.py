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

from ..reparam.folds import batchnorm_affine
from ..reparam.forms import record_change


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
        if self.form == "channels_last":
            return self._forward_channels_last(x)
        qkv = self.qkv(x)
        return self.proj(self.attend(qkv) + self.local_mixing(qkv))  # (B, N, C)

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The same attention with each head as a (d, N) block: one transpose of qkv in and
        one of the result out; the conv on V reads V's block as it lies, and every product
        reads a transposed operand only on its right (what XNNPACK delegates). ``x`` is
        (B, N, C) or, inside a model that flattens its tokens, (B*N, C)."""
        h, d, s = self.num_heads, self.head_dim, self.side
        N = s * s
        qkv = self.qkv(x).reshape(-1, N, 3 * h, d).permute(0, 2, 3, 1)  # (B, 3*heads, d, N)
        q, k, v = qkv.split(h, dim=1)
        q, k = F.relu(q), F.relu(k + self.positional_encoding.reshape(1, N, h, d).permute(0, 2, 3, 1))
        vk = torch.matmul(v, k.transpose(-2, -1))  # (B, heads, d, d): (K^T V) transposed
        denominator = (q * k.sum(dim=-1, keepdim=True)).sum(dim=-2, keepdim=True)  # (B, heads, 1, N)
        out = torch.matmul(vk, q) * (1.0 / (denominator + 1e-6))  # out[j, n] = sum_i (K^T V)[i, j] q[i, n]
        out = out + self.dwc(v.reshape(-1, d, s, s)).reshape(-1, h, d, N)
        out = out.reshape(-1, h * d, N).transpose(1, 2)  # (B, N, heads*d)
        return self.proj(out.reshape(*x.shape[:-1], h * d))

    def to_form(self, form: str) -> None:
        """channels_last, when there are more tokens than head channels (the product order
        the official code uses then)."""
        if form == "channels_last" and self.side * self.side > self.head_dim:
            self.form = form
            record_change("", "SimplifiedLinearAttention: heads as (d, N) blocks, one transpose in and one out")


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
