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
