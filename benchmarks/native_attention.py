"""Native attention kernels vs PyTorch eager and ONNX Runtime, batch 1, side by side.

Every attention shape of edgenext_xx_small, edgenext_small (256x256) and slab_deit_tiny
(224x224) is read from the models themselves (forward hooks on each attention module's
``qkv`` projection). For each shape, three implementations of the same op, on the same
(B, N, 3C) qkv input:

- eager: the PyTorch reference composition (``cross_covariance_attention`` /
  ``simplified_linear_attention``) under ``torch.inference_mode``;
- ORT: that composition exported alone (``torch.onnx.export(dynamo=True)``, optimized) and
  run by an ONNX Runtime CPU session;
- native: ``edgevit.native.xca`` / ``.sla``, the fused C++ kernel.

The native output is checked against eager first (max abs err < 1e-5). All shapes and
implementations are then timed round-robin in the same rounds, and compared by medians of
per-round ratios. Last, edgenext_small end to end in PyTorch eager with its attention on
the native ops (``edgevit.native.torch_ops.use_native``) vs the PyTorch ops, interleaved too.

    python benchmarks/native_attention.py [--threads 1] [--rounds 15] [--runs 100] [--model-runs 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

import edgevit
from edgevit import native
from edgevit.models.edgenext_layers import XCA, cross_covariance_attention
from edgevit.models.registry import get_spec
from edgevit.models.slab_layers import simplified_linear_attention
from edgevit.native.torch_ops import attention_modules, use_native
from edgevit.quiet import quiet_converters

from _timing import interleaved, ort_runner, ort_session, ratio  # noqa: E402,I001

MODELS = ("edgenext_xx_small", "edgenext_small", "slab_deit_tiny")
END_TO_END = "edgenext_small"
IMPLS = ("eager", "ORT", "native")
OPS = {"xca": (cross_covariance_attention, native.xca), "sla": (simplified_linear_attention, native.sla)}
TOLERANCE = 1e-5
TARGET_VS_EAGER = 2.0  # native at least this many times faster than eager, and faster than ORT


@dataclass(frozen=True)
class Case:
    """One attention shape of one model."""

    model: str
    op: str
    channels: int
    heads: int
    tokens: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.op} C={self.channels} N={self.tokens}"


def model_cases(name: str) -> list[Case]:
    """The distinct attention shapes of ``name`` at batch 1 and its registered input size."""
    model = edgevit.create_model(name).eval()
    found: dict[Case, None] = {}  # insertion-ordered set
    hooks = []
    for module in attention_modules(model):
        op = "xca" if isinstance(module, XCA) else "sla"

        def record(_module, _inputs, qkv, op=op, heads=module.num_heads) -> None:
            found[Case(name, op, qkv.shape[-1] // 3, heads, qkv.shape[1])] = None

        hooks.append(module.qkv.register_forward_hook(record))
    with torch.inference_mode():
        model(torch.zeros(1, *get_spec(name).input_size))
    for hook in hooks:
        hook.remove()
    return list(found)


class Reference(nn.Module):
    """The reference composition of one op, its temperature / positional table a parameter."""

    def __init__(self, fn, table: torch.Tensor, heads: int) -> None:
        super().__init__()
        self.fn, self.heads = fn, heads
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        return self.fn(qkv, self.table, self.heads)


def candidates(case: Case, scratch: Path, threads: int) -> tuple[dict, float]:
    """No-argument calls of the three implementations, and native's max abs err vs eager."""
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, case.tokens, 3 * case.channels, generator=gen)
    if case.op == "xca":
        table = 0.5 + torch.rand(case.heads, generator=gen)  # temperature per head
    else:
        table = 0.1 * torch.randn(case.tokens, case.channels, generator=gen)  # positional
    reference, kernel = OPS[case.op]
    module = Reference(reference, table, case.heads).eval()
    with quiet_converters():
        program = torch.onnx.export(module, (qkv,), dynamo=True, verbose=False)
        program.optimize()
    path = scratch / f"{case.model}_{case.op}_{case.tokens}.onnx"
    path.write_bytes(program.model_proto.SerializeToString())

    feed, table_np = qkv.numpy(), table.numpy()
    calls = {
        "eager": lambda: module(qkv),
        "ORT": ort_runner(ort_session(path, threads), feed),
        "native": lambda: kernel(feed, table_np, case.heads, threads),
    }
    with torch.inference_mode():
        err = float(np.abs(calls["native"]() - calls["eager"]().numpy()).max())
    return calls, err


def end_to_end(args) -> None:
    """edgenext_small in PyTorch eager: attention on the native ops vs the PyTorch ops."""
    model = edgevit.create_model(END_TO_END).eval()
    fast = use_native(copy.deepcopy(model))
    x = torch.randn(1, *get_spec(END_TO_END).input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        err = float((fast(x) - model(x)).abs().max())
        per_round = interleaved({"PyTorch ops": lambda: model(x), "native ops": lambda: fast(x)},
                                args.rounds, args.model_runs, warmup=2)
    shape = "x".join(map(str, x.shape))
    print(f"\n## end to end: {END_TO_END} {shape}, PyTorch eager, {args.rounds} rounds x {args.model_runs} runs\n")
    print("| attention | median ms |")
    print("|---|---|")
    for key, values in per_round.items():
        print(f"| {key} | {statistics.median(values):.2f} |")
    print(f"\nspeed-up with use_native: {ratio(per_round, 'PyTorch ops', 'native ops'):.3f}x; "
          f"max abs output diff {err:.2e} (random init: layer-scale 1e-6 hides attention differences)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch, ONNX Runtime and native threads")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=100, help="kernel calls per implementation and round")
    parser.add_argument("--model-runs", type=int, default=5, help="end-to-end forwards per path and round")
    args = parser.parse_args()
    started = time.perf_counter()

    status = native.status()
    if not status.active:
        sys.exit(f"native kernels not in use ({status.reason}): build them with `pip install -e .` "
                 "where a C++17 compiler is installed")
    torch.set_num_threads(args.threads)
    print(f"{status.describe()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{args.threads} thread(s)\n")

    cases = [case for name in MODELS for case in model_cases(name)]
    timed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            calls, err = candidates(case, Path(tmp), args.threads)
            print(f"parity {case.label}: native vs eager max abs err {err:.1e}")
            if not err < TOLERANCE:
                print(f"FAIL: above {TOLERANCE:g}", file=sys.stderr)
                return 1
            timed.update({(case, impl): call for impl, call in calls.items()})
        with torch.inference_mode():
            per_round = interleaved(timed, args.rounds, args.runs)

    print(f"\n## kernels, batch 1: median µs of {args.rounds} rounds x {args.runs} calls; "
          "ratios are medians of per-round ratios\n")
    print("| model | op | C | heads | d | N | eager µs | ORT µs | native µs | eager/native (x) | ORT/native (x) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    vs_eager, vs_ort = [], []
    for case in cases:
        us = [1000 * statistics.median(per_round[case, impl]) for impl in IMPLS]
        vs_eager.append(ratio(per_round, (case, "eager"), (case, "native")))
        vs_ort.append(ratio(per_round, (case, "ORT"), (case, "native")))
        print(f"| {case.model} | {case.op} | {case.channels} | {case.heads} | {case.channels // case.heads} | "
              f"{case.tokens} | {us[0]:.1f} | {us[1]:.1f} | {us[2]:.1f} | {vs_eager[-1]:.2f} | {vs_ort[-1]:.2f} |")

    end_to_end(args)
    met = min(vs_eager) >= TARGET_VS_EAGER and min(vs_ort) > 1.0
    print(f"\ntargets {'met' if met else 'NOT met'}: min eager/native {min(vs_eager):.2f}x "
          f"(target >= {TARGET_VS_EAGER:g}x), min ORT/native {min(vs_ort):.2f}x (target > 1x)")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
