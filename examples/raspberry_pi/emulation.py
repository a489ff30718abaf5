"""The x86 and arm64 halves of emulate.sh.

    python emulation.py prepare WORK   # here (workstation profile): artifacts, images, x86 scores, kernel cases
    python emulation.py kernels CASES OUT.json   # in the arm64 root (device profile): the C++ kernels' parity
    python -I emulation.py native-ort LIBRARY DIR OUT.json   # in the arm64 root: onnxruntime + numpy only
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
    write_native_ort_cases(model, data, common, host / "native")


def write_native_ort_cases(model, data, common: dict, folder: Path) -> None:
    """What the arm64 root runs with libedgevit_ort.so and nothing of edgevit: the trained model
    exported standard and with --native-ops (XCA nodes), one graph per custom op (XCA, SLA,
    RLMHSA) on seeded inputs, and x86's outputs of all of them."""
    import edgevit
    import torch
    from onnx import TensorProto, helper

    from edgevit.models.fmvit import pooled_attention
    from edgevit.native import ort_library

    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("standard", "native"):
        result = edgevit.export(model, "onnx", folder / f"export-{kind}", native_ops=kind == "native", **common)
        (folder / f"model-{kind}.onnx").write_bytes(result.path.read_bytes())
    inputs = {"model": data.x_test[:IMAGES].astype(np.float32)}
    rng = np.random.default_rng(7)
    ops = {"XCA": (rng.standard_normal((2, 49, 3 * 4 * 12)), rng.uniform(0.25, 2.5, 4), 4),
           "SLA": (rng.standard_normal((2, 49, 3 * 3 * 64)), 0.5 * rng.standard_normal((49, 3 * 64)), 3),
           "RLMHSA": (rng.standard_normal((2, 2 * 16, 28, 28)) / 4, rng.standard_normal((2, 4 * 16, 7, 7)), 2)}
    for op, (first, second, heads) in ops.items():
        node = helper.make_node(op, ["a", "b"], ["y"], domain="ai.edgevit", heads=heads)
        graph = helper.make_graph([node], op, [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                               for n in ("a", "b")],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                              helper.make_opsetid("ai.edgevit", 1)])
        (folder / f"op-{op}.onnx").write_bytes(model_proto.SerializeToString())
        inputs[f"{op}_a"], inputs[f"{op}_b"] = first.astype(np.float32), second.astype(np.float32)
    np.savez(folder / "inputs.npz", **inputs)
    # float64 references of the single ops
    q64 = {op: torch.from_numpy(inputs[f"{op}_a"]).double() for op in ops}
    from edgevit.models.edgenext_layers import cross_covariance_attention
    from edgevit.models.slab_layers import simplified_linear_attention

    references = {
        "XCA": cross_covariance_attention(q64["XCA"], torch.from_numpy(inputs["XCA_b"]).double(), 4),
        "SLA": simplified_linear_attention(q64["SLA"], torch.from_numpy(inputs["SLA_b"]).double(), 3),
        "RLMHSA": pooled_attention(q64["RLMHSA"], torch.from_numpy(inputs["RLMHSA_b"]).double(), 2),
    }
    np.savez(folder / "references.npz", **{op: ref.numpy() for op, ref in references.items()})
    x86 = run_native_ort(str(ort_library.path()), folder)
    np.savez(folder / "x86.npz", **x86)


def run_native_ort(library: str, folder: Path) -> dict[str, np.ndarray]:
    """Every graph of ``folder`` in ONNX Runtime with ``library`` registered: onnxruntime and numpy only."""
    import onnxruntime as ort

    def session(path: Path, with_library: bool):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        if with_library:
            options.register_custom_ops_library(library)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    inputs = np.load(folder / "inputs.npz")
    outputs = {}
    for kind in ("standard", "native"):
        model = session(folder / f"model-{kind}.onnx", kind == "native")
        name = model.get_inputs()[0].name
        outputs[f"model-{kind}"] = np.concatenate([model.run(None, {name: x[None]})[0] for x in inputs["model"]])
    for op in ("XCA", "SLA", "RLMHSA"):
        outputs[op] = session(folder / f"op-{op}.onnx", True).run(None, {"a": inputs[f"{op}_a"],
                                                                          "b": inputs[f"{op}_b"]})[0]
    return outputs


def native_ort(library: str, folder: Path, out: Path) -> int:
    """The arm64 side of the no-Python test: run every graph, save the outputs, say what was imported."""
    outputs = run_native_ort(library, folder)
    np.savez(out.with_suffix(".npz"), **outputs)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("edgevit", "torch", "onnxruntime_extensions"))
    out.write_text(json.dumps({"library": library, "loaded": loaded}))
    print(f"libedgevit_ort on arm64: {len(outputs)} graphs run; modules of edgevit/torch loaded: {loaded or 'none'}")
    return 0 if not loaded else 1


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
    native = compare_native_ort(work)
    passed &= native["passed"]
    report = {"passed": passed, "demo": rows, "kernels": kernel, "native_ort": native,
              "timings": (work / "timings.txt").read_text().splitlines() if (work / "timings.txt").exists() else []}
    (work / "results.json").write_text(json.dumps(report, indent=1))
    print(f"{'runtime':<18}{'artifact':<13}{'max |x86 - arm64|':>18}{'limit':>9}  top-1 equal  accuracy x86/arm64")
    for r in rows:
        limit = f"{r['limit']:g}" if r["limit"] is not None else "-"
        print(f"{r['runtime']:<18}{r['artifact']:<13}{r['max_abs_err']:>18.3g}{limit:>9}  {str(r['top1_equal']):<11}"
              f"  {r['accuracy_x86']:.3f} / {r['accuracy_arm64']:.3f}")
    print(f"native kernels ({kernel['isa']}): max error {kernel['max_err']} against the float64 reference, "
          f"{len(kernel['cases'])} shapes x 2 kernels x 2 thread counts: {'passed' if kernel['passed'] else 'FAILED'}")
    print(f"libedgevit_ort on arm64, no Python in the loop: native model vs x86's standard export "
          f"{native['model_vs_x86_standard']:.3g}, single ops vs float64 {native['ops_vs_reference']:.3g}, "
          f"vs x86 {native['ops_vs_x86']:.3g} (limit {KERNEL_ATOL:g}): {'passed' if native['passed'] else 'FAILED'}")
    print("PASSED" if passed else "FAILED")
    return 0 if passed else 1


def compare_native_ort(work: Path) -> dict:
    """arm64's runs of the native graphs against x86's standard export, x86's runs and float64."""
    x86, arm = np.load(work / "host" / "native" / "x86.npz"), np.load(work / "arm64-native-ort.npz")
    references = np.load(work / "host" / "native" / "references.npz")
    meta = json.loads((work / "arm64-native-ort.json").read_text())
    ops = ("XCA", "SLA", "RLMHSA")
    row = {
        "model_vs_x86_standard": float(np.abs(arm["model-native"] - x86["model-standard"]).max()),
        "model_vs_x86_native": float(np.abs(arm["model-native"] - x86["model-native"]).max()),
        "ops_vs_reference": max(float(np.abs(arm[op] - references[op]).max()) for op in ops),
        "ops_vs_x86": max(float(np.abs(arm[op] - x86[op]).max()) for op in ops),
        "top1_equal": bool((arm["model-native"].argmax(1) == x86["model-standard"].argmax(1)).all()),
        "modules_loaded": meta["loaded"],
    }
    row["passed"] = bool(not meta["loaded"] and row["top1_equal"] and max(
        row["model_vs_x86_standard"], row["ops_vs_reference"], row["ops_vs_x86"]) <= KERNEL_ATOL)
    return row


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "prepare":
        prepare(Path(argv[1]))
        return 0
    if len(argv) >= 3 and argv[0] == "kernels":
        return kernels(Path(argv[1]), Path(argv[2]))
    if len(argv) >= 4 and argv[0] == "native-ort":
        return native_ort(argv[1], Path(argv[2]), Path(argv[3]))
    if len(argv) >= 2 and argv[0] == "compare":
        return compare(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
