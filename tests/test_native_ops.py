"""The native attention from PyTorch and ONNX: torch.library ops, use_native, export, ORT run.

Parity is against the reference PyTorch composition within 1e-5. Layer-scale gammas are set
to 1 so that attention shows in the logits (EdgeNeXt initializes them at 1e-6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import edgevit
import edgevit.models.fmvit
from edgevit import native
from edgevit.errors import ExportError, InputError, MissingDependencyError
from edgevit.native.torch_ops import NativeXCA, attention_modules, attention_path, use_native

from .native_cases import small_edgenext, small_fmvit, small_slab

if not native.available() and os.environ.get("CI") != "true":
    pytest.skip(f"native kernels not built: {native.status().reason}", allow_module_level=True)


@pytest.mark.parametrize("build, size", [(small_edgenext, 64), (small_slab, 32), (small_fmvit, 64)])
def test_use_native_keeps_outputs_and_weights(build, size):
    model = build()
    x = torch.randn(3, 3, size, size)
    keys = list(model.state_dict())
    with torch.no_grad():
        expected = model(x)
        use_native(model)
        got = model(x)
    assert all(type(m).__name__.startswith("Native") for m in attention_modules(model))
    assert list(model.state_dict()) == keys
    assert (got - expected).abs().max().item() < 1e-5
    assert (got - expected).abs().max().item() > 0  # the kernel ran, not the reference
    use_native(model, enable=False)
    assert not any(type(m).__name__.startswith("Native") for m in attention_modules(model))


def test_use_native_refuses_a_model_without_custom_attention():
    with pytest.raises(InputError, match="no XCA, simplified linear attention or RLMHSA"):
        use_native(torch.nn.Linear(3, 3))


def test_attention_path_restores_the_classes():
    model = use_native(small_edgenext())
    with attention_path(model, native_ops=False):
        assert not any(isinstance(m, NativeXCA) for m in model.modules())
    assert all(isinstance(m, NativeXCA) for m in attention_modules(model))


def test_torch_export_traces_the_ops_as_single_nodes():
    model = use_native(small_edgenext())
    program = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count("edgevit.xca.default") == len(attention_modules(model))
    assert not any("softmax" in t for t in targets)
    fake = torch.ops.edgevit.xca(torch.empty(2, 5, 12, device="meta"), torch.empty(2, device="meta"), 2)
    assert fake.shape == (2, 5, 4) and fake.device.type == "meta"


GRADIENT_CASES = {  # op: (reference, first input, second input, heads)
    "xca": (edgevit.models.edgenext_layers.cross_covariance_attention, (2, 16, 36), (3,)),
    "sla": (edgevit.models.slab_layers.simplified_linear_attention, (2, 16, 36), (16, 12)),
    "rlmhsa": (edgevit.models.fmvit.pooled_attention, (2, 12, 4, 5), (2, 24, 2, 3)),
}


@pytest.mark.parametrize("op", GRADIENT_CASES)
def test_gradients_match_the_reference(op):
    reference, first_shape, second_shape = GRADIENT_CASES[op]
    torch.manual_seed(1)
    first = torch.randn(*first_shape)
    second = torch.rand(*second_shape) + 0.5 if op == "xca" else torch.randn(*second_shape)
    grads = []
    for fn in (getattr(torch.ops.edgevit, op), reference):
        a, b = first.clone().requires_grad_(), second.clone().requires_grad_()
        (fn(a, b, 3) ** 2).sum().backward()
        grads.append((a.grad, b.grad))
    for got, want in zip(grads[0], grads[1]):
        assert torch.allclose(got, want, atol=1e-5)


def test_torch_export_traces_rlmhsa_as_one_node_per_attention():
    model = use_native(small_fmvit())
    program = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count("edgevit.rlmhsa.default") == len(attention_modules(model)) == 4
    assert not any("softmax" in t for t in targets)


def test_other_dtypes_use_the_reference_path():
    qkv = torch.randn(1, 9, 18, dtype=torch.float64)
    got = torch.ops.edgevit.xca(qkv, torch.ones(2, dtype=torch.float64), 2)
    assert got.dtype == torch.float64
    assert torch.equal(got, edgevit.models.edgenext_layers.cross_covariance_attention(qkv, torch.ones(2, dtype=torch.float64), 2))


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_without_the_kernels_everything_runs_on_the_reference_path():
    code = (
        "import torch, json, edgevit; from edgevit import native; from edgevit.native.torch_ops import use_native\n"
        "from edgevit.models.edgenext import EdgeNeXt\n"
        "m = EdgeNeXt(num_classes=5, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), heads=(2, 2, 2, 2)).eval()\n"
        "x = torch.randn(1, 3, 64, 64); y0 = m(x); use_native(m); y1 = m(x)\n"
        "print(json.dumps([native.status().path, native.status().reason, bool(torch.equal(y0, y1))]))\n"
    )
    result = _run(code, EDGEVIT_NATIVE="0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["reference", "EDGEVIT_NATIVE=0", True]


def test_cli_info_native_says_which_path(tmp_path):
    cli = [sys.executable, "-m", "edgevit"]
    active = subprocess.run(cli + ["--json", "info", "--native"], capture_output=True, text=True, timeout=120)
    assert active.returncode == 0, active.stderr
    from edgevit.native import ort_library

    library = ort_library.status()
    assert json.loads(active.stdout) == {
        "path": "native", "isa": native.status().isa, "sanitized": False, "reason": None,
        "ort_library": str(library.path) if library.path else None, "ort_library_reason": library.reason or None,
        "onnx_runtime": ort_library.onnx_runtime_path()}
    off = subprocess.run(cli + ["info", "--native"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "EDGEVIT_NATIVE": "0"})
    assert off.returncode == 0 and "reference PyTorch ops (EDGEVIT_NATIVE=0)" in off.stdout
    neither = subprocess.run(cli + ["info"], capture_output=True, text=True, timeout=120)
    assert neither.returncode == 2 and neither.stderr.strip().count("\n") == 0


@pytest.fixture(scope="module")
def native_onnx(native_exports):
    """The small EdgeNeXt exported with --native-ops, verified on the way (edgevit.export)."""
    model, _, result = native_exports["edgenext"]
    return model, result


def test_native_ops_export_has_one_node_per_attention_and_verifies(native_onnx):
    import onnx

    model, result = native_onnx
    assert result.written and result.parity.numerically_verified and result.parity.max_abs_err < 1e-5
    graph = onnx.load(str(result.path))
    assert {(o.domain, o.version) for o in graph.opset_import} >= {("ai.edgevit", 1)}
    custom = [n for n in graph.graph.node if n.domain == "ai.edgevit"]
    assert [n.op_type for n in custom] == ["XCA"] * len(attention_modules(model))
    assert not any(n.op_type == "Softmax" for n in graph.graph.node)
    assert result.form["form"] == "channels_last"  # the native ops run inside the ONNX target form


def test_native_onnx_runs_in_onnx_runtime_with_the_kernels(native_onnx):
    model, result = native_onnx
    runtime = edgevit.load(result.path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    got = np.concatenate([runtime.run(x[i:i + 1].numpy()) for i in range(2)])
    assert np.abs(got - expected).max() < 1e-5


def test_native_onnx_without_the_library_needs_onnxruntime_extensions(native_onnx, monkeypatch):
    from edgevit.native import onnx_nodes as module

    module._register_ops.cache_clear()
    monkeypatch.setenv("EDGEVIT_ORT_LIBRARY", "0")  # the fallback: without libedgevit_ort.so
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)
    try:
        with pytest.raises(MissingDependencyError, match="onnxruntime-extensions"):
            edgevit.load(native_onnx[1].path)
    finally:
        module._register_ops.cache_clear()


def test_default_export_of_a_native_model_is_standard_onnx(tmp_path):
    import onnx

    model = use_native(small_edgenext())
    model.input_size = (3, 64, 64)
    result = edgevit.export(model, "onnx", tmp_path, num_inputs=1)
    graph = onnx.load(str(result.path))
    assert all(o.domain in ("", "ai.onnx") for o in graph.opset_import)
    assert any(n.op_type == "Softmax" for n in graph.graph.node)
    assert all(isinstance(m, NativeXCA) for m in attention_modules(model))  # the caller's model is untouched


def test_native_ops_is_an_onnx_only_option(tmp_path):
    model = small_edgenext()
    model.input_size = (3, 64, 64)
    with pytest.raises(InputError, match="ONNX export option"):
        edgevit.export(model, "tflite", tmp_path, native_ops=True)
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    plain.input_size = (3, 2, 2)
    with pytest.raises(ExportError, match="no XCA, simplified linear attention or RLMHSA"):
        edgevit.export(plain, "onnx", tmp_path, native_ops=True)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("family", ["edgenext", "slab", "fmvit"])
def test_the_onnxruntime_extensions_fallback_matches_the_standard_export(native_exports, family, monkeypatch):
    """Without libedgevit_ort.so (EDGEVIT_ORT_LIBRARY=0) the Python custom ops run every op, RLMHSA included."""
    pytest.importorskip("onnxruntime_extensions")
    monkeypatch.setenv("EDGEVIT_ORT_LIBRARY", "0")
    model, standard, native_result = native_exports[family]
    x = np.random.default_rng(2).standard_normal((1, *model.input_size)).astype(np.float32)
    got, want = edgevit.load(native_result.path).run(x), edgevit.load(standard.path).run(x)
    assert np.abs(got - want).max() <= 1e-5
