"""Native attention kernels vs PyTorch eager and ONNX Runtime, batch 1, side by side.

Three parts, each timed round-robin in one run:

1. ``--part kernels``: the kernels through Python (below) against eager and ORT;
2. ``--part nodes``: inside ONNX Runtime, each attention of edgenext_small (256x256),
   slab_deit_tiny and fmvit_s (224x224) as the standard export has it (the ONNX target
   form's subgraph between the qkv / q, kv projections and the output projection) against
   the ``--native-ops`` export of the same module (the ``ai.edgevit`` node from
   ``libedgevit_ort.so``; SLA's depth-wise conv on v stays beside it, in both), at 1 and 2
   threads;
3. ``--part models``: end to end in ONNX Runtime, the ``--native-ops`` artifact against the
   standard artifact of the same three models, at 1 and 2 threads.

Part 1 in detail:

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

    python benchmarks/native_attention.py [--part kernels,nodes,models] [--threads 1] [--rounds 15]
        [--runs 100] [--model-runs 5]
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
from edgevit.exporters.onnx import clean_graph
from edgevit.models.edgenext_layers import XCA, cross_covariance_attention
from edgevit.models.fmvit import RLMHSA
from edgevit.models.registry import get_spec
from edgevit.models.slab_layers import SimplifiedLinearAttention, simplified_linear_attention
from edgevit.native import onnx_nodes, ort_library
from edgevit.native.torch_ops import attention_modules, attention_path, use_native
from edgevit.quiet import quiet_converters
from edgevit.reparam.forms import to_form

from _timing import interleaved, ort_op_profile, ort_runner, ort_session, ratio  # noqa: E402,I001

MODELS = ("edgenext_xx_small", "edgenext_small", "slab_deit_tiny")
ORT_MODELS = ("edgenext_small", "slab_deit_tiny", "fmvit_s")
PARTS = ("kernels", "nodes", "models")
NODE_TARGET = 2.0  # each attention node at least this many times faster than the subgraph it replaces
MODEL_TARGETS = {"edgenext_small": 1.0, "slab_deit_tiny": 0.9, "fmvit_s": 0.9}  # native / standard latency
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



# --- ONNX Runtime: attention nodes and whole models ----------------------------------------

class AttentionCore(nn.Module):
    """One attention module of a channels_last model, between its projections: the
    standard export's subgraph, or the ``ai.edgevit`` node under ``attention_path``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if isinstance(self.module, XCA):
            return self.module.attend_channels_last(*inputs)
        if isinstance(self.module, SimplifiedLinearAttention):
            return self.module.attend_tokens(*inputs)
        return self.module.attend(*inputs)


@dataclass(frozen=True)
class NodeCase:
    model: str
    op: str
    heads: int
    shapes: tuple  # the core's input shapes

    @property
    def label(self) -> str:
        return f"{self.model} {self.op} " + " ".join("x".join(map(str, s)) for s in self.shapes)


def attention_cores(name: str) -> list[tuple[NodeCase, AttentionCore, tuple]]:
    """Each distinct attention of ``name`` in its ONNX form (folded, channels_last), with
    seeded inputs of the shapes it sees at the registered input size."""
    model = edgevit.reparameterize(edgevit.create_model(name).eval())
    to_form(model, "channels_last")
    seen: dict[int, list] = {}
    hooks = []
    for module in attention_modules(model):
        parts = [module.q, module.kv] if isinstance(module, RLMHSA) else [module.qkv]
        for index, part in enumerate(parts):
            def record(_m, _inputs, output, key=id(module), index=index) -> None:
                seen.setdefault(key, [None, None])[index] = tuple(output.shape)
            hooks.append(part.register_forward_hook(record))
    with torch.inference_mode():
        model(torch.zeros(1, *get_spec(name).input_size))
    for hook in hooks:
        hook.remove()
    cases: dict[NodeCase, tuple] = {}
    gen = torch.Generator().manual_seed(0)
    for module in attention_modules(model):
        shapes = tuple(s for s in seen[id(module)] if s is not None)
        if isinstance(module, SimplifiedLinearAttention):  # tokens flattened to (B*N, 3C) in the form
            shapes = ((1, module.side * module.side, shapes[0][-1]),)
        op = "XCA" if isinstance(module, XCA) else "SLA" if isinstance(module, SimplifiedLinearAttention) else "RLMHSA"
        case = NodeCase(name, op, module.num_heads, shapes)
        if case not in cases:
            inputs = tuple(torch.randn(*shape, generator=gen) for shape in shapes)
            cases[case] = (AttentionCore(module).eval(), inputs)
    return [(case, core, inputs) for case, (core, inputs) in cases.items()]


def export_core(core: AttentionCore, inputs: tuple, path: Path, native_ops: bool) -> None:
    """The core exported as edgevit's ONNX exporter does: dynamo, optimized, cleaned."""
    with attention_path(core, native_ops), quiet_converters():
        program = torch.onnx.export(core, inputs, dynamo=True, verbose=False, optimize=True,
                                    custom_translation_table=onnx_nodes.translation_table() if native_ops else None)
    import onnx

    onnx.save_model(clean_graph(program.model_proto), str(path))


def feed_runner(session, arrays: list[np.ndarray]):
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, arrays))
    return lambda: session.run(None, feed)


def onnx_nodes_part(args, library: Path, scratch: Path) -> bool:
    """Per attention: standard subgraph vs the ai.edgevit node, in ONNX Runtime, 1 and 2 threads."""
    cases, timed = [], {}
    for name in ORT_MODELS:
        for case, core, inputs in attention_cores(name):
            arrays = [x.numpy() for x in inputs]
            paths = {}
            for kind in ("subgraph", "node"):
                paths[kind] = scratch / f"{name}_{len(cases)}_{kind}.onnx"
                export_core(core, inputs, paths[kind], native_ops=kind == "node")
            outs = {kind: ort_session(paths[kind], 1, library).run(None, dict(
                zip([i.name for i in ort_session(paths[kind], 1, library).get_inputs()], arrays)))[0]
                for kind in paths}
            err = float(np.abs(outs["node"] - outs["subgraph"]).max())
            print(f"parity {case.label}: node vs subgraph max abs err {err:.1e}")
            if not err < TOLERANCE:
                print(f"FAIL: above {TOLERANCE:g}", file=sys.stderr)
                return False
            for threads in args.ort_threads:
                for kind, path in paths.items():
                    timed[(case, threads, kind)] = feed_runner(ort_session(path, threads, library), arrays)
            cases.append(case)
    per_round = interleaved(timed, args.rounds, args.runs, pause=args.pause)
    print(f"\n## ONNX Runtime, per attention: median µs of {args.rounds} rounds x {args.runs} runs; "
          "speed-up = median of per-round subgraph/node ratios\n")
    print("| model | attention | heads | inputs | threads | subgraph µs | node µs | speed-up (x) |")
    print("|---|---|---|---|---|---|---|---|")
    speedups = []
    for case in cases:
        for threads in args.ort_threads:
            sub, node = (1000 * statistics.median(per_round[(case, threads, k)]) for k in ("subgraph", "node"))
            speedups.append(ratio(per_round, (case, threads, "subgraph"), (case, threads, "node")))
            shapes = ", ".join("x".join(map(str, s)) for s in case.shapes)
            print(f"| {case.model} | {case.op} | {case.heads} | {shapes} | {threads} | {sub:.1f} | {node:.1f} | "
                  f"{speedups[-1]:.2f} |")
    met = min(speedups) >= NODE_TARGET
    print(f"\nnodes: target (every node >= {NODE_TARGET:g}x) {'met' if met else 'NOT met'}: "
          f"min {min(speedups):.2f}x, max {max(speedups):.2f}x")
    return True


def onnx_models_part(args, library: Path, scratch: Path) -> bool:
    """End to end in ONNX Runtime: the --native-ops artifact vs the standard one, 1 and 2 threads."""
    timed, errors, paths_by_model = {}, {}, {}
    for name in ORT_MODELS:
        paths = paths_by_model[name] = {}
        for kind, native_ops in (("standard", False), ("native", True)):
            result = edgevit.export(name, "onnx", scratch / f"{name}_{kind}", native_ops=native_ops, num_inputs=1)
            paths[kind] = result.path
        x = np.random.default_rng(0).standard_normal((1, *get_spec(name).input_size)).astype(np.float32)
        outs = {kind: ort_session(path, 1, library).run(None, {"input": x})[0] for kind, path in paths.items()}
        errors[name] = float(np.abs(outs["native"] - outs["standard"]).max())
        for threads in args.ort_threads:
            for kind, path in paths.items():
                timed[(name, threads, kind)] = feed_runner(ort_session(path, threads, library), [x])
    per_round = interleaved(timed, args.rounds, args.model_runs, warmup=2, pause=args.pause)
    print(f"\n## ONNX Runtime, end to end, batch 1: median ms of {args.rounds} rounds x {args.model_runs} runs; "
          "ratio = median of per-round native/standard ratios\n")
    print("| model | threads | standard ms | --native-ops ms | native / standard | target | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    met = True
    for name in ORT_MODELS:
        for threads in args.ort_threads:
            std, nat = (statistics.median(per_round[(name, threads, k)]) for k in ("standard", "native"))
            value = ratio(per_round, (name, threads, "native"), (name, threads, "standard"))
            reached = value <= MODEL_TARGETS[name]
            met &= reached
            print(f"| {name} | {threads} | {std:.2f} | {nat:.2f} | {value:.3f} | <= {MODEL_TARGETS[name]:g} "
                  f"{'reached' if reached else 'NOT reached'} | {errors[name]:.1e} |")
    print(f"\nmodels: targets {'met' if met else 'NOT met'}")
    profiles(paths_by_model, args, library)
    return True


CUSTOM_TYPES = {"XCA", "SLA", "RLMHSA"}
# op types that only the attention uses in the standard graph of each model (the rest of the
# model is convolutions, Gemms, norms and elementwise ops; Transpose / Reshape / Split also
# serve other layers and are left out, so the share is a lower bound)
ATTENTION_ONLY = {"edgenext_small": {"ReduceL2", "Softmax", "FusedMatMul"},
                  "slab_deit_tiny": {"ReduceMax", "Abs", "FusedMatMul", "MatMul", "Relu"},
                  "fmvit_s": {"Softmax", "FusedMatMul", "MatMul"}}


def profiles(paths_by_model: dict, args, library: Path) -> None:
    """Where the time goes inside each artifact (ONNX Runtime's profiler, kernel time per
    operator type): the node in context, and the standard graph's attention-only ops."""
    print(f"\n## ONNX Runtime profiles, µs per run ({args.profile_runs} runs per artifact)\n")
    print("| model | threads | standard: total, attention-only ops | native: total, node | top ops of the standard graph |")
    print("|---|---|---|---|---|")
    for name, paths in paths_by_model.items():
        for threads in args.ort_threads:
            std = ort_op_profile(paths["standard"], threads, args.profile_runs, library)
            nat = ort_op_profile(paths["native"], threads, args.profile_runs, library)
            total, attention = sum(std.values()), sum(v for k, v in std.items() if k in ATTENTION_ONLY[name])
            node = sum(v for k, v in nat.items() if k in CUSTOM_TYPES)
            top = ", ".join(f"{k} {v:.0f}" for k, v in list(std.items())[:6])
            print(f"| {name} | {threads} | {total:.0f}, {attention:.0f} ({attention / total:.1%}) | "
                  f"{sum(nat.values()):.0f}, {node:.0f} | {top} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", type=lambda text: text.split(","), default=list(PARTS),
                        help=f"comma-separated, from {','.join(PARTS)}")
    parser.add_argument("--threads", type=int, default=1, help="part 1: torch, ONNX Runtime and native threads")
    parser.add_argument("--ort-threads", type=lambda text: [int(t) for t in text.split(",")], default=[1, 2],
                        help="parts 2 and 3: ONNX Runtime intra-op threads, comma-separated")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="parts 2 and 3: seconds between candidates, for the last one's ONNX Runtime "
                             "threads to stop spinning")
    parser.add_argument("--profile-runs", type=int, default=30, help="part 3: profiled runs per artifact")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=100, help="kernel calls per implementation and round")
    parser.add_argument("--model-runs", type=int, default=5, help="end-to-end forwards per path and round")
    args = parser.parse_args()
    started = time.perf_counter()

    unknown = set(args.part) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    status = native.status()
    if not status.active:
        sys.exit(f"native kernels not in use ({status.reason}): build them with `pip install -e .` "
                 "where a C++17 compiler is installed")
    library = ort_library.status()
    if library.path is None and set(args.part) & {"nodes", "models"}:
        sys.exit(f"{ort_library.FILE_NAME} {library.describe()}")
    torch.set_num_threads(args.threads)
    print(f"{status.describe()}; {ort_library.onnx_runtime_path()}; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}\n")
    with tempfile.TemporaryDirectory() as tmp:
        if "kernels" in args.part and not kernels_part(args, Path(tmp)):
            return 1
        if "nodes" in args.part and not onnx_nodes_part(args, library.path, Path(tmp)):
            return 1
        if "models" in args.part and not onnx_models_part(args, library.path, Path(tmp)):
            return 1
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0


def kernels_part(args, scratch: Path) -> bool:
    """The kernels through Python against eager and ORT, then edgenext_small in eager."""
    print(f"## part 1 with {args.threads} thread(s)\n")
    cases = [case for name in MODELS for case in model_cases(name)]
    timed = {}
    for case in cases:
        calls, err = candidates(case, scratch, args.threads)
        print(f"parity {case.label}: native vs eager max abs err {err:.1e}")
        if not err < TOLERANCE:
            print(f"FAIL: above {TOLERANCE:g}", file=sys.stderr)
            return False
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
    print(f"\nkernels: targets {'met' if met else 'NOT met'}: min eager/native {min(vs_eager):.2f}x "
          f"(target >= {TARGET_VS_EAGER:g}x), min ORT/native {min(vs_ort):.2f}x (target > 1x)\n")
    return True


if __name__ == "__main__":
    sys.exit(main())
