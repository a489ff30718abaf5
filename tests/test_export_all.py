"""Every registered model to every target at a small size, each artifact checked."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import edgevit
from edgevit.exporters import TARGETS

from edgevit.models.registry import get_spec

from .conftest import SMALL
from .helpers import onnx_normalization_ops, randomize_statistics


# FMViT's variants are exported to every target by tests/test_fmvit.py, with weights at
# fan-in scale and BatchNorm statistics measured on data: the uncalibrated statistics used
# here compound over its residual stream, and a 1e-5 absolute bound ignores that its
# logits are O(1). Exporting them twice would add minutes to CI.
OTHERS = [name for name in edgevit.list_models() if get_spec(name).family != "fmvit"]


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHERS)
def test_every_model_exports_to_every_target_with_parity(name, tmp_path):
    """Folded by default, verified against the unfolded model (statistics randomized so the
    folds matter) within 1e-5 on the runtimes that run here; no normalization left."""
    spec = get_spec(name)
    size = spec.input_size[1] if spec.fixed_size else SMALL
    model = randomize_statistics(edgevit.create_model(name))
    results = edgevit.export(model, "all", tmp_path, image_size=size, num_inputs=2)
    assert [r.target for r in results] == list(TARGETS)
    for result in results:
        assert result.written and result.path.exists(), result
        report = result.parity
        assert report is not None and report.passed, report
        assert result.reparam["folded"] > 0 and result.reparam["max_abs_change"] < 1e-5  # DeiT: LN affines
        rt = edgevit.load(result.path)
        assert rt.metadata.model == name and rt.metadata.parity["status"] == "passed"
        app_form = result.target == "tflite"  # NHWC pixels by default
        assert rt.metadata.input_shape == ([1, size, size, 3] if app_form else [1, 3, size, size])
        assert (rt.metadata.layout, rt.metadata.image_input) == (("NHWC", True) if app_form else ("NCHW", False))
        assert rt.metadata.reparam["folded"] == result.reparam["folded"]
        if result.target == "coreml" and sys.platform != "darwin":
            assert "reference interpreter" in report.backend  # Core ML itself needs macOS
        assert report.numerically_verified and report.max_abs_err < 1e-5, (result.target, report.max_abs_err)
        assert report.top1_agreement == 1.0
    onnx_path = results[0].path
    left = onnx_normalization_ops(onnx_path)
    if spec.family == "slab":
        assert not left, left
        assert result.reparam["kept"] == 0
    elif name.endswith("_bn_hs"):
        assert not left, left  # the SDTA residual-stream BatchNorm stays as Mul + Add
        assert result.reparam["kept"] == sum(get_spec(name).config["global_block"][1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r.path.name for r in results)


def test_no_reparam_keeps_the_batchnorms(tmp_path):
    result = edgevit.export("edgenext_xx_small_bn_hs", "onnx", tmp_path, image_size=SMALL, reparam=False)
    assert result.reparam is None and result.parity.passed
    assert any(op.startswith("BatchNormalization") for op in onnx_normalization_ops(result.path))
    folded = edgevit.export("edgenext_xx_small_bn_hs", "onnx", tmp_path / "folded", image_size=SMALL)
    assert not onnx_normalization_ops(folded.path)


def test_fixed_size_models_refuse_another_size(tmp_path):
    with pytest.raises(edgevit.InputError, match="224x224"):
        edgevit.export("slab_deit_tiny", "onnx", tmp_path, image_size=SMALL)
    assert not list(tmp_path.iterdir())


def test_a_module_exports_at_its_own_declared_input_size(tmp_path):
    """``input_size`` on a module, registered or not, fixes the export shape: an image model
    at another size and a non-image model with an image are refused in one line."""
    from edgevit.models.deit import build_deit

    vit = build_deit(num_classes=3, img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                     attention="softmax", class_token=True, norm="layernorm").eval()
    with pytest.raises(edgevit.InputError, match="32x32"):
        edgevit.export(vit, "onnx", tmp_path, image_size=SMALL)

    class Head(torch.nn.Module):
        input_size = (5,)

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(edgevit.InputError, match="not images"):
        edgevit.export(Head(), "onnx", tmp_path, image_size=SMALL)
    result = edgevit.export(Head(), "onnx", tmp_path)
    assert result.parity.passed and edgevit.load(result.path).inputs[0].shape == (1, 5)


def test_a_wrong_fold_is_caught_before_anything_is_written(tmp_path):
    class BadFold(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3)))

        def reparameterize(self):
            with torch.no_grad():
                self.fc.weight.mul_(1.01)  # not exact: must be refused

    with pytest.raises(edgevit.ExportError, match="re-parameterizing badfold changed its output"):
        edgevit.export(BadFold(), "onnx", tmp_path, image_size=8)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("target", ["tflite", "coreml"])
def test_fp16_exports(target, tmp_path):
    result = edgevit.export("edgenext_xx_small", target, tmp_path, image_size=SMALL, precision="fp16")
    assert result.written and result.path.name == f"edgenext_xx_small_fp16{TARGETS[target][1]}"
    assert result.parity.passed and result.parity.atol == 5e-2
    assert edgevit.load(result.path).metadata.precision == "fp16"
    if target == "tflite":
        fp32 = edgevit.export("edgenext_xx_small", target, tmp_path, image_size=SMALL)
        assert result.size_bytes < 0.7 * fp32.size_bytes  # weights stored as fp16


def test_onnx_dynamic_batch_runs_any_batch(tmp_path):
    result = edgevit.export("edgenext_xx_small", "onnx", tmp_path, image_size=SMALL, dynamic_batch=True)
    rt = edgevit.load(result.path)
    assert rt.inputs[0].shape[0] is None
    x = np.random.default_rng(0).standard_normal((3, 3, SMALL, SMALL)).astype(np.float32)
    model = edgevit.create_model("edgenext_xx_small")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.run(x), ref, atol=1e-4, rtol=1e-3)


def test_onnx_graph_is_clean_opset_18_with_metadata(artifacts):
    import onnx

    model = onnx.load(str(artifacts["onnx"]))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    produced = {o for n in model.graph.node for o in n.output}
    consumed = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    assert produced <= consumed, "dead nodes left in the graph"
    used = {i for n in model.graph.node for i in n.input}
    assert all(init.name in used for init in model.graph.initializer), "unused initializers"
    assert not any(n.op_type in ("Sin", "Cos", "CumSum", "Einsum") for n in model.graph.node)
    assert any(p.key == "edgevit" for p in model.metadata_props)


def test_coreml_classifier_with_tensor_input_is_verified(tmp_path):
    """The classify op (its classes are an immediate list) runs in the reference interpreter:
    a classifier is verified numerically, and run() answers its scores in class order."""
    labels = [f"class {i}" for i in range(1000)]
    result = edgevit.export("edgenext_xx_small", "coreml", tmp_path, image_size=SMALL, labels=labels, num_inputs=1)
    assert result.written and result.parity.passed and result.parity.numerically_verified
    rt = edgevit.load(result.path)
    assert rt.can_run and rt.classes == labels
    assert rt.outputs[0].name == "classLabel_probs" and rt.outputs[0].shape == (1, 1000)
    assert rt.run(np.zeros((1, 3, SMALL, SMALL), np.float32)).shape == (1, 1000)


def test_coreml_image_input_classifier(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(1000)))
    result = edgevit.export("edgenext_xx_small", "coreml", tmp_path / "out", image_size=SMALL,
                            image_input=True, labels=labels, deployment_target="iOS17")
    rt = edgevit.load(result.path)
    assert rt.inputs[0].image and rt.inputs[0].dtype == "float32" and rt.metadata.image_input
    assert rt.metadata.labels[:2] == ["class 0", "class 1"]
    assert {o.name for o in rt.outputs} == {"classLabel", "classLabel_probs"}
    assert rt.spec.specificationVersion >= 8  # iOS17


def test_export_of_custom_module(tmp_path):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    result = edgevit.export(Tiny(), "onnx", tmp_path, image_size=32)
    assert result.path.name == "tiny.onnx" and result.parity.passed


# known and open: fp16 drift past the tolerance on edgevit's photos (README limitations)
FP16_DRIFT = {"slab_swin_tiny": "Core ML fp16 is 0.078 from PyTorch on the photos at random weights (tolerance 5e-2)"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(reason=FP16_DRIFT[name], raises=edgevit.ParityError, strict=True))
    if name in FP16_DRIFT else name for name in edgevit.list_models()])
def test_every_model_core_ml_fp16_matches_pytorch_through_the_interpreter(name, tmp_path):
    spec = get_spec(name)
    size = spec.input_size[1] if spec.fixed_size else SMALL
    result = edgevit.export(name, "coreml", tmp_path, image_size=size, precision="fp16", num_inputs=1)
    report = result.parity
    assert report.numerically_verified and report.passed, report.max_abs_err
    assert report.atol == 5e-2 and report.top1_agreement == 1.0
    if sys.platform != "darwin":
        assert "reference interpreter" in report.backend


def test_onnx_nodes_carry_no_exporter_debug_records(artifacts):
    """torch.onnx records stack traces on every node; shipped artifacts do not carry them."""
    import onnx

    model = onnx.load(str(artifacts["onnx"]))
    assert model.graph.node and not any(node.metadata_props for node in model.graph.node)
    assert any(p.key == "edgevit" for p in model.metadata_props)  # the artifact's own metadata stays
