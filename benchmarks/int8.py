"""int8 against fp32: latency, size and (on digits-trained models) top-1 accuracy.

Speed: ``edgenext_xx_small`` at 256x256 and ``slab_deit_tiny`` at 224x224, each exported
fp32 and int8 (ONNX and TFLite, int8 modes ``full``: static, and ``dynamic``),
timed in one process, interleaved round by round, batch 1, 1 and 2 threads (ONNX Runtime
CPU; LiteRT with XNNPACK). The ratios are int8 latency / fp32 latency (below 1: int8 is
faster); sizes are fp32 bytes / int8 bytes; ONNX Runtime's per-op profile (1 thread) shows
where each model's time goes. Calibration: 64 of scikit-learn's digits (these
models carry random weights here, so the guard's budget is opened: speed only).

Accuracy (``--accuracy``): ``edgenext_xx_small`` at 64x64, a PRepBN ``slab_deit_tiny``-style
ViT and ED-ViT's ``deit_tiny`` (patch 4, 32x32) trained on the digits training split, then
exported int8 in every mode of ONNX, TFLite and Core ML under the default 1-point guard,
with top-1 on the held-out test split (450 images) next to fp32, and size.

Guard data (``--guard-data``): ``edgenext_xx_small`` at 64x64 trained 1 and 2 epochs on the
digits training split, exported int8 (ONNX, TFLite ``full``), and the drop measured on
training images not calibrated on, on shifted copies of them (what the guard scores with
training data only) and on the test split: how much the training images understate the drop.

    python benchmarks/int8.py [--rounds 8] [--runs 20] [--accuracy] [--guard-data] [--epochs 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import edgevit
import numpy as np
from _timing import interleaved, ort_op_profile, ort_runner, ort_session, publish, ratio

SPEED_MODELS = {"edgenext_xx_small": 256, "slab_deit_tiny": 224}
MODES = [("onnx", "full"), ("onnx", "dynamic"), ("tflite", "full"), ("tflite", "dynamic"), ("coreml", "weights"),
         ("coreml", "palettize"), ("coreml", "full")]
VARIANTS = {"onnx": [("full", {}), ("dynamic", {"int8_mode": "dynamic"})],
            "tflite": [("full", {}), ("dynamic", {"int8_mode": "dynamic"})]}


def speed(rounds: int, runs: int, tmp: Path) -> tuple[dict, list[str]]:
    rng = np.random.default_rng(0)
    results, lines = {}, []
    for model, size in SPEED_MODELS.items():
        files = {}
        for target, variants in VARIANTS.items():
            files[(target, "fp32")] = edgevit.export(model, target, tmp / model / "fp32", image_size=size,
                                                     verify=False).path
            for label, options in variants:
                result = edgevit.export(model, target, tmp / model / label, image_size=size, precision="int8",
                                        calibration="digits", eval_samples=32, max_drop=100, **options)
                files[(target, label)] = result.path
        for threads in (1, 2):
            candidates = {}
            for (target, label), path in files.items():
                if target == "onnx":
                    session = ort_session(path, threads)
                    feed = rng.standard_normal([d or 1 for d in session.get_inputs()[0].shape]).astype(np.float32)
                    candidates[f"{target}/{label}"] = ort_runner(session, feed)
                else:
                    runtime = edgevit.load(path, threads=threads)
                    feed = rng.uniform(0, 255, runtime.inputs[0].shape).astype(np.float32)
                    candidates[f"{target}/{label}"] = _runner(runtime, feed)
            per_round = interleaved(candidates, rounds, runs)
            for (target, label), path in files.items():
                if label == "fp32":
                    continue
                key = f"{model}/{target}/{label}/{threads}t"
                results[key] = {
                    "latency_ratio": round(ratio(per_round, f"{target}/{label}", f"{target}/fp32"), 3),
                    "size_ratio": round(_size(files[(target, "fp32")]) / _size(path), 2),
                    "fp32_ms": round(float(np.median(per_round[f"{target}/fp32"])), 2),
                }
                lines.append(f"{key}: int8/fp32 latency {results[key]['latency_ratio']:.3f}, "
                             f"fp32/int8 size {results[key]['size_ratio']:.2f}")
        for (target, label), path in files.items():
            if target == "onnx":
                profile = ort_op_profile(path, threads=1)
                results[f"{model}/onnx/{label}/profile_us"] = profile
                lines.append(f"{model}/onnx/{label} per-op time (us, 1 thread): "
                             + ", ".join(f"{op} {us:.0f}" for op, us in list(profile.items())[:8]))
    return results, lines


def _runner(runtime, feed):
    return lambda: runtime.run(feed)


def _size(path: Path) -> int:
    from edgevit.paths import artifact_size

    return artifact_size(Path(path))


def accuracy(epochs: int, tmp: Path) -> tuple[dict, list[str]]:
    import torch
    from edgevit.edvit.data import load_dataset
    from edgevit.edvit.train import fit

    models = {
        "edgenext_xx_small@64": (64, lambda: edgevit.create_model("edgenext_xx_small", num_classes=10)),
        "slab_deit_tiny-style@32": (32, lambda: edgevit.create_model(
            "slab_deit_tiny", num_classes=10, img_size=32, patch_size=4, prepbn_step=epochs * 22)),
        "deit_tiny (ED-ViT)@32": (32, lambda: edgevit.create_model("deit_tiny", num_classes=10, img_size=32,
                                                                   patch_size=4)),
    }
    results, lines = {}, []
    for name, (size, build) in models.items():
        torch.manual_seed(0)
        data = load_dataset("digits", size)
        model = build()
        fit(model, data.x_train, data.y_train, epochs=epochs, lr=3e-3 if "edgenext" in name else 1e-3,
            batch_size=64)
        for target, mode in MODES:
            key = f"{name}/{target}/{mode}"
            try:
                result = edgevit.export(model, target, tmp / name / target / mode, image_size=size,
                                        precision="int8", mean=data.mean, std=data.std,
                                        calibration={"images": data.x_train[:64]},
                                        eval_data={"images": data.x_test, "labels": data.y_test}, eval_samples=450,
                                        int8_mode=mode)
            except edgevit.errors.EdgeVitError as exc:  # the guard refused it: nothing written
                results[key] = {"refused": str(exc)}
                lines.append(f"{key}: refused: {exc}")
                continue
            guard = result.guard
            results[key] = {"fp32_top1": guard.fp32_accuracy, "int8_top1": guard.final.accuracy,
                            "agreement": guard.final.agreement, "snr_db": round(guard.final.snr_db, 1),
                            "kept_float": [k["module"] for k in guard.kept],
                            "size_ratio": round(guard.fp32_size_bytes / result.size_bytes, 2)}
            lines.append(f"{key}: top-1 fp32 {guard.fp32_accuracy:.4f} int8 {guard.final.accuracy:.4f}, "
                         f"{len(guard.kept)} layer(s) kept float, fp32/int8 size {results[key]['size_ratio']:.2f}")
    return results, lines


def guard_data(tmp: Path, epoch_counts: tuple[int, ...] = (1, 2)) -> tuple[dict, list[str]]:
    import torch
    from edgevit.artifact.input_form import InputForm
    from edgevit.edvit.data import load_dataset
    from edgevit.edvit.train import fit
    from edgevit.int8.calibration import SampleSet
    from edgevit.int8.guard import shifted_copies

    data = load_dataset("digits", 64)
    rest = SampleSet("training", data.x_train[64:514], data.y_train[64:514])
    sets = {"training images": rest, "shifted copies": shifted_copies(rest),
            "test images": SampleSet("test", data.x_test, data.y_test)}
    results, lines = {}, []
    for epochs in epoch_counts:
        torch.manual_seed(0)
        model = edgevit.create_model("edgenext_xx_small", num_classes=10)
        fit(model, data.x_train, data.y_train, epochs=epochs, lr=3e-3, batch_size=64)
        with torch.inference_mode():
            reference = {name: model(torch.from_numpy(s.inputs)).numpy().argmax(1) for name, s in sets.items()}
        for target in ("tflite", "onnx"):
            result = edgevit.export(model, target, tmp / f"guard{epochs}" / target, image_size=64, precision="int8",
                                    mean=data.mean, std=data.std, calibration={"images": data.x_train[:64]},
                                    eval_data={"images": data.x_test, "labels": data.y_test}, max_drop=100)
            runtime = edgevit.load(result.path)
            form = InputForm.of(runtime.metadata)
            for name, samples in sets.items():
                got = np.array([np.asarray(runtime.run(form.from_normalized(x[None]))).argmax()
                                for x in samples.inputs])
                fp32, int8 = (float(np.mean(answers == samples.labels)) for answers in (reference[name], got))
                row = {"fp32_top1": round(fp32, 4), "drop_points": round(100 * (fp32 - int8), 2),
                       "agreement": round(float(np.mean(got == reference[name])), 4), "count": len(samples)}
                results[f"{epochs} epochs/{target}/{name}"] = row
                lines.append(f"{epochs} epoch(s), {target}, {name}: fp32 top-1 {row['fp32_top1']:.4f}, "
                             f"drop {row['drop_points']:.2f} points, agreement {row['agreement']:.4f}")
    return results, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--accuracy", action="store_true", help="also train on digits and measure top-1")
    parser.add_argument("--no-speed", action="store_true", help="skip the latency part")
    parser.add_argument("--guard-data", action="store_true", help="drop on training vs shifted vs test images")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result, lines = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_speed:
            result["speed"], speed_lines = speed(args.rounds, args.runs, Path(tmp))
            lines += speed_lines
        if args.accuracy:
            result["accuracy"], accuracy_lines = accuracy(args.epochs, Path(tmp))
            lines += accuracy_lines
        if args.guard_data:
            result["guard_data"], guard_lines = guard_data(Path(tmp))
            lines += guard_lines
    publish(result, lines, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
