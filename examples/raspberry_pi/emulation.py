"""The x86 and arm64 halves of emulate.sh.

    python emulation.py prepare WORK   # here (workstation profile): artifacts, images, x86 scores, kernel cases
    python emulation.py kernels CASES OUT.json   # in the arm64 root (device profile): the C++ kernels' parity
    python emulation.py compare WORK   # here: arm64 scores against x86 ones -> WORK/results.json, exit 1 on a mismatch

The model is edgenext_xx_small trained briefly on scikit-learn's digits (64x64), so int8
top-1 is a real decision, not noise between near-equal random logits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IMAGE_SIZE = 64
IMAGES = 32
# (target, precision): each exported here, run there by its board's demo
EXPORTS = (("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8"))
DEMOS = {"tflite": HERE / "demo.py", "onnx": HERE.parent / "jetson" / "demo.py"}
FP32_ATOL = 1e-4  # arm64 logits against x86 ones
KERNEL_ATOL = 1e-5  # the native kernels against the float64 torch reference (tests/test_native_kernels.py)
# (batch, tokens, heads, head_dim): odd sizes, head dims that are not multiples of the vector width
KERNEL_SHAPES = [(1, 1, 1, 1), (2, 3, 7, 13), (1, 7, 8, 12), (2, 9, 5, 22), (1, 17, 2, 33), (1, 49, 4, 64),
                 (2, 49, 3, 73), (2, 64, 2, 24), (1, 197, 3, 64), (4, 11, 4, 16)]


def prepare(work: Path) -> None:
    """Train, export every EXPORTS pair, write the images, run the demos here, make kernel cases."""
    import torch

    import edgevit
    from edgevit.edvit.data import load_dataset
    from edgevit.edvit.train import fit
    from PIL import Image

    host = work / "host"
    (host / "images").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    data = load_dataset("digits", IMAGE_SIZE)
    model = edgevit.create_model("edgenext_xx_small", num_classes=10)
    start = time.perf_counter()
    fit(model, data.x_train, data.y_train, epochs=4, lr=3e-3, batch_size=64)
    print(f"trained on digits in {time.perf_counter() - start:.0f} s", flush=True)
    mean, std = np.asarray(data.mean)[:, None, None], np.asarray(data.std)[:, None, None]
    labels = {}
    for i in range(IMAGES):  # test images back to pixels, as a camera would deliver them
        pixels = np.clip((data.x_test[i] * std + mean) * 255, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
        name = f"digit{i:02d}.png"
        Image.fromarray(pixels).save(host / "images" / name)
        labels[name] = int(data.y_test[i])
    (host / "labels.json").write_text(json.dumps(labels))
    common = dict(image_size=IMAGE_SIZE, mean=data.mean, std=data.std, labels=data.classes)
    for target, precision in EXPORTS:
        extra = dict(calibration={"images": data.x_train[:64]},
                     eval_data={"images": data.x_test, "labels": data.y_test}) if precision == "int8" else {}
        result = edgevit.export(model, target, host / "export" / f"{target}-{precision}", precision=precision,
                                **common, **extra)
        artifact = host / "artifacts" / f"{precision}.{target}"
        artifact.parent.mkdir(exist_ok=True)
        artifact.write_bytes(result.path.read_bytes())
        print(f"exported {artifact.name}: {result.size_bytes / 1e6:.2f} MB", flush=True)
        demo(sys.executable, artifact, host / "images", host / "x86" / f"{artifact.name}.npz")
    write_kernel_cases(host / "kernel_cases.npz")


def demo(python: str, artifact: Path, images: Path, save: Path) -> None:
    """The artifact's board demo on every image, scores saved (the command the arm64 root runs)."""
    save.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([python, str(DEMOS[artifact.suffix[1:]]), str(artifact), "--source", str(images),
                           "--threads", "2", "--save", str(save), "--json"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:  # the CPU-fallback note of the Jetson demo is expected on stderr, not shown
        raise SystemExit(f"the demo failed on {artifact.name}: {proc.stderr.strip()}")


def write_kernel_cases(path: Path) -> None:
    """Inputs and float64 torch references of both attention kernels, for every KERNEL_SHAPES."""
    import torch

    from edgevit.models.edgenext_layers import cross_covariance_attention
    from edgevit.models.slab_layers import simplified_linear_attention

    cases = {}
    for index, (batch, tokens, heads, dim) in enumerate(KERNEL_SHAPES):
        rng = np.random.default_rng(index)
        channels = heads * dim
        qkv = rng.standard_normal((batch, tokens, 3 * channels)).astype(np.float32)
        temperature = rng.uniform(0.25, 2.5, heads).astype(np.float32)
        positional = (rng.standard_normal((tokens, channels)) * 0.5).astype(np.float32)
        q64 = torch.from_numpy(qkv).double()
        cases[f"{index}_qkv"], cases[f"{index}_temperature"], cases[f"{index}_positional"] = qkv, temperature, positional
        cases[f"{index}_heads"] = np.asarray(heads)
        cases[f"{index}_xca"] = cross_covariance_attention(q64, torch.from_numpy(temperature).double(), heads).numpy()
        cases[f"{index}_sla"] = simplified_linear_attention(q64, torch.from_numpy(positional).double(), heads).numpy()
    np.savez(path, count=np.asarray(len(KERNEL_SHAPES)), **cases)


def kernels(cases_path: Path, out: Path) -> int:
    """Run the native kernels (1 and 4 threads) on every case; torch-free."""
    from edgevit import native

    status = native.status()
    result = {"available": status.active, "isa": status.isa, "reason": status.reason, "cases": []}
    if status.active:
        cases = np.load(cases_path)
        for index in range(int(cases["count"])):
            qkv, heads = cases[f"{index}_qkv"], int(cases[f"{index}_heads"])
            row = {"shape": list(KERNEL_SHAPES[index])}
            for threads in (1, 4):
                xca = native.xca(qkv, cases[f"{index}_temperature"], heads, threads=threads)
                sla = native.sla(qkv, cases[f"{index}_positional"], heads, threads=threads)
                row[f"xca_err_t{threads}"] = float(np.abs(xca - cases[f"{index}_xca"]).max())
                row[f"sla_err_t{threads}"] = float(np.abs(sla - cases[f"{index}_sla"]).max())
            result["cases"].append(row)
    errors = [v for row in result["cases"] for k, v in row.items() if k.endswith(("t1", "t4"))]
    result["max_err"] = max(errors) if errors else None
    result["passed"] = bool(status.active and errors and max(errors) <= KERNEL_ATOL)
    out.write_text(json.dumps(result, indent=1))
    print(f"native kernels on {status.isa or 'none'}: max error {result['max_err']} "
          f"({'passed' if result['passed'] else 'FAILED'})")
    return 0 if result["passed"] else 1


def compare(work: Path) -> int:
    """arm64 scores (each venv) against the x86 ones; the kernel results; one table, one JSON."""
    from edgevit.pipeline.parity import TOLERANCES

    labels = json.loads((work / "host" / "labels.json").read_text())
    rows, passed = [], True
    for venv in sorted(p for p in (work / "arm64").iterdir() if p.is_dir()):
        for scores in sorted(venv.glob("*.npz")):
            precision = scores.name.split(".")[0]
            x86, arm = np.load(work / "host" / "x86" / scores.name), np.load(scores)
            if list(x86["names"]) != list(arm["names"]):
                raise SystemExit(f"{venv.name}/{scores.name}: the arm64 run saw different frames")
            err = float(np.abs(x86["scores"] - arm["scores"]).max())
            same_top1 = bool((x86["scores"].argmax(1) == arm["scores"].argmax(1)).all())
            truth = np.asarray([labels[str(n)] for n in arm["names"]])
            limit = FP32_ATOL if precision == "fp32" else TOLERANCES.get(precision, (None,))[0]
            ok = same_top1 and (limit is None or err <= limit)
            passed &= ok
            note = scores.with_name(scores.name.replace(".npz", ".stderr"))
            rows.append({"runtime": venv.name, "artifact": scores.name.removesuffix(".npz"), "frames": len(truth),
                         "demo_note": " ".join(line for line in note.read_text().splitlines()
                                               if line.startswith("demo:")) if note.exists() else "",
                         "max_abs_err": err,
                         "limit": limit, "top1_equal": same_top1,
                         "accuracy_x86": float((x86["scores"].argmax(1) == truth).mean()),
                         "accuracy_arm64": float((arm["scores"].argmax(1) == truth).mean()), "passed": ok})
    kernel = json.loads((work / "arm64-kernels.json").read_text())
    passed &= kernel["passed"]
    report = {"passed": passed, "demo": rows, "kernels": kernel,
              "timings": (work / "timings.txt").read_text().splitlines() if (work / "timings.txt").exists() else []}
    (work / "results.json").write_text(json.dumps(report, indent=1))
    print(f"{'runtime':<18}{'artifact':<13}{'max |x86 - arm64|':>18}{'limit':>9}  top-1 equal  accuracy x86/arm64")
    for r in rows:
        limit = f"{r['limit']:g}" if r["limit"] is not None else "-"
        print(f"{r['runtime']:<18}{r['artifact']:<13}{r['max_abs_err']:>18.3g}{limit:>9}  {str(r['top1_equal']):<11}"
              f"  {r['accuracy_x86']:.3f} / {r['accuracy_arm64']:.3f}")
    print(f"native kernels ({kernel['isa']}): max error {kernel['max_err']} against the float64 reference, "
          f"{len(kernel['cases'])} shapes x 2 kernels x 2 thread counts: {'passed' if kernel['passed'] else 'FAILED'}")
    print("PASSED" if passed else "FAILED")
    return 0 if passed else 1


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "prepare":
        prepare(Path(argv[1]))
        return 0
    if len(argv) >= 3 and argv[0] == "kernels":
        return kernels(Path(argv[1]), Path(argv[2]))
    if len(argv) >= 2 and argv[0] == "compare":
        return compare(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
