"""ONNX Runtime latency: edgevit's export of edgenext_xx_small vs a plain torch.onnx.export.

Also PyTorch eager on the same module. All three are timed in one process, interleaved
round by round (A, B, C, A, B, C, ...), and reported as ratios of per-round medians so
that machine noise hits all of them alike. 256x256, batch 1, 2 threads.

    python benchmarks/edgenext_latency.py [--rounds 15] [--runs 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import edgevit
from edgevit.quiet import quiet_converters

from _timing import interleaved, ort_session, ratio  # benchmarks/_timing.py

MODEL, SIZE, THREADS = "edgenext_xx_small", 256, 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)

    model = edgevit.create_model(MODEL)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        ours = edgevit.export(MODEL, "onnx", tmp, image_size=SIZE).path
        plain = Path(tmp) / "plain.onnx"
        with quiet_converters():
            torch.onnx.export(model, (x,), str(plain))  # the default call a user would write
        sessions = {"edgevit": ort_session(ours, THREADS), "plain": ort_session(plain, THREADS)}
        feed = x.numpy()
        names = {k: s.get_inputs()[0].name for k, s in sessions.items()}
        ref = model(x).detach().numpy()
        for key, session in sessions.items():
            err = float(np.abs(session.run(None, {names[key]: feed})[0] - ref).max())
            print(f"{key:8s} export: max abs err vs eager {err:.2e}")

        def run_eager():
            with torch.inference_mode():
                model(x)

        candidates = {
            "edgevit": lambda: sessions["edgevit"].run(None, {names["edgevit"]: feed}),
            "plain": lambda: sessions["plain"].run(None, {names["plain"]: feed}),
            "eager": run_eager,
        }
        per_round = interleaved(candidates, args.rounds, args.runs)

    ratio_plain = ratio(per_round, "edgevit", "plain")
    ratio_eager = ratio(per_round, "edgevit", "eager")
    result = {
        "model": MODEL, "input": [1, 3, SIZE, SIZE], "threads": THREADS,
        "rounds": args.rounds, "runs_per_round": args.runs,
        "median_ms": {k: round(statistics.median(v), 3) for k, v in per_round.items()},
        "ratio_edgevit_vs_plain_export": round(ratio_plain, 3),
        "ratio_edgevit_vs_torch_eager": round(ratio_eager, 3),
        "target_ratio_vs_plain": 0.8,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
    }
    print(json.dumps(result, indent=2))
    print(f"edgevit / plain torch.onnx.export latency: {ratio_plain:.3f}x (target <= 0.8x)")
    print(f"edgevit ORT / PyTorch eager latency:       {ratio_eager:.3f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
