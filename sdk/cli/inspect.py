"""CLI commands that describe and measure: ``models``, ``info``, ``check`` and ``bench``.

Each command imports what it runs inside its body: ``edgevit --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from edgevit.errors import InputError, printable
from edgevit.optional import require

from .app import NO_INTEGRITY_CHECK, PROVIDERS, RUNTIME, THREADS, Progress, app, emit, providers_list, safe_console


@app.command("models")
def models_command(family: Optional[str] = typer.Option(None, help="Only this family (e.g. edgenext).")) -> None:
    """List the registered models."""
    from edgevit.models.registry import get_spec, list_models

    specs = [get_spec(n) for n in list_models(family)]
    rows = [
        {
            "name": s.name, "family": s.family, "input": "x".join(map(str, s.input_size)),
            "params_m": s.paper.params_m if s.paper else None,
            "gmacs": s.paper.gmacs if s.paper else None,
            "top1": s.paper.top1 if s.paper else None, "description": s.description, "caveat": s.caveat or None,
        }
        for s in specs
    ]

    def human() -> None:
        from rich.table import Table

        table = Table(title="edgevit models (paper figures, ImageNet-1k)")
        for col in ("name", "input", "params (M)", "GMACs", "top-1 %"):
            table.add_column(col, no_wrap=True)
        for r in rows:
            name = r["name"] + (" *" if r["caveat"] else "")
            table.add_row(*(str(v) if v is not None else "-" for v in
                            (name, r["input"], r["params_m"], r["gmacs"], r["top1"])))
        console = safe_console()
        console.print(table)
        for caveat in dict.fromkeys(r["caveat"] for r in rows if r["caveat"]):
            marked = ", ".join(r["name"] for r in rows if r["caveat"] == caveat)
            console.print(f"* {marked}: {caveat}")

    emit(rows, human)


@app.command("info")
def info_command(
    artifact: Optional[Path] = typer.Argument(None, help="An .onnx, .tflite or .mlpackage file."),
    ops: bool = typer.Option(False, "--ops", help="Print the full operator census."),
    native: bool = typer.Option(False, "--native", help="Say whether the C++ attention kernels are in use, and how ONNX Runtime runs ai.edgevit nodes."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A registered model: print its params and GFLOPs."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="With --model: input height and width."),
) -> None:
    """Show an artifact's inputs, outputs, metadata and operators (--native: the kernel
    path; --model NAME: a model's parameters and GFLOPs)."""
    from edgevit.inspect.artifact import describe_artifact

    if native:
        _native_info()
    if model is not None:
        _model_info(model, image_size)
    elif image_size is not None:
        raise InputError("--image-size goes with --model")
    if artifact is None:
        if native or model is not None:
            return
        raise InputError("give an artifact to describe, --model NAME or --native")
    info = describe_artifact(artifact)

    def human() -> None:
        console = safe_console()
        console.print(Text.assemble((printable(info["path"]), "bold"),
                                    f" ({info['format']}, {info['size_bytes'] / 1e6:.2f} MB)"))
        console.print(f"runtime: {info['runtime']}")
        for kind in ("inputs", "outputs"):
            console.print(f"{kind}: " + "; ".join(info[kind]))
        meta = info["metadata"]
        if meta:
            parity = meta.get("parity") or {}
            console.print(f"model: {meta['model']}  precision: {meta['precision']}  "
                          f"edgevit: {meta['edgevit_version']}  input: {meta['layout']}, "
                          + ("RGB pixels 0-255" if meta["image_input"] else "normalized")
                          + f"  output: {meta.get('output_kind', 'logits')}")
            console.print(f"mean/std: {meta['mean']} / {meta['std']}  labels: "
                          f"{len(meta['labels']) if meta.get('labels') else 'none'}")
            fold = meta.get("reparam")
            console.print("re-parameterized: " + (f"{fold['folded']} folds, {fold['kept']} kept" if fold else "no"))
            form = meta.get("form")
            console.print("target form: " + (f"{form['form']} ({form['changed']} modules rewritten)" if form
                                             else "as trained"))
            if meta.get("quantization"):
                _print_quantization(console, meta["quantization"])
            if parity:
                verified = "numerically" if parity.get("numerically_verified") else "structurally only"
                console.print(f"parity at export: {parity['status']} ({verified}, backend {parity['backend']}, "
                              f"max abs err {parity['max_abs_err']}, top-1 agreement {parity['top1_agreement']})")
                for kind, row in _parity_kinds(parity):
                    console.print(printable(f"  {kind}: {row['inputs']} inputs, max abs err {row['max_abs_err']:.3g}"))
            if meta.get("fp16_range"):
                fp16 = meta["fp16_range"]
                console.print(f"fp16 range at export: largest magnitude {fp16['max_abs']:.4g} "
                              f"({100 * fp16['headroom']:.2g}% of fp16's largest value)")
        else:
            console.print("no edgevit metadata (not exported by edgevit)", style="yellow")
        if info["app_metadata"]:
            console.print("app metadata: " + printable(", ".join(f"{k} {v}" for k, v in info["app_metadata"].items())))
        integrity = info["integrity"]
        if integrity:
            colour = {"intact": "green", "modified": "bold red"}.get(integrity["status"], "yellow")
            console.print(Text.assemble("integrity: ", (integrity["status"], colour),
                                        f" (content sha256 {integrity['actual']}"
                                        + (f", recorded {integrity['recorded']})" if integrity["status"] == "modified"
                                           else ")")))
        census = info["op_census"]
        console.print(f"operators: {sum(census.values())} in {len(census)} types")
        shown = census if ops else dict(list(census.items())[:8])
        console.print("  " + ", ".join(f"{k} {v}" for k, v in shown.items())
                      + ("" if ops or len(census) <= 8 else ", ... (--ops for all)"))

    emit(info, human)


@app.command("check")
def check_command(
    artifact: Path = typer.Argument(..., help="An .onnx, .tflite or .mlpackage file."),
) -> None:
    """Pre-flight: which accelerator can run the artifact, from the vendors' analyzers
    (ONNX Runtime's mobile checker, LiteRT's GPU analyzer; Core ML: a heuristic census)."""
    from edgevit.inspect.accelerators import describe
    from edgevit.inspect.preflight import check_artifact

    report = check_artifact(artifact)

    def human() -> None:
        console = safe_console()
        console.print(Text.assemble((printable(report.artifact), "bold"), f" ({report.format})"))
        describe(report, lambda line: console.print(printable(line), highlight=False))

    emit(report.to_dict(), human)


def _parity_kinds(parity: dict) -> list[tuple[str, dict]]:
    """The per-kind rows of a stored parity summary that are well formed (metadata is untrusted)."""
    kinds = parity.get("by_kind")
    if not isinstance(kinds, dict):
        return []
    return [(str(kind)[:16], row) for kind, row in list(kinds.items())[:8]
            if isinstance(row, dict) and isinstance(row.get("inputs"), int)
            and isinstance(row.get("max_abs_err"), (int, float)) and not isinstance(row.get("max_abs_err"), bool)]


def _print_quantization(console, q: dict) -> None:
    """The int8 report stored in an artifact's metadata."""
    calibration, held = q["calibration"], q.get("held_out") or {}
    budget = q["budget"] if isinstance(q.get("budget"), (int, float)) else q["max_drop"]
    console.print(printable(f"int8 ({q['mode']}): guard {q['status']}, budget {budget:g} points; calibration: "
                            f"{calibration['name']}, {calibration['count']} samples (sha256 "
                            f"{str(calibration.get('sha256', ''))[:16]}); held out: {held.get('name')}, "
                            f"{held.get('count')} samples"))
    measured = [f"top-1 agreement {q['top1_agreement']:.4f}" if q.get("top1_agreement") is not None else None,
                f"held-out accuracy {q['accuracy']:.4f} (fp32 {q['fp32_accuracy']:.4f})"
                if q.get("accuracy") is not None and q.get("fp32_accuracy") is not None else None,
                f"SNR {q['snr_db']:.1f} dB" if isinstance(q.get("snr_db"), (int, float)) else None,
                _drop_text(q),
                (f"size {q['size_bytes'] / 1e6:.2f} MB vs fp32 {q['fp32_size_bytes'] / 1e6:.2f} MB"
                 f" ({q['fp32_size_bytes'] / max(q['size_bytes'], 1):.2f}x smaller)")]
    console.print("  " + ", ".join(m for m in measured if m))
    speed = q.get("latency")
    if isinstance(speed, dict) and all(isinstance(speed.get(k), (int, float)) for k in ("int8_ms", "fp32_ms", "ratio")):
        console.print(printable(f"  latency at export: int8 {speed['int8_ms']:.2f} ms, fp32 {speed['fp32_ms']:.2f} ms "
                                f"(int8/fp32 {speed['ratio']:.2f}) on {speed.get('machine')}, int8 instruction sets: "
                                f"{', '.join(map(str, speed.get('cpu_features') or [])) or 'none found'}"))
    kept = q.get("kept_float") or []
    console.print(printable("  kept float by the guard: " + (", ".join(
        f"{k['layer']} ({k.get('module', '?')})" for k in kept) if kept else "none")))


def _drop_text(q: dict) -> str | None:
    """The guard's drop, its 95% interval and what it was measured on (newer artifacts)."""
    drop, interval = q.get("drop"), q.get("drop_interval")
    if not isinstance(drop, (int, float)):
        return None
    text = f"drop {drop:.2f} points"
    if isinstance(interval, list) and len(interval) == 2 and all(isinstance(v, (int, float)) for v in interval):
        text += f" (95% interval {interval[0]:.2f} to {interval[1]:.2f})"
    if isinstance(q.get("held_out_basis"), str):
        text += f" on {q['held_out_basis']}"
    return text


def _model_info(name: str, image_size: Optional[int]) -> None:
    from edgevit.models.registry import get_spec

    spec = get_spec(name)  # an unknown name is reported before torch is needed
    require("torch", "to count parameters and FLOPs")
    from edgevit.inspect.cost import cost_of

    with Progress() as say:
        say(f"counting {name}")
        cost = cost_of(name, image_size)
    paper = spec.paper
    info = {"model": name, "input": list(cost.input_shape), "params": cost.deployed_params,
            "params_as_trained": cost.params, "macs": cost.macs, "gflops": round(cost.gflops, 4),
            "paper": {"params_m": paper.params_m, "gflops": paper.gmacs, "source": paper.source} if paper else None}

    def human() -> None:
        size = "x".join(map(str, cost.input_shape[1:]))
        trained = f" ({cost.params / 1e6:.2f}M as trained)" if cost.params != cost.deployed_params else ""
        line = (f"{name} at {size}: {cost.deployed_params / 1e6:.2f}M params{trained}, "
                f"{cost.gflops:.3f} GFLOPs (multiply-adds, deployed graph)")
        if paper and paper.gmacs is not None and tuple(spec.input_size) == tuple(cost.input_shape[1:]):
            line += f"; paper: {paper.params_m}M, {paper.gmacs} GFLOPs"
        safe_console().print(line)

    emit(info, human)


def _native_info() -> None:
    from edgevit import native
    from edgevit.native import ort_library

    status, library = native.status(), ort_library.status()
    info = {"path": status.path, "isa": status.isa, "sanitized": status.sanitized, "reason": status.reason or None,
            "ort_library": str(library.path) if library.path else None, "ort_library_reason": library.reason or None,
            "onnx_runtime": ort_library.onnx_runtime_path()}

    def human() -> None:
        safe_console().print(f"attention kernels: {status.describe()}")
        safe_console().print(f"ONNX Runtime, ai.edgevit nodes: {info['onnx_runtime']}")

    emit(info, human)


@app.command("bench")
def bench_command(
    artifacts: List[Path] = typer.Argument(..., help="Artifacts to measure."),
    runs: int = typer.Option(50, "--runs", help="Timed runs per artifact."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs first."),
    threads: Optional[int] = THREADS,
    runtime: str = RUNTIME,
    providers: Optional[str] = PROVIDERS,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG chart here."),
    no_integrity_check: bool = NO_INTEGRITY_CHECK,
) -> None:
    """Latency (median, p90), throughput, size and peak memory per artifact."""
    from edgevit.inspect.bench import benchmark
    from edgevit.inspect.bench import plot as plot_report

    with Progress() as progress:
        report = benchmark(artifacts, runs=runs, warmup=warmup, threads=threads, runtime=runtime,
                           progress=progress, integrity_check=not no_integrity_check,
                           providers=providers_list(providers))
    if plot is not None:
        plot_report(report, plot)

    def human() -> None:
        from rich.table import Table

        table = Table(title=f"edgevit bench ({runs} runs after {warmup} warm-up, batch 1)")
        for col in ("artifact", "runtime", "provider", "threads", "size MB", "median ms", "p90 ms", "img/s",
                    "peak RSS MB"):
            table.add_column(col, overflow="fold")
        for r in report.rows:
            provider = r.providers[0].removesuffix("ExecutionProvider") if r.providers else ""
            table.add_row(Path(r.artifact).name, r.backend.split(" (")[0], provider, str(r.threads or "default"),
                          f"{r.size_mb:.2f}", f"{r.median_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.throughput_ips:.1f}",
                          f"{r.peak_rss_mb:.0f}")
        safe_console().print(table)
        for r in report.rows:
            if r.fallback:
                safe_console().print(f"{Path(r.artifact).name}: fell back: {r.fallback}")
        if plot is not None:
            safe_console().print(f"chart: {plot}")

    emit(report.to_dict(), human)
