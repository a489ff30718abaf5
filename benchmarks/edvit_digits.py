"""ED-ViT on scikit-learn's digits: train DeiT-Tiny, split it with K = 2, 5 and 10, compare.

One run, on the CPU, offline:

1. train ``deit_tiny`` (32x32 inputs, 8x8 patches, 10 classes; 5.4M parameters) on the
   digits training split (1347 images) and measure its test accuracy (450 images);
2. for every K, ``edgevit.split`` with a per-sub-model budget (a fraction of the full
   model's backbone parameters; default 1/K for K = 2 and 5, and 1/20 for K = 10, the
   size target), balanced class groups, fine-tuning and fusion as in the SDK;
3. report, per K: fused test accuracy against the full model (PyTorch and through the
   exported ONNX artifacts), every sub-model's parameters and ONNX size against the full
   model's, the total, and per-sub-model ONNX Runtime latency (1 thread, batch 1) timed
   interleaved with the full model in the same rounds, as a ratio.

Targets: fused accuracy within 1 point of the full model; at K = 10 each sub-model at
least 20x smaller than the full model.

    python benchmarks/edvit_digits.py [--epochs 40] [--budgets 2:0.5,5:0.2,10:0.05] [--out edvit_bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import edgevit
from edgevit.edvit.data import load_dataset
from edgevit.edvit.checkpoint import load_checkpoint, save_checkpoint
from edgevit.edvit.train import accuracy, predict, train_vit

from _timing import interleaved, ort_runner, ort_session, ratio  # noqa: E402,I001

SIZE, PATCH, THREADS = 32, 8, 1


def say(message: str) -> None:
    print(f"- {message}", file=sys.stderr, flush=True)


def full_model(args, data):
    weights = args.out / "deit_tiny_digits.pt"
    if weights.is_file() and not args.retrain:
        say(f"reusing {weights} (--retrain to train again)")
        return load_checkpoint(weights)[0]
    vit = train_vit("deit_tiny", data, patch_size=PATCH, epochs=args.epochs, lr=args.lr, progress=say)
    save_checkpoint(vit, weights, data)
    return vit


def latency_ratios(plan, rounds: int, runs: int) -> dict[str, dict[str, float]]:
    """Full-model latency / sub-model latency, ONNX Runtime, timed in the same rounds."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    names = ["full", *(s.name for s in plan.submodels)]
    candidates = {n: ort_runner(ort_session(plan.artifact_path(n), THREADS), x) for n in names}
    per_round = interleaved(candidates, rounds, runs)
    return {"median_ms": {k: statistics.median(v) for k, v in per_round.items()},
            "full_over_sub": {n: ratio(per_round, "full", n) for n in names[1:]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="full-model training epochs")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--fusion-epochs", type=int, default=40)
    parser.add_argument("--budgets", default="2:0.5,5:0.2,10:0.05", help="K:budget fraction, comma separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("edvit_bench"))
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_dataset("digits", SIZE)
    vit = full_model(args, data)
    full_accuracy = accuracy(predict(vit, data.x_test), data.y_test)
    say(f"full model test accuracy {full_accuracy:.4f}")
    results = []
    for item in args.budgets.split(","):
        k, budget = int(item.split(":")[0]), float(item.split(":")[1])
        plan = edgevit.split(vit, data, k, budget=budget, output=args.out / f"k{k}", overwrite=True,
                             finetune_epochs=args.finetune_epochs, fusion_epochs=args.fusion_epochs, progress=say)
        report = json.loads((plan.directory / "report.json").read_text())
        report["latency"] = latency_ratios(plan, args.rounds, args.runs)
        results.append(report)

    print(f"full deit_tiny: {results[0]['full_model']['params']:,} parameters, "
          f"{results[0]['full_model']['size_bytes'] / 1e6:.2f} MB ONNX, test accuracy {full_accuracy:.4f}\n")
    print("| K | budget | fused accuracy (PyTorch / ONNX) | vs full (points) | sub-model params (min-max) | "
          "x smaller, params (min) | x smaller, ONNX size (min) | total params | total ONNX MB | "
          "sub-model latency, x faster than full (min-max) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        params = [row["params"] for row in r["submodels"]]
        size_red = min(row["size_reduction"] for row in r["submodels"])
        speed = list(r["latency"]["full_over_sub"].values())
        print(f"| {r['num_submodels']} | {r['budget']['given_as']} | {r['accuracy']['fused']:.4f} / {r['accuracy']['fused_deployed']:.4f} | "
              f"{r['accuracy']['fused_minus_full_points']:+.2f} | {min(params):,}-{max(params):,} | "
              f"{r['total']['min_params_reduction']:.1f} | {size_red:.1f} | {r['total']['params']:,} | "
              f"{r['total']['size_bytes'] / 1e6:.2f} | {min(speed):.2f}-{max(speed):.2f} |")
    within = all(r["accuracy"]["fused_minus_full_points"] >= -1.0 for r in results)
    at_ten = [r for r in results if r["num_submodels"] == 10]
    print(f"\ntarget, fused accuracy within 1 point of the full model: {'met' if within else 'NOT met'}")
    if at_ten:
        smallest = at_ten[0]["total"]["min_params_reduction"]
        print(f"target, K=10 sub-models >= 20x smaller: {'met' if smallest >= 20 else 'NOT met'} "
              f"(smallest reduction {smallest:.1f}x)")
    print(f"total time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"full_accuracy": full_accuracy, "splits": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
