"""What the native-kernel tests share: the kernels (or a skip, or a failure under CI=true),
and seeded inputs for them."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgevit import native


def kernels_or_skip():
    """``edgevit._native``; the calling test module is skipped when it is not built, except
    under CI=true, where a missing extension fails."""
    if not native.available():
        reason = native.status().reason
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the native kernels are not available ({reason}): CI must build "
                        "edgevit._native", pytrace=False)
        pytest.skip(f"edgevit._native is not available ({reason})", allow_module_level=True)
    from edgevit import _native

    return _native


def make_inputs(batch, tokens, heads, dim, seed=0, scale=1.0):
    """qkv (B, N, 3C), temperature (heads,), positional (N, C): float32, C-contiguous, moderate values."""
    rng = np.random.default_rng(seed)
    channels = heads * dim
    qkv = (rng.standard_normal((batch, tokens, 3 * channels)) * scale).astype(np.float32)
    temperature = rng.uniform(0.25, 2.5, heads).astype(np.float32)
    positional = (rng.standard_normal((tokens, channels)) * 0.5 * scale).astype(np.float32)
    return qkv, temperature, positional


def make_pooled_inputs(batch, heads, dim, tokens, keys, seed=0, scale=1.0):
    """RLMHSA's q (B, C, N) and kv (B, 2C, M): float32, C-contiguous, moderate values."""
    rng = np.random.default_rng(seed)
    channels = heads * dim
    q = (rng.standard_normal((batch, channels, tokens)) * scale / np.sqrt(dim)).astype(np.float32)
    kv = (rng.standard_normal((batch, 2 * channels, keys)) * scale).astype(np.float32)
    return q, kv


# --- small models with each custom attention (layer-scale gammas at 1, so that the
# attention shows in the logits: EdgeNeXt initializes them at 1e-6) ----------------------

def small_edgenext():
    import torch

    from edgevit.models.edgenext import EdgeNeXt

    torch.manual_seed(0)
    model = EdgeNeXt(num_classes=5, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), heads=(2, 2, 2, 2)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "gamma" in name:
                param.fill_(1.0)
            if name.endswith("temperature"):
                param.uniform_(0.5, 2.0)
    return model


def small_slab():
    import torch

    from edgevit.models.deit import build_deit

    torch.manual_seed(0)
    return build_deit(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=2, num_classes=3).eval()


def small_fmvit():
    """One head of width 8 in stage 1, then 2 and 4 heads (widths 8 and 16); keys pooled 4x4 to
    1x1. Weights at half of unit gain and BatchNorm statistics drawn at random, so that the logits
    are of order 1 (the training init's std 0.02 leaves them near 1e-5, under any tolerance)."""
    import torch
    from torch import nn

    from edgevit.models.fmvit import FMViT

    torch.manual_seed(0)
    model = FMViT(num_classes=4, dims=(16, 24, 32, 48), depths=(1, 1, 2, 1), mixers=(1, 1, 1, 1),
                  attn_dims=(8, 16, 16, 32), head_dim=8, sr_ratios=(4, 2, 2, 1)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, 0.5 * fan_in ** -0.5)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


SMALL_MODELS = {"edgenext": (small_edgenext, 64), "slab": (small_slab, 32), "fmvit": (small_fmvit, 64)}
CUSTOM_OP = {"edgenext": "XCA", "slab": "SLA", "fmvit": "RLMHSA"}
