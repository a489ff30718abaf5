"""ED-ViT step 2: structured, class-wise pruning of a ViT.

Importance is first-order Taylor, measured on one group's samples: a gate of ones is
multiplied into each prunable unit and the importance of a unit is the accumulated
``|dLoss/dgate|`` (= ``|sum activation * gradient|``) over batches, with the trained
model's own cross-entropy loss on those samples. Units:

- attention heads: a gate per head on the attention output before ``proj``;
- MLP hidden units: a gate per unit after the activation;
- embedding channels (the residual stream, shared by every layer): the sum of the
  gates' scores at every write into the stream (patch embedding, each attention and
  each MLP output).

Pruning keeps, at every site, the same fraction of units (at least one), chosen by
importance; :func:`prune_to_budget` finds the largest fraction that fits a parameter
budget by bisection. The result is a smaller :class:`VisionTransformer` of the same
code (heads keep their ``head_dim``), sliced from the trained weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, UnsupportedModelError
from ..models.deit import VisionTransformer


@dataclass
class Importance:
    """Per-unit importance scores (higher = keep)."""

    embed: np.ndarray  # (C,)
    heads: list[np.ndarray]  # per block, (num_heads,)
    mlp: list[np.ndarray]  # per block, (hidden,)


@dataclass
class KeepPlan:
    """Which units survive: sorted indices per site."""

    embed: np.ndarray
    heads: list[np.ndarray]
    mlp: list[np.ndarray]


def check_supported(model: nn.Module) -> VisionTransformer:
    """The model as a prunable ViT, or an error naming what is supported."""
    if isinstance(model, VisionTransformer):
        return model
    name = getattr(model, "edgevit_name", type(model).__name__)
    raise UnsupportedModelError(
        f"ED-ViT splits plain (isotropic) ViTs: deit_tiny, deit_small, slab_deit_tiny, slab_deit_small, "
        f"deit_tiny_prepbn, deit_small_prepbn; {name} is not one (hierarchical and convolutional models such as "
        f"EdgeNeXt and SLAB-Swin have no single token width to prune)")


def parameter_count(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


def measure_importance(vit: VisionTransformer, x: np.ndarray, y: np.ndarray, batch_size: int = 64) -> Importance:
    """Taylor importance of heads, MLP units and embedding channels on samples (x, y)."""
    vit = check_supported(vit)
    if len(x) == 0:
        raise InputError("importance needs at least one sample")
    vit.eval()
    width = vit.pos_embed.shape[-1]
    blocks = list(vit.blocks)
    embed_sites = [vit.patch_embed] + [b.attn for b in blocks] + [b.mlp for b in blocks]
    gates = {
        "embed": [torch.ones(width, requires_grad=True) for _ in embed_sites],
        "heads": [torch.ones(b.attn.num_heads, requires_grad=True) for b in blocks],
        "mlp": [torch.ones(b.mlp.fc1.out_features, requires_grad=True) for b in blocks],
    }
    handles = []
    for site, gate in zip(embed_sites, gates["embed"]):
        handles.append(site.register_forward_hook(lambda m, i, out, g=gate: out * g))
    for block, gate in zip(blocks, gates["heads"]):
        attn = block.attn

        def gate_heads(m, inputs, g=gate, a=attn):
            (z,) = inputs
            B, N, _ = z.shape
            return (z.reshape(B, N, a.num_heads, a.head_dim) * g[:, None]).reshape(B, N, -1)

        handles.append(attn.proj.register_forward_pre_hook(gate_heads))
    for block, gate in zip(blocks, gates["mlp"]):
        handles.append(block.mlp.act.register_forward_hook(lambda m, i, out, g=gate: out * g))
    flat = [g for group in gates.values() for g in group]
    scores = [torch.zeros_like(g) for g in flat]
    try:
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start:start + batch_size])
            target = torch.from_numpy(y[start:start + batch_size])
            loss = F.cross_entropy(vit(batch), target)
            for score, grad in zip(scores, torch.autograd.grad(loss, flat)):
                score += grad.abs()
    finally:
        for handle in handles:
            handle.remove()
    n_embed, n_blocks = len(embed_sites), len(blocks)
    as_np = [s.numpy().astype(np.float64) for s in scores]
    return Importance(
        embed=np.sum(as_np[:n_embed], axis=0),
        heads=as_np[n_embed:n_embed + n_blocks],
        mlp=as_np[n_embed + n_blocks:],
    )


def _top(scores: np.ndarray, fraction: float) -> np.ndarray:
    count = max(1, min(len(scores), int(round(fraction * len(scores)))))
    return np.sort(np.argsort(-scores, kind="stable")[:count])


def keep_fraction(importance: Importance, fraction: float) -> KeepPlan:
    """Keep ``fraction`` of the units at every site (at least one), the most important."""
    return KeepPlan(_top(importance.embed, fraction), [_top(h, fraction) for h in importance.heads],
                    [_top(m, fraction) for m in importance.mlp])


def _linear(layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    weight = layer.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else None
    if rows is not None:
        weight = weight[rows]
        bias = bias[rows] if bias is not None else None
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _slice_norm(norm: nn.Module, channels: torch.Tensor) -> None:
    """Keep ``channels`` of a LayerNorm, BatchNorm, RepBN or PRepBN, in place."""
    for module in norm.modules():
        if isinstance(module, nn.LayerNorm):
            module.normalized_shape = (len(channels),)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.num_features = len(channels)
        else:
            continue
        for name, tensor in list(module.named_parameters(recurse=False)):
            setattr(module, name, nn.Parameter(tensor.detach()[channels].clone()))
        for name, tensor in list(module.named_buffers(recurse=False)):
            if tensor is not None and tensor.dim() == 1:
                setattr(module, name, tensor[channels].clone())


def _head_columns(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def prune(vit: VisionTransformer, keep: KeepPlan) -> VisionTransformer:
    """A new, smaller ViT with only the kept units, weights sliced from ``vit``."""
    vit = check_supported(vit)
    pruned = copy.deepcopy(vit).eval()
    embed = torch.as_tensor(keep.embed, dtype=torch.long)
    with torch.no_grad():
        conv = pruned.patch_embed.proj
        conv.weight = nn.Parameter(conv.weight.detach()[embed].clone())
        conv.bias = nn.Parameter(conv.bias.detach()[embed].clone())
        conv.out_channels = len(embed)
        pruned.cls_token = nn.Parameter(pruned.cls_token.detach()[..., embed].clone())
        pruned.pos_embed = nn.Parameter(pruned.pos_embed.detach()[..., embed].clone())
        for block, heads, units in zip(pruned.blocks, keep.heads, keep.mlp):
            attn = block.attn
            heads_t = torch.as_tensor(heads, dtype=torch.long)
            columns = _head_columns(heads_t, attn.head_dim)
            inner = attn.num_heads * attn.head_dim
            qkv_rows = torch.cat([part * inner + columns for part in range(3)])
            attn.qkv = _linear(attn.qkv, rows=qkv_rows, cols=embed)
            attn.proj = _linear(attn.proj, rows=embed, cols=columns)
            if hasattr(attn, "positional_encoding"):
                attn.positional_encoding = nn.Parameter(attn.positional_encoding.detach()[..., columns].clone())
            attn.num_heads = len(heads_t)
            units_t = torch.as_tensor(units, dtype=torch.long)
            block.mlp.fc1 = _linear(block.mlp.fc1, rows=units_t, cols=embed)
            block.mlp.fc2 = _linear(block.mlp.fc2, rows=embed, cols=units_t)
            _slice_norm(block.norm1, embed)
            _slice_norm(block.norm2, embed)
        _slice_norm(pruned.norm, embed)
        if isinstance(pruned.head, nn.Linear):
            pruned.head = _linear(pruned.head, cols=embed)
    return pruned


def backbone_parameters(vit: VisionTransformer) -> int:
    """Parameters of everything but the classifier head (what a sub-model deploys)."""
    return parameter_count(vit) - parameter_count(vit.head)


def prune_to_budget(vit: VisionTransformer, importance: Importance, max_params: int,
                    steps: int = 20) -> tuple[VisionTransformer, float]:
    """The largest uniform keep fraction whose pruned backbone has at most ``max_params``
    parameters; returns (pruned model, fraction)."""
    smallest = prune(vit, keep_fraction(importance, 0.0))
    if backbone_parameters(smallest) > max_params:
        raise InputError(f"a budget of {max_params:,} parameters is below the smallest sub-model this model prunes "
                         f"to ({backbone_parameters(smallest):,} parameters: one head, one MLP unit and one "
                         f"channel per layer); raise the budget")
    whole = prune(vit, keep_fraction(importance, 1.0))
    if backbone_parameters(whole) <= max_params:
        return whole, 1.0
    low, high, best = 0.0, 1.0, smallest
    for _ in range(steps):
        middle = (low + high) / 2
        candidate = prune(vit, keep_fraction(importance, middle))
        if backbone_parameters(candidate) <= max_params:
            low, best = middle, candidate
        else:
            high = middle
    return best, low
