"""A Core ML package's operators against what is known of the Apple Neural Engine.

Apple publishes no list of what the Neural Engine runs and no analyzer: Core ML decides
on the device, when it loads the model (Xcode's Core ML performance report shows the
outcome). So this check is **heuristic**, from public reports, and says so in its output:

- op types reported to fall back to the GPU or CPU: gather and scatter, recurrent layers,
  control flow, dilated convolutions (hollance/neural-engine, "Which Core ML layers are
  not supported by the ANE?", a community record of experiments);
- tensors with a dimension over 16384, and shapes not fixed at compile time (the limits
  reported for the Neural Engine's fixed-size buffers);
- custom layers (no public API programs the Neural Engine).

Everything else counts as eligible: an upper bound, not a promise.
"""

from __future__ import annotations

from .accelerators import AcceleratorReport, grade, group_layers, partitions_in_order

FALLS_BACK = {  # MIL op type -> why (public reports, see the module docstring)
    **{op: "gather: reported to run off the Neural Engine" for op in
       ("gather", "gather_nd", "gather_along_axis")},
    **{op: "scatter: reported to run off the Neural Engine" for op in
       ("scatter", "scatter_nd", "scatter_along_axis")},
    **{op: "recurrent layer: reported to run off the Neural Engine" for op in ("lstm", "gru", "rnn")},
    **{op: "control flow: shapes not fixed at compile time" for op in ("while_loop", "cond")},
}
LARGEST_DIMENSION = 16384
NOT_COUNTED = {"const"}  # weights and constants, not work


def check_mlpackage(runtime) -> tuple[list[AcceleratorReport], list[str]]:
    """The Neural Engine heuristic over the ML program of a loaded Core ML runtime."""
    ops = [op for op in runtime.operations() if op.type not in NOT_COUNTED]
    reasons = [_reason(op) for op in ops]
    supported = [reason is None for reason in reasons]
    partitions = partitions_in_order(supported)
    share = sum(supported) / len(ops) if ops else 0.0
    pairs = [(f"{op.type} ({reason})", op.outputs[0].name if op.outputs else op.type)
             for op, reason in zip(ops, reasons) if reason is not None]
    flagged = len(ops) - sum(supported)
    verdict = ("no operator known to fall off the Neural Engine; Core ML still decides on the device"
               if not flagged else
               f"{flagged} operator{'s' * (flagged != 1)} known to fall off the Neural Engine split the program "
               f"into {partitions} Neural Engine part{'s' * (partitions != 1)}")
    return [AcceleratorReport(
        accelerator="Apple Neural Engine", analyzer="edgevit op census against public reports (heuristic)",
        nodes=len(ops), supported=sum(supported), partitions=partitions, suitable=grade(partitions, share),
        verdict=verdict, unsupported=group_layers(pairs), heuristic=True)], [
        "Core ML places operators on the device when it loads the model; no analyzer outside Xcode can say "
        "for certain (Xcode: open the model, Performance tab)"]


def _reason(op) -> str | None:
    """Why ``op`` is known to run off the Neural Engine, or None."""
    if op.type in FALLS_BACK:
        return FALLS_BACK[op.type]
    if "." in op.type or op.type.startswith("custom"):
        return "custom layer: no public API runs it on the Neural Engine"
    if op.type == "conv" and _dilated(op):
        return "dilated convolution: reported to run off the Neural Engine"
    for output in op.outputs:
        dims = output.type.tensorType.dimensions if output.type.WhichOneof("type") == "tensorType" else []
        if any(d.WhichOneof("dimension") != "constant" for d in dims):
            return "a shape not fixed at compile time"
        if any(d.constant.size > LARGEST_DIMENSION for d in dims):
            return f"a dimension over {LARGEST_DIMENSION}"
    return None


def _dilated(op) -> bool:
    binding = op.inputs.get("dilations")
    if binding is None or not binding.arguments or binding.arguments[0].name:
        return False
    value = binding.arguments[0].value
    values = value.immediateValue.tensor.ints.values if value.WhichOneof("value") == "immediateValue" else []
    return any(v != 1 for v in values)
