"""int8 against fp32 latency on the exporting machine, and the CPU features that decide it.

The two artifacts run the same input side by side, interleaved (fp32, int8, then int8,
fp32, ...), so that a shared or throttling machine slows both alike; the ratio of the
medians is what is reported. It says what this machine gains, not what a phone gains: int8
is fast where the CPU has 8-bit dot-product instructions (x86 VNNI, Arm's dot product)
that the runtime's kernels use (docs/int8.md).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_ROUNDS = 15
WARM_UP = 2  # runs each before timing (first runs allocate and pack)
# the flags that int8 kernels use: x86 /proc/cpuinfo 'flags', Arm 'Features'
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve")


def cpu_int8_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The int8-relevant instruction sets this CPU reports (empty where it cannot be read)."""
    try:
        text = cpuinfo.read_text(errors="replace")[:1 << 20]
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [flag for flag in INT8_CPU_FLAGS if flag in flags]


def side_by_side(fp32: Any, int8: Any, x: np.ndarray, rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Median (and best) latency of two loaded artifacts on ``x`` (``WARM_UP`` runs each, then
    ``rounds`` interleaved runs), and int8 / fp32 of the medians. On a shared machine the best
    runs are the less disturbed ones: both are recorded."""
    for runtime in (fp32, int8):
        for _ in range(WARM_UP):
            runtime.run(x)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    pair = (("fp32", fp32), ("int8", int8))
    for i in range(rounds):
        for name, runtime in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            runtime.run(x)
            times[name].append(time.perf_counter() - start)
    fp32_ms, int8_ms = (1000 * float(np.median(times[name])) for name in ("fp32", "int8"))
    best = {name: 1000 * min(times[name]) for name in times}
    return {"fp32_ms": round(fp32_ms, 3), "int8_ms": round(int8_ms, 3),
            "ratio": round(int8_ms / fp32_ms, 3) if fp32_ms > 0 else None,
            "best_ratio": round(best["int8"] / best["fp32"], 3) if best["fp32"] > 0 else None, "runs": rounds,
            "runtime": int8.describe(), "machine": platform.machine(), "cpu_features": cpu_int8_features()}
