"""FMViT (reconstruction): sizes against the paper, exact folding of every block, the FLOP
counter, and export of every variant to ONNX, Core ML and TFLite with parity."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import edgevit
from edgevit.artifact.input_form import InputForm
from edgevit.inspect.cost import count_macs
from edgevit.models.fmvit import (
    RLMHSA,
    ConvBlock,
    ConvFusionBlock,
    FrequencyMixingBlock,
    GroupMLP,
    mixing_positions,
)
from edgevit.models.registry import get_spec
from edgevit.pipeline.artifact_module import artifact_module
from edgevit.pipeline.checks import verification_probes
from edgevit.reparam import recalibrate_batchnorm, reparameterize
from edgevit.reparam.branches import MultiBranchConv2d
from edgevit.reparam.checked import FOLD_TOLERANCE, torch_reference

from .conftest import SMALL, assert_clean_failure, run_cli
from .helpers import onnx_normalization_ops

VARIANTS = ["fmvit_t", "fmvit_s", "fmvit_m", "fmvit_b", "fmvit_l"]
PUBLISHED = {  # name: (params M, GFLOPs) at 224x224, from the paper's abstract
    "fmvit_t": (2.0, 0.3), "fmvit_s": (6.4, 0.8), "fmvit_m": (12.8, 2.0), "fmvit_b": (24.3, 4.2),
    "fmvit_l": (35.3, 7.1),
}


def realistic(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Weights at PyTorch's fan-in scale, BatchNorm affines away from identity, and running
    statistics measured on random batches of ``shape`` (as training leaves them), so that
    activations stay O(1) through every block and every path moves the logits well past
    the tolerances."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) / fan_in ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.num_features, generator=g) * 0.8 + 0.2)
                module.bias.copy_(torch.randn(module.num_features, generator=g) * 0.2)
    batches = [torch.randn(shape, generator=g) for _ in range(2)]
    recalibrate_batchnorm(model, batches)
    return model.eval()


def _bn_and_branches(model: nn.Module) -> list[str]:
    """Paths of BatchNorms and of multi-branch convs that still have branches."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            or (isinstance(m, MultiBranchConv2d) and (len(m.branches) or m.identity is not None))]


def _own_reparameterize(module: nn.Module) -> nn.Module:
    """The block's own ``reparameterize()``, called on the block alone (not by the engine)."""
    module.eval().reparameterize()
    return module


def _assert_folds_exactly(module: nn.Module, *inputs: torch.Tensor, float32: bool = True,
                          fold=reparameterize) -> nn.Module:
    """Fold ``module`` (float32, as export does) and check that the fold is exact.

    - the folded float32 weights, run in float64, match the unfolded model run in float64
      within FOLD_TOLERANCE (what the export's fold check asserts);
    - folding a float64 copy changes its output by float64 rounding only (the algebra);
    - with ``float32``, the folded and unfolded models also agree in float32 within
      FOLD_TOLERANCE (shallow modules: deep stacks add float32 rounding of their own).
    """
    if len(inputs) == 1:
        module = realistic(module, tuple(inputs[0].shape))
    atol, rtol = FOLD_TOLERANCE
    wide = [x.double() for x in inputs]
    with torch.no_grad():
        folded = fold(copy.deepcopy(module))
        truth = copy.deepcopy(module).double()(*wide)
        assert truth.abs().max() > 0.1  # a real signal, not a vanishing one
        torch.testing.assert_close(copy.deepcopy(folded).double()(*wide), truth, atol=atol, rtol=rtol)
        folded64 = fold(copy.deepcopy(module).double())
        torch.testing.assert_close(folded64(*wide), truth, atol=1e-10, rtol=1e-10)
        if float32:
            torch.testing.assert_close(folded(*inputs), module(*inputs), atol=atol, rtol=rtol)
    assert _bn_and_branches(folded) == []
    if fold is reparameterize:
        assert folded.edgevit_reparam_report.kept == []
    return folded


# -- sizes and the FLOP counter -------------------------------------------------------------

def test_five_variants_are_registered_as_a_reconstruction():
    assert edgevit.list_models("fmvit") == sorted(VARIANTS)
    for name in VARIANTS:
        spec = get_spec(name)
        assert (spec.paper.params_m, spec.paper.gmacs) == PUBLISHED[name]
        assert "reconstruct" in spec.paper.source and "no official weights" in spec.description
    rows = json.loads(run_cli("--json", "models", "--family", "fmvit").stdout)
    assert [r["name"] for r in rows] == sorted(VARIANTS)
    assert all(r["caveat"].startswith("reconstructed from the paper's description") for r in rows)
    listing = run_cli("models").stdout
    assert "fmvit_t *" in listing and "edgenext_small *" not in listing


@pytest.mark.parametrize("name", VARIANTS)
def test_deployed_size_is_within_10_percent_of_the_paper(name):
    cost = edgevit.model_cost(name)
    params, gflops = PUBLISHED[name]
    assert cost.input_shape == (1, 3, 224, 224)
    assert abs(cost.deployed_params / 1e6 / params - 1) <= 0.10, cost
    assert abs(cost.gflops / gflops - 1) <= 0.10, cost
    assert cost.params > cost.deployed_params  # the gMLP branches exist only while training


def test_model_cost_takes_a_module_and_refuses_anything_else():
    model = edgevit.create_model("fmvit_t")
    cost = edgevit.model_cost(model, image_size=SMALL)
    assert cost.input_shape == (1, 3, SMALL, SMALL) and cost.deployed_params == 1995928
    assert not model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # untouched
    with pytest.raises(edgevit.InputError, match="needs a torch.nn.Module"):
        edgevit.model_cost(3)


@pytest.mark.parametrize("name,published", [("edgenext_xx_small", 0.261), ("edgenext_x_small", 0.538),
                                            ("edgenext_small", 1.26)])
def test_flop_counter_matches_edgenext_published_madds(name, published):
    cost = edgevit.model_cost(name)  # 256x256, the size EdgeNeXt reports at
    assert cost.input_shape == (1, 3, 256, 256)
    assert abs(cost.gflops / published - 1) < 0.01, cost.gflops


def test_flop_counter_counts_each_op_as_the_papers_do():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.ln = nn.LayerNorm(4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))  # (1, 4, 8, 8)
            tokens = self.ln(x.flatten(2).transpose(1, 2))  # (1, 64, 4)
            attn = (tokens @ tokens.transpose(1, 2)).softmax(-1)  # (1, 64, 64)
            return self.fc((attn @ tokens).mean(1))

    macs = count_macs(Tiny(), (1, 3, 8, 8))
    conv, bn, ln = 4 * 3 * 9 * 64, 2 * 4 * 64, 5 * 64 * 4
    matmuls = 64 * 64 * 4 * 2
    assert macs == conv + bn + ln + matmuls + 4 * 2


def test_rlmhsa_costs_queries_times_pooled_keys():
    attn = RLMHSA(32, num_heads=4, sr_ratio=2).eval()
    folded = reparameterize(copy.deepcopy(attn))
    n, m, c = 16 * 16, 8 * 8, 32
    projections = n * c * c + m * c * 2 * c + n * c * c  # q, kv, proj
    pooling = m * c * 2 * 2  # depth-wise 2x2, stride 2
    assert count_macs(folded, (1, c, 16, 16)) == projections + pooling + 2 * n * m * c


def test_cli_info_model_prints_params_and_gflops():
    result = run_cli("info", "--model", "fmvit_t")
    assert result.code == 0, result.stderr
    assert "fmvit_t at 3x224x224: 2.00M params" in result.stdout and "GFLOPs" in result.stdout
    data = json.loads(run_cli("--json", "info", "--model", "edgenext_xx_small").stdout)
    assert data["input"] == [1, 3, 256, 256] and abs(data["macs"] / 261e6 - 1) < 0.01
    small = json.loads(run_cli("--json", "info", "--model", "fmvit_s", "--image-size", "64").stdout)
    assert small["input"] == [1, 3, 64, 64] and small["gflops"] < 0.1


@pytest.mark.parametrize("args,message", [
    (("info", "--model", "fmvit_x"), "unknown model 'fmvit_x'"),
    (("info", "--model", "fmvit_t", "--image-size", "50"), "multiples of 32"),
    (("info", "--image-size", "64"), "--image-size goes with --model"),
])
def test_cli_info_model_bad_input_is_one_line(args, message):
    assert_clean_failure(run_cli(*args), contains=message)


# -- folding ------------------------------------------------------------------------------

@pytest.mark.parametrize("kernels,groups,identity,stride,channels", [
    ((1, 1, 1), (1, 2, 4), False, 1, (8, 16)),  # gMLP: multi-group 1x1 -> one dense 1x1
    ((3, 1), (8, 8), True, 1, (8, 8)),  # depth-wise 3x3 + 1x1 + identity
    ((5, 3, 1), (2, 4, 8), True, 1, (8, 8)),  # mixed kernels and groups -> 5x5 with 2 groups
    ((3, 1), (4, 2), False, 2, (8, 16)),  # strided
    ((1,), (1,), True, 1, (8, 8)),  # CFB's channel mixer
])
def test_multi_branch_conv_folds_into_one_conv(kernels, groups, identity, stride, channels):
    cin, cout = channels
    module = MultiBranchConv2d(cin, cout, kernels, groups, stride=stride, identity=identity)
    folded = _assert_folds_exactly(module, torch.randn(2, cin, 9, 9))
    fused = folded.fused
    assert fused.kernel_size == (max(kernels),) * 2 and fused.groups == np.gcd.reduce(groups)
    assert [type(m) for m in folded.modules() if type(m) is not nn.ModuleList] == [MultiBranchConv2d, nn.Conv2d]
    assert len(folded.branches) == 0
    weight = fused.weight.detach().clone()
    reparameterize(folded)  # idempotent
    assert torch.equal(folded.fused.weight, weight)


@pytest.mark.parametrize("kwargs,message", [
    (dict(kernel_sizes=(2,), groups=(1,)), "odd"),
    (dict(kernel_sizes=(1,), groups=(3,)), "do not divide"),
    (dict(kernel_sizes=(1, 3), groups=(1,)), "one kernel size and one group count"),
    (dict(kernel_sizes=(3,), groups=(1,), identity=True, stride=2), "identity branch"),
])
def test_multi_branch_conv_rejects_what_cannot_fold(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiBranchConv2d(8, 8, **kwargs)


@pytest.mark.parametrize("make,shape", [
    (lambda: GroupMLP(16, 3.0), (2, 16, 8, 8)),
    (lambda: RLMHSA(16, num_heads=2, sr_ratio=1), (2, 16, 8, 8)),
    (lambda: RLMHSA(16, num_heads=2, sr_ratio=4), (2, 16, 8, 8)),
    (lambda: ConvBlock(16), (2, 16, 8, 8)),
    (lambda: FrequencyMixingBlock(32, attn_dim=16, num_heads=2, sr_ratio=2), (2, 32, 8, 8)),
], ids=["gmlp", "rlmhsa-sr1", "rlmhsa-sr4", "conv-block", "mixing-block"])
@pytest.mark.parametrize("fold", [reparameterize, _own_reparameterize], ids=["engine", "own"])
def test_every_block_folds_exactly(make, shape, fold):
    folded = _assert_folds_exactly(make(), torch.randn(shape), fold=fold)
    if isinstance(folded, RLMHSA):
        assert folded.scale == 1.0 and isinstance(folded.norm, nn.Identity)


def test_cfb_folds_to_two_convs():
    high, low = torch.randn(2, 6, 8, 8), torch.randn(2, 10, 8, 8)
    cfb = ConvFusionBlock(16)
    realistic(cfb.channel, (2, 16, 8, 8))
    realistic(cfb.local, (2, 16, 8, 8))
    folded = _assert_folds_exactly(cfb, high, low)
    assert _bn_and_branches(_own_reparameterize(copy.deepcopy(cfb))) == []
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.groups) for c in convs] == [((3, 3), 16), ((1, 1), 1)]


def test_a_norm_read_by_two_layers_folds_into_both_or_neither():
    from edgevit.reparam import fold_into_next

    parent = nn.Module()
    parent.norm = realistic(nn.Sequential(nn.BatchNorm2d(4)), (2, 4, 5, 5))[0]
    padded, plain = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
    before = (padded.weight.clone(), plain.weight.clone())
    assert not fold_into_next(parent, "norm", [plain, padded])  # the padded conv refuses: neither changes
    assert isinstance(parent.norm, nn.BatchNorm2d)
    assert torch.equal(plain.weight, before[1]) and torch.equal(padded.weight, before[0])


def test_mixing_blocks_are_spread_and_end_the_stage():
    assert mixing_positions(2, 1) == {1}
    assert mixing_positions(10, 3) == {9, 6, 2}
    assert mixing_positions(3, 0) == set()
    with pytest.raises(ValueError):
        mixing_positions(2, 3)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_folds_exactly_to_plain_convs(name):
    folded = _assert_folds_exactly(edgevit.create_model(name), torch.randn(2, 3, SMALL, SMALL), float32=False)
    report = folded.edgevit_reparam_report.counts()
    assert report["3 parallel branches -> one Conv2d"] > 0 and report["attention scale -> previous Conv2d"] > 0


def test_the_whole_model_folds_through_its_own_reparameterize():
    _assert_folds_exactly(edgevit.create_model("fmvit_t"), torch.randn(2, 3, SMALL, SMALL), float32=False,
                          fold=_own_reparameterize)


def test_attention_moves_the_logits_far_past_the_parity_tolerance():
    x = torch.randn(2, 3, SMALL, SMALL)
    model = realistic(edgevit.create_model("fmvit_t"), x.shape)
    with torch.no_grad():
        before = model(x)
        for module in model.modules():
            if isinstance(module, RLMHSA):
                module.proj.weight.zero_()
        assert (model(x) - before).abs().max() > 0.05


# -- export ---------------------------------------------------------------------------------

def parallel_branches(onnx_path) -> list[str]:
    """Add nodes that sum convolutions reading the same tensor (or a conv and that tensor):
    structure a re-parameterization should have merged into one conv."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {out: n for n in graph.node for out in n.output}

    def conv_source(tensor):
        node = producer.get(tensor)
        return node.input[0] if node is not None and node.op_type == "Conv" else None

    found = []
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        a, b = node.input
        sources = conv_source(a), conv_source(b)
        if (sources[0] and sources[0] in (sources[1], b)) or (sources[1] and sources[1] == a):
            found.append(node.name)
    return found


def test_the_branch_detector_finds_the_unfolded_branches(tmp_path):
    model = realistic(edgevit.create_model("fmvit_t"), (2, 3, SMALL, SMALL))
    result = edgevit.export(model, "onnx", tmp_path, image_size=SMALL, reparam=False, num_inputs=1)
    assert len(parallel_branches(result.path)) > 20
    assert onnx_normalization_ops(result.path)


def _float32_rounding(model: nn.Module, form: InputForm, inputs) -> float:
    """How far ``model`` behind the input ``form`` (the parity reference) is from itself in
    float64, on ``inputs`` (normalized NCHW) given in that form."""
    wrapped = artifact_module(model, form)
    reference, exact = torch_reference(wrapped), torch_reference(copy.deepcopy(wrapped).double())
    given = [form.from_normalized(x) for x in inputs]
    return max(float(np.abs(reference(x) - exact(x.astype(np.float64))).max()) for x in given)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_exports_to_every_target_with_parity(name, tmp_path):
    model = realistic(edgevit.create_model(name), (2, 3, SMALL, SMALL))
    results = edgevit.export(model, "all", tmp_path, image_size=SMALL, num_inputs=2)
    assert [r.target for r in results] == ["onnx", "coreml", "tflite"]
    spec = get_spec(name)  # the inputs verification ran: 2 random ones and edgevit's photos
    inputs = [p.x for p in verification_probes((1, 3, SMALL, SMALL), spec.mean, spec.std, spec.crop_pct,
                                               num_inputs=2)[0]]
    scale = max(float(np.abs(torch_reference(model)(x)).max()) for x in inputs)
    assert scale > 1.0  # O(1) logits: every path matters
    for result in results:
        assert result.written and result.parity.passed and result.parity.numerically_verified, result.target
        assert result.reparam["kept"] == 0 and result.reparam["max_abs_change"] < 1e-5
        # far inside the fp32 tolerance: the artifact and the unfolded model each round on
        # their own, so their distance is bounded by a few times that rounding, no more;
        # the rounding is the reference's that parity compares with: the unfolded model
        # behind the artifact's input form (TFLite: RGB pixels, normalized in float32)
        noise = _float32_rounding(model, InputForm.of(edgevit.load(result.path).metadata), inputs)
        bound = max(1e-5 * scale, 3 * noise)
        assert result.parity.max_abs_err <= bound, (result.target, result.parity.max_abs_err, scale, noise)
        assert result.parity.top1_agreement == 1.0
        meta = edgevit.load(result.path).metadata
        assert meta.model == name and meta.parity["status"] == "passed" and meta.input_shape == (
            [1, SMALL, SMALL, 3] if result.target == "tflite" else [1, 3, SMALL, SMALL])
    onnx_path = results[0].path
    assert onnx_normalization_ops(onnx_path) == []
    assert parallel_branches(onnx_path) == []
    census = {r.target: edgevit.load(r.path).op_census() for r in results}
    assert not any("batch_norm" in op.lower() or "batchnorm" in op.lower() for ops in census.values() for op in ops)
    assert census["onnx"]["Softmax"] == sum(get_spec(name).config["mixers"])
