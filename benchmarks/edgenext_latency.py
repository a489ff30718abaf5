"""ONNX Runtime latency: edgevit's export of edgenext_xx_small vs a plain torch.onnx.export.

Also PyTorch eager on the same module. All three are timed in one process, interleaved
round by round (A, B, C, A, B, C, ...), and reported as ratios of per-round medians so
that machine noise hits all of them alike. 256x256, batch 1, 2 threads.

    python benchmarks/edgenext_latency.py [--rounds 15] [--runs 20] [--json out.json]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import edgevit
from edgevit.quiet import quiet_converters

from _timing import interleaved, ort_runner, ort_session, parse_args, publish, ratio, summary  # noqa: E402,I001

MODEL, SIZE, THREADS = "edgenext_xx_small", 256, 2


def main() -> int:
    args = parse_args(__doc__, rounds=15)
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
        runners = {key: ort_runner(session, feed) for key, session in sessions.items()}
        ref = model(x).detach().numpy()
        for key, run in runners.items():
            err = float(np.abs(run()[0] - ref).max())
            print(f"{key:8s} export: max abs err vs eager {err:.2e}")

        def run_eager():
            with torch.inference_mode():
                model(x)

        candidates = {**runners, "eager": run_eager}
        per_round = interleaved(candidates, args.rounds, args.runs)

    ratio_plain = ratio(per_round, "edgevit", "plain")
    ratio_eager = ratio(per_round, "edgevit", "eager")
    result = summary(per_round, args, THREADS, [1, 3, SIZE, SIZE], model=MODEL,
                     ratio_edgevit_vs_plain_export=round(ratio_plain, 3),
                     ratio_edgevit_vs_torch_eager=round(ratio_eager, 3), target_ratio_vs_plain=0.8)
    publish(result, [f"edgevit / plain torch.onnx.export latency: {ratio_plain:.3f}x (target <= 0.8x)",
                     f"edgevit ORT / PyTorch eager latency:       {ratio_eager:.3f}x"], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
