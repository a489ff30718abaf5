"""The ``mobile`` ONNX form (``--ep nnapi|coreml``) against the default ONNX form.

For ``edgenext_xx_small`` and ``edgenext_small`` (256x256), ``slab_deit_tiny`` and
``fmvit_s`` (224x224), random weights:

- ONNX Runtime's mobile usability checker on both files (``edgevit check``): partitions,
  share of nodes and verdict for NNAPI, Core ML MLProgram and Core ML NeuralNetwork;
- CPU latency in ONNX Runtime, mobile / default, at 1 and 2 threads, interleaved round by
  round (median of per-round ratios): what a user pays on a CPU for the mobile form.

Then fidelity on real data: ``edgenext_xx_small`` trained on scikit-learn's digits (64x64,
2 epochs) and exported in both forms, each verified on 16 test digits it never saw and
compared on the whole test split (top-1 of each file against PyTorch's).

    python benchmarks/mobile_form.py [--rounds 8] [--runs 10] [--json out.json] [--models a,b]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import edgevit

from _timing import interleaved, ort_runner, ort_session, parse_args, publish, ratio  # noqa: E402,I001

MODELS = {"edgenext_xx_small": 256, "edgenext_small": 256, "slab_deit_tiny": 224, "fmvit_s": 224}
THREADS = (1, 2)
ACCELERATORS = ("NNAPI", "Core ML MLProgram", "Core ML NeuralNetwork")


def partitions(path: Path) -> dict:
    report = edgevit.check(path)
    return {a.accelerator: {"partitions": a.partitions, "share": round(a.share, 4), "suitable": a.suitable,
                            "unsupported": sorted(a.unsupported)} for a in report.accelerators}


def fidelity_on_digits(tmp: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from fidelity import VERIFY_SAMPLES, train

    model, data, size, accuracy = train("edgenext_xx_small", 2, {})
    rows = {"fp32_test_accuracy": accuracy}
    for form, extra in (("default", {}), ("mobile", {"ep": "nnapi"})):
        result = edgevit.export(model, "onnx", tmp / form, image_size=size, mean=data.mean, std=data.std,
                                verify_data={"images": data.x_test[:VERIFY_SAMPLES],
                                             "labels": data.y_test[:VERIFY_SAMPLES]}, **extra)
        runtime = edgevit.load(result.path)
        logits = np.concatenate([runtime.run(data.x_test[i:i + 1]) for i in range(len(data.x_test))])
        rows[form] = {"max_err_digits": result.parity.by_kind()["data"]["max_abs_err"],
                      "test_accuracy": float((logits.argmax(1) == data.y_test).mean()),
                      "form_change_float64": (result.form or {}).get("max_abs_change")}
        rows[f"{form}_logits"] = logits
    rows["max_logit_diff_test_split"] = float(np.abs(rows.pop("mobile_logits") - rows.pop("default_logits")).max())
    return rows


def main() -> int:
    args = parse_args(__doc__, rounds=8, runs=10, models=tuple(MODELS))
    result: dict = {"models": {}}
    lines = ["| model | form | " + " | ".join(f"{a} partitions (nodes)" for a in ACCELERATORS)
             + " | CPU mobile/default 1 thr | 2 thr |", "|---" * (3 + len(ACCELERATORS) + 1) + "|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            size = MODELS[name]
            files = {form: edgevit.export(name, "onnx", Path(tmp) / form, image_size=size, num_inputs=1,
                                          **({"ep": "nnapi"} if form == "mobile" else {})).path
                     for form in ("default", "mobile")}
            entry = {form: partitions(path) for form, path in files.items()}
            feed = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
            for threads in THREADS:
                runners = {form: ort_runner(ort_session(path, threads), feed) for form, path in files.items()}
                per_round = interleaved(runners, args.rounds, args.runs)
                entry[f"cpu_ratio_{threads}t"] = ratio(per_round, "mobile", "default")
                entry[f"default_ms_{threads}t"] = float(np.median(per_round["default"]))
            result["models"][name] = entry
            for form in ("default", "mobile"):
                cells = [f"{entry[form][a]['partitions']} ({100 * entry[form][a]['share']:.1f}%)" for a in ACCELERATORS]
                speed = [f"{entry['cpu_ratio_1t']:.3f}", f"{entry['cpu_ratio_2t']:.3f}"] if form == "mobile" else ["", ""]
                lines.append(f"| {name} | {form} | " + " | ".join(cells) + " | " + " | ".join(speed) + " |")
            print(lines[-2], lines[-1], sep="\n", flush=True)
        result["digits"] = fidelity_on_digits(Path(tmp))
    digits = result["digits"]
    lines.append(f"\ndigits (edgenext_xx_small, 64x64, trained 2 epochs, test top-1 in PyTorch "
                 f"{digits['fp32_test_accuracy']:.3f}): default file top-1 {digits['default']['test_accuracy']:.3f}, "
                 f"mobile file {digits['mobile']['test_accuracy']:.3f}; largest logit difference between the two "
                 f"files over the test split {digits['max_logit_diff_test_split']:.2g}; verified on 16 test digits: "
                 f"max err {digits['default']['max_err_digits']:.2g} / {digits['mobile']['max_err_digits']:.2g}")
    publish(result, lines, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
