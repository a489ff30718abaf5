"""The Core ML reference interpreter's ops, one at a time: each against PyTorch, numpy or
coremltools' own evaluation, edge values included (fp16 overflow, sub-byte packing,
compressed weights and quantized activations by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgevit
from edgevit.runtimes import mil_ops
from edgevit.runtimes.mil_ops import lookup

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
