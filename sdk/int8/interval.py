"""How sure the guard is of a drop: a 95% interval from the paired samples.

Every held-out sample is scored twice, by the model as trained and by the int8 artifact, so
the two accuracies are paired and their difference depends only on the discordant samples
(right in one, wrong in the other). The interval for a drop in accuracy is Newcombe's hybrid
score interval for a difference of paired proportions (his method 10: Wilson intervals of
the two accuracies, combined with their correlation; Newcombe, Statistics in Medicine 17,
1998, 2635-2650), which keeps its coverage near 95% when the samples are few and the
discordant pairs rare or none, unlike a normal (Wald) or bootstrap interval, which collapses
to a point when int8 changes no answer. A drop in agreement (no labels) is one proportion:
its Wilson interval.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95%


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_drop_interval(reference_right: np.ndarray, int8_right: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """95% interval, in points, of accuracy(reference) - accuracy(int8) on the same samples."""
    first = np.asarray(reference_right, dtype=bool)
    second = np.asarray(int8_right, dtype=bool)
    n = len(first)
    if n == 0:
        return -100.0, 100.0
    both = int(np.sum(first & second))
    only_first = int(np.sum(first & ~second))
    only_second = int(np.sum(~first & second))
    neither = n - both - only_first - only_second
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = wilson(both + only_first, n, z)
    l2, u2 = wilson(both + only_second, n, z)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    phi = (both * neither - only_first * only_second) / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    drop = p1 - p2
    return 100 * max(-1.0, drop - below), 100 * min(1.0, drop + above)


def disagreement_interval(agree: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """95% interval, in points, of the share of samples whose top-1 int8 changed."""
    agree = np.asarray(agree, dtype=bool)
    low, high = wilson(int(np.sum(~agree)), len(agree), z)
    return 100 * low, 100 * high
