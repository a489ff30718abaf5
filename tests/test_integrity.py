"""The content digest recorded at export: artifacts changed afterwards are noticed and refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgevit
from edgevit.artifact.integrity import PLACEHOLDER, content_digest

from .conftest import assert_clean_failure, run_cli

WEIGHT_FILE = {"onnx": None, "tflite": None, "coreml": Path("Data/com.apple.CoreML/weights/weight.bin")}


def _copy(source: Path, tmp_path: Path) -> Path:
    copy = tmp_path / source.name
    (shutil.copytree if source.is_dir() else shutil.copy)(source, copy)
    return copy


def _scale_a_weight(artifact: Path, target: str) -> None:
    """Multiply one float32 weight near the middle of the file by 3 and add 0.5 (a plausible,
    silent corruption). The first 4 bytes from the middle on that read as a weight of
    ordinary size (0.01 to 10) and whose change changes the output are taken: a tensor's data
    need not start 4-byte aligned in the file, a folded weight of 1e-8 would not visibly
    change the output, and the bytes may belong to something the program does not compute
    with (a metadata string, an unused constant)."""
    holder = artifact / WEIGHT_FILE[target] if WEIGHT_FILE[target] else artifact
    original = holder.read_bytes()
    runtime = edgevit.load(artifact, integrity_check=False)
    x = np.random.default_rng(2).standard_normal(runtime.inputs[0].shape).astype(np.float32)
    before = runtime.run(x)
    candidates = (i for i in range(len(original) // 2, len(original) - 4)
                  if 1e-2 <= abs(float(np.frombuffer(original[i:i + 4], np.float32)[0])) <= 10)
    for at, _ in zip(candidates, range(50)):
        data = bytearray(original)
        value = np.frombuffer(original[at:at + 4], np.float32)[0]
        data[at:at + 4] = np.float32(value * 3 + 0.5).tobytes()
        holder.write_bytes(bytes(data))
        try:
            if not np.array_equal(edgevit.load(artifact, integrity_check=False).run(x), before):
                return
        except edgevit.EdgeVitError:
            pass  # these bytes broke the file's structure: a corruption, but not the silent kind sought
    raise AssertionError(f"no weight near the middle of {holder} changes the output")


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
def test_every_export_records_a_digest_of_its_content(artifacts, target):
    rt = edgevit.load(artifacts[target])
    assert rt.integrity.status == "intact" and rt.metadata.recorded_digest == rt.integrity.actual
    assert rt.metadata.recorded_digest != PLACEHOLDER


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
def test_a_changed_weight_is_refused_unless_asked_to_go_on(artifacts, target, tmp_path):
    x = tmp_path / "x.npy"
    shape = edgevit.load(artifacts[target]).inputs[0].shape  # TFLite: NHWC
    np.save(x, np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    tampered = _copy(artifacts[target], tmp_path)
    _scale_a_weight(tampered, target)
    for command in (["predict", tampered, x], ["bench", tampered, "--runs", "1"],
                    ["verify", tampered, "--model", "edgenext_xx_small", "--num-inputs", "1"]):
        assert_clean_failure(run_cli(*map(str, command)), contains="changed after edgevit exported and verified it")
    with pytest.raises(edgevit.ArtifactError, match="changed after edgevit exported"):
        edgevit.load(tampered)
    info = json.loads(run_cli("--json", "info", str(tampered)).stdout)
    assert info["integrity"]["status"] == "modified" and info["integrity"]["recorded"] != info["integrity"]["actual"]
    before = edgevit.load(artifacts[target]).run(np.load(x))
    after = edgevit.load(tampered, integrity_check=False).run(np.load(x))
    assert not np.array_equal(before, after)  # it does compute something else: the check is what caught it
    unchecked = run_cli("--json", "predict", str(tampered), str(x), "--no-integrity-check")
    assert unchecked.code == 0, unchecked.stderr


def test_edited_metadata_is_a_modification_too(artifacts, tmp_path):
    tampered = _copy(artifacts["onnx"], tmp_path)
    data = tampered.read_bytes()
    tampered.write_bytes(data.replace(b'"crop_pct":0.875', b'"crop_pct":0.999'))
    assert edgevit.load(tampered, integrity_check=False).integrity.status == "modified"


def test_an_artifact_without_a_recorded_digest_loads_and_says_so(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "plain",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    rt = edgevit.load(path)
    assert rt.integrity.status == "unrecorded" and rt.integrity.actual == content_digest([path.read_bytes()])


def test_the_digest_hashes_its_own_value_as_zeros():
    token = b'"sha256":"' + b"ab" * 32 + b'"'
    blank = b'"sha256":"' + PLACEHOLDER.encode() + b'"'
    assert content_digest([b"x" + token + b"y"], "ab" * 32) == content_digest([b"x" + blank + b"y"])
    assert content_digest([b"x" + token + b"y"]) != content_digest([b"x" + blank + b"y"])
    assert content_digest([b"ab", b"c"]) != content_digest([b"a", b"bc"])  # chunks are framed
