"""The split plan: ``plan.json`` (versioned schema) and the artifacts it names.

A plan directory holds ``plan.json``, one artifact per sub-model and target, the fusion
head's artifact, and ``report.json``/``report.md``. ``plan.json`` records the input spec,
the classes, each sub-model's classes and artifacts (relative path, SHA-256, size), the
fusion head, the devices and the placement. :func:`load_plan` validates all of it and
names the first problem precisely, so a hand-edited or corrupt plan fails with one line.
Torch-free: devices load plans too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError
from .devices import Device

PLAN_SCHEMA = "edgevit.split-plan"
PLAN_VERSION = 1
PLAN_FILE = "plan.json"
TARGETS = ("onnx", "tflite")


class PlanError(InputError):
    """A plan directory or ``plan.json`` that is missing, corrupt or inconsistent."""


@dataclass
class Artifact:
    """One exported file, relative to the plan directory."""

    path: str
    sha256: str
    size_bytes: int


@dataclass
class SubModelEntry:
    """A sub-model: its classes, feature width, size, work, artifacts and measured latency
    (ms, batch 1, ONNX Runtime on 1 thread of the machine that split; None in older plans)."""

    name: str
    classes: list[int]
    feature_dim: int
    params: int
    gflops: float
    artifacts: dict[str, Artifact]
    latency_ms: Optional[float] = None


@dataclass
class SplitPlan:
    """A validated split plan (see the module doc); ``directory`` is where it lives."""

    directory: Path
    model: dict[str, Any]
    input: dict[str, Any]
    classes: list[str]
    submodels: list[SubModelEntry]
    fusion: dict[str, Any]
    devices: list[Device]
    assignment: dict[str, str]
    placement: dict[str, Any]
    budget: dict[str, Any] = field(default_factory=dict)
    version: int = PLAN_VERSION

    def artifact_path(self, name: str, target: str = "onnx") -> Path:
        """Absolute path of a sub-model's, ``"fusion"``'s or ``"full"``'s (the unsplit model) artifact."""
        if name in ("fusion", "full"):
            records = (self.fusion if name == "fusion" else self.model)["artifacts"]
            artifacts = {t: Artifact(**a) for t, a in records.items()}
        else:
            entry = next((s for s in self.submodels if s.name == name), None)
            if entry is None:
                raise PlanError(f"the plan has no sub-model {name!r}")
            artifacts = entry.artifacts
        if target not in artifacts:
            raise PlanError(f"{name} has no {target} artifact in the plan (it has {', '.join(artifacts)})")
        return self.directory / artifacts[target].path

    def input_bytes(self, batch: int = 1, pixels: bool = True) -> int:
        """Bytes a request of ``batch`` images sends to each device: 8-bit pixels (how inputs
        made from images travel, see :mod:`.wire`), or float32 values with ``pixels=False``."""
        channels, height, width = self.input["shape"][1:]
        return batch * channels * height * width * (1 if pixels else 4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "version": self.version,
            "model": self.model,
            "input": self.input,
            "classes": self.classes,
            "submodels": [asdict(s) for s in self.submodels],
            "fusion": self.fusion,
            "devices": [asdict(d) for d in self.devices],
            "assignment": self.assignment,
            "placement": self.placement,
            "budget": self.budget,
        }

    def write(self, directory: Path) -> Path:
        """Write ``plan.json`` into ``directory``."""
        path = Path(directory) / PLAN_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def sha256_of(path: Path) -> str:
    """SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_record(directory: Path, path: Path) -> Artifact:
    """The plan's record of an artifact file written under ``directory``."""
    return Artifact(str(path.relative_to(directory)), sha256_of(path), path.stat().st_size)


class _Reader:
    """Typed access to the JSON document; every failure names the field."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> PlanError:
        return PlanError(f"{self.source}: {where} {message}")

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(where, "must be an object")
        if key not in obj:
            raise self.fail(f"{where}.{key}" if where else key, "is missing")
        value = obj[key]
        label = f"{where}.{key}" if where else key
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(label, f"must be {names}, got {type(value).__name__}")
        return value

    def number(self, obj: Any, key: str, where: str, positive: bool = False) -> float:
        value = self.get(obj, key, (int, float), where)
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(f"{where}.{key}", f"must be a {'positive ' if positive else ''}finite number, got {value}")
        return value

    def artifacts(self, obj: Any, where: str, directory: Path, verify: bool) -> dict[str, Artifact]:
        raw = self.get(obj, "artifacts", dict, where)
        if not raw:
            raise self.fail(f"{where}.artifacts", "is empty")
        out = {}
        for target, record in raw.items():
            at = f"{where}.artifacts.{target}"
            if target not in TARGETS:
                raise self.fail(at, f"is not a known target ({', '.join(TARGETS)})")
            rel = self.get(record, "path", str, at)
            digest = self.get(record, "sha256", str, at)
            size = self.get(record, "size_bytes", int, at)
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise self.fail(f"{at}.path", f"must be relative to the plan directory, got {rel!r}")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise self.fail(f"{at}.sha256", "must be 64 lowercase hex digits")
            file = directory / rel
            if not file.is_file():
                raise self.fail(f"{at}.path", f"names {rel}, which is not in {directory}")
            if verify and sha256_of(file) != digest:
                raise PlanError(f"{file}: checksum does not match the plan (the artifact was changed or corrupted "
                                f"after the split)")
            out[target] = Artifact(rel, digest, size)
        return out


def load_plan(directory: str | Path, *, verify_checksums: bool = True) -> SplitPlan:
    """Read and validate ``directory/plan.json`` (and, by default, every artifact's checksum)."""
    directory = Path(directory)
    source = directory / PLAN_FILE
    if not source.is_file():
        raise PlanError(f"{directory} is not a split plan: {PLAN_FILE} not found")
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{source} is not valid JSON: {exc}") from None
    r = _Reader(source)
    if r.get(document, "schema", str, "") != PLAN_SCHEMA:
        raise r.fail("schema", f"must be {PLAN_SCHEMA!r}, got {document['schema']!r}")
    version = r.get(document, "version", int, "")
    if version > PLAN_VERSION:
        raise r.fail("version", f"is {version}: written by a newer edgevit (this one reads up to {PLAN_VERSION})")
    if version < 1:
        raise r.fail("version", f"must be >= 1, got {version}")

    classes = r.get(document, "classes", list, "")
    if not classes or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise r.fail("classes", "must be a non-empty list of distinct names")
    spec = r.get(document, "input", dict, "")
    shape = r.get(spec, "shape", list, "input")
    if len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise r.fail("input.shape", f"must be four positive integers (N, C, H, W), got {shape}")
    for key in ("mean", "std"):
        values = r.get(spec, key, list, "input")
        if len(values) != shape[1] or not all(isinstance(v, (int, float)) for v in values):
            raise r.fail(f"input.{key}", f"must hold {shape[1]} numbers (one per channel)")
    if any(v <= 0 for v in spec["std"]):
        raise r.fail("input.std", "must be positive")
    r.get(spec, "name", str, "input")

    submodels = []
    seen_classes: list[int] = []
    for i, raw in enumerate(r.get(document, "submodels", list, "")):
        at = f"submodels[{i}]"
        group = r.get(raw, "classes", list, at)
        if not group or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(classes) for c in group):
            raise r.fail(f"{at}.classes", f"must be a non-empty list of class indices 0..{len(classes) - 1}")
        seen_classes += group
        entry = SubModelEntry(
            name=r.get(raw, "name", str, at), classes=list(group),
            feature_dim=int(r.number(raw, "feature_dim", at, positive=True)),
            params=int(r.number(raw, "params", at, positive=True)), gflops=float(r.number(raw, "gflops", at)),
            artifacts=r.artifacts(raw, at, directory, verify_checksums),
            latency_ms=float(r.number(raw, "latency_ms", at, positive=True)) if raw.get("latency_ms") is not None
            else None,
        )
        submodels.append(entry)
    if not submodels:
        raise r.fail("submodels", "is empty")
    names = [s.name for s in submodels]
    if len(set(names)) != len(names) or {"fusion", "full"} & set(names):
        raise r.fail("submodels", f"names must be distinct and not 'fusion' or 'full', got {names}")
    if sorted(seen_classes) != list(range(len(classes))):
        raise r.fail("submodels", "classes must partition the plan's classes (each class in exactly one sub-model)")

    fusion = r.get(document, "fusion", dict, "")
    order = r.get(fusion, "feature_order", list, "fusion")
    if order != names:
        raise r.fail("fusion.feature_order", f"must list the sub-models in plan order {names}, got {order}")
    width = r.get(fusion, "input_dim", int, "fusion")
    if width != sum(s.feature_dim for s in submodels):
        raise r.fail("fusion.input_dim", f"is {width} but the sub-models' features add up to "
                                         f"{sum(s.feature_dim for s in submodels)}")
    fusion = dict(fusion, artifacts={t: asdict(a) for t, a in r.artifacts(fusion, "fusion", directory,
                                                                               verify_checksums).items()})

    devices = []
    for i, raw in enumerate(r.get(document, "devices", list, "")):
        at = f"devices[{i}]"
        fields = (r.get(raw, "name", str, at), float(r.number(raw, "memory_mb", at)),
                  float(r.number(raw, "speed", at)), r.get(raw, "target", str, at))
        optional = {key: float(r.number(raw, key, at)) for key in ("cpus", "link_mbps", "link_delay_ms")
                    if isinstance(raw, dict) and raw.get(key) is not None}  # absent in plans before 0.3
        try:
            devices.append(Device(*fields, **optional))
        except InputError as exc:
            raise r.fail(at, str(exc)) from None
    device_names = {d.name for d in devices}
    assignment = r.get(document, "assignment", dict, "")
    if set(assignment) != set(names):
        raise r.fail("assignment", f"must place exactly the sub-models {names}, got {sorted(assignment)}")
    targets = {d.name: d.target for d in devices}
    for sub, device in assignment.items():
        if device not in device_names:
            raise r.fail(f"assignment.{sub}", f"names device {device!r}, which the plan's devices do not list")
        if targets[device] not in next(s for s in submodels if s.name == sub).artifacts:
            raise r.fail(f"assignment.{sub}", f"places it on {device}, which runs {targets[device]}, but the plan "
                                              f"has no {targets[device]} artifact for {sub}")
    model = r.get(document, "model", dict, "")
    r.get(model, "name", str, "model")
    model = dict(model, artifacts={t: asdict(a) for t, a in r.artifacts(model, "model", directory,
                                                                         verify_checksums).items()})
    return SplitPlan(directory, model, spec, list(classes), submodels, fusion, devices, dict(assignment),
                     r.get(document, "placement", dict, ""), document.get("budget", {}), version)
