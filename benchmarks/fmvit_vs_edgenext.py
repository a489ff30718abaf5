"""FMViT (reconstruction) against EdgeNeXt: parameters, GFLOPs and ONNX Runtime latency.

Pairs: fmvit_s vs edgenext_small and fmvit_t vs edgenext_xx_small. Each model is exported
by edgevit (re-parameterized, parity-verified ONNX) and timed in ONNX Runtime on CPU,
batch 1, one thread. All four sessions are timed in one process, interleaved round by
round, and compared by the median of per-round ratios. Two input settings: both models
at 224x224 (same input), and each at its own default size (FMViT 224, EdgeNeXt 256).
Parameters and GFLOPs (multiply-adds) are those of the deployed graph
(``edgevit.model_cost``). Weights are random: FMViT has no official weights.

    python benchmarks/fmvit_vs_edgenext.py [--rounds 11] [--runs 20] [--json out.json]
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np

import edgevit
from edgevit.models.registry import get_spec

from _timing import interleaved, ort_runner, ort_session, parse_args, publish, ratio, summary  # noqa: E402,I001

PAIRS = (("fmvit_s", "edgenext_small"), ("fmvit_t", "edgenext_xx_small"))
THREADS = 1


def _settings() -> dict[str, dict[str, int]]:
    """Input side per model: 'same' puts every model at 224, 'default' at its own size."""
    names = [name for pair in PAIRS for name in pair]
    return {"same224": {name: 224 for name in names},
            "default": {name: get_spec(name).input_size[1] for name in names}}


def main() -> int:
    args = parse_args(__doc__, rounds=11)
    rng = np.random.default_rng(0)
    rows, lines, all_rounds = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting, sizes in _settings().items():
            runners, costs = {}, {}
            for name, size in sizes.items():
                costs[name] = edgevit.model_cost(name, image_size=size)
                path = edgevit.export(name, "onnx", f"{tmp}/{setting}", image_size=size, num_inputs=1).path
                feed = rng.standard_normal((1, 3, size, size)).astype(np.float32)
                runners[name] = ort_runner(ort_session(path, THREADS), feed)
            per_round = interleaved(runners, args.rounds, args.runs)
            all_rounds.update({f"{setting}:{k}": v for k, v in per_round.items()})
            for fm, en in PAIRS:
                a, b = costs[fm], costs[en]
                row = {
                    "setting": setting, "fmvit": fm, "edgenext": en,
                    "input": [sizes[fm], sizes[en]],
                    "params_m": [round(a.deployed_params / 1e6, 3), round(b.deployed_params / 1e6, 3)],
                    "gflops": [round(a.gflops, 4), round(b.gflops, 4)],
                    "median_ms": [round(float(np.median(per_round[fm])), 3), round(float(np.median(per_round[en])), 3)],
                    "params_ratio": round(a.deployed_params / b.deployed_params, 3),
                    "gflops_ratio": round(a.gflops / b.gflops, 3),
                    "latency_ratio": round(ratio(per_round, fm, en), 3),
                }
                rows.append(row)
    header = (f"{'setting':8s} {'pair':30s} {'input':9s} {'params M':>15s} {'GFLOPs':>15s} {'ORT ms':>15s} "
              f"{'params x':>8s} {'GFLOPs x':>8s} {'latency x':>9s}")
    lines.append(header)
    for r in rows:
        lines.append(
            f"{r['setting']:8s} {r['fmvit'] + ' / ' + r['edgenext']:30s} {'/'.join(map(str, r['input'])):9s} "
            f"{r['params_m'][0]:>7.2f}/{r['params_m'][1]:<7.2f} {r['gflops'][0]:>7.3f}/{r['gflops'][1]:<7.3f} "
            f"{r['median_ms'][0]:>7.2f}/{r['median_ms'][1]:<7.2f} {r['params_ratio']:>8.3f} "
            f"{r['gflops_ratio']:>8.3f} {r['latency_ratio']:>9.3f}")
    lines.append("ratios are FMViT / EdgeNeXt (latency: median of per-round ratios; below 1 = FMViT faster)")
    result = summary(all_rounds, args, THREADS, [1, 3, 224, 224], pairs=rows)
    publish(result, lines, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
