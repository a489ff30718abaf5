"""LiteRT's model analyzer with GPU-delegate compatibility, on a TFLite artifact.

The per-operator verdict is the vendor's (``ai_edge_litert``'s ``ModelAnalyzer``, the
``tf.lite.experimental.Analyzer`` of TensorFlow, which calls the GPU delegate's own
``CheckGpuDelegateCompatibility`` on every operator). It counts no partitions: edgevit
counts the runs of compatible operators in execution order, the way the delegate takes
them. A compatible graph may still fail on a device's GPU driver (the analyzer says so).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ArtifactError, first_line
from ..optional import require
from .accelerators import AcceleratorReport, grade, group_layers, partitions_in_order

_OP = re.compile(r"^\s+Op#(\d+) (\w+)\(.*\) -> \[(.*)\]$")
_TENSOR = re.compile(r"^\s+T#(\d+)\((.*)\) shape")
_WARNING = "GPU COMPATIBILITY WARNING: "


def check_tflite(path: Path) -> tuple[list[AcceleratorReport], list[str]]:
    """The GPU delegate's view of the TFLite model at ``path``."""
    litert = require("ai_edge_litert", "to check a TFLite model for the GPU delegate")
    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer
    except ImportError:
        raise ArtifactError(f"ai-edge-litert {getattr(litert, '__version__', '')} has no model analyzer; "
                            "pip install -U ai-edge-litert") from None
    try:
        text = analyzer.ModelAnalyzer(str(path), True, True)
    except Exception as exc:
        raise ArtifactError(f"LiteRT's analyzer cannot read {path}: {first_line(exc)}") from None
    ops, problems, tensors, verdict = parse_analysis(text)
    supported = [index not in problems for index in range(len(ops))]
    partitions = partitions_in_order(supported)
    share = sum(supported) / len(ops) if ops else 0.0
    pairs = [(f"{ops[i][0]} ({reason})", _layer(tensors, ops[i][1])) for i, reason in sorted(problems.items())]
    return [AcceleratorReport(
        accelerator="TFLite GPU delegate",
        analyzer=f"ai-edge-litert {getattr(litert, '__version__', '?')} model analyzer (GPU compatibility)",
        nodes=len(ops), supported=sum(supported), partitions=partitions, suitable=grade(partitions, share),
        verdict=verdict, unsupported=group_layers(pairs))], []


def parse_analysis(text: str) -> tuple[list[tuple[str, list[int]]], dict[int, str], dict[int, str], str]:
    """The analyzer's text as (op name, output tensors) of the first subgraph in order,
    {op index: the warning about it}, {tensor: name} and its closing verdict."""
    ops: list[tuple[str, list[int]]] = []
    problems: dict[int, str] = {}
    tensors: dict[int, str] = {}
    verdict: list[str] = []
    subgraphs = 0
    for line in text.splitlines():
        if line.startswith("Subgraph#"):
            subgraphs += 1
        if subgraphs > 1:  # the model's own graph is the first; others are its control flow
            if line.startswith("Your model"):
                verdict.append(line.strip())
            continue
        op = _OP.match(line)
        tensor = _TENSOR.match(line)
        if op:
            ops.append((op.group(2), [int(t) for t in re.findall(r"T#(\d+)", op.group(3))]))
        elif tensor:
            tensors[int(tensor.group(1))] = tensor.group(2)
        elif line.startswith(_WARNING) and ops and "has GPU delegate compatibility issues" not in line:
            problems[len(ops) - 1] = line[len(_WARNING):].strip()
        elif line.startswith(("Your model", "This does not guarantee", "GPU COMPATIBILITY WARNING: Subgraph")):
            verdict.append(line.strip())
    return ops, problems, tensors, " ".join(v for v in verdict if "subgraph(s)" not in v)


def _layer(tensors: dict[int, str], outputs: list[int]) -> str:
    """The PyTorch scope in an output tensor's name, below the model: litert-torch writes
    one ``Class_attribute`` per level (``...EdgeNeXt_model/...Sequential_0/...ConvEncoder_1``;
    a container's children keep only their index)."""
    name = tensors.get(outputs[0], "") if outputs else ""
    levels = [level.rsplit(".", 1)[-1] for level in name.split(";")[0].split("/")]
    below = [level for level in levels[2:] if "_" in level]  # under ArtifactModule/Model_model
    return "/".join(below) or name or "?"
