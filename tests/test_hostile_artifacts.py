"""Hand-made hostile and broken artifacts: each is one clean error line with exit 2, and no
loader reads outside the artifact it was given.

Commands run in a worker that imports the CLI once with torch blocked (the device profile);
see :mod:`tests.cli_pool` for how hangs, crashes and memory are caught.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from .cli_pool import CliWorker

COREML_DIR = Path("Data") / "com.apple.CoreML"


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    worker = CliWorker(block=("torch",), cwd=tmp_path_factory.mktemp("cli"))
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def zeros(artifacts, tmp_path_factory) -> Path:
    """A valid input for the test artifacts."""
    path = tmp_path_factory.mktemp("inputs") / "x.npy"
    np.save(path, np.zeros((1, 3, 64, 64), np.float32))
    return path


def refused(cli: CliWorker, *argv: str, contains: str = "") -> str:
    """Run a command that must fail cleanly (exit 2, one line); return that line."""
    outcome = cli.run([str(a) for a in argv])
    assert outcome.clean and outcome.code == 2, (argv, outcome)
    line = outcome.first_error()
    assert contains in line, line
    return line


# --- Core ML: weight and manifest paths (issue 16, item 6) --------------------------------------

def _package(artifacts, tmp_path: Path, name: str = "m.mlpackage") -> Path:
    package = tmp_path / name
    shutil.copytree(artifacts["coreml"], package)
    return package


def _rewrite_weight_paths(package: Path, file_name: str) -> None:
    """Point every weight blob of the program at ``file_name``."""
    from coremltools.proto import Model_pb2

    spec_file = package / COREML_DIR / "model.mlmodel"
    spec = Model_pb2.Model.FromString(spec_file.read_bytes())
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                for value in op.attributes.values():
                    if value.WhichOneof("value") == "blobFileValue":
                        value.blobFileValue.fileName = file_name
    spec_file.write_bytes(spec.SerializeToString())


def test_an_absolute_weight_path_is_refused_even_to_a_valid_weight_file(artifacts, cli, zeros, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(artifacts["coreml"] / COREML_DIR / "weights" / "weight.bin", elsewhere / "weight.bin")
    package = _package(artifacts, tmp_path)
    _rewrite_weight_paths(package, f"@model_path/{elsewhere / 'weight.bin'}")  # @model_path//abs/...
    for command in (["info"], ["predict", "--no-integrity-check"]):
        args = [*command, package] + ([zeros] if command[0] == "predict" else [])
        refused(cli, *args, contains="is not a relative path inside the artifact")
    _rewrite_weight_paths(package, str(elsewhere / "weight.bin"))  # no @model_path at all
    refused(cli, "info", package, contains="is not under @model_path/")


def test_dot_dot_weight_paths_are_refused_without_saying_whether_the_target_exists(artifacts, cli, tmp_path):
    messages = []
    for target in ("etc/passwd", "etc/no-such-file-here"):
        package = _package(artifacts, tmp_path, f"{target.replace('/', '_')}.mlpackage")
        weird = f"@model_path/../../../../../../../../{target}"
        _rewrite_weight_paths(package, weird)
        line = refused(cli, "info", package, contains="is not a relative path inside the artifact")
        messages.append(line.replace(target, "TARGET").replace(package.name, "PACKAGE"))
    assert messages[0] == messages[1]  # existence outside the package is not revealed


@pytest.mark.parametrize("link_to", ["outside_copy", "/dev/zero", "/etc/passwd"])
def test_a_weight_file_symlink_leaving_the_package_is_refused(artifacts, cli, tmp_path, link_to):
    package = _package(artifacts, tmp_path)
    weight = package / COREML_DIR / "weights" / "weight.bin"
    if link_to == "outside_copy":
        link_to = str(tmp_path / "copy.bin")
        shutil.copy(weight, link_to)
    weight.unlink()
    weight.symlink_to(link_to)
    refused(cli, "info", package, contains="leaves the artifact")


def test_a_symlink_inside_the_package_is_followed(artifacts, cli, zeros, tmp_path):
    package = _package(artifacts, tmp_path)
    weights = package / COREML_DIR / "weights"
    (weights / "weight.bin").rename(weights / "real.bin")
    (weights / "weight.bin").symlink_to("real.bin")
    outcome = cli.run(["predict", str(package), str(zeros)])
    assert outcome.code == 0, outcome


def test_a_fifo_or_a_folder_as_weight_file_is_refused_without_hanging(artifacts, cli, tmp_path):
    package = _package(artifacts, tmp_path)
    weight = package / COREML_DIR / "weights" / "weight.bin"
    weight.unlink()
    os.mkfifo(weight)
    refused(cli, "info", package, contains="is not a regular file")
    weight.unlink()
    weight.mkdir()
    refused(cli, "info", package, contains="is not a regular file")


def test_a_manifest_naming_a_file_outside_is_refused(artifacts, cli, tmp_path):
    package = _package(artifacts, tmp_path)
    manifest = package / "Manifest.json"
    text = manifest.read_text().replace('"com.apple.CoreML/model.mlmodel"', '"../../../../../../etc/passwd"')
    manifest.write_text(text)
    refused(cli, "info", package, contains="not a relative path inside the artifact")
    manifest.write_text("{")
    refused(cli, "info", package, contains="Manifest.json has no valid root model item")
    manifest.unlink()
    refused(cli, "info", package, contains="Manifest.json is missing")


def test_a_truncated_weight_blob_is_refused_before_any_read_past_the_end(artifacts, cli, tmp_path):
    package = _package(artifacts, tmp_path)
    weight = package / COREML_DIR / "weights" / "weight.bin"
    data = bytearray(weight.read_bytes())
    struct.pack_into("<Q", data, 64 + 8, 1 << 60)  # the first blob claims an exabyte
    weight.write_bytes(bytes(data))
    refused(cli, "info", package, contains="truncated or corrupt")


# --- broken artifacts of every format (issue 16, item 7) ---------------------------------------

def _replace_same_length(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new))


def _stored_metadata(path: Path) -> bytes:
    """The edgevit JSON document as stored in ``path`` (it ends with the edgevit version)."""
    data = path.read_bytes()
    start = data.index(b'{"model":"')
    return data[start:data.index(b"}", data.index(b'"edgevit_version":"', start)) + 1]


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
@pytest.mark.parametrize("document,message", [
    (b"not json at all", "is not valid JSON"),
    (b"{}", "field 'model' is missing"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"model": 3, "target": "onnx"}', "field 'model' must be"),
    (b'{"model": "m", "target": "onnx", "parity": {}}', "field 'parity' must be"),
    (b'{"model": "m", "target": "onnx", "reparam": {"folded": "many", "kept": 0}}', "field 'reparam' must be"),
])
def test_edgevit_metadata_that_is_not_what_edgevit_writes(artifacts, cli, tmp_path, target, document, message):
    source = artifacts[target]
    copy = tmp_path / source.name
    (shutil.copytree if source.is_dir() else shutil.copy)(source, copy)
    holder = copy / COREML_DIR / "model.mlmodel" if target == "coreml" else copy
    stored = _stored_metadata(holder)
    _replace_same_length(holder, stored, document.ljust(len(stored)))  # JSON allows trailing spaces
    refused(cli, "info", copy, contains=message)


def test_onnx_metadata_that_is_not_utf8(artifacts, cli, tmp_path):
    copy = tmp_path / "m.onnx"
    shutil.copy(artifacts["onnx"], copy)
    _replace_same_length(copy, b'"model":"edgenext', b'"model":"\xff\xfegenext')
    refused(cli, "info", copy, contains=str(copy))


def test_tflite_tensor_names_that_are_not_utf8(artifacts, cli, zeros, tmp_path):
    copy = tmp_path / "m.tflite"
    shutil.copy(artifacts["tflite"], copy)
    data = copy.read_bytes()
    copy.write_bytes(data.replace(b"edgevit.models.edgenext.EdgeNeXt", b"\xff\xfeevit.models.edgenext.EdgeNeXt"))
    for command in (["info", copy, "--ops"], ["predict", copy, zeros, "--no-integrity-check"]):
        outcome = cli.run([str(a) for a in command])
        assert outcome.clean, outcome


def test_a_core_ml_program_reading_a_value_nobody_defines(artifacts, cli, zeros, tmp_path):
    from coremltools.proto import Model_pb2

    package = _package(artifacts, tmp_path)
    spec_file = package / COREML_DIR / "model.mlmodel"
    spec = Model_pb2.Model.FromString(spec_file.read_bytes())
    block = spec.mlProgram.functions["main"].block_specializations["CoreML6"]
    conv = next(op for op in block.operations if op.type == "conv")
    conv.inputs["x"].arguments[0].name = "no_such_value"
    spec_file.write_bytes(spec.SerializeToString())
    refused(cli, "predict", package, zeros, "--no-integrity-check", contains="'no_such_value', which no input")


def test_an_empty_file_named_like_a_package(cli, zeros, tmp_path):
    fake = tmp_path / "x.mlpackage"
    fake.write_bytes(b"")
    for command in (["info", fake], ["predict", fake, zeros]):
        refused(cli, *command, contains="is not an .mlpackage folder")


def test_an_onnx_model_that_fails_while_running(cli, zeros, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [5, 7])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["logits"])], "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [shape])
    path = tmp_path / "fails.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    line = refused(cli, "predict", path, zeros, contains="failed to run it")
    assert "\x1b" not in line  # onnxruntime's coloured log line stays out


def test_an_npy_whose_header_claims_a_huge_array(artifacts, cli, tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 3, 64, 64), }"
    header = header.ljust(118) + "\n"
    path = tmp_path / "huge.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    outcome = cli.run(["predict", str(artifacts["onnx"]), str(path)])
    assert outcome.clean and outcome.code == 2 and "does not match" in outcome.first_error(), outcome
    assert outcome.peak_rss < 1 << 30
    dynamic = tmp_path / "short.npy"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 64, 64), }".ljust(118) + "\n"
    dynamic.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64)
    refused(cli, "predict", artifacts["onnx"], dynamic, contains="shorter than its header says")


def test_a_tflite_vector_claiming_billions_of_entries(artifacts, cli, tmp_path):
    copy = tmp_path / "m.tflite"
    data = bytearray(artifacts["tflite"].read_bytes())
    root = struct.unpack_from("<I", data, 0)[0]
    vtable = root - struct.unpack_from("<i", data, root)[0]
    metadata_field = struct.unpack_from("<H", data, vtable + 4 + 2 * 6)[0]  # Model.metadata
    vector = root + metadata_field + struct.unpack_from("<I", data, root + metadata_field)[0]
    struct.pack_into("<I", data, vector, 0xFFFFFFF0)
    copy.write_bytes(bytes(data))
    refused(cli, "info", copy, contains="not a valid TFLite flatbuffer")


def test_onnx_external_data_is_never_read_from_the_working_directory(cli, tmp_path):
    """ONNX Runtime resolves a model's external data against the working directory when it
    is given bytes: a file there must not be read into the model."""
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "planted.bin"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["input", "w"], ["logits"])], "external",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], [weight])
    model = tmp_path / "model" / "external.onnx"
    model.parent.mkdir()
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 4), np.float32))
    np.full(4, 7.0, np.float32).tofile(cli.cwd / "planted.bin")  # in the worker's working directory
    refused(cli, "predict", model, x, contains="external data files")


def test_an_input_declared_huge_is_refused_before_anything_is_allocated(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "huge",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4096, 3, 1024, 1024])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4096, 3, 1024, 1024])])
    path = tmp_path / "huge.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    for command in (["bench", path, "--runs", "1"], ["info", path]):
        outcome = cli.run([str(a) for a in command])
        assert outcome.clean and outcome.code == 2 and "more than edgevit allocates" in outcome.first_error(), outcome
        assert outcome.peak_rss < 1 << 30


def test_names_with_markup_and_control_characters_print_as_text(cli, tmp_path):
    """Names come from the artifact: rich markup in them is not interpreted (it used to crash
    'info'), and control characters are escaped, never sent to the terminal."""
    import onnx
    from onnx import TensorProto, helper

    name = "in[/x]put\x1b[31m\u2028"
    graph = helper.make_graph([helper.make_node("Relu", [name], ["[bold]logits"])], "names",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("[bold]logits", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "names.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 4), np.float32))
    for command in (["info", path], ["predict", path, x], ["bench", path, "--runs", "1"]):
        outcome = cli.run([str(a) for a in command])
        assert outcome.code == 0, outcome
        assert "\x1b" not in outcome.stdout and "\u2028" not in outcome.stdout
    assert "in[/x]put\\x1b[31m\\u2028" in cli.run(["info", str(path)]).stdout


def test_an_error_quoting_a_control_character_stays_on_one_line(artifacts, cli, zeros, tmp_path):
    from coremltools.proto import Model_pb2

    package = _package(artifacts, tmp_path)
    spec_file = package / COREML_DIR / "model.mlmodel"
    spec = Model_pb2.Model.FromString(spec_file.read_bytes())
    block = spec.mlProgram.functions["main"].block_specializations["CoreML6"]
    next(op for op in block.operations if op.type == "gelu").type = "gelu\x1d\n\x1b[2J"
    spec_file.write_bytes(spec.SerializeToString())
    line = refused(cli, "predict", package, zeros, "--no-integrity-check", contains="gelu\\x1d\\n\\x1b[2J")
    assert "\x1b" not in line
