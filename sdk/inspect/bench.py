"""Benchmark artifacts: latency (median, p90), throughput, size and peak memory.

Each artifact is measured in its own fresh process (``python -m edgevit.inspect.bench``), so its
peak resident memory is its own (runtime + model + buffers), one runtime's threads cannot
disturb another's, and the caller's script is never imported again (no
``if __name__ == "__main__"`` guard needed).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgevit.runtimes.loader import artifact_kind, load

from ..errors import EdgeVitError, InputError, first_line, rebuild_error
from ..optional import require
from ..paths import artifact_size, ensure_writable_dir


@dataclass
class BenchRow:
    """One artifact's measurements."""

    artifact: str
    backend: str
    threads: int | None
    runs: int
    size_mb: float
    median_ms: float
    p90_ms: float
    mean_ms: float
    throughput_ips: float  # images per second at the artifact's batch size
    peak_rss_mb: float
    providers: list[str] | None = None  # ONNX: the execution providers the session really used, best first
    fallback: str | None = None  # ONNX: why the first requested provider was not used ("" when it was)


@dataclass
class BenchReport:
    rows: list[BenchRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows]}


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def measure(path: str, runtime: str, threads: int | None, runs: int, warmup: int,
            integrity_check: bool = True, providers: list[str] | None = None) -> dict[str, Any]:
    """Load and time one artifact in this process (``providers``: for ONNX artifacts only)."""
    onnx = artifact_kind(path) == "onnx"
    rt = load(path, runtime=runtime, threads=threads, integrity_check=integrity_check,
              providers=providers if onnx else None)
    spec = rt.inputs[0]
    shape = tuple(1 if d is None else d for d in spec.shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(spec.dtype)
    for _ in range(warmup):
        rt.run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        rt.run(x)
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1000
    median = float(np.median(ms))
    return dict(
        artifact=path, backend=rt.describe(), threads=threads, runs=runs,
        size_mb=round(artifact_size(Path(path)) / 1e6, 3),
        median_ms=round(median, 3), p90_ms=round(float(np.percentile(ms, 90)), 3),
        mean_ms=round(float(ms.mean()), 3), throughput_ips=round(shape[0] * 1000 / median, 2),
        peak_rss_mb=round(_peak_rss_mb(), 1), providers=rt.providers if onnx else None,
        fallback=rt.fallback if onnx else None,
    )


def _measure_isolated(args: tuple, timeout: float) -> dict[str, Any]:
    """:func:`measure` in a fresh ``python -m edgevit.inspect.bench`` process: the caller's script is
    never re-run there (a spawned ``multiprocessing`` child would import it again)."""
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as scratch:
        answer = Path(scratch) / "answer.json"
        command = [sys.executable, "-m", "edgevit.inspect.bench", str(answer), json.dumps(list(args))]
        try:
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgeVitError(f"benchmark worker for {args[0]} did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise EdgeVitError(f"cannot start a benchmark worker ({sys.executable}): {exc.strerror or exc}") from None
        try:
            message = json.loads(answer.read_text())
        except (OSError, ValueError):
            last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise EdgeVitError(f"benchmark worker for {args[0]} died (exit code {proc.returncode}: {last})") from None
    if "row" in message:
        return message["row"]
    raise rebuild_error(message["error"], message["message"])


def _worker(answer: str, args_json: str) -> None:
    """The isolated process: measure, and write the row (or the error) as JSON to ``answer``."""
    args = json.loads(args_json)
    try:
        message: dict[str, Any] = {"row": measure(*args)}
    except EdgeVitError as exc:
        message = {"error": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # reported as one line, never a hang
        message = {"error": "EdgeVitError", "message": f"{args[0]}: {type(exc).__name__}: {first_line(exc)}"}
    Path(answer).write_text(json.dumps(message))


def benchmark(artifact_paths: Sequence[str | Path], *, runs: int = 50, warmup: int = 5,
              threads: int | None = None, runtime: str = "auto", isolate: bool = True,
              timeout: float = 600.0, progress: Callable[[str], None] | None = None,
              integrity_check: bool = True, providers: Sequence[str] | None = None) -> BenchReport:
    """Measure every artifact (in its own process unless ``isolate`` is False); artifacts
    changed since export are refused unless ``integrity_check`` is False. ``providers``:
    ONNX Runtime execution providers for the ONNX artifacts, best first (each row says which ran)."""
    if runs < 1 or warmup < 0:
        raise InputError("runs must be >= 1 and warmup >= 0")
    if threads is not None and threads < 1:
        raise InputError("threads must be >= 1")
    report = BenchReport()
    for path in artifact_paths:
        if progress:
            progress(f"benchmarking {path}")
        args = (str(path), runtime, threads, runs, warmup, integrity_check, list(providers) if providers else None)
        row = _measure_isolated(args, timeout) if isolate else measure(*args)
        report.rows.append(BenchRow(**row))
    return report


def plot(report: BenchReport, path: str | Path) -> Path:
    """Bar chart of median latency (p90 as whiskers) per artifact, written atomically."""
    matplotlib = require("matplotlib", "for --plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    labels = [f"{Path(r.artifact).name}\n{r.backend.split(' (')[0]}" for r in report.rows]
    medians = [r.median_ms for r in report.rows]
    upper = [max(r.p90_ms - r.median_ms, 0.0) for r in report.rows]
    fig, ax = plt.subplots(figsize=(max(4, 2.2 * len(labels)), 4))
    bars = ax.bar(labels, medians, yerr=[[0] * len(upper), upper], capsize=6, color="#4C78A8")
    for bar, value in zip(bars, medians):
        ax.annotate(f"{value:.2f} ms", (bar.get_x() + bar.get_width() / 2, value),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_ylabel("latency, ms (bar: median, whisker: p90)")
    ax.set_title("edgevit bench")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
