"""The Core ML reference interpreter on whole programs: edgevit's exports against PyTorch
(and fast enough to verify with), unsupported ops and tampered weights refused, and
programs compressed by coremltools.optimize run as coremltools decompresses them."""

from __future__ import annotations

import shutil
import struct
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgevit
from edgevit.runtimes.mil_ops import lookup

from .conftest import run_cli


def t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


def gaussian(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def coreml_256(tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml256")
    return edgevit.export("edgenext_xx_small", "coreml", out, num_inputs=1).path


def test_interpreting_xx_small_at_256_takes_under_two_seconds(coreml_256):
    rt = edgevit.load(coreml_256)
    x = gaussian(1, 3, 256, 256)
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
    head = next(o for o in edgevit.load(coreml_256).operations()  # the classifier weights
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
    x = gaussian(1, 3, 256, 256)
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
    draws = np.random.default_rng(0)
    samples = [{"input": compress_net.x}] + [{"input": draws.standard_normal((1, 3, 32, 32)).astype(np.float32)}
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
