"""Which layers int8 hurts most: each weight layer quantized alone, in PyTorch.

For every Conv2d and Linear of the model, its weights are rounded to int8 per output
channel (symmetric) and, unless only weights are quantized, its input to 8 bits per tensor
with the range seen on the calibration samples: the scheme every edgevit int8 target uses
for these layers. The model then runs on probe samples with only that layer quantized, and
the layer's score is the SNR of the final output against the float model's. Quantizing one
at a time measures what each layer does to the prediction (a layer's own output error
says little about how later layers amplify it) at the cost of one forward pass per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..optional import require

_BATCH = 16


@dataclass
class LayerSensitivity:
    """One layer: its torch.export node name (what the artifact's op is named after), its
    module path and type, and the output SNR with only this layer in int8."""

    name: str
    module: str
    kind: str
    snr_db: float

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.name, "module": self.module, "kind": self.kind, "snr_db": round(self.snr_db, 2)}


def weight_layers(program: Any) -> dict[str, str]:
    """torch.export node name -> module path, for every conv2d/linear call in ``program``."""
    torch = require("torch", "to rank layers")
    targets = {torch.ops.aten.linear.default, torch.ops.aten.conv2d.default}
    layers = {}
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") if node.op == "call_function" and node.target in targets else None
        if stack:
            layers[node.name] = list(stack.values())[-1][0]
    return layers


def rank_layers(module: Any, program: Any, calibration: np.ndarray, probe: np.ndarray,
                weights_only: bool) -> list[LayerSensitivity]:
    """The weight layers of ``module`` (traced as ``program``), most sensitive first."""
    torch = require("torch", "to rank layers")
    modules = dict(module.named_modules())
    layers = {name: path for name, path in weight_layers(program).items() if path in modules}
    ranges = {} if weights_only else _input_ranges(module, {modules[p] for p in layers.values()}, calibration)
    reference = _run(module, probe)
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    scores = []
    for name, path in layers.items():
        layer = modules[path]
        original = layer.weight.data.clone()
        handle = None
        if not weights_only:
            low, high = ranges[layer]
            handle = layer.register_forward_pre_hook(lambda _m, args, lo=low, hi=high: (_fake_quant(args[0], lo, hi),))
        try:
            layer.weight.data = _quantize_per_channel(original, torch)
            noise = float(np.sum((_run(module, probe).astype(np.float64) - reference) ** 2))
        finally:
            layer.weight.data = original
            if handle is not None:
                handle.remove()
        snr = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
        scores.append(LayerSensitivity(name, path, type(layer).__name__, snr))
    return sorted(scores, key=lambda s: s.snr_db)


def _run(module: Any, inputs: np.ndarray) -> np.ndarray:
    torch = require("torch", "to rank layers")
    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(inputs[i:i + _BATCH])).reshape(
            len(inputs[i:i + _BATCH]), -1).numpy() for i in range(0, len(inputs), _BATCH)])


def _input_ranges(module: Any, layers: set, calibration: np.ndarray) -> dict[Any, tuple[float, float]]:
    """(min, max) of each layer's input over the calibration samples (0 always inside)."""
    ranges: dict[Any, tuple[float, float]] = {layer: (0.0, 0.0) for layer in layers}

    def record(layer, args):
        low, high = ranges[layer]
        ranges[layer] = (min(low, float(args[0].min())), max(high, float(args[0].max())))

    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        _run(module, calibration)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def _quantize_per_channel(weight: Any, torch) -> Any:
    """Symmetric int8 per output channel (axis 0), rounded back to float."""
    flat = weight.reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return torch.clamp(torch.round(weight / scale.reshape(shape)), -127, 127) * scale.reshape(shape)


def _fake_quant(x: Any, low: float, high: float) -> Any:
    """Asymmetric 8-bit per tensor over [low, high], rounded back to float."""
    import torch

    scale = max(high - low, 1e-12) / 255
    zero = round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
