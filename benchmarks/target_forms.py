"""Target forms: edgevit's exports against a plain converter call on the model as trained.

For ``edgenext_xx_small`` and ``edgenext_small`` (256x256) and ``slab_deit_tiny`` (224x224),
batch 1, one process:

- ONNX Runtime: ``edgevit.export(..., "onnx")`` against ``torch.onnx.export(model)``;
- LiteRT (XNNPACK): ``edgevit.export(..., "tflite")`` (the app form: NHWC pixels) against
  ``litert_torch.convert(model)``;
- Core ML: ``edgevit.export(..., "coreml")`` against ``torch.export`` + ``coremltools.convert``,
  compared by non-const MIL op count and ``transpose`` count (Core ML runs on Apple only);
- SLAB-DeiT-T folded against the LayerNorm DeiT-T (both as edgevit exports them), in ONNX
  Runtime and LiteRT.

Every latency is timed at 1 and 2 threads, all candidates interleaved round by round, and
reported as the median of per-round ratios. Per-op profiles explain where the time goes:
ONNX Runtime's profiler (microseconds per operator type), the LiteRT op census (what the
interpreter runs), the Core ML op census.

    python benchmarks/target_forms.py [--rounds 10] [--runs 10] [--json out.json] [--models a,b]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import edgevit
from edgevit.quiet import quiet_converters
from edgevit.runtimes.loader import load

from _timing import interleaved, ort_op_profile, ort_runner, ort_session, parse_args, publish, ratio, summary  # noqa: E402,I001
from reparam_latency import layernorm_counterpart  # noqa: E402

MODELS = {"edgenext_xx_small": 256, "edgenext_small": 256, "slab_deit_tiny": 224}
THREADS = (1, 2)
TARGETS = {"onnx": 0.7, "tflite": 0.8, "coreml_ops": 0.6, "coreml_transposes": 4, "slab_speedup": 1.15}


def plain_onnx(model, x, path: Path) -> Path:
    with quiet_converters():
        torch.onnx.export(model, (x,), str(path))  # the default call a user would write
    return path


def plain_tflite(model, x, path: Path) -> Path:
    import litert_torch

    with quiet_converters():
        litert_torch.convert(model, (x,)).export(str(path))
    return path


def plain_coreml(model, x, path: Path) -> Path:
    import coremltools as ct

    with quiet_converters(), torch.inference_mode():
        program = torch.export.export(model, (x,)).run_decompositions({})
        ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16).save(str(path))
    return path


def census(path: Path) -> dict[str, int]:
    return load(path, integrity_check=False).op_census()


def coreml_counts(path: Path) -> dict:
    ops = census(path)
    return {"non_const_ops": sum(n for op, n in ops.items() if op != "const"),
            "transposes": ops.get("transpose", 0), "ops": ops}


def runner(path: Path, threads: int, feed: np.ndarray):
    """A no-argument call running the artifact with ``threads`` threads."""
    if path.suffix == ".onnx":
        return ort_runner(ort_session(path, threads), feed)
    runtime = load(path, threads=threads, integrity_check=False)
    return lambda: runtime.run(feed)


def latency_ratios(per_round: dict, a: str, b: str) -> dict[str, float]:
    """latency(``a``) / latency(``b``) per runtime and thread count ("onnx_2t": ...)."""
    return {f"{target}_{threads}t": round(ratio(per_round, f"{a}/{target}/{threads}t", f"{b}/{target}/{threads}t"), 3)
            for threads in THREADS for target in ("onnx", "tflite")}


def main() -> int:
    args = parse_args(__doc__, rounds=10, runs=10, models=list(MODELS))
    models = {m: MODELS[m] for m in args.models}
    torch.manual_seed(0)
    result: dict = {"models": {}, "targets": TARGETS}
    candidates, lines = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name, size in models.items():
            model = edgevit.create_model(name)
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
            pixels = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype(np.float32)
            print(f"exporting {name} ...", file=sys.stderr)
            ours = {t: edgevit.export(name, t, out / "edgevit", image_size=size) for t in ("onnx", "tflite", "coreml")}
            plain = {"onnx": plain_onnx(model, x, out / f"{name}_plain.onnx"),
                     "tflite": plain_tflite(model, x, out / f"{name}_plain.tflite"),
                     "coreml": plain_coreml(model, x, out / f"{name}_plain.mlpackage")}
            entry = {"image_size": size,
                     "forms": {t: (r.form or {}).get("form", "as trained") for t, r in ours.items()},
                     "coreml": {"edgevit": coreml_counts(ours["coreml"].path), "plain": coreml_counts(plain["coreml"])},
                     "onnx_profile_us": {"edgevit": ort_op_profile(ours["onnx"].path, 2),
                                         "plain": ort_op_profile(plain["onnx"], 2)},
                     "tflite_ops": {"edgevit": census(ours["tflite"].path), "plain": census(plain["tflite"])}}
            result["models"][name] = entry
            for threads in THREADS:
                for target, feed in (("onnx", x.numpy()), ("tflite", pixels)):
                    candidates[f"{name}/edgevit/{target}/{threads}t"] = runner(ours[target].path, threads, feed)
                    candidates[f"{name}/plain/{target}/{threads}t"] = runner(plain[target], threads, x.numpy())
            if name == "slab_deit_tiny":
                deit = layernorm_counterpart()
                ln = {t: edgevit.export(deit, t, out / "layernorm", image_size=size).path for t in ("onnx", "tflite")}
                entry["layernorm_deit_onnx_profile_us"] = ort_op_profile(ln["onnx"], 2)
                for threads in THREADS:
                    candidates[f"deit_layernorm/edgevit/onnx/{threads}t"] = runner(ln["onnx"], threads, x.numpy())
                    candidates[f"deit_layernorm/edgevit/tflite/{threads}t"] = runner(ln["tflite"], threads, pixels)
        print(f"timing {len(candidates)} candidates, interleaved ...", file=sys.stderr)
        per_round = interleaved(candidates, args.rounds, args.runs, pause=0.05)

    for name, entry in result["models"].items():
        entry["latency_ratio_edgevit_vs_plain"] = ratios = latency_ratios(per_round, f"{name}/edgevit", f"{name}/plain")
        for key, value in ratios.items():
            target = f" (target <= {TARGETS[key.split('_')[0]]}x)" if name.startswith("edgenext") else ""
            lines.append(f"{name:18s} {key:9s}: edgevit / plain latency {value:.3f}x{target}")
        ours, plain = entry["coreml"]["edgevit"], entry["coreml"]["plain"]
        entry["coreml"]["op_ratio"] = round(ours["non_const_ops"] / plain["non_const_ops"], 3)
        lines.append(f"{name:18s} coreml: {ours['non_const_ops']} vs {plain['non_const_ops']} non-const ops "
                     f"({entry['coreml']['op_ratio']:.3f}x, target <= {TARGETS['coreml_ops']}x), transposes "
                     f"{ours['transposes']} vs {plain['transposes']} (target <= {TARGETS['coreml_transposes']})")
    if "slab_deit_tiny" in result["models"]:
        speedups = latency_ratios(per_round, "deit_layernorm/edgevit", "slab_deit_tiny/edgevit")
        result["slab_speedup_vs_layernorm_deit"] = speedups
        lines += [f"slab_deit_tiny vs LayerNorm DeiT-T {key:9s}: {value:.3f}x faster "
                  f"(target >= {TARGETS['slab_speedup']}x)" for key, value in speedups.items()]
    result = summary(per_round, args, list(THREADS), [1, 3, "H", "W"], **result)
    publish(result, lines, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
