"""ED-ViT commands of the ``edgevit`` CLI: ``train`` (a ViT on labelled data), ``split``
and ``run`` (a plan, on the local or the Ray backend), ``fleet`` (emulated devices for Ray).

Each command imports what it runs inside its body: ``edgevit --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgevit.errors import InputError

from .app import TOP_ALIAS, Progress, app, emit, safe_console, state, top_k_option, top_k_value

DATA_HELP = "digits (built in), a folder with one sub-folder per class, or an .npz (x_train, y_train, ...)."


@app.command("train")
def train_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered ViT name, e.g. deit_tiny."),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Checkpoint to write (e.g. deit_tiny_digits.pt)."),
    image_size: int = typer.Option(32, "--image-size", help="Input height and width."),
    patch_size: int = typer.Option(8, "--patch-size", help="ViT patch size (divides the image size)."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak learning rate (AdamW, warm-up then cosine decay)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Batch size."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data split, initialisation and order."),
    eval_every: int = typer.Option(0, "--eval-every", metavar="N",
                                   help="Measure the test accuracy every N epochs (and after the last); 0: only "
                                        "after the last."),
    shift: float = typer.Option(0.0, "--shift", metavar="FRACTION",
                                help="Translate images at random by up to this fraction of their side while "
                                     "training (0.125 suits photos and textures; not digits, whose strokes touch "
                                     "the frame)."),
    flip: bool = typer.Option(False, "--flip", help="Also flip images at random while training: only for data "
                                                    "whose classes a mirror image does not change (not digits)."),
    recipe: str = typer.Option("default", "--recipe",
                               help="default (5 warm-up epochs, the model is an EMA of the weights) or plain "
                                    "(1 warm-up epoch, the last weights: the recipe before edgevit 0.2)."),
) -> None:
    """Train a ViT on labelled images on the CPU (the model that 'edgevit split' splits)."""
    if epochs < 1 or batch_size < 1 or lr <= 0 or eval_every < 0 or not 0 <= shift < 0.5:
        raise InputError("epochs and batch size must be >= 1, the learning rate positive, --eval-every >= 0 and "
                         "--shift between 0 and 0.5")
    if recipe not in ("default", "plain"):
        raise InputError(f"unknown recipe {recipe!r}: choose default or plain")
    from dataclasses import replace

    from edgevit.edvit.checkpoint import save_checkpoint
    from edgevit.edvit.data import load_dataset
    from edgevit.edvit.train import PLAIN, RECIPE, accuracy, predict, train_vit

    chosen = replace(RECIPE if recipe == "default" else PLAIN, shift=shift, flip=flip)
    history: list = []
    with Progress(lines=True) as progress:
        dataset = load_dataset(data, image_size, seed=seed)
        vit = train_vit(model, dataset, patch_size=patch_size, epochs=epochs, lr=lr, batch_size=batch_size,
                        seed=seed, progress=progress, recipe=chosen, eval_every=eval_every, history=history)
        test_accuracy = history[-1]["accuracy"] if history else accuracy(predict(vit, dataset.x_test), dataset.y_test)
        save_checkpoint(vit, output, dataset)
    result = {"model": model, "output": str(output), "test_accuracy": test_accuracy, "epochs": epochs,
              "train": len(dataset.y_train), "test": len(dataset.y_test), "classes": dataset.classes,
              "recipe": recipe, "weights": "ema" if chosen.ema else "last",
              "evaluations": [{"epoch": h["epoch"], "test_accuracy": h["accuracy"]} for h in history]}
    emit(result, lambda: safe_console().print(
        f"{model}: test accuracy {test_accuracy:.4f} on {len(dataset.y_test)} images; wrote {output}"))


@app.command("split")
def split_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered ViT name, e.g. deit_tiny."),
    weights: Path = typer.Option(..., "--weights", "-w", help="Trained checkpoint ('edgevit train' writes one)."),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    num_submodels: int = typer.Option(..., "--num-submodels", "-k", help="Number of sub-models K."),
    devices: Optional[Path] = typer.Option(None, "--devices", help="devices.yaml (default: one local device)."),
    output: Path = typer.Option(Path("edvit_plan"), "--output", "-o", help="Plan directory to write."),
    budget: Optional[str] = typer.Option(None, "--budget",
                                         help="Per sub-model: a fraction (0.05), parameters (250000) or "
                                              "memory (1MB). Default: 1/K of the full model."),
    partition: str = typer.Option("balanced", "--partition", help="balanced, confusion or embedding."),
    finetune_epochs: int = typer.Option(20, "--finetune-epochs", help="Fine-tuning epochs per sub-model."),
    fusion_epochs: int = typer.Option(40, "--fusion-epochs", help="Fusion head epochs."),
    joint_epochs: int = typer.Option(30, "--joint-epochs",
                                     help="Epochs fine-tuning the sub-models and the fusion head together (0: none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing plan directory."),
    seed: int = typer.Option(0, "--seed", help="Seed (data split, fine-tuning)."),
) -> None:
    """ED-ViT: split a trained ViT into class-wise pruned sub-models placed on devices."""
    from edgevit.edvit.splitter import split

    with Progress(lines=True) as progress:
        plan = split(model, data, num_submodels, devices=devices, budget=budget, output=output, weights=weights,
                     partition=partition, finetune_epochs=finetune_epochs, fusion_epochs=fusion_epochs,
                     joint_epochs=joint_epochs,
                     overwrite=overwrite, seed=seed, progress=progress)
    report = json.loads((plan.directory / "report.json").read_text(encoding="utf-8"))
    emit({"plan": str(plan.directory), "report": report},
          lambda: safe_console().print((plan.directory / "report.md").read_text(encoding="utf-8")))


@app.command("run")
def run_command(
    inputs: List[Path] = typer.Argument(..., help="Images or .npy arrays ((C, H, W) or (N, C, H, W), float32)."),
    plan: Path = typer.Option(..., "--plan", "-p", help="Plan directory written by 'edgevit split'."),
    backend: str = typer.Option("local", "--backend", help="local (threads of this process) or ray (actors on the plan's devices)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (host:6379); default RAY_ADDRESS, else a one-machine Ray offering every device."),
    deadline: float = typer.Option(30.0, "--deadline", help="Seconds every sub-model has to answer."),
    top_k: Optional[int] = top_k_option(3),
    top: Optional[int] = TOP_ALIAS,
) -> None:
    """Run a split plan: every sub-model in parallel, then the fusion head; print predictions."""
    from edgevit.edvit.inputs import prepare_inputs
    from edgevit.edvit.plan import load_plan
    from edgevit.edvit.runner import run_plan

    top = top_k_value(top_k, top, 3)
    split_plan = load_plan(plan)
    batch, names = prepare_inputs(split_plan, inputs)
    with contextlib.redirect_stdout(sys.stderr):  # Ray prints its worker notices on stdout: keep --json clean
        result = run_plan(split_plan, batch, backend=backend, deadline_s=deadline, address=address)

    def human() -> None:
        from rich.table import Table

        table = Table(title=f"{plan}: fused predictions ({backend} backend, batch of {result.batch})")
        for col in ("input", "class", "score", f"top {top}"):
            table.add_column(col)
        for name, prediction in zip(names, result.predictions):
            ranked = sorted(range(len(prediction.scores)), key=lambda i: -prediction.scores[i])[:top]
            table.add_row(name, prediction.label, f"{prediction.score:.4f}",
                          ", ".join(f"{result.classes[i]} {prediction.scores[i]:.3f}" for i in ranked))
        console = safe_console()
        console.print(table)
        console.print("workers: " + ", ".join(f"{w['submodel']} on {w['device']} ({w['host']}, {w['runtime']})"
                                              for w in result.workers))
        console.print("time: " + ", ".join(f"{k} {v:.1f} ms" for k, v in result.timings_ms.items()))

    emit({"inputs": names, **result.to_dict()}, human)


@app.command("fleet")
def fleet_command(
    command: Optional[List[str]] = typer.Argument(None, help="A command to run against the fleet (after --), "
                                                             "with RAY_ADDRESS set; without one the fleet stays "
                                                             "up until Ctrl-C."),
    devices: Optional[Path] = typer.Option(None, "--devices", help="devices.yaml: one Ray node per device, with "
                                                                   "its cpus, memory_mb and link_mbps."),
    cleanup: bool = typer.Option(False, "--cleanup", help="Remove what fleet runs killed outright left behind "
                                                          "(namespaces, links, cgroups, processes), and exit."),
    node_memory_mb: Optional[float] = typer.Option(None, "--node-memory-mb",
                                                   help="Memory a device's Ray node and idle worker get on top "
                                                        "of its memory_mb (default 300)."),
) -> None:
    """Emulate a fleet of edge devices on this machine (Linux, root): one Ray node per device."""
    from edgevit.edvit.fleet import check_host
    from edgevit.edvit.fleet.serve import serve
    from edgevit.edvit.fleet.sweep import cleanup as sweep

    def say(message: str) -> None:
        if not (state.quiet or state.json):
            sys.stderr.write(f"- {message}\n")
            sys.stderr.flush()

    check_host()
    if cleanup:
        removed = sweep(say=say)
        emit({"removed": removed}, lambda: safe_console().print(
            f"removed {sum(map(len, removed.values()))} resource(s) of {len(removed)} fleet run(s)"))
        return
    if devices is None:
        raise InputError("give the fleet's devices: --devices devices.yaml (or --cleanup)")

    def up(fleet) -> None:
        info = {"run": fleet.run, "address": fleet.address,
                "devices": [{"name": d.name, "ip": fleet.ip(d.name), "cpus": d.cpus, "link_mbps": d.link_mbps,
                             "memory_limit_mb": fleet.usage(d.name)["memory_limit_mb"]} for d in fleet.devices]}
        emit(info, lambda: safe_console().print(f"fleet {fleet.run} is up: RAY_ADDRESS={fleet.address}"
                                                + ("" if command else " (Ctrl-C to stop it)")))
        sys.stdout.flush()

    options = {} if node_memory_mb is None else {"node_memory_mb": node_memory_mb}
    code = serve(devices, command or (), on_up=up, say=say, **options)
    if code:
        raise typer.Exit(code)
