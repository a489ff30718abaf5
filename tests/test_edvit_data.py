"""ED-ViT data: image folders stream (read on access, bounded memory), digits and .npz stay
arrays as before, and the generated texture set."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from edgevit.edvit import images as images_module
from edgevit.edvit.data import load_dataset, read_rgb
from edgevit.edvit.images import ImageFiles, batches
from edgevit.edvit.synthetic import CLASSES, save_npz, textures, write_image_folder
from edgevit.edvit.train import fit, predict
from edgevit.errors import InputError

from .conftest import tiny_vit


@pytest.fixture
def folder(tmp_path):
    """Ten class folders of four 20x20 PNG textures each."""
    return write_image_folder(tmp_path / "imgs", 4, 20, suffix=".png")


@pytest.fixture
def decodes(monkeypatch):
    """Counts the files decoded."""
    count = {"files": 0}
    real = images_module.read_rgb_uint8

    def counting(file, height, width):
        count["files"] += 1
        return real(file, height, width)

    monkeypatch.setattr(images_module, "read_rgb_uint8", counting)
    return count


def test_a_folder_is_read_on_access_and_matches_reading_it_whole(folder, decodes):
    data = load_dataset(folder, 16)
    assert isinstance(data.x_train, ImageFiles) and isinstance(data.x_test, ImageFiles)
    assert data.classes == sorted(CLASSES) and data.x_train.shape == (len(data.y_train), 3, 16, 16)
    assert len(data.y_train) == 30 and len(data.y_test) == 10 and data.image_size == 16
    assert decodes["files"] == 30  # the statistics pass over the training images, nothing else
    # what the eager reader gave: every training image in memory, normalized with its own stats
    whole = np.stack([read_rgb(f, 16, 16) for f in data.x_train.files])
    assert np.allclose(data.mean, whole.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(data.std, whole.std(axis=(0, 2, 3)), atol=1e-6)
    mean, std = np.float32(data.mean)[:, None, None], np.float32(data.std)[:, None, None]
    got = data.x_train[[3, 0, 7]]
    assert decodes["files"] == 33 and got.dtype == np.float32
    assert np.allclose(got, (whole[[3, 0, 7]] - mean) / std, atol=1e-5)
    assert np.allclose(data.x_train[2:4], (whole[2:4] - mean) / std, atol=1e-5)
    assert data.x_train[5].shape == (3, 16, 16)
    members = np.isin(data.y_train, [0, 1])
    chosen = data.x_train[members]  # a mask stays lazy: nothing read
    before = decodes["files"]
    assert isinstance(chosen, ImageFiles) and len(chosen) == int(members.sum())
    assert decodes["files"] == before
    assert np.allclose(chosen[:2], (whole[members][:2] - mean) / std, atol=1e-5)


def test_folder_statistics_come_from_a_bounded_sample(folder, decodes, monkeypatch):
    from edgevit.edvit import data as data_module

    monkeypatch.setattr(data_module, "STATS_SAMPLE", 8)
    first, again = load_dataset(folder, 16), load_dataset(folder, 16)
    assert decodes["files"] == 16  # 8 images per load
    assert first.mean == again.mean and first.std == again.std  # seeded: the same sample each time


def test_streaming_holds_a_batch_not_the_set(tmp_path):
    """Iterating over 75 images at 48x48 (2.1 MB as float32) in batches of 5 allocates a few batches."""
    data = load_dataset(write_image_folder(tmp_path / "big", 10, 48, suffix=".png"), 48)
    whole_bytes = len(data.x_train) * 3 * 48 * 48 * 4
    spans = [np.arange(i, min(i + 5, len(data.x_train))) for i in range(0, len(data.x_train), 5)]
    tracemalloc.start()
    try:
        total = sum(float(batch.sum()) for batch in batches(data.x_train, spans))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(total)
    assert peak < whole_bytes / 4, (peak, whole_bytes)


def test_a_bad_image_file_fails_at_load_naming_it(folder):
    (folder / "dots" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        load_dataset(folder, 16)


def test_training_and_prediction_run_on_a_folder(folder):
    data = load_dataset(folder, 16)
    vit = fit(tiny_vit(), data.x_train, data.y_train, epochs=1, lr=1e-3, batch_size=8)
    assert np.allclose(predict(vit, data.x_test), predict(vit, np.asarray(data.x_test)), atol=1e-5)


def test_the_split_steps_run_on_a_folder(folder):
    """What edgevit.split does with the training images, on files read on access: importance
    on a class group (a boolean mask: still lazy), fine-tuning, fusion, the fused prediction."""
    from edgevit.edvit.compose import FusedModel, finetune_submodel, train_fusion
    from edgevit.edvit.prune import keep_fraction, measure_importance, prune

    data = load_dataset(folder, 16)
    vit = tiny_vit()
    teacher = predict(vit, data.x_train)
    members = np.isin(data.y_train, [0, 1, 2])
    importance = measure_importance(vit, data.x_train[members], data.y_train[members])
    sub = finetune_submodel(prune(vit, keep_fraction(importance, 0.5)), [0, 1, 2], data.x_train, data.y_train,
                            epochs=1, teacher_logits=teacher)
    fusion = train_fusion([sub], data.x_train, data.y_train, 10, epochs=1)
    assert predict(FusedModel([sub], fusion), data.x_test).shape == (10, 10)


def test_digits_and_npz_are_arrays_normalized_as_before(tmp_path):
    from sklearn.datasets import load_digits

    data = load_dataset("digits", 8)  # at the native size: no resize, so the values are known exactly
    assert isinstance(data.x_train, np.ndarray) and data.x_train.dtype == np.float32
    raw = (load_digits().images / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)  # the split: a quarter of every class, seeded
    test = np.zeros(len(raw), dtype=bool)
    for label in range(10):
        members = rng.permutation(np.flatnonzero(load_digits().target == label))
        test[members[: round(len(members) * 0.25)]] = True
    train = raw[~test]
    assert np.allclose(data.mean, train.mean()) and np.allclose(data.std, train.std())
    assert np.allclose(data.x_train[:, 0], (train - train.mean()) / train.std(), atol=1e-5)
    x = rng.integers(0, 255, (20, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x[:16], y_train=np.arange(16) % 2, x_test=x[16:], y_test=np.arange(4) % 2)
    npz = load_dataset(tmp_path / "d.npz", 12)
    pixels = x[:16].transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert isinstance(npz.x_test, np.ndarray) and npz.x_test.shape == (4, 3, 12, 12)
    assert np.allclose(npz.mean, pixels.mean(axis=(0, 2, 3)), atol=1e-6)


def test_textures_are_seeded_balanced_and_have_no_colour_cue(tmp_path):
    x, y = textures(30, 16, seed=3)
    assert x.shape == (300, 16, 16, 3) and x.dtype == np.uint8 and np.bincount(y).tolist() == [30] * 10
    again, _ = textures(30, 16, seed=3)
    assert np.array_equal(x, again) and not np.array_equal(x, textures(30, 16, seed=4)[0])
    means = np.array([x[y == c].mean() for c in range(10)])  # mean intensity says nothing about the class
    assert means.max() - means.min() < 12, means
    data = load_dataset(save_npz(tmp_path / "t.npz", 3, 2, 16), 16)
    assert data.classes == list(CLASSES) and len(data.y_train) == 30 and len(data.y_test) == 20
    with pytest.raises(InputError, match="at least one image per class"):
        textures(0)
