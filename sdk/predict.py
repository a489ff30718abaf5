"""Classify one image (or run one .npy input) with an artifact: top-k with probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


def _read_input(path: Path, runtime, resize: str = "crop") -> np.ndarray:
    """``path`` (an image, or a .npy array) as ``runtime``'s first input: an image is resized
    (``resize``: "crop" or "stretch", see :func:`edgevit.preprocess.load_pixels`) and put in the
    artifact's input form (layout, pixels or normalized) that its metadata records."""
    from .input_form import InputForm
    from .preprocess import load_pixels, read_npy

    spec = runtime.inputs[0]
    if path.suffix.lower() == ".npy":
        return read_npy(path, [spec.shape], spec.dtype, repr(spec.name))
    meta = runtime.metadata
    form = InputForm.of(meta, image_input=spec.image)
    size = form.image_size(spec.shape)
    return form.from_pixels(load_pixels(path, size, meta.crop_pct if meta else 0.875, resize))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(artifact: str | Path, input_path: str | Path, *, top_k: int = 5, labels: Any = None,
            runtime: str = "auto", threads: int | None = None, integrity_check: bool = True,
            resize: str = "crop") -> dict[str, Any]:
    """Top-k classes of the first input in the batch.

    Each class has its ``score`` (the artifact's own output: a logit, or a probability when
    the model ends in a softmax; what an app reading the output, e.g. MediaPipe, sees) and
    its ``probability`` (the softmax of the logits, or the score itself).
    """
    from edgevit.runtimes.loader import load

    from .pipeline import read_labels

    if top_k < 1:
        raise InputError("--top-k must be at least 1")
    rt = load(artifact, runtime=runtime, threads=threads, integrity_check=integrity_check)
    x = _read_input(Path(input_path), rt, resize)
    scores = np.asarray(rt.run(x), dtype=np.float64).reshape(x.shape[0], -1)[0]
    meta = rt.metadata
    probs = scores if meta is not None and meta.output_kind == "probabilities" else softmax(scores)
    names = read_labels(labels) or (meta.labels if meta else None)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return {
        "artifact": str(artifact),
        "backend": rt.describe(),
        "resize": resize,
        "top": [
            {"class": int(i), "label": names[i] if names and i < len(names) else None,
             "score": float(scores[i]), "probability": float(probs[i])}
            for i in order
        ],
    }
