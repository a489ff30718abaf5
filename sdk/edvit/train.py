"""CPU training loops shared by the full model, the sub-models and the fusion head.

AdamW with a linear warm-up and cosine decay, label smoothing and optional class weights.
Seeded: the same data and seed give the same model. Progress is reported once per epoch.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.factory import create_model
from ..models.registry import get_spec
from .prune import check_supported

Progress = Callable[[str], None]


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float = 1e-3,
        batch_size: int = 32, weight_decay: float = 0.05, class_weights: np.ndarray | None = None,
        label_smoothing: float = 0.1, soft_targets: np.ndarray | None = None, distill_weight: float = 0.5,
        temperature: float = 2.0, seed: int = 0, progress: Progress | None = None,
        label: str = "training") -> nn.Module:
    """Train ``model`` on (x, y) in place and return it in eval mode.

    With ``soft_targets`` (a teacher's probabilities at ``temperature``, one row per
    sample) the loss is knowledge distillation: ``(1 - w) * CE(hard) + w * T^2 *
    CE(teacher, student at T)`` with ``w = distill_weight``.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    soft = None if soft_targets is None else torch.from_numpy(np.asarray(soft_targets, dtype=np.float32))
    weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    steps_per_epoch = math.ceil(len(inputs) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    warmup = min(steps_per_epoch, total // 10 + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / warmup if step < warmup
        else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout and any other randomness inside the model
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(inputs), generator=generator)
            seen, loss_sum, correct = 0, 0.0, 0
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                batch, target = inputs[index], targets[index]
                logits = model(batch)
                loss = F.cross_entropy(logits, target, weight=weights, label_smoothing=label_smoothing)
                if soft is not None:
                    student = F.log_softmax(logits / temperature, dim=1)
                    distill = -(soft[index] * student).sum(1).mean() * temperature ** 2
                    loss = (1 - distill_weight) * loss + distill_weight * distill
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                seen += len(index)
                loss_sum += loss.item() * len(index)
                correct += int((logits.argmax(1) == target).sum())
            if progress:
                progress(f"{label}: epoch {epoch + 1}/{epochs}  loss {loss_sum / seen:.3f}  "
                         f"train accuracy {correct / seen:.3f}")
    return model.eval()


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``model(x)`` in eval mode and inference mode, in batches, as numpy."""
    model.eval()
    with torch.inference_mode():
        outputs = [model(torch.from_numpy(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outputs)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float((logits.argmax(1) == y).mean())



def train_vit(name: str, data, *, patch_size: int, epochs: int, lr: float = 3e-4, batch_size: int = 32,
              seed: int = 0, progress: Progress | None = None) -> nn.Module:
    """A registered ViT built for ``data`` (image size, classes) and trained on it from
    scratch; a PRepBN model's schedule ends exactly with the last training step."""
    config = dict(img_size=data.image_size, patch_size=patch_size)
    if "prepbn_step" in get_spec(name).config:
        config["prepbn_step"] = epochs * math.ceil(len(data.y_train) / batch_size)
    vit = check_supported(create_model(name, num_classes=data.num_classes, **config))
    return fit(vit, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
               progress=progress, label=name)
