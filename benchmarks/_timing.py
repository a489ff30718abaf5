"""Shared timing for the benchmark scripts: interleaved rounds, ratios of per-round medians.

The machine is shared and noisy, so candidates are timed round-robin (A, B, C, A, B, C,
...) and compared by the median of per-round ratios, never by absolute times alone.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Sequence


def ort_session(path: Path, threads: int, custom_ops: Path | None = None):
    """A CPU ONNX Runtime session with ``threads`` intra-op threads (and the custom-op
    library ``custom_ops`` registered, if given)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if custom_ops is not None:
        options.register_custom_ops_library(str(custom_ops))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int, runs: int,
                warmup: int = 5, pause: float = 0.0) -> dict[str, list[float]]:
    """Per-round median latency (ms) of every candidate, timed round-robin. ``pause``
    seconds between candidates let the previous one's worker threads go idle (ONNX
    Runtime's spin after a run) before the next is timed."""
    for fn in candidates.values():
        median_ms(fn, warmup)
    per_round: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(rounds):
        for key, fn in candidates.items():
            time.sleep(pause)
            fn()  # after the pause: wake the candidate's threads before timing it
            per_round[key].append(median_ms(fn, runs))
    return per_round


def ratio(per_round: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of latency(a) / latency(b): below 1 means ``a`` is faster."""
    return statistics.median(x / y for x, y in zip(per_round[a], per_round[b]))


def parse_args(doc: str, rounds: int, runs: int = 20, models: Sequence[str] = ()):
    """The options every benchmark takes: --rounds, --runs, --json (and --models, a
    comma-separated subset of ``models``, when given)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    if models:
        parser.add_argument("--models", type=lambda text: text.split(","), default=list(models),
                            help=f"comma-separated, from {','.join(models)}")
    args = parser.parse_args()
    unknown = set(getattr(args, "models", ())) - set(models)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    return args


def ort_runner(session, feed) -> Callable[[], object]:
    """A no-argument call running ``session`` on ``feed`` (its first input)."""
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: feed})


def summary(per_round: dict[str, list[float]], args, threads: int, shape: list[int], **fields) -> dict:
    """The fields every benchmark reports, then ``fields``, then library versions."""
    import onnxruntime
    import torch

    return {
        "input": shape, "threads": threads, "rounds": args.rounds, "runs_per_round": args.runs,
        "median_ms": {k: round(statistics.median(v), 3) for k, v in per_round.items()},
        **fields,
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }


def publish(result: dict, lines: list[str], json_path: Path | None) -> None:
    """Print the result as JSON and the headline ratios; write the JSON too when asked."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    for line in lines:
        print(line)
    if json_path is not None:
        json_path.write_text(text + "\n")


def ort_op_profile(path: Path, threads: int, runs: int = 20, custom_ops: Path | None = None) -> dict[str, float]:
    """Microseconds per run spent in each operator type (ONNX Runtime's profiler), slowest first
    (with the custom-op library ``custom_ops`` registered, if given)."""
    import json
    import tempfile

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    if custom_ops is not None:
        options.register_custom_ops_library(str(custom_ops))
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = np.random.default_rng(0).standard_normal(
            [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]).astype(np.float32)
        for _ in range(runs):
            session.run(None, {session.get_inputs()[0].name: feed})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"] / runs
    return dict(sorted(((k, round(v)) for k, v in totals.items()), key=lambda kv: -kv[1]))
