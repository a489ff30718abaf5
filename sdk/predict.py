"""Classify one image (or run one .npy input) with an artifact: top-k with probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


def _read_input(path: Path, runtime) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read array {path}: {exc}") from None
    from .preprocess import load_image

    meta = runtime.metadata
    shape = runtime.inputs[0].shape
    if len(shape) != 4 or shape[2] is None or shape[3] is None:
        raise InputError(f"{runtime.path} does not take an NCHW image of fixed size; pass a .npy input")
    if meta is None:
        return load_image(path, (shape[2], shape[3]))
    return load_image(path, (shape[2], shape[3]), meta.mean, meta.std, meta.crop_pct,
                      normalize=not meta.image_input)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(artifact: str | Path, input_path: str | Path, *, top_k: int = 5, labels: Any = None,
            runtime: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Top-k classes of the first input in the batch, with softmax probabilities."""
    from edgevit.runtimes.loader import load

    from .pipeline import read_labels

    if top_k < 1:
        raise InputError("--top-k must be at least 1")
    rt = load(artifact, runtime=runtime, threads=threads)
    x = _read_input(Path(input_path), rt)
    logits = np.asarray(rt.run(x), dtype=np.float64).reshape(x.shape[0], -1)
    probs = softmax(logits)[0]
    names = read_labels(labels) or (rt.metadata.labels if rt.metadata else None)
    order = np.argsort(-probs)[:top_k]
    return {
        "artifact": str(artifact),
        "backend": rt.describe(),
        "top": [
            {"class": int(i), "label": names[i] if names and i < len(names) else None,
             "probability": float(probs[i]), "logit": float(logits[0, i])}
            for i in order
        ],
    }
