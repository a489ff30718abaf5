"""What a training run adds to plain AdamW: augmentation, mixing, an average of weights.

- :class:`Augment`: random translation (the batch padded by its edge pixels and cropped
  back at a random offset, per sample) and, where the classes allow it, random flips.
- :func:`mix_batch`: mixup (a convex blend of two samples) or cutmix (a box of one pasted
  into the other); the loss is the same blend of the two samples' losses.
- :class:`WeightAverage`: an exponential moving average of the trainable weights (EMA),
  with the usual short-run correction ``decay_t = min(decay, (1 + t) / (10 + t))``.
- :class:`Recipe`: the settings :func:`~edgevit.edvit.train.train_vit` trains a ViT with;
  :data:`RECIPE` is the default (chosen by ``benchmarks/edvit_train.py``: EMA and five
  warm-up epochs; translation and flips only where asked, since they depend on the data:
  on digits, whose strokes touch the frame, translation costs 8 points in 20 epochs, while
  on the generated textures translation and flips gain 12 points in 30), :data:`PLAIN` the
  recipe before it (no augmentation, no EMA, one epoch of warm-up).

Every random draw comes from a generator the caller seeds: runs are reproducible.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Augment:
    """Random translation by up to ``shift`` pixels each way and, with ``flip``, random
    horizontal and vertical flips (only for classes that a mirror image does not change:
    not digits or text)."""

    shift: int = 0
    flip: bool = False

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = batch.shape
        if self.shift > 0:
            s = self.shift
            padded = F.pad(batch, (s, s, s, s), mode="replicate")
            offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=generator).tolist()
            batch = torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets)])
        if self.flip:
            flips = torch.rand(n, 2, generator=generator) < 0.5
            batch = torch.where(flips[:, 0, None, None, None], batch.flip(-1), batch)
            batch = torch.where(flips[:, 1, None, None, None], batch.flip(-2), batch)
        return batch


def mix_batch(batch: torch.Tensor, mixup: float, cutmix: float, rng: np.random.Generator,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """(mixed batch, partner index or None, weight of the original samples): mixup with
    Beta(``mixup``) or cutmix with Beta(``cutmix``), one of the two at random when both
    are on; (batch, None, 1.0) when both are off."""
    kinds = [k for k, alpha in (("mixup", mixup), ("cutmix", cutmix)) if alpha > 0]
    if not kinds:
        return batch, None, 1.0
    kind = kinds[int(rng.integers(len(kinds)))]
    partner = torch.randperm(len(batch), generator=generator)
    lam = float(rng.beta(mixup, mixup) if kind == "mixup" else rng.beta(cutmix, cutmix))
    if kind == "mixup":
        return lam * batch + (1 - lam) * batch[partner], partner, lam
    height, width = batch.shape[-2:]
    cut_h, cut_w = round(height * float(np.sqrt(1 - lam))), round(width * float(np.sqrt(1 - lam)))
    top, left = int(rng.integers(0, height - cut_h + 1)), int(rng.integers(0, width - cut_w + 1))
    mixed = batch.clone()
    mixed[..., top:top + cut_h, left:left + cut_w] = batch[partner][..., top:top + cut_h, left:left + cut_w]
    return mixed, partner, 1 - cut_h * cut_w / (height * width)


class WeightAverage:
    """An exponential moving average of a model's trainable weights (buffers stay live)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the EMA decay must lie between 0 and 1, got {decay}")
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block, its own after it."""
        with torch.no_grad():
            live = [p.detach().clone() for p in self.params]
            for param, shadow in zip(self.params, self.shadow):
                param.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, own in zip(self.params, live):
                    param.copy_(own)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Replace the model's weights by the average, for good."""
        for param, shadow in zip(self.params, self.shadow):
            param.copy_(shadow)


@dataclass(frozen=True)
class Recipe:
    """How :func:`~edgevit.edvit.train.train_vit` trains a ViT from scratch.

    ``shift``: random translation by up to this fraction of the image side (0: none);
    ``flip``: random flips (only for data whose classes a mirror image does not change).
    ``warmup_epochs`` None is the old rule: one epoch (at most a tenth of the run, plus a
    step). ``ema``: the decay of the weight average that becomes the model (None: the
    last weights are the model).
    """

    shift: float = 0.0
    flip: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0
    ema: float | None = 0.998
    warmup_epochs: float | None = 5.0
    weight_decay: float = 0.05
    label_smoothing: float = 0.1

    def augment(self, image_size: int) -> Augment | None:
        """The augmentation for images of ``image_size`` pixels (None: none)."""
        shift = round(self.shift * image_size)
        return Augment(shift, self.flip) if shift or self.flip else None


RECIPE = Recipe()
PLAIN = Recipe(ema=None, warmup_epochs=None)
AUGMENTED = Recipe(shift=0.125, flip=True)  # the default with translation and flips: for textures, photos
