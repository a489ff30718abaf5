"""ED-ViT step 1: partition the classes into K groups, one per sub-model.

Groups are balanced (sizes differ by at most one). ``"balanced"`` takes the classes in
order. ``"confusion"`` and ``"embedding"`` put classes that the trained model finds alike
into the same group, so that each sub-model specialises in telling them apart; the
affinity is the model's soft confusion (mean predicted probability of class j on samples
of class i, symmetrised) or the cosine similarity of the classifier's class rows.
Grouping is greedy: each group starts from the free class with the largest total
affinity to the other free classes and adds the free class closest to the group.
"""

from __future__ import annotations

import numpy as np

from ..apps.predict import softmax
from ..errors import InputError

METHODS = ("balanced", "confusion", "embedding")


def group_sizes(num_classes: int, k: int) -> list[int]:
    """K sizes that differ by at most one and add up to ``num_classes``."""
    if not 1 <= k <= num_classes:
        raise InputError(f"the number of sub-models must be between 1 and the number of classes "
                         f"({num_classes}), got {k}")
    return [num_classes // k + (1 if i < num_classes % k else 0) for i in range(k)]


def confusion_affinity(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Symmetric soft confusion between classes, from a model's logits on labelled samples."""
    probs = softmax(logits)
    matrix = np.zeros((num_classes, num_classes))
    for c in range(num_classes):
        members = labels == c
        if members.any():
            matrix[c] = probs[members].mean(axis=0)
    return matrix + matrix.T


def embedding_affinity(head_weight: np.ndarray) -> np.ndarray:
    """Cosine similarity of the classifier's class rows (num_classes, dim)."""
    rows = head_weight / np.maximum(np.linalg.norm(head_weight, axis=1, keepdims=True), 1e-12)
    return rows @ rows.T


def partition_classes(num_classes: int, k: int, method: str = "balanced",
                      affinity: np.ndarray | None = None) -> list[list[int]]:
    """K balanced groups of class indices (each sorted)."""
    if method not in METHODS:
        raise InputError(f"unknown partition {method!r}: choose {', '.join(METHODS)}")
    sizes = group_sizes(num_classes, k)
    if method == "balanced":
        bounds = np.cumsum([0, *sizes])
        return [list(range(int(bounds[i]), int(bounds[i + 1]))) for i in range(k)]
    if affinity is None or affinity.shape != (num_classes, num_classes):
        raise InputError(f"the {method} partition needs a {num_classes}x{num_classes} affinity matrix")
    similar = np.array(affinity, dtype=np.float64)
    np.fill_diagonal(similar, 0.0)
    free = set(range(num_classes))
    groups = []
    for size in sizes:
        pool = sorted(free)
        seed = max(pool, key=lambda c: (similar[c, pool].sum(), -c))
        group = [seed]
        free.discard(seed)
        while len(group) < size:
            best = max(sorted(free), key=lambda c: (similar[c, group].sum(), -c))
            group.append(best)
            free.discard(best)
        groups.append(sorted(group))
    return groups
