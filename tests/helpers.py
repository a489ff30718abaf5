"""Test helpers: give normalization layers statistics far from their defaults."""

from __future__ import annotations

import torch
from torch import nn


def randomize_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm stats/affines, RepBN alphas, layer-scales, LN affines and
    XCA temperatures.

    Means away from 0, variances away from 1, biases away from 0, alpha away from 1, so
    that a fold that drops or misplaces any term is caught.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(shape, low, high):
        return torch.rand(shape, generator=g) * (high - low) + low

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(rand(c, -0.5, 0.5) + 0.3)
                module.running_var.copy_(rand(c, 0.4, 2.5))
                module.weight.copy_(rand(c, 0.5, 1.5))
                module.bias.copy_(rand(c, -0.3, 0.3) + 0.1)
            elif (isinstance(module, nn.LayerNorm) or getattr(module, "normalizes_then_scales", False)) \
                    and module.weight is not None:
                module.weight.copy_(rand(module.weight.shape, 0.5, 1.5))
                module.bias.copy_(rand(module.bias.shape, -0.2, 0.2))
            if hasattr(module, "alpha") and isinstance(module.alpha, nn.Parameter):
                module.alpha.copy_(rand(module.alpha.shape, 0.3, 0.8))
            for pname in ("gamma", "gamma_xca", "positional_encoding", "temperature"):
                p = getattr(module, pname, None)
                if isinstance(p, nn.Parameter):
                    p.copy_(rand(p.shape, -0.5, 0.5) if pname == "positional_encoding" else rand(p.shape, 0.2, 1.2))
            for pname, p in module.named_parameters(recurse=False):
                if pname == "bias" and isinstance(module, (nn.Linear, nn.Conv2d)):
                    p.copy_(rand(p.shape, -0.05, 0.05))
    return model


def onnx_normalization_ops(path) -> list[str]:
    """Normalization left in an ONNX graph: BatchNormalization/LayerNormalization nodes,
    and ReduceMean subgraphs that normalize (mean subtracted from its own input, or a
    mean of squares) -- a plain mean pooling is not one."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    found = [f"{n.op_type} {n.name}" for n in graph.node
             if n.op_type in ("BatchNormalization", "LayerNormalization", "InstanceNormalization",
                              "GroupNormalization", "RMSNormalization")]
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    for n in graph.node:
        if n.op_type != "ReduceMean":
            continue
        source = n.input[0]
        centering = any(c.op_type == "Sub" and source in c.input and n.output[0] in c.input
                        for c in consumers.get(n.output[0], []))
        src = producer.get(source)
        squares = src is not None and (src.op_type == "Pow" or (src.op_type == "Mul" and src.input[0] == src.input[1]))
        if centering or squares:
            found.append(f"ReduceMean normalization at {n.name}")
    return found
