"""SLAB: RepBN, the PRepBN schedule, simplified linear attention, BN recalibration,
the registered models and the official checkpoint layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgevit
from edgevit.models.deit import build_deit
from edgevit.models.slab_layers import PRepBN, RepBN, SimplifiedLinearAttention
from edgevit.reparam import recalibrate_batchnorm

from .helpers import randomize_statistics


def test_repbn_is_batchnorm_plus_alpha_x():
    norm = randomize_statistics(RepBN(6)).eval()
    x = torch.randn(2, 5, 6)
    bn = norm.bn
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias + norm.alpha * x
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-6)


def test_prepbn_lambda_falls_linearly_and_survives_a_checkpoint():
    norm = PRepBN(4, step=10, warm=2).train()
    x = torch.randn(3, 5, 4)
    lams = []
    for _ in range(14):
        lams.append(norm.lam)
        norm(x)
    assert lams[:3] == [1.0, 1.0, 1.0]  # two warm-up steps (LayerNorm only), then lambda = 10/10
    assert lams[3:] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0])
    resumed = PRepBN(4, step=10, warm=2)
    midway = PRepBN(4, step=10, warm=2).train()
    for _ in range(6):
        midway(x)
    resumed.load_state_dict(midway.state_dict())
    assert resumed.lam == midway.lam == pytest.approx(0.6)


def test_prepbn_training_mix_and_eval_branch():
    norm = randomize_statistics(PRepBN(4, step=4)).train()
    x = torch.randn(3, 5, 4)
    ln, rep = norm.norm1(x), norm.norm2(x)  # (RepBN in train mode: batch statistics)
    torch.testing.assert_close(norm(x), 1.0 * ln + 0.0 * rep)  # lambda = 4/4 at the first step
    torch.testing.assert_close(norm(x), 0.75 * ln + 0.25 * rep)
    norm.eval()
    torch.testing.assert_close(norm(x), norm.norm2(x))  # eval: RepBN only


def _reference_linear_attention(attn: SimplifiedLinearAttention, x: torch.Tensor) -> torch.Tensor:
    """The paper's formula, head by head, with einsum and explicit sums (test oracle)."""
    B, N, C = x.shape
    h = attn.num_heads
    d = C // h
    q, k, v = attn.qkv(x).split(C, dim=-1)
    k = k + attn.positional_encoding
    q, k = torch.relu(q), torch.relu(k)
    outs = []
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
        kv = torch.einsum("bnc,bnd->bcd", kh, vh)
        num = torch.einsum("bnc,bcd->bnd", qh, kv)
        den = torch.einsum("bnc,bc->bn", qh, kh.sum(1))[..., None] + 1e-6
        grid = vh.transpose(1, 2).reshape(B, d, attn.side, attn.side)
        outs.append(num / den + attn.dwc(grid).flatten(2).transpose(1, 2))
    return attn.proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("dim,heads,tokens", [(16, 2, 49), (48, 3, 9), (24, 1, 1)])
def test_linear_attention_matmuls_equal_the_formula(dim, heads, tokens):
    attn = randomize_statistics(SimplifiedLinearAttention(dim, tokens, num_heads=heads)).eval()
    x = torch.randn(2, tokens, dim)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _reference_linear_attention(attn, x), atol=1e-5, rtol=1e-5)
    assert attn.dwc.in_channels == dim // heads and attn.dwc.kernel_size == (5, 5)  # one dwc shared by heads


def test_linear_attention_guard_keeps_zero_keys_finite():
    attn = SimplifiedLinearAttention(8, 4, num_heads=2).eval()
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.bias.fill_(-1.0)  # ReLU(q) = ReLU(k) = 0 everywhere: the denominator is only the guard
        out = attn(torch.randn(1, 4, 8))
    assert torch.isfinite(out).all()


def test_linear_attention_rejects_a_non_square_grid():
    with pytest.raises(ValueError, match="square"):
        SimplifiedLinearAttention(8, 10, num_heads=2)


def test_recalibration_recomputes_exact_statistics_and_freezes_weights():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    data = [torch.randn(8, 3) * 2 + 1 for _ in range(5)]
    assert recalibrate_batchnorm(model, data) == 5
    with torch.no_grad():
        hidden = model[0](torch.cat(data))
    torch.testing.assert_close(model[1].running_mean, hidden.mean(0), atol=1e-5, rtol=1e-5)
    # the cumulative average of per-batch unbiased variances
    batch_vars = torch.stack([model[0](b).var(0, unbiased=True) for b in data]).mean(0).detach()
    torch.testing.assert_close(model[1].running_var, batch_vars, atol=1e-5, rtol=1e-5)
    assert not model.training and model[1].momentum == 0.1
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_recalibration_uses_the_repbn_branch_of_prepbn():
    model = build_deit(img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=2, num_classes=3)
    for m in model.modules():
        if isinstance(m, PRepBN):
            m.iter.fill_(5)  # mid-schedule: training mode would mix in LayerNorm and advance the counter
    recalibrate_batchnorm(model, [(torch.randn(4, 3, 16, 16), torch.zeros(4))])
    assert all(int(m.iter) == 5 for m in model.modules() if isinstance(m, PRepBN))


# parameter counts of the official code's models (xinghaochen/SLAB), every trainable parameter
OFFICIAL_PARAMS = {
    "slab_deit_tiny": 6_198_401,
    "slab_deit_small": 22_992_641,
    "deit_small_prepbn": 22_069_889,
    "slab_swin_tiny": 29_216_605,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_match_the_official_models(name):
    model = edgevit.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]


def test_deit_tiny_prepbn_matches_the_official_plain_repbn_model():
    # the official DeiT-T-PRepBN uses plain RepBN: 5,717,441 parameters; ours adds the
    # training-only LayerNorm branch of PRepBN (12 blocks x 2 norms + 1, 2 x 192 each)
    model = edgevit.create_model("deit_tiny_prepbn")
    ln_branch = sum(p.numel() for n, p in model.named_parameters() if ".norm1.weight" in n or ".norm1.bias" in n
                    if isinstance(model.get_submodule(n.rsplit(".", 1)[0]), nn.LayerNorm))
    assert ln_branch == 25 * 2 * 192
    assert sum(p.numel() for p in model.parameters()) - ln_branch == 5_717_441


def test_slab_swin_stages():
    model = edgevit.create_model("slab_swin_tiny")
    kinds = [[type(b.attn).__name__ for b in layer.blocks] for layer in model.layers]
    assert kinds[0] == kinds[1] == ["SimplifiedLinearAttention"] * 2
    assert kinds[2] == ["WindowAttention"] * 6 and kinds[3] == ["WindowAttention"] * 2
    assert [b.shift for b in model.layers[2].blocks] == [0, 3] * 3 and model.layers[2].blocks[0].window == 7
    assert [b.shift for b in model.layers[3].blocks] == [0, 0]  # 7x7 map: one window, no shift
    assert model.layers[0].blocks[0].attn.positional_encoding.shape == (1, 56 * 56, 96)  # global


OFFICIAL_KEYS = {
    "slab_deit_tiny": ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.warm",
                       "blocks.0.norm1.iter", "blocks.0.norm1.total_step", "blocks.0.norm1.norm1.weight",
                       "blocks.0.norm1.norm2.alpha", "blocks.0.norm1.norm2.bn.running_var",
                       "blocks.0.attn.qkv.weight", "blocks.0.attn.dwc.weight", "blocks.0.attn.positional_encoding",
                       "blocks.11.mlp.fc2.bias", "norm.norm2.bn.weight", "head.weight"],
    "slab_swin_tiny": ["patch_embed.proj.weight", "patch_embed.norm.norm2.alpha", "layers.0.blocks.0.attn.dwc.weight",
                       "layers.2.blocks.1.attn.relative_position_bias_table", "layers.2.blocks.1.attn_mask",
                       "layers.0.downsample.norm.norm2.bn.weight", "layers.0.downsample.reduction.weight",
                       "norm.norm1.weight", "head.bias"],
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_KEYS))
def test_official_key_layout(name):
    keys = edgevit.create_model(name).state_dict().keys()
    missing = [k for k in OFFICIAL_KEYS[name] if k not in keys]
    assert not missing
    assert "layers.0.downsample.reduction.bias" not in keys


def test_checkpoint_roundtrip_and_plain_repbn_layout(tmp_path):
    trained = randomize_statistics(edgevit.create_model("slab_deit_tiny"), seed=3)
    path = tmp_path / "slab.pth"
    torch.save({"model": trained.state_dict()}, path)
    loaded = edgevit.create_model("slab_deit_tiny", weights=path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x), atol=0, rtol=0)

    official = randomize_statistics(build_deit(embed_dim=192, num_heads=3, attention="softmax", class_token=True,
                                               norm="repbn"), seed=4).eval()
    assert "blocks.0.norm1.alpha" in official.state_dict()
    torch.save(official.state_dict(), tmp_path / "deit_t_repbn.pth")
    model = edgevit.create_model("deit_tiny_prepbn", weights=tmp_path / "deit_t_repbn.pth")
    with torch.no_grad():
        torch.testing.assert_close(model(x), official(x), atol=1e-6, rtol=1e-6)


def test_a_checkpoint_of_another_model_is_refused_with_the_keys(tmp_path):
    torch.save(edgevit.create_model("slab_deit_tiny").state_dict(), tmp_path / "t.pth")
    with pytest.raises(edgevit.UnsupportedModelError, match="shape mismatches"):
        edgevit.create_model("slab_deit_small", weights=tmp_path / "t.pth")
