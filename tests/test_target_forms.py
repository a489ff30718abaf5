"""Target forms (edgevit.reparam.forms): exact rewrites, and the graphs they give each target."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

import edgevit
from edgevit.reparam.forms import FORMS, TARGET_FORMS, form_checked, to_form
from edgevit.models.deit import build_deit
from edgevit.models.edgenext import ConvEncoder, EdgeNeXt
from edgevit.reparam.checked import fold_checked
from edgevit.runtimes.loader import load

from .conftest import SMALL, assert_clean_failure, run_cli
from .helpers import randomize_statistics

TOKENS_SIDE = 6  # 36 tokens > 16 head channels: SLAB's form applies


def small_edgenext():
    return EdgeNeXt(num_classes=7, depths=(1, 1, 2, 1), dims=(16, 24, 32, 48), heads=(2, 2, 2, 2),
                    d2_scales=(2, 2, 3, 4))


def small_vit(attention: str, norm: str, class_token: bool = False):
    return build_deit(num_classes=7, img_size=8 * TOKENS_SIDE, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                      attention=attention, norm=norm, class_token=class_token)


MODELS = {
    "edgenext": (small_edgenext, 64),
    "slab_deit": (lambda: small_vit("linear", "prepbn"), 48),
    "deit_layernorm": (lambda: small_vit("softmax", "layernorm", class_token=True), 48),
}


def inputs(size: int, count: int = 2) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, 3, size, size, generator=g).numpy() for _ in range(count)]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("folded", [True, False], ids=["folded", "unfolded"])
def test_every_form_computes_what_the_model_as_trained_computes(family, form, folded):
    """Checked like a fold (float64, 1e-5) against the model as trained, with every
    statistic, affine and temperature randomized so that a dropped term shows."""
    build, size = MODELS[family]
    trained = randomize_statistics(build().eval())
    xs = inputs(size)
    model = fold_checked(trained, family, xs)[0] if folded else trained
    rewritten, report = form_checked(model, family, form, xs, reference=trained)
    has_form = family in ("edgenext", "slab_deit", "deit_layernorm") or form == "channels_last"  # ViTs: tests/test_vit_forms.py
    assert report.changed == has_form, report.to_dict()
    if not has_form:
        assert rewritten is model and report.max_abs_change is None
        return
    assert report.max_abs_change < 1e-5
    with torch.inference_mode():
        x = torch.from_numpy(xs[0])
        np.testing.assert_allclose(rewritten(x).numpy(), trained(x).numpy(), atol=1e-5, rtol=1e-4)
    assert all(entry.action == "changed" for entry in report.entries)


def test_to_form_reports_each_module_by_its_path():
    model = small_edgenext()
    report = to_form(model, "channels_first")
    where = [entry.where for entry in report.entries]
    assert "stages.0.0" in where and "downsample_layers.0.1" in where and "<model>" in where
    assert model.edgevit_form_report is report
    assert report.to_dict(entries=False)["changed"] == len(where)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.stages.modules())  # all 1x1 convs now


def test_a_model_without_a_form_is_exported_as_trained(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 5))  # no to_form anywhere (every registered model has one)
    result = edgevit.export(model, "onnx", tmp_path, image_size=SMALL, num_inputs=1)
    assert result.written and result.form is None
    assert load(result.path).metadata.form is None


def test_a_wrong_form_is_caught_before_anything_is_written(tmp_path, monkeypatch):
    original = ConvEncoder.to_form

    def bent(self, form):
        original(self, form)
        with torch.no_grad():
            self.dwconv.weight.mul_(1.01)  # not exact: must be refused

    monkeypatch.setattr(ConvEncoder, "to_form", bent)
    with pytest.raises(edgevit.ExportError, match="rewriting edgenext_xx_small into its channels_first form "
                                                  "changed its output.*--no-target-form"):
        edgevit.export(randomize_statistics(edgevit.create_model("edgenext_xx_small")), "coreml", tmp_path,
                       image_size=SMALL, num_inputs=1)
    assert not list(tmp_path.iterdir())


def test_unknown_forms_are_refused():
    with pytest.raises(edgevit.InputError, match="unknown form 'nhwc'"):
        to_form(small_edgenext(), "nhwc")


def test_core_ml_edgenext_has_no_transposes_and_fewer_ops(artifacts, tmp_path):
    """Channels-first: no transposes at all (target <= 4), and the op count of the form
    (139 at any size: the plain torch.export + coremltools.convert gives 223, see
    benchmarks/target_forms.py); exported as trained it keeps its 37 transposes."""
    ours = load(artifacts["coreml"]).op_census()
    assert ours.get("transpose", 0) == 0, ours
    assert sum(n for op, n in ours.items() if op != "const") <= 139, ours
    assert load(artifacts["coreml"]).metadata.form["form"] == "channels_first"
    trained = edgevit.export("edgenext_xx_small", "coreml", tmp_path, image_size=SMALL, num_inputs=1,
                             target_form=False)
    as_trained = load(trained.path).op_census()
    assert as_trained["transpose"] >= 30 and trained.form is None


def test_onnx_attention_takes_qkv_apart_without_gather(tmp_path):
    """q, k, v by Split, one transpose in and one out per attention block (and k's, a MatMul
    operand that onnxruntime folds into the product), one more for the patch embedding.
    Exported as trained, the same models take q, k, v by Gather."""
    for name, (build, size) in MODELS.items():
        if name == "edgenext":
            continue
        model = randomize_statistics(build().eval())
        result = edgevit.export(model, "onnx", tmp_path / name, image_size=size, num_inputs=1)
        assert result.form["form"] == "channels_last"
        ops = [node.op_type for node in onnx.load(str(result.path)).graph.node]
        assert "Gather" not in ops or name == "deit_layernorm", ops  # DeiT's class token is picked by one Gather
        assert ops.count("Gather") <= 1 and ops.count("Transpose") <= 3 * 2 + 1, ops
        trained = edgevit.export(model, "onnx", tmp_path / f"{name}_trained", image_size=size, num_inputs=1,
                                 target_form=False)
        assert [node.op_type for node in onnx.load(str(trained.path)).graph.node].count("Gather") >= 3 * 2


@pytest.mark.parametrize("family", MODELS)
def test_tflite_exports_run_whole_on_xnnpack(family, tmp_path):
    """Every op of the channels-last graph is one XNNPACK takes: one delegate partition
    (a matmul with its left operand transposed is not, and would split the graph)."""
    build, size = MODELS[family]
    model = randomize_statistics(build().eval())
    result = edgevit.export(model, "tflite", tmp_path, image_size=size, num_inputs=1)
    assert result.written and result.form["form"] == "channels_last"
    census = load(result.path).op_census()
    assert census["DELEGATE"] == 1, census


def test_default_forms_per_target_and_the_opt_out(artifacts, tmp_path):
    for target, path in artifacts.items():
        assert load(path).metadata.form["form"] == TARGET_FORMS[target]
    result = edgevit.export("edgenext_xx_small", "onnx", tmp_path, image_size=SMALL, num_inputs=1, target_form=False)
    assert result.form is None and load(result.path).metadata.form is None


def test_cli_reports_the_form_and_takes_no_target_form(tmp_path):
    out = run_cli("export", "--model", "edgenext_xx_small", "--target", "tflite", "--image-size", str(SMALL),
                  "--num-inputs", "1", "--output", str(tmp_path))
    assert out.code == 0, out.stderr
    assert "tflite: channels_last form" in out.stdout
    info = run_cli("info", str(tmp_path / "edgenext_xx_small.tflite"))
    assert "target form: channels_last" in info.stdout
    plain = run_cli("export", "--model", "edgenext_xx_small", "--target", "onnx", "--image-size", str(SMALL),
                    "--num-inputs", "1", "--no-target-form", "--output", str(tmp_path / "plain"))
    assert plain.code == 0 and "channels_last form" not in plain.stdout
    assert "target form: as trained" in run_cli("info", str(tmp_path / "plain" / "edgenext_xx_small.onnx")).stdout
    assert_clean_failure(run_cli("export", "--model", "edgenext_xx_small", "--target-form", "nchw"), 2)


def test_rewriting_leaves_the_given_model_alone():
    model = small_edgenext().eval()
    before = copy.deepcopy(model.state_dict())
    form_checked(model, "edgenext", "channels_first", inputs(64, 1))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.form is None
