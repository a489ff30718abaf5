"""CLI commands for apps: ``predict`` (classify an image with an artifact) and ``bundle``
(what an iOS or Android app needs).

Each command imports what it runs inside its body: ``edgevit --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from edgevit.errors import printable

from .app import (
    NO_INTEGRITY_CHECK,
    PROVIDERS,
    RUNTIME,
    THREADS,
    TOP_ALIAS,
    app,
    emit,
    providers_list,
    safe_console,
    top_k_option,
    top_k_value,
)


@app.command("predict")
def predict_command(
    artifact: Path = typer.Argument(..., help="An .onnx, .tflite or .mlpackage file."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An image, or a .npy array of the input's shape."),
    top_k: Optional[int] = top_k_option(5),
    top: Optional[int] = TOP_ALIAS,
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class labels, one per line."),
    runtime: str = RUNTIME,
    threads: Optional[int] = THREADS,
    providers: Optional[str] = PROVIDERS,
    resize: str = typer.Option("crop", "--resize",
                               help="crop: the model zoo's center crop; stretch: the whole image, as MediaPipe does."),
    no_integrity_check: bool = NO_INTEGRITY_CHECK,
) -> None:
    """Classify an image (or run a .npy input) with an artifact."""
    from edgevit.apps.predict import predict

    result = predict(artifact, input_path, top_k=top_k_value(top_k, top, 5), labels=labels, runtime=runtime, threads=threads,
                     integrity_check=not no_integrity_check, resize=resize, providers=providers_list(providers))

    def human() -> None:
        from rich.table import Table

        table = Table(title=f"{artifact.name} on {input_path.name} ({result['backend']})")
        for col in ("rank", "class", "label", "score", "probability"):
            table.add_column(col)
        for i, item in enumerate(result["top"], 1):
            table.add_row(str(i), str(item["class"]), item["label"] or "", f"{item['score']:.4f}",
                          f"{item['probability']:.4f}")
        safe_console().print(table)

    emit(result, human)


@app.command("bundle")
def bundle_command(
    artifact: Path = typer.Argument(..., help="A .mlpackage (ios), .tflite (android, web) or .onnx (web) exported by edgevit."),
    platform: str = typer.Option(..., "--platform", "-p", help="ios, android or web."),
    output: Path = typer.Option(..., "--output", "-o", help="A new (or empty) folder for the bundle."),
) -> None:
    """Write what an app needs: the model, its labels, a Swift or Kotlin class or a web page, and a README."""
    from edgevit.apps.bundle import write_bundle

    result = write_bundle(artifact, platform, output)

    def human() -> None:
        console = safe_console()
        console.print(Text.assemble((platform, "bold"), printable(f": wrote {result.output}/")))
        for name in result.files:
            console.print(printable(f"  {name}"))
        console.print(printable(f"input {result.facts['input_name']} {result.facts['width']}x{result.facts['height']}, "
                                f"{result.facts['classes']} classes; see {result.output / 'README.md'}"))

    emit(result.to_dict(), human)
