"""The ViTs' target forms: DeiT and SLAB-DeiT channels first for Core ML, and SLAB's
fp16-safe linear attention (both forms), exact against the models as trained."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import edgevit
from edgevit.models.slab_layers import (
    FP16_MAX,
    SimplifiedLinearAttention,
    fp16_safe_linear_attention,
    simplified_linear_attention,
)
from edgevit.models.slab_swin import SlabSwinTransformer
from edgevit.reparam.checked import fold_checked
from edgevit.reparam.forms import FORMS, form_checked
from edgevit.runtimes.loader import load

from .helpers import randomize_statistics
from .test_target_forms import MODELS, inputs

VITS = ("slab_deit", "deit_layernorm")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("family", VITS)
@pytest.mark.parametrize("folded", [True, False], ids=["folded", "unfolded"])
def test_vit_forms_compute_what_the_model_as_trained_computes(family, form, folded):
    """Every block rewritten (channels first: the whole model as (B, C, 1, N)), checked in
    float64 against the model as trained with randomized statistics, folded and not."""
    build, size = MODELS[family]
    trained = randomize_statistics(build().eval())
    xs = inputs(size)
    model = fold_checked(trained, family, xs)[0] if folded else trained
    rewritten, report = form_checked(model, family, form, xs, reference=trained)
    assert report.changed and report.max_abs_change < 1e-5, report.to_dict()
    if form == "channels_first":
        assert rewritten.channels_first and all(block.channels_first for block in rewritten.blocks)
        assert not any(isinstance(m, torch.nn.Linear) for m in rewritten.blocks.modules())  # all 1x1 convs
        assert rewritten.pos_embed_channels_first.shape[:2] == (1, 32)  # (1, C, H, W) or (1, C, 1, T)


def small_swin():
    return SlabSwinTransformer(img_size=32, patch_size=4, num_classes=5, embed_dim=16, depths=(1, 1, 1),
                               num_heads=(1, 2, 2), window_size=2, linear_stages=2)


@pytest.mark.parametrize("form", FORMS)
def test_slab_swin_attention_takes_the_fp16_safe_form(form):
    """SLAB-Swin's linear attentions (tokens in and out: the model itself keeps its layout)."""
    trained = randomize_statistics(small_swin().eval())
    xs = inputs(32)
    model = fold_checked(trained, "slab_swin", xs)[0]
    _, report = form_checked(model, "slab_swin", form, xs, reference=trained)
    assert [e.where for e in report.entries] == ["layers.0.blocks.0.attn", "layers.1.blocks.0.attn"]
    assert report.max_abs_change < 1e-5


def _qkv(heads=2, d=64, side=8, k_peak=516.0, v_peak=13.0, q_peak=4.0, seed=0):
    """Tokens (1, N, 3*heads*d) and the positional table (1, N, heads*d) in the range of the
    trained PRepBN ViT that overflowed: ReLU(K+P) up to ``k_peak``, |v| up to ``v_peak``."""
    g = torch.Generator().manual_seed(seed)
    N = side * side
    q = torch.rand(1, N, heads * d, generator=g) * 2 * q_peak - q_peak
    k = torch.rand(1, N, heads * d, generator=g) * k_peak
    v = (torch.rand(1, N, heads * d, generator=g) * 2 - 1) * v_peak
    positional = torch.rand(1, N, heads * d, generator=g) * 0.2 - 0.1
    return torch.cat((q, k - positional, v), dim=-1).double(), positional.double()


def _blocks(qkv, positional, heads):
    N = qkv.shape[1]
    d = positional.shape[-1] // heads
    return (qkv.reshape(1, N, 3 * heads, d).permute(0, 2, 3, 1).contiguous(),  # (1, 3*heads, d, N)
            positional.reshape(1, N, heads, d).permute(0, 2, 3, 1).contiguous())  # (1, heads, d, N)


def _safe(qkv_blocks, positional_blocks, heads):
    return fp16_safe_linear_attention(qkv_blocks, positional_blocks, heads, torch.zeros_like)


def test_the_as_trained_attention_overflows_in_fp16_and_the_form_does_not():
    """k up to 516, v up to 13, 64 tokens, head dim 64 (docs/int8.md): in torch half the
    attention as trained gives inf/nan; the form stays finite and within fp16 rounding of the
    float64 result."""
    heads = 2
    qkv, positional = _qkv(heads=heads)
    reference = simplified_linear_attention(qkv, positional, heads)  # (1, N, C), float64
    as_trained = simplified_linear_attention(qkv.half(), positional.half(), heads)
    assert not torch.isfinite(as_trained).all()
    blocks, pos_blocks = _blocks(qkv, positional, heads)
    out = _safe(blocks.half(), pos_blocks.half(), heads)  # (1, heads, d, N)
    ours = out.double().reshape(1, -1, qkv.shape[1]).transpose(1, 2)  # (1, N, C)
    assert torch.isfinite(ours).all()
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=2e-2, rtol=1e-2)
    exact = _safe(blocks, pos_blocks, heads).reshape(1, -1, qkv.shape[1]).transpose(1, 2)
    np.testing.assert_allclose(exact.numpy(), reference.numpy(), atol=1e-12, rtol=1e-10)  # float64: exact


def _largest_intermediate(fn, *args) -> tuple[float, str]:
    """The largest magnitude of every op output in ``fn``'s traced graph that depends on its
    inputs (constants, such as the -inf that keeps v out of the ReLU, are not computed)."""
    graph = make_fx(fn)(*args)
    peak, where = 0.0, ""
    computed = {node for node in graph.graph.nodes if node.op == "placeholder"}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            nonlocal peak, where
            value = super().run_node(node)
            if not any(arg in computed for arg in node.all_input_nodes):
                return value
            computed.add(node)
            if node.op == "call_function" and isinstance(value, torch.Tensor) and value.is_floating_point():
                top = float(value.abs().max()) if value.numel() else 0.0
                if top > peak:
                    peak, where = top, str(node.target)
            return value

    Recorder(graph).run(*args)
    return peak, where


@pytest.mark.parametrize("side, d", [(8, 64), (16, 16), (56, 32)], ids=["trained", "square", "swin_stage1"])
def test_no_intermediate_of_the_form_passes_the_operands(side, d):
    """At the edge of fp16 (every operand up to 60000, q, k and v alike) no op output of the
    form's traced graph exceeds 65504 (the bound of its docstring), where the as-trained
    attention's sums pass 1e9."""
    heads = 2
    qkv, positional = _qkv(heads=heads, d=d, side=side, k_peak=6e4, v_peak=6e4, q_peak=6e4)
    blocks, pos_blocks = _blocks(qkv.float(), positional.float(), heads)
    peak, where = _largest_intermediate(lambda a, b: _safe(a, b, heads), blocks, pos_blocks)
    assert peak <= FP16_MAX, (peak, where)
    as_trained, _ = _largest_intermediate(lambda a, b: simplified_linear_attention(a, b, heads),
                                          qkv.float(), positional.float())
    assert as_trained > 1e9


def test_a_token_without_any_query_stays_zero_in_fp16():
    """q = 0 for a token (every ReLU closed): eps' underflows in fp16, the floor keeps 0/0 away."""
    heads = 1
    qkv, positional = _qkv(heads=heads)
    qkv[0, 3, :64] = -1.0  # token 3: q all negative -> ReLU(q) = 0
    blocks, pos_blocks = _blocks(qkv, positional, heads)
    out = _safe(blocks.half(), pos_blocks.half(), heads)
    assert torch.isfinite(out).all() and torch.all(out[..., 3] == 0)


# --- Core ML: at most one transpose per block, no more ops than as trained --------------------

# non-const MIL ops of the depth-2 test models exported as trained (target_form=False), measured
# with this census: slab_deit 72 (9 transposes), deit_layernorm 48 (5 transposes)
AS_TRAINED_OPS = {"slab_deit": 72, "deit_layernorm": 48}


@pytest.mark.parametrize("family", VITS)
def test_core_ml_vits_have_no_transposes_and_no_more_ops(family, tmp_path):
    build, size = MODELS[family]
    model = randomize_statistics(build().eval())
    result = edgevit.export(model, "coreml", tmp_path, image_size=size, num_inputs=1)
    assert result.form["form"] == "channels_first"
    census = load(result.path).op_census()
    assert census.get("transpose", 0) <= len(model.blocks), census  # the target: at most one per block
    assert census.get("transpose", 0) == 0, census  # reached: none at all
    assert sum(n for op, n in census.items() if op != "const") <= AS_TRAINED_OPS[family], census


# --- trained weights, real images: fp16 Core ML and TFLite ----------------------------------

def _benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fp16_slab.py"
    spec = importlib.util.spec_from_file_location("fp16_slab", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IMAGES = 64  # held-out test images


def _reach_the_overflowing_range(model, peaks, k_peak=512.0, v_peak=16.0) -> None:
    """Scale each attention's keys (k and P) and values (v, the DWC bias, and 1/x into proj) by
    powers of two so that ReLU(K+P) and v reach the 12-block model's trained range (k ~516,
    v ~13): the same function (the attention is invariant to the key scale up to its 1e-6, the
    value scale comes out of proj), with the magnitudes that overflowed its fp16 program."""
    key = 2.0 ** round(math.log2(k_peak / peaks["k"]))
    value = 2.0 ** round(math.log2(v_peak / peaks["v"]))
    with torch.no_grad():
        for attn in (m for m in model.modules() if isinstance(m, SimplifiedLinearAttention)):
            inner = attn.num_heads * attn.head_dim
            attn.qkv.weight[inner:2 * inner] *= key
            attn.qkv.bias[inner:2 * inner] *= key
            attn.positional_encoding *= key
            attn.qkv.weight[2 * inner:] *= value
            attn.qkv.bias[2 * inner:] *= value
            attn.dwc.bias *= value
            attn.proj.weight /= value


@pytest.fixture(scope="module")
def trained_slab():
    """A one-block SLAB-DeiT (PRepBN, 64 tokens, head dim 64) trained one epoch on digits at
    32x32, its attention scaled into the range where fp16 overflowed; ``python
    benchmarks/fp16_slab.py`` trains the 12-block model, which reaches that range itself."""
    bench = _benchmark()
    model, data = bench.train_slab(epochs=1, depth=1, embed_dim=128, num_heads=2)
    _reach_the_overflowing_range(model, bench.attention_peaks(model, data.x_train[:256]))
    return bench, model, data


def test_trained_slab_fp16_core_ml_and_tflite_match_pytorch_on_held_out_images(trained_slab, tmp_path):
    """The as-trained fp16 Core ML program overflows on real images (its attention sums pass
    65504); the target form's fp16 Core ML and TFLite programs are within the fp16 tolerance
    (5e-2 max abs on the logits) with top-1 agreement 1.0 on held-out test images."""
    bench, model, data = trained_slab
    peaks = bench.attention_peaks(model, data.x_test[:IMAGES])
    assert peaks["kv"] > FP16_MAX, peaks
    for target in ("coreml", "tflite"):
        result = bench.fidelity(model, data, target, tmp_path / target, target_form=True, count=IMAGES)
        assert result["form"] == {"coreml": "channels_first", "tflite": "channels_last"}[target]
        assert result["non_finite_outputs"] == 0, (target, result)
        assert result["max_abs_error"] <= 5e-2 and result["top1_agreement"] == 1.0, (target, result)
    try:
        before = bench.fidelity(model, data, "coreml", tmp_path / "as_trained", target_form=False, count=IMAGES)
    except edgevit.EdgeVitError:  # refused by its own verification: overflowed there already
        return
    assert before["non_finite_outputs"] > 0, before
