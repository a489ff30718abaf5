"""The input form: numpy conversions, and the torch wrapper's exact normalization fold."""

from __future__ import annotations

import edgevit
import numpy as np
import pytest
import torch
from edgevit.pipeline.artifact_module import ArtifactModule
from edgevit.errors import InputError
from edgevit.artifact.input_form import InputForm, parse_layout
from edgevit.artifact.preprocess import load_pixels


def test_forms_convert_normalized_and_pixel_batches():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (2, 3, 5, 7)).astype(np.float32)
    plain, app = InputForm(), InputForm("NHWC", pixels=True)
    normalized = plain.from_pixels(pixels)
    assert normalized.shape == (2, 3, 5, 7) and abs(normalized.mean()) < 2
    np.testing.assert_allclose(app.from_normalized(normalized), pixels.transpose(0, 2, 3, 1), atol=2e-4)
    np.testing.assert_array_equal(app.from_pixels(pixels), pixels.transpose(0, 2, 3, 1))
    assert app.model_shape((1, 224, 256, 3)) == (1, 3, 224, 256) and app.image_size((1, 224, 256, 3)) == (224, 256)
    assert plain.image_size((1, 3, 224, 256)) == (224, 256)
    with pytest.raises(InputError, match="not an image"):
        plain.image_size((1, 10))
    assert parse_layout("nhwc") == "NHWC"
    with pytest.raises(InputError, match="unknown layout"):
        parse_layout("hwc")


def test_stretch_keeps_an_image_of_the_input_size_as_it_is(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    np.testing.assert_array_equal(load_pixels(tmp_path / "x.png", (24, 40), resize="stretch")[0].transpose(1, 2, 0),
                                  pixels)
    with pytest.raises(InputError, match="unknown resize"):
        load_pixels(tmp_path / "x.png", (24, 40), resize="fit")


@pytest.mark.parametrize("name,size", [("edgenext_xx_small", 64), ("deit_tiny", 224)])
def test_normalization_folds_exactly_into_an_unpadded_stem(name, size):
    model = edgevit.create_model(name).eval()
    form = InputForm("NHWC", pixels=True)
    folded = ArtifactModule(model, form, fold_shape=(1, 3, size, size))
    kept = ArtifactModule(model, form)
    assert folded.folded_into is not None and kept.folded_into is None
    assert folded.model is not model  # a copy: the model itself is unchanged
    x = torch.from_numpy(np.random.default_rng(2).uniform(0, 255, (1, size, size, 3)).astype(np.float32))
    with torch.inference_mode():
        assert (folded(x) - kept(x)).abs().max() < 1e-4


def test_a_padded_stem_keeps_the_normalization():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten()).eval()
    wrapped = ArtifactModule(model, InputForm(pixels=True), fold_shape=(1, 3, 8, 8))
    assert wrapped.folded_into is None and wrapped.model is model
