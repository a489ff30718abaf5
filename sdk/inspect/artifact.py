"""What an artifact is: format, size, runtime, inputs/outputs, edgevit metadata, op census."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.runtimes.loader import artifact_kind, load

from ..paths import artifact_size


def describe_artifact(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description of ``path`` (loads it; never runs it). An artifact changed
    since export is described, not refused: ``integrity`` says whether it is intact."""
    path = Path(path)
    rt = load(path, integrity_check=False)
    return {
        "path": str(path),
        "format": artifact_kind(path),
        "size_bytes": artifact_size(path),
        "runtime": rt.describe(),
        "inputs": [i.describe() for i in rt.inputs],
        "outputs": [o.describe() for o in rt.outputs],
        "metadata": rt.metadata.to_dict() if rt.metadata else None,
        "app_metadata": rt.app_metadata,
        "integrity": rt.integrity.to_dict() if rt.integrity else None,
        "op_census": rt.op_census(),
    }
