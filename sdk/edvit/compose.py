"""ED-ViT steps 2b and 4: class-wise sub-models, and the fusion head that joins them.

A sub-model is the trained ViT pruned on its group's samples, given a head over its
group's classes plus one "other" class (initialised from the trained head's rows: the
group's rows, and the mean of the remaining rows for "other"), then fine-tuned on all
training samples with labels mapped to (group class | other) and class weights that
give the group and "other" equal total weight (PRepBN norms train their deployed RepBN
branch only). Deployed, a sub-model outputs its pooled
features (its head is dropped); the fusion head, a linear layer over the concatenated
features of all sub-models (dropout while training), gives the final prediction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..apps.predict import softmax
from ..models.deit import VisionTransformer
from ..models.slab_layers import finish_schedules
from .train import Progress, fit, predict


def group_labels(y: np.ndarray, group: Sequence[int]) -> np.ndarray:
    """Labels 0..g-1 for the group's classes (in group order), g ("other") for the rest."""
    local = np.full(int(max(y.max(), max(group))) + 1, len(group), dtype=np.int64)
    local[list(group)] = np.arange(len(group))
    return local[y]


def group_head(head: nn.Linear, group: Sequence[int]) -> nn.Linear:
    """A (group + other) head initialised from the trained head's class rows."""
    others = [c for c in range(head.out_features) if c not in set(group)]
    new = nn.Linear(head.in_features, len(group) + 1)
    with torch.no_grad():
        weight, bias = head.weight.detach(), head.bias.detach()
        rows = [weight[list(group)]] + ([weight[others].mean(0, keepdim=True)] if others else [torch.zeros(1, head.in_features)])
        new.weight.copy_(torch.cat(rows))
        new.bias.copy_(torch.cat([bias[list(group)], bias[others].mean().reshape(1) if others else torch.zeros(1)]))
    return new


def balanced_weights(labels: np.ndarray, groups: int) -> np.ndarray:
    """Class weights that give the group's classes and "other" equal total weight."""
    counts = np.bincount(labels, minlength=groups + 1).astype(np.float64)
    group_total, other_total = counts[:groups].sum(), counts[groups]
    weights = np.ones(groups + 1)
    if other_total > 0:
        weights[groups] = group_total / other_total
    return (weights * len(labels) / (weights * counts).sum()).astype(np.float32)


def group_distribution(teacher_logits: np.ndarray, group: Sequence[int], temperature: float) -> np.ndarray:
    """The teacher's softened class probabilities folded onto (group classes, other)."""
    probs = softmax(teacher_logits / temperature)
    inside = probs[:, list(group)]
    return np.concatenate([inside, 1.0 - inside.sum(axis=1, keepdims=True)], axis=1)


def finetune_submodel(pruned: VisionTransformer, group: Sequence[int], x: np.ndarray, y: np.ndarray, *,
                      epochs: int, teacher_logits: np.ndarray | None = None, temperature: float = 2.0,
                      lr: float = 5e-4, seed: int = 0, progress: Progress | None = None,
                      label: str = "sub-model") -> VisionTransformer:
    """Fine-tune ``pruned`` on (group classes + other), distilling from the full model's
    ``teacher_logits`` when given; returns it as a feature extractor."""
    finish_schedules(pruned)  # PRepBN: fine-tune the RepBN branch that is deployed
    pruned.head = group_head(pruned.head, group)
    local = group_labels(y, group)
    soft = None if teacher_logits is None else group_distribution(teacher_logits, group, temperature)
    fit(pruned, x, local, epochs=epochs, lr=lr, class_weights=balanced_weights(local, len(group)),
        soft_targets=soft, temperature=temperature, seed=seed, progress=progress, label=label)
    return as_feature_extractor(pruned)


def as_feature_extractor(vit: VisionTransformer) -> VisionTransformer:
    """Drop the classifier: the model then outputs its pooled, normalized features."""
    vit.head = nn.Identity()
    return vit.eval()


def feature_dim(vit: VisionTransformer) -> int:
    """Width of a ViT's pooled features."""
    return int(vit.pos_embed.shape[-1])


class FusionHead(nn.Module):
    """Linear classifier over the concatenated sub-model features (dropout in training)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.input_size = (in_features,)  # what it is exported at: one feature vector
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


class FusedModel(nn.Module):
    """All sub-models and the fusion head in one module: the split model's reference."""

    def __init__(self, submodels: Sequence[nn.Module], fusion: FusionHead) -> None:
        super().__init__()
        self.submodels = nn.ModuleList(submodels)
        self.fusion = fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(torch.cat([sub(x) for sub in self.submodels], dim=1))


def train_fusion(submodels: Sequence[nn.Module], x: np.ndarray, y: np.ndarray, num_classes: int, *,
                 epochs: int, seed: int = 0, progress: Progress | None = None) -> FusionHead:
    """Train the fusion head on the sub-models' (frozen) features of all training samples."""
    features = np.concatenate([predict(sub, x) for sub in submodels], axis=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = FusionHead(features.shape[1], num_classes)
    return fit(head, features, y, epochs=epochs, lr=3e-3, weight_decay=1e-3,
               label_smoothing=0.0, seed=seed, progress=progress, label="fusion head")


def finetune_fused(fused: FusedModel, x, y: np.ndarray, *, epochs: int, teacher_logits: np.ndarray | None = None,
                   temperature: float = 2.0, lr: float = 1e-3, seed: int = 0, progress: Progress | None = None,
                   label: str = "joint fine-tuning") -> FusedModel:
    """Fine-tune every sub-model and the fusion head together, end to end, on all classes,
    distilling from the full model's ``teacher_logits`` when given: the sub-models learn the
    features the fusion needs instead of each its own (group | other) question."""
    soft = None if teacher_logits is None else softmax(np.asarray(teacher_logits) / temperature)
    fit(fused, x, y, epochs=epochs, lr=lr, soft_targets=soft, temperature=temperature, seed=seed,
        progress=progress, label=label)
    for sub in fused.submodels:
        sub.eval()
    return fused.eval()
