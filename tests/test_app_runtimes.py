"""App runtimes take edgevit's artifacts as they are.

- MediaPipe Tasks' ImageClassifier (the C++ core of the Android, iOS and web task
  libraries) loads the TFLite exports of an EdgeNeXt and a SLAB model, reads their
  standard metadata and packed label file, and agrees with ``edgevit predict``.
- The Core ML image-input classifiers (what an iOS app feeds through Vision) are verified
  numerically through the reference interpreter, and ``predict`` runs them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import edgevit
import numpy as np
import pytest
from edgevit.apps.predict import predict

from .conftest import APP_MODELS as MODELS
from .conftest import LABELS, SMALL


def mediapipe_classify(path: Path, image: Path, max_results: int | None = 5) -> list[tuple[int, str, float]]:
    """(index, name, score) of MediaPipe's top classes (None: all), best first; score
    threshold off (it drops negative logits by default)."""
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                            max_results=max_results, score_threshold=-1e30)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        result = classifier.classify(mp.Image.create_from_file(str(image)))
    return [(c.index, c.category_name, c.score) for c in result.classifications[0].categories]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("model", MODELS)
def test_mediapipe_classifier_agrees_with_predict(app_artifacts, photo_png, model, precision):
    path = app_artifacts[(model, "tflite", precision)]
    got = mediapipe_classify(path, photo_png)
    want = predict(path, photo_png, top_k=5, resize="stretch")["top"]
    assert [name for _, name, _ in got] == [row["label"] for row in want]
    assert [index for index, _, _ in got] == [row["class"] for row in want]
    np.testing.assert_allclose([score for _, _, score in got], [row["score"] for row in want], rtol=0, atol=1e-4)


def test_mediapipe_reads_the_packed_label_file(app_artifacts, photo_png, tmp_path):
    path = app_artifacts[("edgenext_xx_small", "tflite", "fp32")]
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["labels.txt"]
        assert archive.read("labels.txt").decode("utf-8").splitlines() == LABELS
    names = {index: name for index, name, _ in mediapipe_classify(path, photo_png)}
    assert all(name == LABELS[index] for index, name in names.items())
    # the same flatbuffer with other names in its packed file: MediaPipe shows those names
    with zipfile.ZipFile(path) as archive:
        flatbuffer = data[:archive.infolist()[0].header_offset]
    renamed = tmp_path / "renamed.tflite"
    renamed.write_bytes(flatbuffer)
    with zipfile.ZipFile(renamed, "a") as archive:
        archive.writestr("labels.txt", "\n".join(name.upper() for name in LABELS) + "\n")
    assert {i: n for i, n, _ in mediapipe_classify(renamed, photo_png)} == {i: n.upper() for i, n in names.items()}


def test_mediapipe_preprocessing_is_predicts_stretch(tmp_path, photo):
    """MediaPipe's input tensor, read back through a model whose scores are its input
    pixels, equals edgevit's ``stretch`` resize of the same image, pixel for pixel."""
    import torch
    from edgevit.artifact.preprocess import load_pixels
    from PIL import Image

    class Pixels(torch.nn.Module):  # the normalized image, flattened (the export adds NHWC + pixel input)
        input_size = (3, 24, 40)

        def forward(self, x):
            return x.permute(0, 2, 3, 1).reshape(1, -1)

    count = 24 * 40 * 3
    result = edgevit.export(Pixels(), "tflite", tmp_path, labels=[str(i) for i in range(count)], reparam=False)
    source = tmp_path / "photo.png"
    Image.open(photo).convert("RGB").crop((3, 5, 600, 411)).save(source)  # odd size: real resampling
    normalized = np.zeros(count, np.float64)
    for index, _, score in mediapipe_classify(result.path, source, max_results=None):
        normalized[index] = score
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    seen = normalized.reshape(24, 40, 3) * std * 255 + mean * 255  # back to pixel values
    ours = load_pixels(source, (24, 40), resize="stretch")[0].transpose(1, 2, 0)
    assert np.abs(seen - ours).max() < 1e-3
    center = load_pixels(source, (24, 40), resize="crop")[0].transpose(1, 2, 0)
    assert np.abs(seen - center).max() > 10  # the zoo's center crop is another image


@pytest.mark.parametrize("model", MODELS)
def test_coreml_image_classifier_verified_and_predicts(app_artifacts, photo, model):
    for precision in ("fp32", "fp16"):
        path = app_artifacts[(model, "coreml", precision)]
        rt = edgevit.load(path)
        assert rt.inputs[0].image and rt.can_run, rt.cannot_run_reason
        parity = rt.metadata.parity  # 3 random inputs, edgevit's 4 photos and the photo given
        assert parity["numerically_verified"] and parity["inputs"] == 8
        assert {kind: row["inputs"] for kind, row in parity["by_kind"].items()} == {"random": 3, "photo": 4, "image": 1}
        top = predict(path, photo, top_k=5)["top"]
        assert [row["label"] for row in top] == [LABELS[row["class"]] for row in top]
    # Core ML's classifier outputs: the top label, and every class's score in a dictionary
    rt = edgevit.load(app_artifacts[(model, "coreml", "fp32")])
    pixels = np.random.default_rng(1).uniform(0, 255, rt.inputs[0].shape).astype(np.float32)
    outputs = rt._interpreter.run({"image": pixels})
    scores = outputs["classLabel_probs"]
    assert list(scores) == LABELS
    assert str(outputs["classLabel"]) == max(scores, key=scores.get)
    np.testing.assert_array_equal(rt.run(pixels)[0], [scores[name] for name in LABELS])


def test_tflite_default_is_the_app_form_with_no_input_transpose(artifacts):
    rt = edgevit.load(artifacts["tflite"])
    assert rt.inputs[0].shape == (1, SMALL, SMALL, 3)
    assert (rt.metadata.layout, rt.metadata.image_input) == ("NHWC", True)
    ops = [op for op in rt.interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    chain, tensor = [], rt.interpreter.get_input_details()[0]["index"]
    while not chain or chain[-1] in ("MUL", "ADD", "TRANSPOSE"):  # whatever comes before the stem
        consumer = next(op for op in ops if tensor in op["inputs"])
        chain.append(consumer["op_name"])
        tensor = consumer["outputs"][0]
    assert chain == ["CONV_2D"]  # no TRANSPOSE, and the pixel normalization is inside the stem's weights


def standard_metadata(path: Path):
    from edgevit.runtimes.tflite_format import read_metadata_entries
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    payload = read_metadata_entries(path.read_bytes())["TFLITE_METADATA"]
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(payload, 0)
    return schema, schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAsModelMetadata(payload, 0))


def test_standard_metadata_describes_input_output_and_labels(app_artifacts, tmp_path):
    schema, meta = standard_metadata(app_artifacts[("slab_deit_tiny", "tflite", "fp32")])
    assert meta.name.decode() == "slab_deit_tiny" and meta.minParserVersion.decode() == "1.0.0"
    assert meta.version.decode() == edgevit.__version__ and meta.author.decode() == "edgevit"
    (image,), (scores,) = meta.subgraphMetadata[0].inputTensorMetadata, meta.subgraphMetadata[0].outputTensorMetadata
    assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    normalization = image.processUnits[0].options
    assert (list(normalization.mean), list(normalization.std)) == ([0.0], [1.0])  # pixels: mean/std in the model
    assert (list(image.stats.min), list(image.stats.max)) == ([0.0], [255.0])
    (labels,) = scores.associatedFiles
    assert (labels.name.decode(), labels.type) == ("labels.txt", schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    # the tensor form declares the model's own normalization in the 0-255 convention, per channel
    tensor = edgevit.export("edgenext_xx_small", "tflite", tmp_path, image_size=SMALL, layout="nchw",
                            image_input=False, num_inputs=1)
    schema, meta = standard_metadata(tensor.path)
    (features,) = meta.subgraphMetadata[0].inputTensorMetadata
    assert features.content.contentPropertiesType == schema.ContentProperties.FeatureProperties
    np.testing.assert_allclose(features.processUnits[0].options.mean, [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(features.processUnits[0].options.std, [58.395, 57.12, 57.375], rtol=1e-6)
    assert meta.subgraphMetadata[0].outputTensorMetadata[0].associatedFiles is None


def test_with_softmax_outputs_probabilities_that_mediapipe_reports(tmp_path, photo_png):
    labels = [f"c{i}" for i in range(1000)]
    result = edgevit.export("edgenext_xx_small", "tflite", tmp_path, image_size=SMALL, labels=labels, with_softmax=True)
    assert result.parity.numerically_verified and result.metadata["output_kind"] == "probabilities"
    mine = predict(result.path, photo_png, top_k=5, resize="stretch")["top"]
    assert abs(sum(edgevit.load(result.path).run(np.zeros((1, SMALL, SMALL, 3), np.float32))[0]) - 1) < 1e-5
    assert all(row["score"] == row["probability"] for row in mine)
    got = mediapipe_classify(result.path, photo_png)
    assert [name for _, name, _ in got] == [row["label"] for row in mine]
    np.testing.assert_allclose([s for _, _, s in got], [row["score"] for row in mine], rtol=0, atol=1e-6)


def test_onnx_takes_any_input_form_and_verifies(tmp_path, photo):
    result = edgevit.export("edgenext_xx_small", "onnx", tmp_path, image_size=SMALL, layout="nhwc",
                            image_input=True, image=photo)
    assert result.parity.passed and result.parity.max_abs_err < 1e-4
    rt = edgevit.load(result.path)
    assert rt.inputs[0].shape == (1, SMALL, SMALL, 3) and rt.metadata.layout == "NHWC"
    plain = edgevit.export("edgenext_xx_small", "onnx", tmp_path / "plain", image_size=SMALL)
    np.testing.assert_allclose(predict(result.path, photo)["top"][0]["score"],
                               predict(plain.path, photo)["top"][0]["score"], atol=1e-4)
    assert edgevit.verify(result.path, "edgenext_xx_small", image=photo).passed
