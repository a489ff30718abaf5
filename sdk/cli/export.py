"""CLI commands that make and check artifacts: ``export``, ``verify`` and ``reparam``.

Each command imports what it runs inside its body: ``edgevit --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from edgevit.errors import printable

from .app import (IMAGE, NO_INTEGRITY_CHECK, NUM_INPUTS, RUNTIME, VERIFY_DATA, VERIFY_SAMPLES, Progress, app, emit,
                  safe_console)


def _parity_table(report) -> None:
    from rich.table import Table

    console = safe_console()
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
    for kind, row in report.by_kind().items():
        console.print(printable(f"  {kind}: {row['source']}: max abs err {row['max_abs_err']:.3g}, top-1 agreement "
                                f"{row['top1_agreement']:.2f}" + ("" if row["passed"] else " (over tolerance)")))
    if report.note:
        console.print(report.note)


def _guard_table(guard) -> None:
    from rich.table import Table

    console = safe_console()
    basis = "accuracy" if guard.fp32_accuracy is not None else "agreement"
    title = (f"int8 accuracy guard: {guard.target}, {guard.mode}, {guard.held_out['count']} held-out samples "
             f"({guard.basis}), budget {guard.budget:g} points of top-1 {basis}"
             + (f", fp32 accuracy {guard.fp32_accuracy:.4f}" if guard.fp32_accuracy is not None else ""))
    table = Table(title=title)
    for col in ("layers in float", "top-1 agreement", "accuracy", "SNR dB", "drop (points)", "95% interval", "result"):
        table.add_column(col)
    for trial in guard.trials:
        table.add_row(str(len(trial.kept)), f"{trial.agreement:.4f}",
                      "-" if trial.accuracy is None else f"{trial.accuracy:.4f}", f"{trial.snr_db:.1f}",
                      f"{trial.drop:.2f}", f"{trial.interval[0]:.2f} to {trial.interval[1]:.2f}",
                      Text("within", style="green") if trial.passed else Text("over", style="red"))
    console.print(table)
    if guard.basis == "training data only":
        console.print(f"  training data only: scored on shifted copies of training images, budget held to "
                      f"{guard.budget:g} of {guard.max_drop:g} points; unseen images can lose more (give --eval)")
    if guard.latency:
        speed = guard.latency
        console.print(printable(f"  latency on this machine: int8 {speed['int8_ms']:.2f} ms, fp32 "
                                f"{speed['fp32_ms']:.2f} ms, int8/fp32 {speed['ratio']} (best runs "
                                f"{speed.get('best_ratio')}; {speed['runtime']}; int8 instruction sets: "
                                f"{', '.join(speed['cpu_features']) or 'none found'})"))
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
    image: Optional[Path] = IMAGE,
    verify_data: Optional[str] = VERIFY_DATA,
    verify_samples: int = VERIFY_SAMPLES,
    num_inputs: int = NUM_INPUTS,
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (18 or newer)."),
    deployment_target: Optional[str] = typer.Option(None, "--deployment-target", help="Core ML: iOS16, iOS17 or iOS18."),
    native_ops: bool = typer.Option(False, "--native-ops",
                                    help="ONNX: attention as single ai.edgevit nodes, run with edgevit's C++ kernels."),
    ep: Optional[str] = typer.Option(None, "--ep", metavar="nnapi|coreml",
                                     help="ONNX for ONNX Runtime Mobile's NNAPI or Core ML execution provider: the "
                                          "mobile form, whose operators those providers take (one partition)."),
) -> None:
    """Export a model, verify the artifact against PyTorch, write it atomically."""
    from edgevit.pipeline.flow import export_model

    options = {k: v for k, v in (("opset", opset), ("deployment_target", deployment_target)) if v is not None}
    if native_ops:
        options["native_ops"] = True
    with Progress() as progress:
        results = export_model(
            model, target, output, weights=weights, image_size=image_size, precision=precision,
            verify=verify, reparam=reparam, target_form=target_form, ep=ep, dynamic_batch=dynamic_batch, image_input=image_input, layout=layout,
            with_softmax=with_softmax, labels=labels, image=image, verify_data=verify_data,
            verify_samples=verify_samples, num_inputs=num_inputs, options=options, progress=progress,
            calibration=calibration, eval_data=eval_data, max_drop=max_drop, calibration_samples=calibration_samples,
            eval_samples=eval_samples, int8_mode=int8_mode, int8_io=int8_io,
        )
    failed = [r for r in results if not r.written]
    checks = {r.target: _accelerator_summary(r.path) for r in results if r.written}

    def human() -> None:
        console = safe_console()
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
            if r.fp16_range is not None:
                fp16 = r.fp16_range
                console.print(printable(f"{r.target}: fp16 range: largest magnitude {fp16.max_abs:.4g} "
                                        f"({100 * fp16.headroom:.2g}% of fp16's largest value) on {fp16.inputs} inputs"
                                        + ("" if fp16.passed else f"; refused, nothing written: {fp16.reason()}")),
                              style=None if fp16.passed else "bold red")
                if not fp16.passed:
                    continue
            if r.written:
                checked = ("verified" if r.parity and r.parity.numerically_verified else
                           "structurally checked, not numerically verified" if r.parity else "not verified")
                console.print(Text.assemble((r.target, "bold"), printable(
                    f": wrote {r.path} ({r.size_bytes / 1e6:.2f} MB, {r.seconds:.1f} s, {checked})")))
                console.print(printable(f"{r.target}: accelerators: {checks[r.target]} ('edgevit check' for details)"),
                              highlight=False)
            elif r.guard is not None and not r.guard.passed:
                console.print(f"{r.target}: int8 lost more than {r.guard.max_drop:g} points of top-1 even with the "
                              f"{len(r.guard.kept)} most sensitive layers (a quarter) in float; nothing written",
                              style="bold red")
            else:
                console.print(f"{r.target}: parity check failed, nothing written", style="bold red")

    emit([{**r.to_dict(), **({"accelerators": checks[r.target]} if r.target in checks else {})} for r in results],
         human)
    if failed:
        raise typer.Exit(1)


def _accelerator_summary(path: Path) -> str:
    """``edgevit check``'s one line for a new artifact, or why it was not checked."""
    from edgevit.errors import EdgeVitError
    from edgevit.inspect.preflight import check_artifact

    try:
        return check_artifact(path).summary()
    except EdgeVitError as exc:
        return f"not checked ({exc})"


@app.command("reparam")
def reparam_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (see 'edgevit models')."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to save the folded model (e.g. folded.pt)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint: edgevit, official or timm layout."),
    num_inputs: int = typer.Option(2, "--num-inputs", help="Random inputs the folded model is checked on."),
) -> None:
    """Fold a model for deployment, check it against the unfolded one, save it, print the fold report."""
    from edgevit.pipeline.fold import fold_to_file

    with Progress() as progress:
        progress(f"folding {model}")
        report = fold_to_file(model, output, weights=weights, num_inputs=num_inputs)

    def human() -> None:
        from rich.table import Table

        console = safe_console()
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

    emit({**report.to_dict(), "output": str(output)}, human)


@app.command("verify")
def verify_command(
    artifact: Path = typer.Argument(..., help="An .onnx, .tflite or .mlpackage file."),
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint the artifact was made from."),
    image: Optional[Path] = IMAGE,
    verify_data: Optional[str] = VERIFY_DATA,
    verify_samples: int = VERIFY_SAMPLES,
    num_inputs: int = NUM_INPUTS,
    runtime: str = RUNTIME,
    no_integrity_check: bool = NO_INTEGRITY_CHECK,
) -> None:
    """Compare an artifact's outputs with the PyTorch model's (exit 1 above tolerance)."""
    from edgevit.pipeline.verify import verify_artifact

    with Progress() as progress:
        progress(f"verifying {artifact} against {model}")
        report = verify_artifact(artifact, model, weights=weights, image=image, verify_data=verify_data,
                                 verify_samples=verify_samples, num_inputs=num_inputs,
                                 runtime=runtime, integrity_check=not no_integrity_check)
    emit(report.to_dict(), lambda: _parity_table(report))
    if not report.passed:
        raise typer.Exit(1)
