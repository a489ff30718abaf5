"""Model zoo: registry, parameter counts, deploy-friendly forward, checkpoint layouts."""

from __future__ import annotations

import pytest
import torch

import edgevit
from edgevit.errors import ArtifactError, UnsupportedModelError
from edgevit.models import get_spec
from edgevit.models.edgenext import split_sizes

PAPER_PARAMS_M = {
    "edgenext_xx_small": 1.33, "edgenext_x_small": 2.34, "edgenext_small": 5.59, "edgenext_base": 18.51,
    "edgenext_xx_small_bn_hs": 1.33, "edgenext_x_small_bn_hs": 2.34, "edgenext_small_bn_hs": 5.58,
}


def test_registry_lists_every_model():
    slab = ["deit_small_prepbn", "deit_tiny_prepbn", "slab_deit_small", "slab_deit_tiny", "slab_swin_tiny"]
    assert edgevit.list_models("edgenext") == sorted(PAPER_PARAMS_M)
    assert edgevit.list_models("slab") == slab
    assert edgevit.list_models("deit") == ["deit_small", "deit_tiny"]
    fmvit = ["fmvit_b", "fmvit_l", "fmvit_m", "fmvit_s", "fmvit_t"]
    assert edgevit.list_models("fmvit") == fmvit
    assert edgevit.list_models() == sorted([*PAPER_PARAMS_M, *slab, "deit_small", "deit_tiny", *fmvit])


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_parameter_count_within_half_percent_of_paper(name):
    model = edgevit.create_model(name)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params / PAPER_PARAMS_M[name] - 1) < 0.005, params
    spec = get_spec(name)
    assert spec.input_size == (3, 256, 256) and spec.paper.top1 and len(spec.mean) == 3


def test_unknown_model_suggests_names():
    with pytest.raises(UnsupportedModelError, match="did you mean edgenext_xx_small"):
        edgevit.create_model("edgenext_xx_smal")


def test_split_sizes_are_static_and_cover_the_channels():
    assert split_sizes(88, 3) == [30, 30, 28]
    assert split_sizes(168, 4) == [42, 42, 42, 42]
    assert sum(split_sizes(100, 3)) == 100


@pytest.mark.parametrize("name", ["edgenext_xx_small", "edgenext_xx_small_bn_hs"])
def test_exported_graph_has_no_einsum_and_constant_positional_encoding(name):
    model = edgevit.create_model(name)
    program = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("einsum" in t or "sin" in t or "cos" in t or "cumsum" in t for t in targets), targets
    assert not any("split_with_sizes" in t for t in targets), targets


def _official_to_timm(state):
    """The renames timm's checkpoint_filter_fn applies to official EdgeNeXt checkpoints."""
    import re

    out = {}
    for k, v in state.items():
        k = k.replace("downsample_layers.0.", "stem.")
        k = re.sub(r"stages.([0-9]+).([0-9]+)", r"stages.\1.blocks.\2", k)
        k = re.sub(r"downsample_layers.([0-9]+).([0-9]+)", r"stages.\1.downsample.\2", k)
        k = k.replace("dwconv", "conv_dw").replace("pwconv", "mlp.fc").replace("head.", "head.fc.")
        if k.startswith("norm."):
            k = k.replace("norm", "head.norm")
        out[k] = v
    return out


@pytest.mark.parametrize("layout", ["official", "timm"])
def test_checkpoints_load_in_official_and_timm_layouts(tmp_path, layout):
    torch.manual_seed(1)
    source = edgevit.create_model("edgenext_xx_small")
    for p in source.parameters():
        p.data.normal_(0, 0.05)
    state = source.state_dict()
    if layout == "timm":
        state = _official_to_timm(state)
        assert any(k.startswith("stem.") for k in state)
    path = tmp_path / "ckpt.pth"
    torch.save({"model_ema": state, "epoch": 3}, path)  # wrapped as the official trainer saves
    loaded = edgevit.create_model("edgenext_xx_small", weights=path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x), rtol=0, atol=0)


def test_checkpoint_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    state = edgevit.create_model("edgenext_xx_small").state_dict()
    state.pop("head.weight")
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UnsupportedModelError) as info:
        edgevit.create_model("edgenext_xx_small", weights=path)
    message = str(info.value)
    assert "missing keys (1: head.weight)" in message and "unexpected keys (1: extra.weight)" in message
    assert "\n" not in message


def test_checkpoint_of_other_variant_reports_shape_mismatches(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(edgevit.create_model("edgenext_x_small").state_dict(), path)
    with pytest.raises(UnsupportedModelError, match="shape mismatches"):
        edgevit.create_model("edgenext_xx_small", weights=path)


def test_truncated_checkpoint_is_an_artifact_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(edgevit.create_model("edgenext_xx_small").state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ArtifactError, match="cannot read weights file"):
        edgevit.create_model("edgenext_xx_small", weights=path)


def test_bn_hs_variant_uses_batchnorm_and_hardswish():
    model = edgevit.create_model("edgenext_xx_small_bn_hs")
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"BatchNorm2d", "Hardswish"} <= kinds and "LayerNorm" not in kinds and "GELU" not in kinds
