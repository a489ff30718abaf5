"""Classify one image (or run one .npy input) with an artifact: top-k with probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


def _read_input(path: Path, runtime) -> np.ndarray:
    from .preprocess import load_image, read_npy

    if path.suffix.lower() == ".npy":
        spec = runtime.inputs[0]
        return read_npy(path, [spec.shape], spec.dtype, repr(spec.name))

    meta = runtime.metadata
    shape = runtime.inputs[0].shape
    if len(shape) != 4 or shape[2] is None or shape[3] is None:
        raise InputError(f"{runtime.path} does not take an NCHW image of fixed size; pass a .npy input")
    pixels = runtime.inputs[0].image or bool(meta and meta.image_input)  # normalization baked into the model
    recorded = dict(mean=meta.mean, std=meta.std, crop_pct=meta.crop_pct) if meta else {}
    return load_image(path, (shape[2], shape[3]), normalize=not pixels, **recorded)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(artifact: str | Path, input_path: str | Path, *, top_k: int = 5, labels: Any = None,
            runtime: str = "auto", threads: int | None = None, integrity_check: bool = True) -> dict[str, Any]:
    """Top-k classes of the first input in the batch, with softmax probabilities."""
    from edgevit.runtimes.loader import load

    from .pipeline import read_labels

    if top_k < 1:
        raise InputError("--top-k must be at least 1")
    rt = load(artifact, runtime=runtime, threads=threads, integrity_check=integrity_check)
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
