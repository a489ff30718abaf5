"""Classify one image (or run one .npy input) with an artifact: top-k with probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgevit.runtimes.loader import load

from ..artifact.labels import read_labels
from ..artifact.preprocess import read_npy
from ..errors import InputError


def _read_input(path: Path, runtime, resize: str = "crop") -> np.ndarray:
    """``path`` (an image, or a .npy array) as ``runtime``'s first input (an image framed by
    :meth:`~edgevit.runtimes.base.Runtime.prepare`)."""
    spec = runtime.inputs[0]
    if path.suffix.lower() == ".npy":
        return read_npy(path, [spec.shape], spec.dtype, repr(spec.name))
    return runtime.prepare(path, resize)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(artifact: str | Path, input_path: str | Path, *, top_k: int = 5, labels: Any = None,
            runtime: str = "auto", threads: int | None = None, integrity_check: bool = True,
            resize: str = "crop", providers: Any = None) -> dict[str, Any]:
    """Top-k classes of the first input in the batch.

    Each class has its ``score`` (the artifact's own output: a logit, or a probability when
    the model ends in a softmax; what an app reading the output, e.g. MediaPipe, sees) and
    its ``probability`` (the softmax of the logits, or the score itself).
    """
    if top_k < 1:
        raise InputError("--top-k must be at least 1")
    rt = load(artifact, runtime=runtime, threads=threads, integrity_check=integrity_check, providers=providers)
    x = _read_input(Path(input_path), rt, resize)
    scores = np.asarray(rt.run(x), dtype=np.float64).reshape(x.shape[0], -1)[0]
    return {
        "artifact": str(artifact),
        "backend": rt.describe(),
        "resize": resize,
        "top": top_classes(scores, top_k, read_labels(labels) or (rt.metadata.labels if rt.metadata else None),
                           rt.metadata.output_kind if rt.metadata else "logits"),
    }


def top_classes(scores: np.ndarray, top_k: int = 5, labels: Any = None, output_kind: str = "logits"
                ) -> list[dict[str, Any]]:
    """The ``top_k`` classes of one row of scores, best first: index, label (from ``labels``),
    score and probability (softmax of logits; the score itself for ``output_kind`` "probabilities")."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    probs = scores if output_kind == "probabilities" else softmax(scores)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [{"class": int(i), "label": labels[i] if labels and i < len(labels) else None,
             "score": float(scores[i]), "probability": float(probs[i])} for i in order]
