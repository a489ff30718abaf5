"""The ``edgevit`` command line. Imports stay inside commands so ``--help`` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.text import Text

from edgevit.errors import printable

app = typer.Typer(
    name="edgevit",
    help="Deploy mobile hybrid vision transformers to ONNX, Core ML and TFLite, with verified parity.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


class _State:
    json = False
    quiet = False
    debug = False


state = _State()

# shared by every command that loads an artifact to run it
NO_INTEGRITY_CHECK = typer.Option(False, "--no-integrity-check",
                                  help="Use the artifact even if it changed since edgevit exported it.")


def _console(stderr: bool = False):
    """A rich console for text that quotes untrusted artifacts: no markup ("[/x]" prints as
    is) and every string escaped to printable characters (no terminal control codes)."""
    from rich.console import Console

    class SafeConsole(Console):
        def render_str(self, text: str, **options):  # every plain string printed, table cells included
            return super().render_str(printable(text), **options)

    console = SafeConsole(stderr=stderr, highlight=False, soft_wrap=False, markup=False, emoji=False)
    if not console.is_terminal:  # logs and pipes: wide enough for every table column
        console.width = max(console.width, 160)
    return console


def _emit(data: Any, human) -> None:
    """Print ``data`` as JSON with --json, else call ``human()`` to print tables."""
    if state.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human()


class _Progress:
    """A spinner on stderr with the current step, on a terminal only (not with --quiet/--json).

    ``lines=True`` (long jobs such as training) also prints each step as a plain line on
    stderr when there is no spinner (not a terminal, or --json), unless --quiet.
    """

    def __init__(self, lines: bool = False) -> None:
        self._status = None
        self._lines = lines and not state.quiet

    def __enter__(self):
        if not (state.quiet or state.json) and sys.stderr.isatty():
            self._status = _console(stderr=True).status("starting")
            self._status.__enter__()
        return self

    def __call__(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)
            self._status.console.print(f"- {message}", style="dim")
        elif self._lines:
            sys.stderr.write(f"- {message}\n")
            sys.stderr.flush()

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


def _print_version(asked: bool) -> None:
    if asked:
        from edgevit import __version__

        sys.stdout.write(f"edgevit {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _options(
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and converter logs."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print edgevit's version and exit."),
) -> None:
    state.json, state.quiet, state.debug = json_output, quiet, debug
    if debug:
        import os

        os.environ["EDGEVIT_DEBUG"] = "1"


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
        console = _console()
        console.print(table)
        for caveat in dict.fromkeys(r["caveat"] for r in rows if r["caveat"]):
            marked = ", ".join(r["name"] for r in rows if r["caveat"] == caveat)
            console.print(f"* {marked}: {caveat}")

    _emit(rows, human)


def _parity_table(report) -> None:
    from rich.table import Table

    console = _console()
    if not report.numerically_verified:
        s = report.structural or {}
        verdict = ("ok", "green") if report.passed else ("FAILED", "red")
        console.print(Text.assemble("structural check ", verdict, printable(
            f": inputs {', '.join(s.get('inputs', []))}; outputs {', '.join(s.get('outputs', []))}; "
            f"{sum(s.get('op_census', {}).values())} ops")))
        for problem in s.get("problems", []):
            console.print(f"  {problem}", style="red")
        console.print(report.note, style="yellow")
        return
    table = Table(title=f"parity vs PyTorch: {report.backend}, {report.precision} "
                        f"(atol {report.atol:g}, rtol {report.rtol:g})")
    for col in ("input", "max abs err", "mean abs err", "worst at", "ref", "got", "top-1 ref/got", "result"):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.input, f"{r.max_abs_err:.3g}", f"{r.mean_abs_err:.3g}", str(tuple(r.worst_index)),
                      f"{r.worst_ref:.5g}", f"{r.worst_got:.5g}", f"{r.top1_ref}/{r.top1_got}",
                      Text("info") if report.verdict is not None else
                      Text("pass", style="green") if r.passed else Text("FAIL", style="red"))
    console.print(table)
    if report.note:
        console.print(report.note)


def _guard_table(guard) -> None:
    from rich.table import Table

    console = _console()
    basis = "accuracy" if guard.fp32_accuracy is not None else "agreement"
    title = (f"int8 accuracy guard: {guard.target}, {guard.mode}, {guard.held_out['count']} held-out samples, "
             f"budget {guard.max_drop:g} points of top-1 {basis}"
             + (f", fp32 accuracy {guard.fp32_accuracy:.4f}" if guard.fp32_accuracy is not None else ""))
    table = Table(title=title)
    for col in ("layers in float", "top-1 agreement", "accuracy", "SNR dB", "drop (points)", "result"):
        table.add_column(col)
    for trial in guard.trials:
        table.add_row(str(len(trial.kept)), f"{trial.agreement:.4f}",
                      "-" if trial.accuracy is None else f"{trial.accuracy:.4f}", f"{trial.snr_db:.1f}",
                      f"{trial.drop:.2f}", Text("within", style="green") if trial.passed else Text("over", style="red"))
    console.print(table)
    for kept in guard.kept:
        console.print(printable(f"  kept float: {kept['layer']} ({kept['module']}, {kept['kind']}): {kept['reason']}"))
    console.print(printable("  float by default: " + ", ".join(guard.float_by_default)))


@app.command("export")
def export_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (see 'edgevit models')."),
    target: str = typer.Option("onnx", "--target", "-t", help="onnx, coreml, tflite or all."),
    output: Path = typer.Option(Path("edgevit_out"), "--output", "-o", help="Output directory (or file)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint: edgevit, official or timm layout."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input height and width (default: the model's)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 (Core ML, TFLite) or int8."),
    calibration: Optional[str] = typer.Option(
        None, "--calibration", help="int8: calibration data: digits, an image folder or an .npz (images, labels)."),
    eval_data: Optional[str] = typer.Option(
        None, "--eval", help="int8: held-out data for the accuracy guard (default: the calibration data's rest)."),
    max_drop: float = typer.Option(1.0, "--max-drop", help="int8: the most top-1 points the guard lets go."),
    calibration_samples: int = typer.Option(64, "--calibration-samples", help="int8: samples calibrated on."),
    eval_samples: int = typer.Option(256, "--eval-samples", help="int8: held-out samples the guard measures."),
    int8_mode: Optional[str] = typer.Option(
        None, "--int8-mode", help="int8 scheme: full (weights and calibrated activations: onnx, tflite default), "
                                  "dynamic (int8 weights, activations per run: onnx, tflite), weights (coreml "
                                  "default), palettize (coreml)."),
    int8_io: bool = typer.Option(False, "--int8-io", help="int8 TFLite: int8 input and output tensors (NPUs)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check parity with PyTorch (default on)."),
    reparam: bool = typer.Option(True, "--reparam/--no-reparam",
                                 help="Fold BatchNorm/RepBN/layer-scale before export (default on)."),
    target_form: bool = typer.Option(True, "--target-form/--no-target-form",
                                     help="Rewrite the model into its target's layout (channels-first for coreml, "
                                          "channels-last for tflite and onnx), checked exact (default on)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="ONNX: dynamic batch axis."),
    layout: Optional[str] = typer.Option(None, "--layout", help="nchw or nhwc (default: nhwc for tflite, else nchw)."),
    image_input: Optional[bool] = typer.Option(
        None, "--image-input/--no-image-input",
        help="RGB pixels 0-255 in, mean/std inside the model (default: on for tflite, else off)."),
    with_softmax: bool = typer.Option(False, "--with-softmax", help="Output probabilities (softmax) instead of logits."),
    labels: Optional[Path] = typer.Option(None, "--labels",
                                          help="Class labels, one per line (Core ML classifier, TFLite label file)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Also verify on this image."),
    num_inputs: int = typer.Option(3, "--num-inputs", help="Random inputs used for verification."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (18 or newer)."),
    deployment_target: Optional[str] = typer.Option(None, "--deployment-target", help="Core ML: iOS16, iOS17 or iOS18."),
    native_ops: bool = typer.Option(False, "--native-ops",
                                    help="ONNX: attention as single ai.edgevit nodes, run with edgevit's C++ kernels."),
) -> None:
    """Export a model, verify the artifact against PyTorch, write it atomically."""
    from edgevit.pipeline import export_model

    options = {k: v for k, v in (("opset", opset), ("deployment_target", deployment_target)) if v is not None}
    if native_ops:
        options["native_ops"] = True
    with _Progress() as progress:
        results = export_model(
            model, target, output, weights=weights, image_size=image_size, precision=precision,
            verify=verify, reparam=reparam, target_form=target_form, dynamic_batch=dynamic_batch, image_input=image_input, layout=layout,
            with_softmax=with_softmax, labels=labels, image=image, num_inputs=num_inputs, options=options, progress=progress,
            calibration=calibration, eval_data=eval_data, max_drop=max_drop, calibration_samples=calibration_samples,
            eval_samples=eval_samples, int8_mode=int8_mode, int8_io=int8_io,
        )
    failed = [r for r in results if not r.written]

    def human() -> None:
        console = _console()
        if results and results[0].reparam:
            fold = results[0].reparam
            console.print(f"re-parameterized: {fold['folded']} folds, {fold['kept']} kept, output changed by "
                          f"{fold['max_abs_change']:.2g} at most, in float64 ('edgevit reparam' shows the details)")
        for r in results:
            if r.form:
                console.print(f"{r.target}: {r.form['form']} form, {r.form['changed']} modules rewritten, output "
                              f"changed by {r.form['max_abs_change']:.2g} at most, in float64")
        for r in results:
            if r.parity is not None:
                _parity_table(r.parity)
            if r.guard is not None:
                _guard_table(r.guard)
            if r.written:
                checked = ("verified" if r.parity and r.parity.numerically_verified else
                           "structurally checked, not numerically verified" if r.parity else "not verified")
                console.print(Text.assemble((r.target, "bold"), printable(
                    f": wrote {r.path} ({r.size_bytes / 1e6:.2f} MB, {r.seconds:.1f} s, {checked})")))
            elif r.guard is not None and not r.guard.passed:
                console.print(f"{r.target}: int8 lost more than {r.guard.max_drop:g} points of top-1 even with the "
                              f"{len(r.guard.kept)} most sensitive layers (a quarter) in float; nothing written",
                              style="bold red")
            else:
                console.print(f"{r.target}: parity check failed, nothing written", style="bold red")

    _emit([r.to_dict() for r in results], human)
    if failed:
        raise typer.Exit(1)


@app.command("reparam")
def reparam_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (see 'edgevit models')."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to save the folded model (e.g. folded.pt)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint: edgevit, official or timm layout."),
    num_inputs: int = typer.Option(2, "--num-inputs", help="Random inputs the folded model is checked on."),
) -> None:
    """Fold a model for deployment, check it against the unfolded one, save it, print the fold report."""
    from edgevit.reparam.checked import fold_to_file

    with _Progress() as progress:
        progress(f"folding {model}")
        report = fold_to_file(model, output, weights=weights, num_inputs=num_inputs)

    def human() -> None:
        from rich.table import Table

        console = _console()
        table = Table(title=f"{model}: {report.summary()}")
        for col in ("fold", "count"):
            table.add_column(col)
        for kind, count in report.counts().items():
            table.add_row(kind, str(count))
        console.print(table)
        for entry in report.kept:
            console.print(Text.assemble(("kept", "yellow"), printable(f" {entry.where}: {entry.detail}")))
        console.print(f"folded vs unfolded: max abs change {report.max_abs_change:.3g} on {num_inputs} inputs "
                      "(both run in float64); "
                      f"wrote {output} (torch.load(path, weights_only=False))")

    _emit({**report.to_dict(), "output": str(output)}, human)


@app.command("verify")
def verify_command(
    artifact: Path = typer.Argument(..., help="An .onnx, .tflite or .mlpackage file."),
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint the artifact was made from."),
    image: Optional[Path] = typer.Option(None, "--image", help="Also compare on this image."),
    num_inputs: int = typer.Option(3, "--num-inputs", help="Random inputs to compare on."),
    runtime: str = typer.Option("auto", "--runtime", help="Runtime to run the artifact with."),
    no_integrity_check: bool = NO_INTEGRITY_CHECK,
) -> None:
    """Compare an artifact's outputs with the PyTorch model's (exit 1 above tolerance)."""
    from edgevit.api import verify

    with _Progress() as progress:
        progress(f"verifying {artifact} against {model}")
        report = verify(artifact, model, weights=weights, image=image, num_inputs=num_inputs, runtime=runtime,
                        integrity_check=not no_integrity_check)
    _emit(report.to_dict(), lambda: _parity_table(report))
    if not report.passed:
        raise typer.Exit(1)


PROVIDERS = typer.Option(None, "--providers", metavar="LIST",
                         help="ONNX Runtime execution providers, best first, e.g. tensorrt,cuda,cpu "
                              "(the one really used is reported).")


def _providers(text: Optional[str]) -> Optional[list[str]]:
    from edgevit.runtimes.onnxruntime import parse_providers

    return None if text is None else parse_providers(text)


@app.command("predict")
def predict_command(
    artifact: Path = typer.Argument(..., help="An .onnx, .tflite or .mlpackage file."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An image, or a .npy array of the input's shape."),
    top_k: int = typer.Option(5, "--top-k", help="How many classes to show."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class labels, one per line."),
    runtime: str = typer.Option("auto", "--runtime", help="Runtime to run the artifact with."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads."),
    providers: Optional[str] = PROVIDERS,
    resize: str = typer.Option("crop", "--resize",
                               help="crop: the model zoo's center crop; stretch: the whole image, as MediaPipe does."),
    no_integrity_check: bool = NO_INTEGRITY_CHECK,
) -> None:
    """Classify an image (or run a .npy input) with an artifact."""
    from edgevit.predict import predict

    result = predict(artifact, input_path, top_k=top_k, labels=labels, runtime=runtime, threads=threads,
                     integrity_check=not no_integrity_check, resize=resize, providers=_providers(providers))

    def human() -> None:
        from rich.table import Table

        table = Table(title=f"{artifact.name} on {input_path.name} ({result['backend']})")
        for col in ("rank", "class", "label", "score", "probability"):
            table.add_column(col)
        for i, item in enumerate(result["top"], 1):
            table.add_row(str(i), str(item["class"]), item["label"] or "", f"{item['score']:.4f}",
                          f"{item['probability']:.4f}")
        _console().print(table)

    _emit(result, human)


@app.command("bundle")
def bundle_command(
    artifact: Path = typer.Argument(..., help="A .mlpackage (ios) or .tflite (android) exported by edgevit."),
    platform: str = typer.Option(..., "--platform", "-p", help="ios or android."),
    output: Path = typer.Option(..., "--output", "-o", help="A new (or empty) folder for the bundle."),
) -> None:
    """Write what an app needs: the model, its labels, a Swift or Kotlin class and a README."""
    from edgevit.app_bundle import write_bundle

    result = write_bundle(artifact, platform, output)

    def human() -> None:
        console = _console()
        console.print(Text.assemble((platform, "bold"), printable(f": wrote {result.output}/")))
        for name in result.files:
            console.print(printable(f"  {name}"))
        console.print(printable(f"input {result.facts['input_name']} {result.facts['width']}x{result.facts['height']}, "
                                f"{result.facts['classes']} classes; see {result.output / 'README.md'}"))

    _emit(result.to_dict(), human)


@app.command("info")
def info_command(
    artifact: Optional[Path] = typer.Argument(None, help="An .onnx, .tflite or .mlpackage file."),
    ops: bool = typer.Option(False, "--ops", help="Print the full operator census."),
    native: bool = typer.Option(False, "--native", help="Say whether the C++ attention kernels are in use."),
    model: Optional[str] = typer.Option(None, "--model", help="A registered model: print its params and GFLOPs."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="With --model: input height and width."),
) -> None:
    """Show an artifact's inputs, outputs, metadata and operators (--native: the kernel
    path; --model NAME: a model's parameters and GFLOPs)."""
    from edgevit.inspect import describe_artifact

    if native:
        _native_info()
    if model is not None:
        _model_info(model, image_size)
    elif image_size is not None:
        from edgevit.errors import InputError

        raise InputError("--image-size goes with --model")
    if artifact is None:
        if native or model is not None:
            return
        from edgevit.errors import InputError

        raise InputError("give an artifact to describe, --model NAME or --native")
    info = describe_artifact(artifact)

    def human() -> None:
        console = _console()
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

    _emit(info, human)


def _print_quantization(console, q: dict) -> None:
    """The int8 report stored in an artifact's metadata."""
    calibration, held = q["calibration"], q.get("held_out") or {}
    console.print(printable(f"int8 ({q['mode']}): guard {q['status']}, budget {q['max_drop']} points; calibration: "
                            f"{calibration['name']}, {calibration['count']} samples (sha256 "
                            f"{str(calibration.get('sha256', ''))[:16]}); held out: {held.get('name')}, "
                            f"{held.get('count')} samples"))
    measured = [f"top-1 agreement {q['top1_agreement']:.4f}" if q.get("top1_agreement") is not None else None,
                f"held-out accuracy {q['accuracy']:.4f} (fp32 {q['fp32_accuracy']:.4f})"
                if q.get("accuracy") is not None and q.get("fp32_accuracy") is not None else None,
                f"SNR {q['snr_db']:.1f} dB" if isinstance(q.get("snr_db"), (int, float)) else None,
                (f"size {q['size_bytes'] / 1e6:.2f} MB vs fp32 {q['fp32_size_bytes'] / 1e6:.2f} MB"
                 f" ({q['fp32_size_bytes'] / max(q['size_bytes'], 1):.2f}x smaller)")]
    console.print("  " + ", ".join(m for m in measured if m))
    kept = q.get("kept_float") or []
    console.print(printable("  kept float by the guard: " + (", ".join(
        f"{k['layer']} ({k.get('module', '?')})" for k in kept) if kept else "none")))


def _model_info(name: str, image_size: Optional[int]) -> None:
    from edgevit.api import model_cost
    from edgevit.models.registry import get_spec

    spec = get_spec(name)
    with _Progress() as say:
        say(f"counting {name}")
        cost = model_cost(name, image_size=image_size)
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
        _console().print(line)

    _emit(info, human)


def _native_info() -> None:
    from edgevit import native

    status = native.status()
    info = {"path": status.path, "isa": status.isa, "sanitized": status.sanitized, "reason": status.reason or None}
    _emit(info, lambda: _console().print(f"attention kernels: {status.describe()}"))


@app.command("bench")
def bench_command(
    artifacts: List[Path] = typer.Argument(..., help="Artifacts to measure."),
    runs: int = typer.Option(50, "--runs", help="Timed runs per artifact."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs first."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's)."),
    runtime: str = typer.Option("auto", "--runtime", help="Runtime to use."),
    providers: Optional[str] = PROVIDERS,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG chart here."),
    no_integrity_check: bool = NO_INTEGRITY_CHECK,
) -> None:
    """Latency (median, p90), throughput, size and peak memory per artifact."""
    from edgevit.bench import benchmark
    from edgevit.bench import plot as plot_report

    with _Progress() as progress:
        report = benchmark(artifacts, runs=runs, warmup=warmup, threads=threads, runtime=runtime,
                           progress=progress, integrity_check=not no_integrity_check,
                           providers=_providers(providers))
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
        _console().print(table)
        for r in report.rows:
            if r.fallback:
                _console().print(f"{Path(r.artifact).name}: fell back: {r.fallback}")
        if plot is not None:
            _console().print(f"chart: {plot}")

    _emit(report.to_dict(), human)


from . import cli_split  # noqa: E402,F401  (registers the ED-ViT commands: train, split)


# flags of the whole program, accepted before or after the command
GLOBAL_FLAGS = ("--json", "--quiet", "-q", "--debug", "--version")


def _global_flags_first(args: list[str]) -> list[str]:
    """Move global flags to the front, so ``edgevit export ... --quiet`` works (not past ``--``)."""
    cut = args.index("--") if "--" in args else len(args)
    head = args[:cut]
    return [a for a in head if a in GLOBAL_FLAGS] + [a for a in head if a not in GLOBAL_FLAGS] + args[cut:]


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """The classes of typer's usage errors: its own (typer 0.29 vendors click) and click's
    (older typer, which imports click itself); click is never imported here."""
    types = [getattr(typer, "TyperException", None)]
    click = sys.modules.get("click")
    types.append(getattr(getattr(click, "exceptions", None), "ClickException", None))
    return tuple(t for t in types if isinstance(t, type))


def _usage_line(exc: BaseException) -> str:
    """One line for a usage error: what is wrong, and where to read the usage."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", "") or "edgevit"
    return f"{' '.join(message.split())} (see '{where} --help')"


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors with exit codes 0 ok, 1 check failed, 2 bad input or usage."""
    from edgevit.errors import EdgeVitError, first_line
    from edgevit.optional import missing_module_error

    args = _global_flags_first(list(sys.argv[1:] if argv is None else argv))
    try:
        result = app(args=args, prog_name="edgevit", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        sys.stderr.write("edgevit: aborted\n")
        code = 130
    except _usage_error_types() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain 'edgevit': the help, printed by typer
            code = 0
        else:
            sys.stderr.write(f"edgevit: error: {printable(_usage_line(exc))}\n")
            code = 2
    except EdgeVitError as exc:
        if state.debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"edgevit: error: {printable(str(exc))}\n")
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("edgevit: interrupted\n")
        code = 130
    except ModuleNotFoundError as exc:  # an optional dependency imported deep inside a command
        missing = missing_module_error(exc)
        if missing is None or state.debug:
            raise
        sys.stderr.write(f"edgevit: error: {missing}\n")
        code = missing.exit_code
    except Exception as exc:  # a bug: one line unless --debug
        if state.debug:
            raise
        sys.stderr.write(f"edgevit: internal error: {type(exc).__name__}: {first_line(exc)} "
                         "(rerun with --debug for the traceback)\n")
        code = 1
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
