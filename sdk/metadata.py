"""The metadata every edgevit artifact carries, and its one on-disk encoding.

Each format stores the same JSON document under the key ``edgevit``: ONNX
``metadata_props``, Core ML ``user_defined_metadata``, TFLite's metadata table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ._version import __version__

METADATA_KEY = "edgevit"


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
    labels: list[str] | None = None
    parity: dict[str, Any] | None = None
    reparam: dict[str, Any] | None = None  # fold summary when the model was re-parameterized
    edgevit_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "ArtifactMetadata":
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
