"""Read the devices a plan is placed on, from YAML (or JSON).

```yaml
devices:
  - name: jetson-orin      # also the Ray custom resource name (see the README)
    memory_mb: 64          # memory for sub-model weights, MB (1e6 bytes)
    speed: 4.0             # relative speed (work per second); default 1
    target: onnx           # artifact format it runs: onnx (default) or tflite
  - name: pi-5
    memory_mb: 16
    target: tflite
```

A top-level list (without ``devices:``) is accepted too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError, first_line
from ..optional import require
from .assign import Device

_KEYS = {"name", "memory_mb", "speed", "target"}


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
            devices.append(Device(str(entry["name"]), float(entry["memory_mb"]), float(entry.get("speed", 1.0)),
                                  str(entry.get("target", "onnx"))))
        except (TypeError, ValueError):
            raise InputError(f"{source}: device #{i + 1}: memory_mb and speed must be numbers") from None
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
