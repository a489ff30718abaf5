"""ED-ViT training: the recipe's parts (augmentation, mixing, the weight average), fit's
evaluation and progress, and ``edgevit train`` with --eval-every."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from edgevit.edvit.checkpoint import load_checkpoint
from edgevit.edvit.recipe import (
    AUGMENTED,
    PLAIN,
    RECIPE,
    Augment,
    WeightAverage,
    mix_batch,
)
from edgevit.edvit.train import accuracy, fit, predict

from .conftest import assert_clean_failure, run_cli, tiny_vit


def samples(n: int = 40, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, size, size)).astype(np.float32), (np.arange(n) % 10).astype(np.int64)


def test_shift_moves_whole_images_and_flip_mirrors_them():
    batch = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    shifted = Augment(shift=2)(batch, generator)
    assert shifted.shape == batch.shape and not torch.equal(shifted, batch)
    for i in range(2):  # each sample is its own image moved by one offset (edges repeated)
        padded = torch.nn.functional.pad(batch[i:i + 1], (2, 2, 2, 2), mode="replicate")[0]
        assert any(torch.equal(shifted[i], padded[:, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    flipped = Augment(flip=True)(batch, torch.Generator().manual_seed(1))
    options = [batch[0], batch[0].flip(-1), batch[0].flip(-2), batch[0].flip(-1).flip(-2)]
    assert any(torch.equal(flipped[0], o) for o in options)
    assert torch.equal(Augment()(batch, generator), batch)


def test_mixup_and_cutmix_blend_two_samples():
    batch = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)])
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    assert mix_batch(batch, 0.0, 0.0, rng, generator)[1] is None
    mixed, partner, lam = mix_batch(batch, 0.4, 0.0, rng, generator)
    assert torch.allclose(mixed, lam * batch + (1 - lam) * batch[partner])
    cut, partner, lam = mix_batch(batch, 0.0, 1.0, rng, generator)
    pasted = (cut != batch).float().mean().item()  # the pasted box is the partner's share
    if partner[0] != 0:
        assert pasted == pytest.approx(1 - lam)


def test_the_weight_average_follows_the_weights_and_can_be_applied():
    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update()  # the first update is corrected towards the live weights: decay 1/10
    expected = 0.1 * start + 0.9 * (start + 1)
    with average.applied():
        assert torch.allclose(model.weight, expected)
    assert torch.allclose(model.weight, start + 1)
    average.copy_to_model()
    assert torch.allclose(model.weight, expected)


def test_fit_without_extras_is_the_plain_loop_and_is_seeded():
    x, y = samples()
    first = fit(tiny_vit(), x, y, epochs=1, lr=1e-3, seed=3)
    again = fit(tiny_vit(), x, y, epochs=1, lr=1e-3, seed=3, augment=None, mixup=0.0, cutmix=0.0, ema=None)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert PLAIN.augment(32) is None and PLAIN.ema is None and PLAIN.warmup_epochs is None
    assert RECIPE.augment(32) is None and RECIPE.ema and RECIPE.warmup_epochs == 5
    assert AUGMENTED.augment(32) == Augment(shift=4, flip=True) and AUGMENTED.augment(224).shift == 28


class Recorder:
    def __init__(self):
        self.lines, self.steps = [], []

    def __call__(self, message):
        self.lines.append(message)

    def step(self, label, done, total):
        self.steps.append((label, done, total))


def test_fit_evaluates_every_n_epochs_and_reports_every_batch():
    x, y = samples()
    torch.manual_seed(0)
    vit = tiny_vit()
    history, progress = [], Recorder()
    fit(vit, x, y, epochs=3, lr=1e-3, batch_size=16, ema=0.9, augment=Augment(shift=2, flip=True), mixup=0.2,
        eval_data=(x[:10], y[:10]), eval_every=2, history=history, progress=progress, label="t")
    assert [h["epoch"] for h in history] == [2, 3]  # every second epoch, and the last
    assert history[-1]["accuracy"] == accuracy(predict(vit, x[:10]), y[:10])  # the model kept is the average
    assert any("test accuracy" in line and "weight average" in line for line in progress.lines)
    steps_per_epoch = math.ceil(40 / 16)
    assert len(progress.steps) == 3 * steps_per_epoch
    assert progress.steps[-1] == ("t: epoch 3/3", steps_per_epoch, steps_per_epoch)


def test_progress_bar_text():
    from edgevit.cli.app import progress_bar

    assert progress_bar(0, 10, 10) == "[..........]" and progress_bar(5, 10, 10) == "[#####.....]"
    assert progress_bar(12, 10, 4) == "[####]" and progress_bar(1, 0, 4) == "[....]"


def test_cli_train_evaluates_and_keeps_json_clean(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8), y=np.arange(40) % 4)
    common = ("train", "--model", "deit_tiny", "--data", "d.npz", "--image-size", "16", "--patch-size", "8",
              "--epochs", "2", "--batch-size", "16")
    result = run_cli("--json", *common, "--eval-every", "1", "--shift", "0.125", "--flip", "--output", "a.pt",
                     cwd=tmp_path)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)  # stdout holds the JSON only; progress went to stderr
    assert [e["epoch"] for e in report["evaluations"]] == [1, 2] and report["weights"] == "ema"
    assert report["test_accuracy"] == report["evaluations"][-1]["test_accuracy"]
    assert "epoch 1/2  test accuracy" in result.stderr
    _, record = load_checkpoint(tmp_path / "a.pt")
    assert record["classes"] == ["0", "1", "2", "3"]
    assert_clean_failure(run_cli(*common, "--recipe", "fancy", "--output", "c.pt", cwd=tmp_path),
                         contains="unknown recipe 'fancy'")
