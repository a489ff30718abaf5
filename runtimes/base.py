"""The one interface every runtime implements, and the input checks they share."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifact.input_form import InputForm
from edgevit.artifact.integrity import Integrity, content_digest
from edgevit.artifact.metadata import ArtifactMetadata
from edgevit.artifact.preprocess import frame_array, load_pixels, shape_fits, shape_text
from edgevit.errors import ArtifactError, EdgeVitError, InputError, UnsupportedOperationError, first_line


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (None for a dynamic axis) and numpy dtype name of a model input/output;
    ``image``: a Core ML image input, fed here as float32 RGB pixels 0-255 (N, 3, H, W)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    image: bool = False

    def nbytes(self) -> int:
        """Bytes of one such tensor with every dynamic axis at 1 (4 per element if the dtype is unknown)."""
        known = self.dtype.isidentifier() and hasattr(np, self.dtype)  # "float32", not "stringType" or "?"
        itemsize = np.dtype(self.dtype).itemsize if known else 4
        return math.prod(1 if d is None else d for d in self.shape) * itemsize

    def describe(self) -> str:
        return f"{self.name} {shape_text(self.shape)} {self.dtype}" + (" (RGB image, 0-255)" if self.image else "")


class Runtime(ABC):
    """A loaded artifact: ``run(x)`` maps one input array to one output array."""

    backend: str = ""  # "onnxruntime", "litert", "coreml", "torch"

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self.metadata: ArtifactMetadata | None = None
        self.integrity: Integrity | None = None  # recorded vs actual content digest (edgevit.artifact.integrity)
        self.cannot_run_reason = ""  # why, when can_run is False
        # what app runtimes read beyond edgevit's entry (TFLite Model Metadata, Core ML classes)
        self.app_metadata: dict[str, Any] = {}

    def _read_metadata(self, text: str | bytes) -> None:
        """Parse the artifact's edgevit metadata (checked: ``ArtifactError`` if invalid)."""
        self.metadata = ArtifactMetadata.from_json(text, source=str(self.path))

    def _note_integrity(self, content: list[bytes]) -> None:
        """Digest ``content`` (the bytes the loader read) against the recorded digest."""
        recorded = self.metadata.recorded_digest if self.metadata else None
        self.integrity = Integrity(recorded, content_digest(content, recorded))

    @property
    def can_run(self) -> bool:
        """False where the artifact can be inspected but not executed (``cannot_run_reason`` says why)."""
        return True

    def describe(self) -> str:
        """Backend and version, as shown to users."""
        return self.backend

    def run(self, x: Any) -> np.ndarray:
        """Run the model on one input array (validated first) and return its first output;
        a runtime that fails on a valid input is an ArtifactError naming the artifact."""
        if not self.can_run:
            raise UnsupportedOperationError(f"{self.path} cannot be run here: "
                                            f"{self.cannot_run_reason or 'no runtime for it'}")
        x = self.check_input(x)
        try:
            return self._run(x)
        except EdgeVitError:
            raise
        except Exception as exc:
            raise ArtifactError(f"{self.path}: {self.describe()} failed to run it: {first_line(exc)}") from None

    def check_input(self, x: Any) -> np.ndarray:
        """Reject inputs of the wrong type, dtype, shape or with NaN/inf values."""
        if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor
            x = x.detach().cpu().numpy()
        if not isinstance(x, np.ndarray):
            raise InputError(f"input must be a numpy array, got {type(x).__name__}")
        spec = self.inputs[0]
        if x.dtype != np.dtype(spec.dtype):
            raise InputError(
                f"input dtype {x.dtype} does not match {spec.name!r} ({spec.dtype}); "
                f"convert with x.astype(np.{spec.dtype})"
            )
        if not shape_fits(spec.shape, x.shape):
            raise InputError(f"input shape {shape_text(x.shape)} does not match {spec.name!r} "
                             f"({shape_text(spec.shape)})")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise InputError(f"input holds NaN or infinite values ({spec.name!r})")
        return np.ascontiguousarray(x)

    def prepare(self, image: Any, resize: str = "crop") -> np.ndarray:
        """An RGB image (a file path, a PIL image or an H x W x 3 uint8 array, e.g. a camera
        frame) as this artifact's first input, framed as ``edgevit predict`` frames a photo
        (``resize``: see :func:`edgevit.artifact.preprocess.load_pixels`) in the input form its metadata
        records."""
        form = InputForm.of(self.metadata, image_input=self.inputs[0].image)
        size = form.image_size(self.inputs[0].shape)
        crop_pct = self.metadata.crop_pct if self.metadata else 0.875
        if isinstance(image, (str, Path)):
            return form.from_pixels(load_pixels(image, size, crop_pct, resize))
        return form.from_pixels(frame_array(image, size, crop_pct, resize))

    @abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Backend-specific execution on a validated input."""

    def op_census(self) -> dict[str, int]:
        """Operator type -> count in the artifact's graph."""
        raise NotImplementedError(f"{self.backend} cannot list the operators of its artifacts")
