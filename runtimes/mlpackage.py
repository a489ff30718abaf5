"""A Core ML artifact read as untrusted input: an ``.mlpackage`` folder or a bare ``.mlmodel``.

An ``.mlpackage`` holds ``Manifest.json``, which names the root model item by an id; that
item's ``path`` (relative to the package's ``Data/`` folder, normally
``com.apple.CoreML/model.mlmodel``) is the protobuf specification. ML Program weights are
files the program names as ``@model_path/...``, relative to the specification's folder
(:class:`~.mil_program.WeightFile`). Every file is read through :mod:`.files`: inside the
package, regular, bounded by its real size. coremltools' own loader is not used on this
path (it would follow any path the manifest names).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevit.errors import ArtifactError, first_line

from .files import inside, read_regular_file

MANIFEST_LIMIT = 1 << 20  # bytes; a manifest is a few hundred


@dataclass
class CoreMLArtifact:
    """The parsed specification of a Core ML artifact, its bytes, and where its weights live."""

    spec: Any  # coremltools.proto.Model_pb2.Model
    spec_bytes: bytes
    model_dir: Path  # the folder that @model_path names


def read_artifact(path: Path, model_proto: Any) -> CoreMLArtifact:
    """Read and parse ``path`` with ``model_proto`` (``Model_pb2.Model``); ArtifactError if malformed."""
    path = Path(path)
    if path.suffix.lower() == ".mlmodel":
        data, model_dir = read_regular_file(path), path.parent
    elif not path.is_dir():
        raise ArtifactError(f"{path} is not an .mlpackage folder (a Core ML package is a directory)")
    else:
        spec_path = inside(path / "Data", _root_item_path(path), f"{path}: the manifest's model path")
        data, model_dir = read_regular_file(spec_path, f"{path}: its model specification"), spec_path.parent
    try:
        spec = model_proto.FromString(data)
    except Exception as exc:  # DecodeError, RecursionError
        raise ArtifactError(f"cannot load Core ML package {path}: its specification does not parse "
                            f"({first_line(exc)})") from None
    return CoreMLArtifact(spec, data, model_dir)


def _root_item_path(package: Path) -> str:
    """The ``path`` of the manifest's root model item (relative to ``Data/``)."""
    text = read_regular_file(inside(package, "Manifest.json", f"{package}: manifest"),
                             f"cannot load Core ML package {package}: Manifest.json", limit=MANIFEST_LIMIT)
    try:
        manifest = json.loads(text)
        root = manifest["rootModelIdentifier"]
        item_path = manifest["itemInfoEntries"][root]["path"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ArtifactError(f"cannot load Core ML package {package}: Manifest.json has no valid root model "
                            f"item ({type(exc).__name__})") from None
    if not isinstance(item_path, str):
        raise ArtifactError(f"cannot load Core ML package {package}: Manifest.json's model path is not a string")
    return item_path
