"""Fidelity on real data: every zoo model x target x precision, with trained weights.

Each model is trained briefly on the training split of scikit-learn's digits at a small
size (EdgeNeXt and FMViT 64x64; the ViTs 32x32 with 4x4 patches; SLAB-Swin 64x64 with 2x2
patches and 4x4 windows), then exported to ONNX (fp32, int8), TFLite and Core ML (fp32,
fp16, int8) in the target's default int8 mode. Every export is verified by edgevit itself
on its random inputs, its photos and 16 test digits (``--verify-data``: images the model
never saw, neither in training nor in calibration); int8 is calibrated on 64 training
images and judged by the accuracy guard on the rest of the test split. Per row: the
largest error on random inputs, on photos and on test digits (logits), top-1 agreement on
test digits (int8: on the guard's held-out split), and the fp16 headroom (the largest
magnitude any tensor of the fp16 program reaches on the verification inputs / 65504).

Per model, the range ratio: the largest magnitude any tensor of the model reaches on the
whole test split over the largest it reaches on the verification inputs (photos and 16
test digits): how far unseen data reaches past what the fp16 check measures (the margin
of ``edgevit.pipeline.fp16_range``).

    python benchmarks/fidelity.py [--models a,b | --small] [--epochs 2] [--json out.json] [--markdown table.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import edgevit
import numpy as np

ROWS = [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"),
        ("coreml", "fp32"), ("coreml", "fp16"), ("coreml", "int8")]
SMALL_MODELS = ("edgenext_xx_small", "slab_deit_tiny")  # what CI runs (tests/test_fidelity.py)
VERIFY_SAMPLES = 16


def small_config(name: str) -> tuple[int, dict]:
    """(image size, create_model options) that train in seconds on digits."""
    if name.startswith("slab_swin"):
        return 64, dict(img_size=64, patch_size=2, window_size=4)
    if name.startswith(("deit", "slab_deit")):
        return 32, dict(img_size=32, patch_size=4)
    return 64, {}


def train(name: str, epochs: int, data_cache: dict):
    """(model trained on digits, dataset, image size, fp32 test accuracy)."""
    import torch
    from edgevit.edvit.data import load_dataset
    from edgevit.edvit.train import fit

    size, options = small_config(name)
    if size not in data_cache:
        data_cache[size] = load_dataset("digits", size)
    data = data_cache[size]
    if name.startswith(("deit", "slab")):  # PRepBN ends its LayerNorm-to-RepBN schedule with the training
        options["prepbn_step"] = epochs * -(-len(data.x_train) // 64)
    torch.manual_seed(0)
    model = edgevit.create_model(name, num_classes=10, **options)
    lr = 1e-3 if name.startswith(("deit", "slab")) else 3e-3
    fit(model, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=64)
    with torch.inference_mode():
        logits = torch.cat([model(torch.from_numpy(data.x_test[i:i + 128])) for i in range(0, len(data.x_test), 128)])
    return model, data, size, float((logits.argmax(1).numpy() == data.y_test).mean())


def export_row(model, data, size: int, target: str, precision: str, out: Path) -> dict:
    """Export one (target, precision), verified on random, photos and test digits."""
    options = dict(image_size=size, precision=precision, mean=data.mean, std=data.std,
                   verify_data={"images": data.x_test[:VERIFY_SAMPLES], "labels": data.y_test[:VERIFY_SAMPLES]})
    if precision == "int8":
        options.update(calibration={"images": data.x_train[:64]},
                       eval_data={"images": data.x_test[VERIFY_SAMPLES:], "labels": data.y_test[VERIFY_SAMPLES:]},
                       eval_samples=len(data.x_test))
    started = time.perf_counter()
    try:
        result = edgevit.export(model, target, out, **options)
    except edgevit.errors.ParityError as exc:
        results = exc.report or []
        result = results[0] if results else None
        row = {"status": "refused", "why": str(exc)[:300]}
        if result is not None and result.fp16_range is not None:
            row["fp16_headroom"] = result.fp16_range.headroom
        return row
    kinds = result.parity.by_kind() if result.parity else {}
    row = {"status": "verified" if result.parity and result.parity.numerically_verified else "structural",
           "seconds": round(time.perf_counter() - started, 1), "size_bytes": result.size_bytes}
    for kind in ("random", "photo", "data"):
        row[f"max_err_{kind}"] = kinds.get(kind, {}).get("max_abs_err")
    row["agreement_real"] = kinds.get("data", {}).get("top1_agreement")
    if result.guard is not None:
        row.update(agreement_real=result.guard.final.agreement, int8_mode=result.guard.mode,
                   int8_drop=result.guard.final.drop, held_out=result.guard.held_out["count"])
    if result.fp16_range is not None:
        row["fp16_headroom"] = result.fp16_range.headroom
    return row


def range_ratio(model, data, size: int) -> dict:
    """Largest magnitude on the whole test split / on the verification inputs (photos, 16 digits)."""
    import torch
    from edgevit.pipeline.checks import photo_files
    from edgevit.artifact.preprocess import load_image
    from edgevit.pipeline.fp16_range import measure_range

    batch = 64
    program = torch.export.export(model.eval(), (torch.from_numpy(data.x_test[:batch]),))
    photos = np.concatenate([load_image(f, (size, size), data.mean, data.std) for f in photo_files()])
    verification = np.concatenate([photos, data.x_test[:VERIFY_SAMPLES]])
    padded = np.concatenate([verification, np.repeat(verification[:1], batch - len(verification), 0)])
    seen = measure_range(program, [padded]).max_abs
    test = [data.x_test[i:i + batch] for i in range(0, len(data.x_test) - batch + 1, batch)]
    unseen = measure_range(program, test).max_abs
    return {"verification_max_abs": seen, "test_max_abs": unseen, "ratio": unseen / seen}


def run(models: list[str], epochs: int, say=print) -> dict:
    results: dict = {}
    data_cache: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model, data, size, accuracy = train(name, epochs, data_cache)
            entry = {"size": size, "fp32_test_accuracy": accuracy, "range": range_ratio(model, data, size),
                     "rows": {}}
            say(f"{name} @{size}: trained, test top-1 {accuracy:.3f}; range ratio {entry['range']['ratio']:.2f}")
            for target, precision in ROWS:
                row = export_row(model, data, size, target, precision, Path(tmp) / name / target / precision)
                entry["rows"][f"{target}/{precision}"] = row
                say(f"  {target:7s} {precision}: {_brief(row)}")
            results[name] = entry
    return results


def _fmt(value, spec: str = ".1e") -> str:
    return "-" if value is None else format(value, spec)


def _brief(row: dict) -> str:
    if row["status"] == "refused":
        return f"REFUSED: {row['why']}"
    return (f"{row['status']}, max err random {_fmt(row['max_err_random'])} photos {_fmt(row['max_err_photo'])} "
            f"digits {_fmt(row['max_err_data'])}, top-1 agreement {_fmt(row['agreement_real'], '.3f')}, "
            f"fp16 headroom {_fmt(row.get('fp16_headroom'), '.2g')}")


def markdown(results: dict) -> str:
    lines = ["| model | target | precision | max err random | max err photos | max err test digits | "
             "top-1 agreement (test) | fp16 headroom | result |", "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        for key, row in entry["rows"].items():
            target, precision = key.split("/")
            result = row["status"] if row["status"] != "refused" else f"refused: {row['why'][:80]}"
            lines.append(f"| {name} | {target} | {precision} | {_fmt(row.get('max_err_random'))} | "
                         f"{_fmt(row.get('max_err_photo'))} | {_fmt(row.get('max_err_data'))} | "
                         f"{_fmt(row.get('agreement_real'), '.3f')} | {_fmt(row.get('fp16_headroom'), '.2g')} | "
                         f"{result} |")
    lines += ["", "| model | size | fp32 test top-1 | largest magnitude: verification inputs | whole test split | "
              "ratio |", "|---|---|---|---|---|---|"]
    for name, entry in results.items():
        r = entry["range"]
        lines.append(f"| {name} | {entry['size']} | {entry['fp32_test_accuracy']:.3f} | "
                     f"{r['verification_max_abs']:.4g} | {r['test_max_abs']:.4g} | {r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: the whole zoo)")
    parser.add_argument("--small", action="store_true", help=f"only {', '.join(SMALL_MODELS)} (what CI runs)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    models = (list(SMALL_MODELS) if args.small else args.models.split(",") if args.models
              else edgevit.list_models())
    results = run(models, args.epochs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(results))
    bad = [f"{name} {key}" for name, entry in results.items() for key, row in entry["rows"].items()
           if row["status"] != "verified"]
    print("every row verified on real data" if not bad else f"not verified: {', '.join(bad)}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
