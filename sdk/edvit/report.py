"""``report.json`` and ``report.md`` of a split: accuracy, sizes, latency, placement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .data import Dataset
from .latency import predict_latency
from .plan import SplitPlan


def build_report(plan: SplitPlan, data: Dataset, *, full_accuracy: float, fused_accuracy: float,
                 deployed_accuracy: float, separate_accuracy: float, joint_epochs: int, partition: str,
                 seconds: float) -> dict[str, Any]:
    """The figures of a finished split, with the latency the plan predicts on its devices."""
    full_params = plan.model["params"]
    full_size_bytes = plan.model["artifacts"]["onnx"]["size_bytes"]
    rows = []
    for entry in plan.submodels:
        onnx = entry.artifacts["onnx"]
        rows.append({
            "name": entry.name, "classes": [plan.classes[c] for c in entry.classes],
            "device": plan.assignment[entry.name], "params": entry.params, "size_bytes": onnx.size_bytes,
            "params_reduction": round(full_params / entry.params, 2),
            "size_reduction": round(full_size_bytes / onnx.size_bytes, 2),
            "gflops": entry.gflops, "latency_ms": entry.latency_ms,
        })
    fusion_bytes = plan.fusion["artifacts"]["onnx"]["size_bytes"]
    return {
        "data": {"source": data.source, "train": int(len(data.y_train)), "test": int(len(data.y_test)),
                 "classes": data.num_classes, "image_size": data.image_size},
        "num_submodels": len(plan.submodels),
        "partition": partition,
        "budget": plan.budget,
        "accuracy": {"full": full_accuracy, "fused": fused_accuracy, "fused_deployed": deployed_accuracy,
                     "fused_before_joint": separate_accuracy, "joint_epochs": joint_epochs,
                     "fused_minus_full_points": round(100 * (fused_accuracy - full_accuracy), 2)},
        "full_model": {"name": plan.model["name"], "params": full_params, "size_bytes": full_size_bytes,
                       "latency_ms": plan.model["latency_ms"]},
        "submodels": rows,
        "fusion": {"size_bytes": fusion_bytes, "input_dim": plan.fusion["input_dim"],
                   "latency_ms": plan.fusion["latency_ms"]},
        "predicted_latency": predicted_latencies(plan),
        "total": {"params": sum(r["params"] for r in rows), "size_bytes": sum(r["size_bytes"] for r in rows) + fusion_bytes,
                  "min_params_reduction": min(r["params_reduction"] for r in rows)},
        "placement": dict(plan.placement, assignment=plan.assignment),
        "latency_note": "median of single-image runs, ONNX Runtime, 1 thread, on the machine that ran the split",
        "seconds": round(seconds, 1),
    }


def predicted_latencies(plan: SplitPlan) -> dict[str, Any]:
    """The plan's predicted per-request latency on its devices, and the full model's on each
    device that could hold it."""
    split = predict_latency(plan).to_dict()
    full_mb = plan.model["artifacts"]["onnx"]["size_bytes"] / 1e6
    unsplit = {d.name: (predict_latency(plan, assignment={"full": d.name}).to_dict()["total_ms"]
                        if d.memory_mb >= full_mb else None) for d in plan.devices}
    return {"split": split, "unsplit_on": unsplit}


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page."""
    acc, full, total = report["accuracy"], report["full_model"], report["total"]
    lines = [
        f"# ED-ViT split: {full['name']} into {report['num_submodels']} sub-models",
        "",
        f"Data: {report['data']['source']} ({report['data']['train']} train / {report['data']['test']} test images, "
        f"{report['data']['classes']} classes, {report['data']['image_size']}x{report['data']['image_size']}); "
        f"partition: {report['partition']}; budget: {report['budget']['given_as']} "
        f"(at most {report['budget']['max_params']:,} parameters per sub-model).",
        "",
        "| | test accuracy |",
        "|---|---|",
        f"| full model | {acc['full']:.4f} |",
        f"| fused split (PyTorch) | {acc['fused']:.4f} ({acc['fused_minus_full_points']:+.2f} points) |",
        f"| fused split (exported ONNX artifacts) | {acc['fused_deployed']:.4f} |",
        f"| fused split before the {acc['joint_epochs']} joint fine-tuning epochs | {acc['fused_before_joint']:.4f} |",
        "",
        "| model | classes | device | params | x smaller (params) | ONNX size | x smaller (size) | GFLOPs | latency (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| full | all | - | {full['params']:,} | 1 | {full['size_bytes'] / 1e6:.2f} MB | 1 | - | {full['latency_ms']:.3f} |",
    ]
    for row in report["submodels"]:
        lines.append(
            f"| {row['name']} | {', '.join(row['classes'])} | {row['device']} | {row['params']:,} | "
            f"{row['params_reduction']:.1f} | {row['size_bytes'] / 1e6:.2f} MB | {row['size_reduction']:.1f} | "
            f"{row['gflops']:.4f} | {row['latency_ms']:.3f} |")
    lines += [
        f"| fusion head | all | coordinator | - | - | {report['fusion']['size_bytes'] / 1e3:.1f} KB | - | - | - |",
        "",
        f"Total: {total['params']:,} parameters in the sub-models, {total['size_bytes'] / 1e6:.2f} MB of artifacts "
        f"(fusion head included). Smallest reduction: {total['min_params_reduction']:.1f}x fewer parameters.",
        "",
        f"Placement (slowest device load {report['placement']['makespan']:.4g} {report['placement']['work_unit']}"
        f"{'' if report['placement']['optimal'] else ', best found within the search budget'}): "
        + ", ".join(f"{s} -> {d}" for s, d in report["placement"]["assignment"].items()) + ".",
        "",
        f"Latency: {report['latency_note']}.",
        "",
        *_predicted_lines(report["predicted_latency"]),
    ]
    return "\n".join(lines)


def _predicted_lines(predicted: dict[str, Any]) -> list[str]:
    split = predicted["split"]
    lines = [f"Predicted per-request latency on the devices (batch 1; compute scaled by each device's speed and CPU "
             f"share, the {split['input_bytes']:,}-byte input and the features over each link): "
             f"**{split['total_ms']:.2f} ms** split (slowest device {split['critical_device']}, fusion "
             f"{split['fusion_ms']:.2f} ms).", "",
             "| device | send (ms) | compute (ms) | receive (ms) | total (ms) | unsplit model there (ms) |",
             "|---|---|---|---|---|---|"]
    for name, unsplit in predicted["unsplit_on"].items():
        parts = split["devices"].get(name)
        cells = ([f"{parts[k]:.2f}" for k in ("send", "compute", "receive", "total")] if parts else ["-"] * 4)
        lines.append(f"| {name} | {' | '.join(cells)} | {'does not fit' if unsplit is None else f'{unsplit:.2f}'} |")
    return [*lines, ""]


def write_report(report: dict[str, Any], directory: Path) -> None:
    """Write ``report.json`` and ``report.md`` into ``directory``."""
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (directory / "report.md").write_text(render_markdown(report), encoding="utf-8")
