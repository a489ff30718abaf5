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


# --- compressed weights and quantized activations (coremltools.optimize.coreml) --------

def test_sub_byte_values_unpack_as_coremltools_packs_them(tmp_path):
    """LSB-first packing (an element may straddle two bytes), in blobs coremltools' own blob
    writer wrote and in immediate bytes; a blob too short for its declared shape is refused
    before anything is allocated."""
    from edgevit.runtimes.coreml import import_coremltools
    from edgevit.runtimes.mil_program import WeightFile, decode_value, unpack_bits

    ct = import_coremltools()
    from coremltools.libmilstoragepython import _BlobStorageWriter
    from coremltools.optimize._utils import pack_elements_into_bits

    # the spec's example: 2-bit indices 0, 3, 2, 1 | 3 in bytes 0b01_10_11_00, 0b000000_11
    np.testing.assert_array_equal(unpack_bits(np.array([0b01101100, 0b11], np.uint8), 2, 5), [0, 3, 2, 1, 3])
    np.testing.assert_array_equal(unpack_bits(np.array([0xC1, 0x5F, 0x84], np.uint8), 6, 4), [1, 63, 5, 33])
    for bits in (1, 2, 3, 4, 6, 8):
        values = rng.integers(0, 1 << bits, 37).astype(np.uint8)
        np.testing.assert_array_equal(unpack_bits(pack_elements_into_bits(values, bits), bits, 37), values)
    signed = np.array([-8, -1, 0, 7, 3, -5], np.int8)
    np.testing.assert_array_equal(unpack_bits(pack_elements_into_bits(signed, 4), 4, 6, np.int8), signed)

    weights_dir = tmp_path / "p.mlpackage" / "Data" / "com.apple.CoreML" / "weights"
    weights_dir.mkdir(parents=True)
    writer = _BlobStorageWriter(str(weights_dir / "weight.bin"))
    u6, i4 = rng.integers(0, 64, 11).astype(np.uint8), rng.integers(-8, 8, 9).astype(np.int8)
    offsets = writer.write_uint6_data(u6), writer.write_int4_data(i4)
    del writer  # flushes
    weights = WeightFile(tmp_path / "p.mlpackage")
    name = "@model_path/weights/weight.bin"
    np.testing.assert_array_equal(weights.read(name, offsets[0], np.uint8, (11,), bits=6), u6)
    np.testing.assert_array_equal(weights.read(name, offsets[1], np.int8, (3, 3), bits=4), i4.reshape(3, 3))
    with pytest.raises(edgevit.EdgeVitError, match="holds 5 bytes, fewer than a uint4 tensor"):  # 2**40 claimed
        weights.read(name, offsets[1], np.uint8, (1 << 40,), bits=4)

    value = ct.proto.MIL_pb2.Value()
    value.type.tensorType.dataType = ct.proto.MIL_pb2.DataType.Value("INT4")
    value.type.tensorType.rank = 1
    value.type.tensorType.dimensions.add().constant.size = 6
    value.immediateValue.tensor.bytes.values = pack_elements_into_bits(signed, 4).tobytes()
    decoded = decode_value(value, weights)
    assert decoded.dtype == np.int8
    np.testing.assert_array_equal(decoded, signed)


def test_constexpr_affine_dequantize_by_hand():
    fn = lookup("constexpr_affine_dequantize", "CoreML6")
    data = np.array([[-128, 0, 127], [1, 2, 3]], np.int8)
    got = fn(data, zero_point=np.array([0, 1], np.int8), scale=np.array([0.5, 2.0], np.float32), axis=np.int32(0))
    np.testing.assert_array_equal(got, [[-64, 0, 63.5], [0, 2, 4]])
    assert got.dtype == np.float32
    got = fn(data.astype(np.uint8) % 6, zero_point=np.array([1, 1, 1], np.uint8),  # per column, axis -1
             scale=np.array([1, 10, 100], np.float16), axis=np.int32(-1))
    np.testing.assert_array_equal(got, [[1, -10, 0], [0, 10, 200]])
    assert got.dtype == np.float16
    got = fn(data, zero_point=np.int8(2), scale=np.float32(0.25), axis=np.int32(0))  # per tensor
    np.testing.assert_array_equal(got, [[-32.5, -0.5, 31.25], [-0.25, 0, 0.25]])
    with pytest.raises(ValueError, match="along axis 1"):
        fn(data, zero_point=np.int8(0), scale=np.array([0.5, 2.0], np.float32), axis=np.int32(1))
    assert lookup("constexpr_affine_dequantize", "CoreML5") is None


def test_constexpr_blockwise_shift_scale_by_hand():
    fn = lookup("constexpr_blockwise_shift_scale", "CoreML8")
    data = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int8)
    # one scale and offset per block of 2 rows x 2 columns
    got = fn(data, scale=np.array([[1.0, 10.0]], np.float32), offset=np.array([[1, 2]], np.int8))
    np.testing.assert_array_equal(got, [[0, 1, 10, 20], [4, 5, 50, 60]])
    got = fn(data, scale=np.array([[0.5], [2.0]], np.float16))  # per row, no offset
    np.testing.assert_array_equal(got, [[0.5, 1, 1.5, 2], [10, 12, 14, 16]])
    assert got.dtype == np.float16
    with pytest.raises(ValueError, match="3 equal blocks"):
        fn(data, scale=np.ones((1, 3), np.float32))
    assert lookup("constexpr_blockwise_shift_scale", "CoreML7") is None


def test_constexpr_lut_to_dense_by_hand():
    ios16 = lookup("constexpr_lut_to_dense", "CoreML6")
    lut = np.array([10, 20, 30, 40], np.float32)  # 2-bit indices 0, 3, 2, 1, 3 (the spec's example)
    np.testing.assert_array_equal(ios16(np.array([0b01101100, 0b11], np.uint8), lut, np.array([5], np.uint32)),
                                  [10, 40, 30, 20, 40])
    got = ios16(np.array([0xC1, 0x5F, 0x84], np.uint8), np.arange(64, dtype=np.float16) / 2, np.array([2, 2]))
    np.testing.assert_array_equal(got, [[0.5, 31.5], [2.5, 16.5]])  # 6-bit indices 1, 63, 5, 33
    with pytest.raises(ValueError, match="index bytes"):
        ios16(np.zeros(3, np.uint8), lut, np.array([5], np.uint32))

    ios18 = lookup("constexpr_lut_to_dense", "CoreML8")
    # the iOS18 spec's examples: two palettes over the rows of a (6, 2) tensor...
    indices = np.array([2, 3, 3, 0, 1, 0, 3, 0, 2, 1, 0, 3], np.uint8).reshape(6, 2)
    lut = np.array([1, 5, 9, 13, 2, 10, 18, 26], np.float16).reshape(2, 1, 4, 1)
    np.testing.assert_array_equal(ios18(indices, lut), [[9, 13], [13, 1], [5, 1], [26, 2], [18, 10], [2, 26]])
    # ... and one palette of 3-vectors a = (1, 2, 3), b = (7, 8, 9), filled along axis 1 or 2
    indices = np.array([[[0, 0], [1, 0]], [[1, 1], [0, 0]]], np.uint8)
    lut = np.array([[1, 2, 3], [7, 8, 9]], np.float32).reshape(1, 1, 1, 2, 3)
    np.testing.assert_array_equal(ios18(indices, lut, vector_axis=np.int32(1)),
                                  [[[1, 1], [2, 2], [3, 3], [7, 1], [8, 2], [9, 3]],
                                   [[7, 7], [8, 8], [9, 9], [1, 1], [2, 2], [3, 3]]])
    np.testing.assert_array_equal(ios18(indices, lut, vector_axis=np.int32(-1)),
                                  [[[1, 2, 3, 1, 2, 3], [7, 8, 9, 1, 2, 3]],
                                   [[7, 8, 9, 7, 8, 9], [1, 2, 3, 1, 2, 3]]])
    with pytest.raises(ValueError, match="vector_axis"):
        ios18(indices, lut)


def test_quantize_and_dequantize_by_hand_and_as_coremltools_evaluates_them():
    """Round half to even, then the zero point, then clipping to the int8/uint8 range."""
    from edgevit.runtimes.coreml import import_coremltools

    ct = import_coremltools()
    from coremltools.converters.mil import Builder as mb

    quantize, dequantize = lookup("quantize", "CoreML7"), lookup("dequantize", "CoreML7")
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5], [300, -300, 3.49, 0.01, -7.5, 7.5]], np.float32)
    scale, zero_point = np.array([1.0, 0.5], np.float32), np.array([3, -2], np.int8)
    q = quantize(x, scale, "int8", zero_point, np.int32(0))
    np.testing.assert_array_equal(q, [[3, 5, 5, 3, 1, 1], [127, -128, 5, -2, -17, 13]])
    assert q.dtype == np.int8
    np.testing.assert_array_equal(dequantize(q, scale, zero_point, np.int32(0)),
                                  [[0, 2, 2, 0, -2, -2], [64.5, -63, 3.5, 0, -7.5, 7.5]])
    u = quantize(x.astype(np.float16), np.float16(2.0), "uint8", np.uint8(128))  # per tensor, fp16
    np.testing.assert_array_equal(u, [[128, 129, 129, 128, 127, 127], [255, 0, 130, 128, 124, 132]])
    assert u.dtype == np.uint8 and dequantize(u, np.float16(2.0), np.uint8(128)).dtype == np.float16
    np.testing.assert_array_equal(quantize(x, np.float32(1.0), "int8")[0], [0, 2, 2, 0, -2, -2])
    assert lookup("quantize", "CoreML6") is None

    expected = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=ct.target.iOS17)
    def program(a):
        for dtype, zp in (("int8", zero_point), ("uint8", np.array([128, 7], np.uint8))):
            out = mb.quantize(input=x * 3.3, scale=scale, zero_point=zp, axis=0, output_dtype=dtype)
            back = mb.dequantize(input=out, scale=scale, zero_point=zp, axis=0)
            expected[dtype] = zp, out.val, back.op.materialized_val_inference()
        return a

    for dtype, (zp, want_q, want_back) in expected.items():
        got_q = quantize(x * 3.3, scale, dtype, zp, np.int32(0))
        np.testing.assert_array_equal(got_q, want_q)
        np.testing.assert_array_equal(dequantize(got_q, scale, zp, np.int32(0)), want_back)


class _CompressNet(torch.nn.Module):
    """Conv, layer norm and linear layers at 3x32x32: the weights coremltools compresses."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, 2, 1)
        self.norm = torch.nn.LayerNorm(32)
        self.fc1 = torch.nn.Linear(32, 64)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = self.conv2(torch.relu(self.conv1(x))).flatten(2).transpose(1, 2)  # (1, 64 tokens, 32)
        return self.fc2(F.gelu(self.fc1(self.norm(x))).mean(1))


@pytest.fixture(scope="module")
def compress_net(tmp_path_factory):
    """The net, a random input, its PyTorch output, and ``convert(target, precision)``: the
    net as an ML Program (converted once per target and precision)."""
    from types import SimpleNamespace

    from edgevit.quiet import quiet_converters
    from edgevit.runtimes.coreml import import_coremltools

    ct = import_coremltools()
    torch.manual_seed(0)
    net = _CompressNet().eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = net(t(x)).numpy()
    program = torch.export.export(net, (t(x),)).run_decompositions({})
    converted = {}

    def convert(target, precision="fp32"):
        if (target, precision) not in converted:
            with quiet_converters():
                converted[target, precision] = ct.convert(
                    program, inputs=[ct.TensorType(name="input", shape=x.shape, dtype=np.float32)],
                    outputs=[ct.TensorType(name="output", dtype=np.float32)], convert_to="mlprogram",
                    minimum_deployment_target=getattr(ct.target, target),
                    compute_precision=getattr(ct.precision, "FLOAT16" if precision == "fp16" else "FLOAT32"))
        return converted[target, precision]

    return SimpleNamespace(ct=ct, x=x, ref=ref, convert=convert, folder=tmp_path_factory.mktemp("compressed"))


def _constexpr_values(path) -> dict:
    """Each constexpr op's value as the interpreter computes it, by output name."""
    from edgevit.runtimes.mil_program import read_program

    _, operations, _, opset = read_program(edgevit.load(path).spec, path)
    values = {}
    for operation in operations:
        if operation.type.startswith("constexpr_"):
            kwargs = {key: values[ref] if kind == "ref" else ref for key, [(kind, ref)] in operation.inputs.items()}
            values[operation.outputs[0]] = lookup(operation.type, opset)(**kwargs)
    return values


def _run_compressed(net, mlmodel, name: str, ops: set[str], weights: int = 4) -> np.ndarray:
    """Save ``mlmodel`` and its decompression by coremltools (``decompress_weights``, the
    oracle); the program uses ``ops``, each of the ``weights`` compressed weights the
    interpreter decompresses equals coremltools' and so does the output. Returns the output
    on ``net.x``."""
    from edgevit.quiet import quiet_converters
    from edgevit.runtimes.mil_program import read_program

    path, plain = net.folder / f"{name}.mlpackage", net.folder / f"{name}-decompressed.mlpackage"
    with quiet_converters():
        mlmodel.save(str(path))
        net.ct.optimize.coreml.decompress_weights(mlmodel).save(str(plain))
    runtime = edgevit.load(path)
    assert ops <= set(runtime.op_census()), runtime.op_census()
    got = _constexpr_values(path)
    _, operations, _, _ = read_program(edgevit.load(plain).spec, plain)
    want = {op.outputs[0]: op.attributes["val"] for op in operations if op.outputs[0] in got}
    assert len(want) == weights, sorted(got)  # of conv1, conv2, fc1, fc2 (chained ops' steps not counted)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    out = runtime.run(net.x)
    np.testing.assert_array_equal(out, edgevit.load(plain).run(net.x))
    return out


def _relative_error(out, ref) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("target", ["iOS16", "iOS17", "iOS18"])
@pytest.mark.parametrize("mode,dtype", [("linear_symmetric", "int8"), ("linear", "uint8")])
def test_linear_quantized_weights_run_as_coremltools_decompresses_them(compress_net, target, mode, dtype):
    cto = compress_net.ct.optimize.coreml
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode=mode, dtype=dtype, granularity="per_channel", weight_threshold=0))
    mlmodel = cto.linear_quantize_weights(compress_net.convert(target), config)
    op = "constexpr_blockwise_shift_scale" if target == "iOS18" else "constexpr_affine_dequantize"
    out = _run_compressed(compress_net, mlmodel, f"w8-{target}-{mode}", {op})
    assert _relative_error(out, compress_net.ref) < 2e-2  # measured: 3e-3 (int8), 5e-3 (uint8)


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
@pytest.mark.parametrize("nbits,tolerance", [(8, 2e-2), (6, 5e-2), (4, 2e-1)])  # measured 2e-3, 2e-2, 7e-2
def test_palettized_weights_run_as_coremltools_decompresses_them(compress_net, target, nbits, tolerance):
    from edgevit.quiet import quiet_converters

    cto = compress_net.ct.optimize.coreml
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=nbits, mode="kmeans",
                                                                          weight_threshold=0))
    with quiet_converters():
        mlmodel = cto.palettize_weights(compress_net.convert(target), config)
    out = _run_compressed(compress_net, mlmodel, f"lut{nbits}-{target}", {"constexpr_lut_to_dense"})
    assert _relative_error(out, compress_net.ref) < tolerance


@pytest.mark.parametrize("kind,options,weights", [  # conv1 (3 input channels) has no blocks of 8,
    ("int4-blocks", {"mode": "linear_symmetric", "dtype": "int4", "granularity": "per_block", "block_size": 8}, 3),
    ("uint4-blocks", {"mode": "linear", "dtype": "uint4", "granularity": "per_block", "block_size": 8}, 3),
    ("lut4-groups", {"nbits": 4, "granularity": "per_grouped_channel", "group_size": 4}, 3),  # fc2 (10) no 4s
    ("lut2-vectors", {"nbits": 2, "cluster_dim": 2}, 4),
    ("lut3-scaled", {"nbits": 3, "mode": "uniform", "enable_per_channel_scale": True}, 4),
])
def test_ios18_block_vector_and_chained_compression_run_as_coremltools_decompresses_them(compress_net, kind, options,
                                                                                         weights):
    """iOS18's finer forms: int4/uint4 blocks, a palette per group of channels, palettes of
    2-vectors, and a palette whose output a per-channel scale multiplies (two chained ops).
    coremltools leaves a weight whose channels do not split into the blocks uncompressed."""
    from edgevit.quiet import quiet_converters

    cto = compress_net.ct.optimize.coreml
    palette = kind.startswith("lut")
    config = (cto.OpPalettizerConfig if palette else cto.OpLinearQuantizerConfig)(weight_threshold=0, **options)
    with quiet_converters():
        mlmodel = (cto.palettize_weights if palette else cto.linear_quantize_weights)(
            compress_net.convert("iOS18"), cto.OptimizationConfig(global_config=config))
    ops = {"constexpr_lut_to_dense"} if palette else {"constexpr_blockwise_shift_scale"}
    if kind == "lut3-scaled":
        ops.add("constexpr_blockwise_shift_scale")
    _run_compressed(compress_net, mlmodel, f"{kind}-iOS18", ops, weights)


@pytest.mark.parametrize("target", ["iOS17", "iOS18"])
def test_w8a8_runs_as_coremltools_decompresses_it(compress_net, target):
    """Activations quantized (calibrated here by the interpreter), then weights: quantize and
    dequantize around every conv and linear. coremltools inserts fp16 scales, so W8A8 needs
    an fp16 program."""
    from edgevit.exporters.coreml import calibration_by_interpreter
    from edgevit.quiet import quiet_converters

    cto = compress_net.ct.optimize.coreml
    samples = [{"input": compress_net.x}] + [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
                                             for _ in range(3)]
    with quiet_converters(), calibration_by_interpreter():
        a8 = cto.linear_quantize_activations(
            compress_net.convert(target, "fp16"),
            cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric")), samples)
        w8a8 = cto.linear_quantize_weights(a8, cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0)))
    weights = "constexpr_blockwise_shift_scale" if target == "iOS18" else "constexpr_affine_dequantize"
    out = _run_compressed(compress_net, w8a8, f"w8a8-{target}", {weights, "quantize", "dequantize"})
    assert _relative_error(out, compress_net.ref) < 5e-2  # measured: 1e-2
