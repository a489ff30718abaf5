"""The Core ML reference interpreter: each op against PyTorch/numpy (edge values included),
whole programs against PyTorch, unsupported ops and tampered weights refused."""

from __future__ import annotations

import math
import shutil
import struct
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgevit
from edgevit.runtimes import mil_ops
from edgevit.runtimes.mil_ops import lookup

from .conftest import run_cli

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seeded_rng():
    """Every test draws the same numbers whatever ran before it (order-independent)."""
    global rng
    rng = np.random.default_rng(0)


def op(name):
    fn = lookup(name, "CoreML6")
    assert fn is not None, name
    return fn


def t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_and_layer_norm_with_large_magnitudes(scale):
    x = (rng.standard_normal((2, 5, 7)) * scale).astype(np.float32)
    np.testing.assert_allclose(op("softmax")(x, axis=-1), torch.softmax(t(x), -1).numpy(), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(op("softmax")(x, axis=1), torch.softmax(t(x), 1).numpy(), atol=1e-6, rtol=1e-5)
    g, b = rng.standard_normal(7).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    shifted = x + np.float32(3 * scale)
    got = op("layer_norm")(shifted, axes=np.array([-1]), gamma=g, beta=b, epsilon=1e-6)
    ref = F.layer_norm(t(shifted), (7,), t(g), t(b), 1e-6).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_gelu_modes_and_elementwise_edges():
    x = np.concatenate([rng.standard_normal(1000) * 4, [0.0, -0.0, 1e-8, 30.0, -30.0]]).astype(np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    got = op("gelu")(x)
    np.testing.assert_allclose(got, exact, atol=3e-7, rtol=0)  # float32 rounding of the true value
    # torch's float32 erf is itself off by up to ~1e-6 on some CPUs: we are never further from
    # torch than torch is from the true value, plus our own rounding
    from_torch = F.gelu(t(x)).numpy().astype(np.float64)
    assert np.all(np.abs(got - from_torch) <= np.abs(from_torch - exact) + 3e-7)
    z = np.linspace(-7, 7, 20001)
    np.testing.assert_allclose(op("erf")(z), [math.erf(v) for v in z], atol=1e-14, rtol=0)
    np.testing.assert_allclose(op("gelu")(x, mode="TANH_APPROXIMATION"), F.gelu(t(x), approximate="tanh").numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(op("sigmoid_hard")(x, alpha=1 / 6, beta=0.5) * x, F.hardswish(t(x)).numpy(), atol=1e-6)
    np.testing.assert_array_equal(op("relu")(x), np.maximum(x, 0))
    np.testing.assert_array_equal(op("thresholded_relu")(x, alpha=0.5), np.where(x > 0.5, x, 0))
    np.testing.assert_allclose(op("inverse")(np.array([0.0, 2.0], np.float32), epsilon=1e-6), [1e6, 0.5], rtol=1e-6)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_fp16_arithmetic_overflows_like_fp16():
    x = np.array([60000.0, 1.0], dtype=np.float16)
    out = op("add")(x, x)
    assert out.dtype == np.float16 and np.isinf(out[0]) and out[1] == 2
    big = np.array([[300.0, 300.0]], dtype=np.float16)
    assert op("matmul")(big, big.T).dtype == np.float16 and np.isinf(op("matmul")(big, big.T)).all()


@pytest.mark.parametrize("cin,cout,k,stride,dil,groups,pad_type,pad", [
    (3, 8, 4, 4, 1, 1, "valid", None),
    (6, 6, 5, 1, 1, 6, "custom", [2, 2, 2, 2]),
    (6, 9, 3, 2, 1, 3, "same", None),
    (4, 4, 3, 1, 2, 1, "custom", [2, 1, 0, 3]),
    (5, 7, 1, 1, 1, 1, "valid", None),
])
def test_conv_against_torch(cin, cout, k, stride, dil, groups, pad_type, pad):
    x = rng.standard_normal((2, cin, 11, 9)).astype(np.float32)
    w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    got = op("conv")(x, w, b, strides=np.array([stride, stride]), pad_type=pad_type,
                     pad=None if pad is None else np.array(pad), dilations=np.array([dil, dil]), groups=groups)
    xt = t(x)
    if pad_type == "custom":
        xt = F.pad(xt, (pad[2], pad[3], pad[0], pad[1]))
    elif pad_type == "same":
        total_h = max((-(-11 // stride) - 1) * stride + (k - 1) * dil + 1 - 11, 0)
        total_w = max((-(-9 // stride) - 1) * stride + (k - 1) * dil + 1 - 9, 0)
        xt = F.pad(xt, (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2))
    ref = F.conv2d(xt, t(w), t(b), stride=stride, dilation=dil, groups=groups).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)


def test_linear_matmul_reductions_and_shapes():
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    w, b = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(op("linear")(x, w, b), x @ w.T + b, rtol=1e-5, atol=1e-6)
    y = rng.standard_normal((2, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(op("matmul")(x, y, transpose_y=True), x @ y.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(op("reduce_l2_norm")(x, axes=np.array([-1]), keep_dims=True),
                               np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-6)
    assert op("reduce_mean")(x, axes=np.array([1, 2])).shape == (2,)
    np.testing.assert_allclose(op("reduce_sum")(np.zeros((0, 3), np.float32), axes=np.array([0])), np.zeros(3))
    z = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    got = op("slice_by_index")(z, begin=np.array([1, 0, -3]), end=np.array([0, 4, 5]), stride=np.array([1, 2, 1]),
                               begin_mask=np.array([False, True, False]), end_mask=np.array([False, False, True]),
                               squeeze_mask=np.array([True, False, False]))
    np.testing.assert_array_equal(got, z[1, ::2, -3:])
    np.testing.assert_array_equal(op("reshape")(z, np.array([0, -1])), z.reshape(3, 20))
    # iOS17+: zeros count from the right, and a zero with no input dimension is 1
    w = np.zeros((2, 50), np.float32)
    assert lookup("reshape", "CoreML7")(w, np.array([1, 0, -1, 0])).shape == (1, 1, 2, 50)
    assert lookup("reshape", "CoreML7")(z, np.array([0, -1])).shape == (4, 15)  # 0 matches dim 1 (from the right)
    np.testing.assert_array_equal(op("concat")([z, z], axis=-1), np.concatenate([z, z], -1))
    np.testing.assert_array_equal(op("gather")(z, np.array([2, 0]), axis=1), z[:, [2, 0]])


def test_every_op_the_zoo_emits_is_implemented():
    emitted = {"add", "cast", "concat", "conv", "gelu", "inverse", "layer_norm", "linear", "matmul", "maximum",
               "mul", "real_div", "reduce_l2_norm", "reduce_mean", "reduce_sum", "relu", "reshape",
               "sigmoid_hard", "slice_by_index", "softmax", "thresholded_relu", "tile", "transpose", "gather"}
    assert emitted <= set(mil_ops.implemented_ops())


@pytest.fixture(scope="module")
def coreml_256(tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml256")
    return edgevit.export("edgenext_xx_small", "coreml", out, num_inputs=1).path


def test_interpreting_xx_small_at_256_takes_under_two_seconds(coreml_256):
    rt = edgevit.load(coreml_256)
    x = rng.standard_normal((1, 3, 256, 256)).astype(np.float32)
    rt.run(x)
    start = time.perf_counter()
    out = rt.run(x)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed
    with torch.no_grad():
        ref = edgevit.create_model("edgenext_xx_small")(t(x)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-3)


def test_unsupported_op_is_named_with_its_location(coreml_256):
    from edgevit.runtimes.mil_reference import MilInterpreter

    rt = edgevit.load(coreml_256)
    spec = rt.spec
    block = spec.mlProgram.functions["main"].block_specializations["CoreML6"]
    target = next(o for o in block.operations if o.type == "gelu")
    target.type = "fancy_gelu"
    with pytest.raises(edgevit.EdgeVitError, match=r"op 'fancy_gelu' \(opset CoreML6, op #\d+ '.+' in function main\)"):
        MilInterpreter(spec, coreml_256)


def test_verify_catches_a_weight_changed_after_export(coreml_256, tmp_path):
    broken = tmp_path / "broken.mlpackage"
    shutil.copytree(coreml_256, broken)
    weights = broken / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    head = next(o for o in edgevit.load(coreml_256)._operations()  # the classifier weights
                if o.type == "const" and "head_weight" in o.outputs[0].name)
    _, _, size, start = struct.unpack_from("<IIQQ", data, head.attributes["val"].blobFileValue.offset)
    values = np.frombuffer(bytes(data[start:start + size]), dtype=np.float32) * 1.5
    data[start:start + size] = values.astype(np.float32).tobytes()
    weights.write_bytes(bytes(data))
    ok = run_cli("--json", "verify", str(coreml_256), "--model", "edgenext_xx_small")
    assert ok.code == 0, ok.stderr
    report = __import__("json").loads(ok.stdout)
    assert report["numerically_verified"] and "reference interpreter" in report["backend"]
    refused = run_cli("verify", str(broken), "--model", "edgenext_xx_small")
    assert refused.code == 2 and "changed after edgevit exported and verified it" in refused.stderr
    bad = run_cli("verify", str(broken), "--model", "edgenext_xx_small", "--no-integrity-check")
    assert bad.code == 1 and "FAIL" in bad.stdout


def test_predict_runs_core_ml_on_linux(coreml_256, tmp_path):
    x = rng.standard_normal((1, 3, 256, 256)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_cli("--json", "predict", str(coreml_256), str(tmp_path / "x.npy"), "--top-k", "3")
    assert result.code == 0, result.stderr
    data = __import__("json").loads(result.stdout)
    assert "reference interpreter" in data["backend"] and len(data["top"]) == 3


def test_predict_runs_an_image_input_package_and_bench_names_the_interpreter(tmp_path, photo):
    """An --image-input package takes RGB pixels 0-255: the interpreter runs it as Core ML would
    feed the decoded image, and it agrees with the tensor-input package on the same photo."""
    image_input = edgevit.export("edgenext_xx_small", "coreml", tmp_path / "image", image_size=64, num_inputs=1,
                                 image_input=True).path
    tensor_input = edgevit.export("edgenext_xx_small", "coreml", tmp_path / "tensor", image_size=64,
                                  num_inputs=1).path
    results = [run_cli("--json", "predict", str(p), str(photo), "--top-k", "3") for p in (image_input, tensor_input)]
    assert all(r.code == 0 for r in results), [r.stderr for r in results]
    image_top, tensor_top = (__import__("json").loads(r.stdout)["top"] for r in results)
    assert [t["class"] for t in image_top] == [t["class"] for t in tensor_top]
    np.testing.assert_allclose([t["score"] for t in image_top], [t["score"] for t in tensor_top], atol=1e-4)
    assert "(RGB image, 0-255)" in run_cli("info", str(image_input)).stdout
    bench = run_cli("bench", str(tensor_input), "--runs", "1", "--warmup", "0")
    assert bench.code == 0 and "edgevit reference interpreter" in bench.stdout, bench.stdout + bench.stderr
