"""Read the devices a plan is placed on, from YAML (or JSON).

```yaml
devices:
  - name: jetson-orin      # also the Ray custom resource name (see the README)
    memory_mb: 64          # memory for sub-model weights, MB (1e6 bytes)
    speed: 4.0             # relative speed (work per second); default 1
    target: onnx           # artifact format it runs: onnx (default) or tflite
    cpus: 0.3              # optional: CPU cores it has (the fleet's CPU quota)
    link_mbps: 1000        # optional: its link to the coordinator, Mbit/s
    link_delay_ms: 0.5     # optional: one-way delay of that link, ms
  - name: pi-5
    memory_mb: 16
    target: tflite
```

A top-level list (without ``devices:``) is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError, first_line
from ..optional import require


@dataclass(frozen=True)
class Device:
    """An edge device: a name, the memory its sub-models may use (MB = 1e6 bytes), a
    relative speed, the artifact format it runs (``"onnx"`` or ``"tflite"``), and
    optionally its CPU share (``cpus``, cores; the fleet's CPU quota) and its link to the
    coordinator (``link_mbps``, Mbit/s; ``link_delay_ms``, one way)."""

    name: str
    memory_mb: float
    speed: float = 1.0
    target: str = "onnx"
    cpus: Optional[float] = None
    link_mbps: Optional[float] = None
    link_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise InputError("a device needs a name")
        if not self.memory_mb > 0:
            raise InputError(f"device {self.name}: memory_mb must be positive, got {self.memory_mb}")
        if not self.speed > 0:
            raise InputError(f"device {self.name}: speed must be positive, got {self.speed}")
        if self.target not in ("onnx", "tflite"):
            raise InputError(f"device {self.name}: target must be onnx or tflite, got {self.target!r}")
        if self.cpus is not None and not self.cpus > 0:
            raise InputError(f"device {self.name}: cpus must be positive, got {self.cpus}")
        if self.link_mbps is not None and not self.link_mbps > 0:
            raise InputError(f"device {self.name}: link_mbps must be positive, got {self.link_mbps}")
        if not self.link_delay_ms >= 0:
            raise InputError(f"device {self.name}: link_delay_ms must be >= 0, got {self.link_delay_ms}")


_KEYS = {"name", "memory_mb", "speed", "target", "cpus", "link_mbps", "link_delay_ms"}
_OPTIONAL_NUMBERS = ("cpus", "link_mbps")


def parse_devices(document: Any, source: str = "devices") -> list[Device]:
    """Devices from a parsed YAML/JSON document."""
    entries = document.get("devices") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{source}: expected a non-empty list of devices under 'devices:'")
    devices = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{source}: device #{i + 1} must be a mapping with name and memory_mb")
        unknown = set(entry) - _KEYS
        if unknown:
            raise InputError(f"{source}: device #{i + 1} has unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
        if "name" not in entry or "memory_mb" not in entry:
            raise InputError(f"{source}: device #{i + 1} needs a name and memory_mb")
        try:
            optional = {key: float(entry[key]) for key in _OPTIONAL_NUMBERS if entry.get(key) is not None}
            devices.append(Device(str(entry["name"]), float(entry["memory_mb"]), float(entry.get("speed", 1.0)),
                                  str(entry.get("target", "onnx")),
                                  link_delay_ms=float(entry.get("link_delay_ms", 0.0)), **optional))
        except (TypeError, ValueError):
            raise InputError(f"{source}: device #{i + 1}: memory_mb, speed, cpus, link_mbps and link_delay_ms "
                             f"must be numbers") from None
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise InputError(f"{source}: device names must be unique, got {names}")
    return devices


def read_devices(path: str | Path) -> list[Device]:
    """Devices from a YAML or JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read devices file {path}: {exc.strerror or exc}") from None
    yaml = require("yaml", "to read devices.yaml")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {first_line(exc)}") from None
    return parse_devices(document, str(path))


def local_device() -> Device:
    """The default when no devices are given: this machine, memory unconstrained."""
    return Device("local", memory_mb=1e9, speed=1.0)
