"""The metadata every edgevit artifact carries, and its one on-disk encoding.

Each format stores the same JSON document under the key ``edgevit``: ONNX
``metadata_props``, Core ML ``user_defined_metadata``, TFLite's metadata table. Read back,
it is untrusted input: :meth:`ArtifactMetadata.from_json` checks every field's type and
refuses anything else with one :class:`ArtifactError` line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._version import __version__
from ..errors import ArtifactError

METADATA_KEY = "edgevit"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass
class ArtifactMetadata:
    """What a deployed artifact says about itself."""

    model: str
    target: str
    precision: str = "fp32"
    input_name: str = "input"
    input_shape: list[int | None] = field(default_factory=lambda: [1, 3, 224, 224])
    layout: str = "NCHW"
    image_input: bool = False  # True: 0-255 RGB image in, mean/std baked into the model
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    crop_pct: float = 0.875
    output_name: str = "logits"
    output_kind: str = "logits"  # or "probabilities": the model ends in a softmax (--with-softmax)
    labels: list[str] | None = None
    parity: dict[str, Any] | None = None
    reparam: dict[str, Any] | None = None  # fold summary when the model was re-parameterized
    form: dict[str, Any] | None = None  # the target form the model was rewritten into (edgevit.reparam.forms)
    integrity: dict[str, str] | None = None  # {"sha256": digest of the content (edgevit.artifact.integrity)}
    quantization: dict[str, Any] | None = None  # int8: the accuracy guard's summary (edgevit.int8.guard)
    fp16_range: dict[str, Any] | None = None  # fp16 programs: the range analysis (edgevit.pipeline.fp16_range)
    edgevit_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "artifact") -> "ArtifactMetadata":
        """Parse and check the stored document (``ArtifactError`` naming ``source`` if invalid)."""
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ArtifactError(f"{source}: its edgevit metadata is not valid JSON ({type(exc).__name__})") from None
        problem = _problem(data)
        if problem:
            raise ArtifactError(f"{source}: its edgevit metadata is invalid: {problem}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def recorded_digest(self) -> str | None:
        """The content digest recorded at export, if any."""
        return (self.integrity or {}).get("sha256")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _fits(value: Any, keys: dict[str, Any]) -> bool:
    """``value`` is an object whose ``keys`` pass their checks (other keys may be anything)."""
    return isinstance(value, dict) and all(key in value and check(value[key]) for key, check in keys.items())


# the parts of the parity and fold summaries that edgevit reads back (info prints them)
_PARITY: dict[str, Any] = {
    "status": lambda v: v in ("passed", "failed"), "numerically_verified": lambda v: isinstance(v, bool),
    "backend": lambda v: isinstance(v, str), "max_abs_err": lambda v: v is None or _is_number(v),
    "top1_agreement": lambda v: v is None or _is_number(v),
}
_REPARAM: dict[str, Any] = {"folded": _is_count, "kept": _is_count}
_FP16_RANGE: dict[str, Any] = {"max_abs": _is_number, "headroom": _is_number, "limit": _is_number}
_FORM: dict[str, Any] = {"form": lambda v: isinstance(v, str) and len(v) <= 32, "changed": _is_count}
_QUANTIZATION: dict[str, Any] = {
    "mode": lambda v: isinstance(v, str) and len(v) <= 32, "status": lambda v: v in ("passed", "failed"),
    "max_drop": _is_number, "top1_agreement": lambda v: v is None or _is_number(v),
    "accuracy": lambda v: v is None or _is_number(v), "fp32_accuracy": lambda v: v is None or _is_number(v),
    "drop": lambda v: v is None or _is_number(v),
    "calibration": lambda v: _fits(v, {"name": lambda n: isinstance(n, str), "count": _is_count}),
    "kept_float": lambda v: isinstance(v, list) and all(_fits(k, {"layer": lambda n: isinstance(n, str)}) for k in v),
    "size_bytes": _is_count, "fp32_size_bytes": _is_count,
}

# field -> (check, what it must be)
_CHECKS: dict[str, tuple[Any, str]] = {
    "model": (lambda v: isinstance(v, str) and 0 < len(v) <= 200, "a model name"),
    "target": (lambda v: v in ("onnx", "coreml", "tflite"), "onnx, coreml or tflite"),
    "precision": (lambda v: isinstance(v, str) and len(v) <= 16, "a precision name"),
    "input_name": (lambda v: isinstance(v, str), "a string"),
    "input_shape": (lambda v: isinstance(v, list) and 0 < len(v) <= 8
                    and all(d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 < d < 1 << 20)
                            for d in v), "a list of up to 8 positive sizes"),
    "layout": (lambda v: v in ("NCHW", "NHWC"), "NCHW or NHWC"),
    "image_input": (lambda v: isinstance(v, bool), "true or false"),
    "mean": (lambda v: isinstance(v, list) and 0 < len(v) <= 16 and all(_is_number(x) for x in v), "a list of numbers"),
    "std": (lambda v: isinstance(v, list) and 0 < len(v) <= 16 and all(_is_number(x) and x > 0 for x in v),
            "a list of positive numbers"),
    "crop_pct": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "output_name": (lambda v: isinstance(v, str), "a string"),
    "output_kind": (lambda v: v in ("logits", "probabilities"), "logits or probabilities"),
    "labels": (lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
               "a list of strings"),
    "parity": (lambda v: v is None or _fits(v, _PARITY), "null or an object with " + ", ".join(_PARITY)),
    "reparam": (lambda v: v is None or _fits(v, _REPARAM), "null or an object with " + ", ".join(_REPARAM)),
    "form": (lambda v: v is None or _fits(v, _FORM), "null or an object with " + ", ".join(_FORM)),
    "quantization": (lambda v: v is None or _fits(v, _QUANTIZATION), "null or an object with " + ", ".join(_QUANTIZATION)),
    "fp16_range": (lambda v: v is None or _fits(v, _FP16_RANGE),
                   "null or an object with " + ", ".join(_FP16_RANGE)),
    "integrity": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("sha256"), str)
                                          and _HEX64.fullmatch(v["sha256"]) is not None),
                  'an object {"sha256": 64 hex digits}'),
    "edgevit_version": (lambda v: isinstance(v, str), "a string"),
}
_REQUIRED = ("model", "target")


def _problem(data: Any) -> str | None:
    """What is wrong with a parsed metadata document, or None."""
    if not isinstance(data, dict):
        return f"expected a JSON object, found {type(data).__name__}"
    for name in _REQUIRED:
        if name not in data:
            return f"field {name!r} is missing"
    for name, (check, what) in _CHECKS.items():
        if name in data and not check(data[name]):
            return f"field {name!r} must be {what}"
    if "mean" in data and "std" in data and len(data["mean"]) != len(data["std"]):
        return "mean and std have different lengths"
    return None
