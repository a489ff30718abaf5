"""Re-parameterization: every fold exact to 1e-5 against the unfolded eval-mode module,
with statistics far from their defaults; the report; the protocol."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import edgevit
from edgevit.models.deit import Block, VisionTransformer
from edgevit.models.edgenext import ConvEncoderBNHS, EdgeNeXt, SDTAEncoderBNHS
from edgevit.models.edgenext_layers import LayerNorm2d
from edgevit.models.slab_layers import RepBN
from edgevit.models.slab_swin import PatchMerging, SwinBlock, SwinPatchEmbed
from edgevit.reparam import ChannelAffine, fold_into_next, reparameterize

from .helpers import randomize_statistics

TOL = 1e-5


def assert_fold_exact(module: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Fold a copy of ``module`` (randomized stats) and compare with the unfolded eval module."""
    module = randomize_statistics(module, seed).eval()
    with torch.no_grad():
        ref = module(x)
    folded = reparameterize(copy.deepcopy(module))
    with torch.no_grad():
        got = folded(x)
    err = (got - ref).abs().max().item()
    assert err <= TOL, err
    assert ref.abs().max() > 0.01  # a non-trivial output (1000x the tolerance): the comparison means something
    return folded


def no_module(model: nn.Module, kinds) -> bool:
    return not any(isinstance(m, kinds) for m in model.modules())


def test_conv_then_batchnorm_folds_into_the_conv():
    for conv in (nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.Conv2d(6, 6, 5, padding=2, groups=6),
                 nn.Conv2d(6, 8, 3, groups=2)):
        seq = nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels))
        folded = assert_fold_exact(seq, torch.randn(2, 6, 9, 9))
        assert no_module(folded, nn.BatchNorm2d)
        assert folded.edgevit_reparam_report.counts() == {"BatchNorm2d -> previous Conv2d": 1}


def test_linear_then_batchnorm1d_and_conv1d():
    folded = assert_fold_exact(nn.Sequential(nn.Linear(7, 5), nn.BatchNorm1d(5)), torch.randn(4, 7))
    assert no_module(folded, nn.BatchNorm1d)
    folded = assert_fold_exact(nn.Sequential(nn.Conv1d(4, 6, 3), nn.BatchNorm1d(6)), torch.randn(2, 4, 11))
    assert no_module(folded, nn.BatchNorm1d)


def test_batchnorm_then_conv_folds_only_where_padding_cannot_mix_the_shift_in():
    exact = nn.Sequential(nn.BatchNorm2d(6), nn.Conv2d(6, 4, 2, stride=2))  # EdgeNeXt's downsample
    assert no_module(assert_fold_exact(exact, torch.randn(2, 6, 8, 8)), nn.BatchNorm2d)
    grouped = nn.Sequential(nn.BatchNorm2d(6), nn.Conv2d(6, 9, 1, groups=3))
    assert no_module(assert_fold_exact(grouped, torch.randn(2, 6, 5, 5)), nn.BatchNorm2d)
    reflect = nn.Sequential(nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3, padding=1, padding_mode="reflect"))
    assert no_module(assert_fold_exact(reflect, torch.randn(2, 6, 7, 7)), nn.BatchNorm2d)

    zero_padded = nn.Sequential(nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3, padding=1))
    folded = assert_fold_exact(zero_padded, torch.randn(2, 6, 7, 7))  # still exact: nothing folded
    assert isinstance(folded[0], nn.BatchNorm2d)
    kept = folded.edgevit_reparam_report.kept
    assert len(kept) == 1 and kept[0].where == "0" and "zero padding" in kept[0].detail


def test_batchnorm1d_then_linear():
    folded = assert_fold_exact(nn.Sequential(nn.BatchNorm1d(7), nn.Linear(7, 3)), torch.randn(5, 7))
    assert no_module(folded, nn.BatchNorm1d)


class _RepBNThenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = RepBN(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.norm(x))

    def reparameterize(self) -> None:
        fold_into_next(self, "norm", self.fc)


def test_repbn_folds_into_the_next_linear_alpha_included():
    module = randomize_statistics(_RepBNThenLinear())
    assert module.norm.alpha.item() != 1.0
    folded = assert_fold_exact(module, torch.randn(2, 10, 8))
    assert isinstance(folded.norm, nn.Identity)


def test_conv_then_repbn_keeps_alphas_share_of_the_conv_bias():
    """The official SLAB fold drops alpha * conv_bias; edgevit's must not."""
    embed = SwinPatchEmbed(4, 3, 16, lambda d: RepBN(d))
    embed = randomize_statistics(embed)
    with torch.no_grad():
        embed.proj.bias.uniform_(0.5, 1.0)  # a large conv bias: forgetting alpha*bias would show
    folded = assert_fold_exact(embed, torch.randn(2, 3, 16, 16))
    assert isinstance(folded.norm, nn.Identity)


def test_layer_scale_folds_into_the_previous_linear_and_conv():
    block = ConvEncoderBNHS(8, kernel_size=3)
    folded = assert_fold_exact(block, torch.randn(2, 8, 6, 6))
    assert folded.gamma is None and isinstance(folded.norm, nn.Identity)  # BN into dwconv, gamma into pwconv2


def test_sdta_bn_hs_keeps_only_the_residual_stream_batchnorm_as_multiply_add():
    block = SDTAEncoderBNHS(16, num_heads=2, scales=2, use_pos_emb=True)
    folded = assert_fold_exact(block, torch.randn(2, 16, 8, 8))
    assert isinstance(folded.norm_xca, ChannelAffine) and isinstance(folded.norm, nn.Identity)
    assert no_module(folded, nn.BatchNorm2d)
    kept = folded.edgevit_reparam_report.kept
    assert [k.where for k in kept] == ["norm_xca"] and "residual stream" in kept[0].detail


def test_final_norm_is_absorbed_into_the_head_through_the_pooling():
    for class_token in (False, True):
        vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=7,
                                attention="softmax", class_token=class_token)
        folded = assert_fold_exact(vit, torch.randn(2, 3, 32, 32))
        assert isinstance(folded.norm, nn.Identity)
        assert not any(isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)) for m in folded.modules())
    edgenext = EdgeNeXt(num_classes=5, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), heads=(2, 2, 2, 2), bn_hs=True)
    folded = assert_fold_exact(edgenext, torch.randn(2, 3, 64, 64))
    assert isinstance(folded.norm, nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_slab_blocks_fold_exactly():
    linear = Block(16, 2, num_tokens=16, mlp_ratio=2.0, attention="linear", norm_layer=lambda d: RepBN(d))
    assert_fold_exact(linear, torch.randn(2, 16, 16))
    shifted = SwinBlock(16, resolution=8, num_heads=2, window=4, shift=2, linear=False, mlp_ratio=2.0,
                        norm_layer=lambda d: RepBN(d))
    folded = assert_fold_exact(shifted, torch.randn(2, 64, 16))
    assert isinstance(folded.norm1, nn.Identity) and isinstance(folded.norm2, nn.Identity)
    assert_fold_exact(PatchMerging(8, 8, lambda d: RepBN(d)), torch.randn(2, 64, 8))


def test_layernorm_models_fold_the_affines_and_report_the_norms_that_stay():
    """Every LayerNorm whose output feeds one layer gives that layer its weight and bias
    (the normalization itself stays); the stem's feeds the residual stream and is kept."""
    model = edgevit.create_model("edgenext_xx_small")
    folded = assert_fold_exact(model, torch.randn(1, 3, 64, 64))
    report = folded.edgevit_reparam_report
    assert report.counts() == {"layer-scale -> previous Linear": 15, "LayerNorm affine -> next Linear": 16,
                               "LayerNorm2d affine -> next Conv2d": 3}
    assert [e.where for e in report.kept] == ["downsample_layers.0.1"]
    assert "not a fixed affine" in report.kept[0].detail
    norms = [m for m in folded.modules() if isinstance(m, (nn.LayerNorm, LayerNorm2d))]
    assert len(norms) == 20 and sum(m.weight is None for m in norms) == 19


@pytest.mark.parametrize("name", edgevit.list_models("slab"))
def test_every_slab_model_folds_to_no_normalization(name):
    model = edgevit.create_model(name)
    x = torch.randn(1, 3, 224, 224)
    folded = assert_fold_exact(model, x)
    assert not folded.edgevit_reparam_report.kept
    assert not any(isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)) for m in folded.modules())


def test_reparameterize_is_eval_in_place_and_idempotent():
    model = edgevit.create_model("edgenext_xx_small_bn_hs").train()
    same = edgevit.reparameterize(model)
    assert same is model and not model.training
    first = model.edgevit_reparam_report
    edgevit.reparameterize(model)
    second = model.edgevit_reparam_report
    assert len(first.folded) == 32 and len(second.folded) == 0
    assert [e.where for e in second.kept] == [e.where for e in first.kept]  # the same three stay


def test_reparameterize_rejects_what_is_not_a_module():
    with pytest.raises(edgevit.InputError, match="torch.nn.Module"):
        edgevit.reparameterize("edgenext_xx_small")


class _ConvLayerScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
        self.gamma = nn.Parameter(torch.full((6, 1, 1), 0.3))

    def forward(self, x):
        return x.mean() + (self.conv(x) if self.gamma is None else self.gamma * self.conv(x))

    def reparameterize(self) -> None:
        from edgevit.reparam import fold_layer_scale

        fold_layer_scale(self.conv, self, "gamma")


def test_layer_scale_folds_into_a_grouped_conv():
    module = _ConvLayerScale()
    with torch.no_grad():
        module.gamma.uniform_(0.2, 1.5)
    folded = assert_fold_exact(module, torch.randn(2, 4, 5, 5))
    assert folded.gamma is None
    assert folded.edgevit_reparam_report.counts() == {"layer-scale -> previous Conv2d": 1}


def test_a_kept_affine_along_another_axis_is_not_folded_into_its_neighbour():
    """A ChannelAffine over the last axis of a conv output is not per conv channel: kept."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), ChannelAffine(torch.rand(4) + 0.5, torch.rand(4), channel_axis=-1)).eval()
    x = torch.randn(2, 3, 4, 4)
    before = model(x)
    reparameterize(model)
    assert torch.allclose(model(x), before, atol=1e-6)
    assert isinstance(model[1], ChannelAffine)
    assert any(e.action == "kept" and "axis -1" in e.detail for e in model.edgevit_reparam_report.entries)
