"""CPU training loops shared by the full model, the sub-models and the fusion head.

AdamW with a linear warm-up and cosine decay, label smoothing and optional class weights;
on request (the full model's :class:`~edgevit.edvit.recipe.Recipe`) augmentation, mixup or
cutmix, and an exponential moving average of the weights (EMA) that becomes the model.
Seeded: the same data and seed give the same model. The images may be numpy arrays or
:class:`~edgevit.edvit.images.ImageFiles` (read a batch at a time, the next batch in the
background).

Progress: ``progress(message)`` once per epoch (and per evaluation); a ``progress`` that
also has a ``step(label, done, total)`` method is told of every batch as well (the CLI
draws a bar with it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.factory import create_model
from ..models.registry import get_spec
from .images import batches
from .prune import check_supported
from .recipe import PLAIN, RECIPE, Augment, Recipe, WeightAverage, mix_batch

Progress = Callable[[str], None]
__all__ = ["PLAIN", "RECIPE", "Progress", "Recipe", "accuracy", "fit", "predict", "train_vit"]


def _schedule(optimizer: torch.optim.Optimizer, steps_per_epoch: int, total: int,
              warmup_epochs: float | None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero at the last step. ``warmup_epochs`` None:
    one epoch, at most a tenth of the run plus one step."""
    if warmup_epochs is None:
        warmup = min(steps_per_epoch, total // 10 + 1)
    else:
        warmup = min(total, max(1, round(warmup_epochs * steps_per_epoch)))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / warmup if step < warmup
        else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def fit(model: nn.Module, x, y: np.ndarray, *, epochs: int, lr: float = 1e-3,
        batch_size: int = 32, weight_decay: float = 0.05, class_weights: np.ndarray | None = None,
        label_smoothing: float = 0.1, soft_targets: np.ndarray | None = None, distill_weight: float = 0.5,
        temperature: float = 2.0, seed: int = 0, progress: Progress | None = None,
        label: str = "training", augment: Augment | None = None, mixup: float = 0.0, cutmix: float = 0.0,
        ema: float | None = None, warmup_epochs: float | None = None,
        eval_data: tuple | None = None, eval_every: int = 0, history: list | None = None) -> nn.Module:
    """Train ``model`` on (x, y) in place and return it in eval mode.

    With ``soft_targets`` (a teacher's probabilities at ``temperature``, one row per
    sample) the loss is knowledge distillation: ``(1 - w) * CE(hard) + w * T^2 *
    CE(teacher, student at T)`` with ``w = distill_weight``. ``augment``, ``mixup`` /
    ``cutmix`` (Beta parameters; 0 is off) and ``ema`` (a decay; the average replaces the
    weights at the end) are off unless given. With ``eval_data`` (x, y) and ``eval_every``
    N, the model (its average, with ``ema``) is evaluated every N epochs and after the
    last; each result is reported and appended to ``history`` as {"epoch", "accuracy"}.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    targets = torch.from_numpy(np.asarray(y, dtype=np.int64))
    soft = None if soft_targets is None else torch.from_numpy(np.asarray(soft_targets, dtype=np.float32))
    weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    steps_per_epoch = math.ceil(len(targets) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = _schedule(optimizer, steps_per_epoch, total, warmup_epochs)
    generator = torch.Generator().manual_seed(seed)
    augmenter = torch.Generator().manual_seed(seed + 7919)  # augmentation and mixing draws, apart from the order
    rng = np.random.default_rng(seed + 7919)
    average = WeightAverage(model, ema) if ema else None
    step = getattr(progress, "step", None)

    def loss_of(logits: torch.Tensor, index: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, target, weight=weights, label_smoothing=label_smoothing)
        if soft is not None:
            student = F.log_softmax(logits / temperature, dim=1)
            distill = -(soft[index] * student).sum(1).mean() * temperature ** 2
            loss = (1 - distill_weight) * loss + distill_weight * distill
        return loss

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout and any other randomness inside the model
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(targets), generator=generator)
            indices = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
            seen, loss_sum, correct = 0, 0.0, 0
            for done, (index, images) in enumerate(zip(indices, batches(x, [i.numpy() for i in indices])), 1):
                batch, target = torch.from_numpy(np.ascontiguousarray(images)), targets[index]
                if augment is not None:
                    batch = augment(batch, augmenter)
                batch, partner, lam = mix_batch(batch, mixup, cutmix, rng, augmenter)
                logits = model(batch)
                loss = loss_of(logits, index, target)
                if partner is not None:
                    loss = lam * loss + (1 - lam) * loss_of(logits, index[partner], target[partner])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if average is not None:
                    average.update()
                seen += len(index)
                loss_sum += loss.item() * len(index)
                correct += int((logits.argmax(1) == target).sum())
                if step:
                    step(f"{label}: epoch {epoch + 1}/{epochs}", done, len(indices))
            if progress:
                progress(f"{label}: epoch {epoch + 1}/{epochs}  loss {loss_sum / seen:.3f}  "
                         f"train accuracy {correct / seen:.3f}")
            if eval_data is not None and eval_every > 0 and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                _evaluate(model, average, eval_data, epoch + 1, epochs, label, progress, history)
    if average is not None:
        average.copy_to_model()
    return model.eval()


def _evaluate(model: nn.Module, average: WeightAverage | None, data: tuple, epoch: int, epochs: int, label: str,
              progress: Progress | None, history: list | None) -> None:
    with average.applied() if average is not None else contextlib.nullcontext():
        score = accuracy(predict(model, data[0]), np.asarray(data[1]))
    if progress:
        progress(f"{label}: epoch {epoch}/{epochs}  test accuracy {score:.4f}"
                 + ("  (weight average)" if average is not None else ""))
    if history is not None:
        history.append({"epoch": epoch, "accuracy": score})


def predict(model: nn.Module, x, batch_size: int = 256) -> np.ndarray:
    """``model(x)`` in eval mode and inference mode, in batches of at most ``batch_size``
    samples and 32 MB of input, as numpy (``x`` an array or
    :class:`~edgevit.edvit.images.ImageFiles`)."""
    model.eval()
    sample_bytes = 4 * int(np.prod(x.shape[1:]))
    batch_size = max(1, min(batch_size, (32 << 20) // max(1, sample_bytes)))
    spans = [np.arange(i, min(i + batch_size, len(x))) for i in range(0, len(x), batch_size)]
    with torch.inference_mode():
        outputs = [model(torch.from_numpy(np.ascontiguousarray(batch))).numpy() for batch in batches(x, spans)]
    return np.concatenate(outputs)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float((logits.argmax(1) == y).mean())


def train_vit(name: str, data, *, patch_size: int, epochs: int, lr: float = 3e-4, batch_size: int = 32,
              seed: int = 0, progress: Progress | None = None, recipe: Recipe = RECIPE, eval_every: int = 0,
              history: list | None = None) -> nn.Module:
    """A registered ViT built for ``data`` (image size, classes) and trained on it from
    scratch with ``recipe``; with ``eval_every`` N it is evaluated on the test images every
    N epochs (reported, and appended to ``history``). With an EMA in the recipe the model
    returned holds the weight average. A PRepBN model's schedule ends exactly with the last
    training step."""
    config = {"img_size": data.image_size, "patch_size": patch_size}
    if "prepbn_step" in get_spec(name).config:
        config["prepbn_step"] = epochs * math.ceil(len(data.y_train) / batch_size)
    vit = check_supported(create_model(name, num_classes=data.num_classes, **config))
    return fit(vit, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
               progress=progress, label=name, augment=recipe.augment(data.image_size), mixup=recipe.mixup,
               cutmix=recipe.cutmix, ema=recipe.ema, warmup_epochs=recipe.warmup_epochs,
               weight_decay=recipe.weight_decay, label_smoothing=recipe.label_smoothing,
               eval_data=(data.x_test, data.y_test) if eval_every else None, eval_every=eval_every,
               history=history)
