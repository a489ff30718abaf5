"""ED-ViT end to end: partition, prune, fine-tune, fuse, place, export, verify, report.

:func:`split` turns a trained ViT and labelled data into a plan directory (see
:mod:`.plan`). Nothing is written to ``output`` until every artifact has been exported
and verified and the plan validates: the work happens in a scratch directory beside it
that is renamed into place at the end.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._version import __version__
from ..errors import InputError, OutputPathError, ParityError
from ..inspect.bench import measure
from ..paths import ensure_writable_dir, publish, staged_path
from ..pipeline.flow import export_model
from .assign import SubModelCost, assign
from .checkpoint import load_checkpoint
from .compose import FusedModel, feature_dim, finetune_fused, finetune_submodel, train_fusion
from .cost import BYTES_PER_PARAM, gflops, parse_budget
from .data import Dataset, load_dataset
from .devices import Device, local_device, read_devices
from .latency import FLOAT_BYTES
from .partition import METHODS, confusion_affinity, embedding_affinity, group_sizes, partition_classes
from .plan import SplitPlan, SubModelEntry, artifact_record, load_plan
from .prune import backbone_parameters, check_supported, measure_importance, parameter_count, prune_to_budget
from .report import build_report, write_report
from .runner import run_plan
from .train import accuracy, predict

Progress = Callable[[str], None]


def _resolve_model(model: Any, weights: str | Path | None) -> tuple[Any, dict | None]:
    """(the ViT, its checkpoint record or None) from a module, or a name plus an edgevit checkpoint."""
    if not isinstance(model, str):
        if weights is not None:
            raise InputError("weights can only be given with a model name")
        return check_supported(model).eval(), None
    if weights is None:
        raise InputError(f"splitting needs a trained {model}: give its weights (edgevit train writes them)")
    loaded, record = load_checkpoint(weights)
    if loaded.edgevit_name != model:
        raise InputError(f"{weights} holds a {loaded.edgevit_name}, not a {model}")
    return check_supported(loaded), record


def _check_fit(vit, data: Dataset, record: dict | None) -> None:
    """The data is what the model takes and, for a checkpoint, what it was trained on."""
    channels, height, _ = vit.input_size
    if vit.num_classes != data.num_classes:
        raise InputError(f"the model has {vit.num_classes} classes but the data has {data.num_classes}")
    if data.x_train.shape[1:] != (channels, height, height):
        raise InputError(f"the model takes {channels}x{height}x{height} images, the data is "
                         f"{'x'.join(map(str, data.x_train.shape[1:]))}")
    if record is None:
        return
    if list(record["classes"]) != list(data.classes):
        raise InputError(f"the model was trained on classes {record['classes']}, the data has {data.classes}")
    if not np.allclose(record["mean"], data.mean, atol=1e-6) or not np.allclose(record["std"], data.std, atol=1e-6):
        raise InputError("the data is normalized differently from the data the model was trained on "
                         "(other images, or another train/test split)")


def _export(module, path: Path, target: str, data: Dataset, output_name="features"):
    result = export_model(module, target, path, reparam=True, verify=True, output_name=output_name,
                          mean=data.mean, std=data.std, layout="nchw", image_input=False)[0]  # what the runner feeds
    if not result.written:
        raise ParityError(f"{path.name}: the {target} artifact does not match PyTorch "
                          f"(max abs err {result.parity.max_abs_err:.3g}); nothing was written", report=result)
    return result


def measure_latencies(directory: Path, names: Sequence[str], runs: int) -> dict[str, float]:
    """Median batch-1 latency (ms, ONNX Runtime, 1 thread) of ``<name>.onnx`` in ``directory``,
    the artifacts timed in interleaved rounds so that a noisy machine slows them alike."""
    rounds = 3
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            times[name].append(measure(str(directory / f"{name}.onnx"), "auto", 1,
                                       max(1, runs // rounds), 2, integrity_check=False)["median_ms"])
    return {name: float(np.median(values)) for name, values in times.items()}


def split(model: Any, data: str | Path | Dataset, num_submodels: int,
          devices: Sequence[Device] | str | Path | None = None,
          budget: float | int | str | None = None, output: str | Path = "edvit_plan", *,
          weights: str | Path | None = None, partition: str = "balanced", finetune_epochs: int = 20,
          fusion_epochs: int = 40, joint_epochs: int = 30, overwrite: bool = False, latency_runs: int = 30,
          seed: int = 0, progress: Progress | None = None) -> SplitPlan:
    """Split a trained ViT into ``num_submodels`` class-wise sub-models; returns the plan.

    ``model``: a trained ViT module, or a registered name with ``weights`` (an edgevit
    training checkpoint). ``data``: "digits", a class-folder directory, an .npz, or a
    :class:`Dataset`. ``devices``: where the sub-models may go (default: one local
    device; a devices.yaml path is read). ``budget``: the most parameters a sub-model keeps (see
    :func:`~edgevit.edvit.cost.parse_budget`; default 1/K of the full model). After each
    sub-model's fine-tuning and the fusion head, ``joint_epochs`` fine-tune them all together.
    """
    say = progress or (lambda message: None)
    started = time.perf_counter()
    if isinstance(devices, (str, Path)):
        devices = read_devices(devices)
    devices = list(devices) if devices else [local_device()]
    vit, record = _resolve_model(model, weights)
    final = Path(output)
    if final.exists() and not final.is_dir():
        raise OutputPathError(f"output {final} exists and is not a directory")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise OutputPathError(f"output directory {final} is not empty; choose another or pass overwrite "
                              f"(--overwrite)")
    ensure_writable_dir(final.parent)
    if isinstance(data, Dataset):
        dataset = data
    else:  # quick, and silent: bad data must fail in one line before any progress output
        data_seed = record.get("data_seed", seed) if record else seed  # the split the model was trained on
        dataset = load_dataset(data, vit.input_size[1], seed=data_seed)
    _check_fit(vit, dataset, record)
    k = int(num_submodels)
    full_params = parameter_count(vit)
    max_params, budget_text = parse_budget(budget, backbone_parameters(vit), k)
    estimate = [SubModelCost(f"sub{i}", max_params * BYTES_PER_PARAM / 1e6, 1.0) for i in range(k)]
    group_sizes(dataset.num_classes, k)  # validates K before any long work
    if partition not in METHODS:
        raise InputError(f"unknown partition {partition!r}: choose {', '.join(METHODS)}")
    if finetune_epochs < 1 or fusion_epochs < 1 or joint_epochs < 0:
        raise InputError("fine-tuning and fusion need at least one epoch each (joint fine-tuning 0 or more)")
    assign(estimate, devices)  # fails now, not after training, if budget-sized sub-models cannot fit

    full_accuracy = accuracy(predict(vit, dataset.x_test), dataset.y_test)
    say(f"full model: {full_params:,} parameters, test accuracy {full_accuracy:.4f}")
    teacher = predict(vit, dataset.x_train)  # the full model distils into every sub-model
    if partition == "confusion":
        affinity = confusion_affinity(teacher, dataset.y_train, dataset.num_classes)
    elif partition == "embedding":
        affinity = embedding_affinity(vit.head.weight.detach().numpy())
    else:
        affinity = None
    groups = partition_classes(dataset.num_classes, k, partition, affinity)

    submodels = []
    for i, group in enumerate(groups):
        members = np.isin(dataset.y_train, group)
        names = ", ".join(dataset.classes[c] for c in group)
        say(f"sub{i}: classes {names}: measuring importance on {int(members.sum())} samples")
        importance = measure_importance(vit, dataset.x_train[members], dataset.y_train[members])
        pruned, fraction = prune_to_budget(vit, importance, max_params)
        say(f"sub{i}: pruned to {backbone_parameters(pruned):,} parameters (keeping {fraction:.1%} of each layer)")
        submodels.append(finetune_submodel(pruned, group, dataset.x_train, dataset.y_train, epochs=finetune_epochs,
                                           teacher_logits=teacher, seed=seed + i, progress=say,
                                           label=f"sub{i} fine-tuning"))
    fusion = train_fusion(submodels, dataset.x_train, dataset.y_train, dataset.num_classes,
                          epochs=fusion_epochs, seed=seed, progress=say)
    fused_accuracy = accuracy(predict(FusedModel(submodels, fusion), dataset.x_test), dataset.y_test)
    separate_accuracy = fused_accuracy  # before the joint fine-tuning: the report's ablation
    if joint_epochs:
        say(f"fused split before joint fine-tuning: test accuracy {fused_accuracy:.4f}")
        finetune_fused(FusedModel(submodels, fusion), dataset.x_train, dataset.y_train, epochs=joint_epochs,
                       teacher_logits=teacher, seed=seed, progress=say)
        fused_accuracy = accuracy(predict(FusedModel(submodels, fusion), dataset.x_test), dataset.y_test)
    say(f"fused split: test accuracy {fused_accuracy:.4f} (full model {full_accuracy:.4f})")

    input_shape = (1, *vit.input_size)
    with staged_path(final) as staging:
        staging.mkdir()
        say("exporting and verifying the full model (the baseline)")
        _export(vit, staging / "full.onnx", "onnx", dataset, output_name="logits")
        entries, costs = [], []
        for i, (sub, group) in enumerate(zip(submodels, groups)):
            name = f"sub{i}"
            say(f"{name}: exporting to onnx and verifying")
            _export(sub, staging / f"{name}.onnx", "onnx", dataset)
            record = artifact_record(staging, staging / f"{name}.onnx")
            entries.append(SubModelEntry(name, list(group), feature_dim(sub), parameter_count(sub),
                                         round(gflops(sub, input_shape), 6), {"onnx": record}))
        say("fusion head: exporting to onnx and verifying")
        _export(fusion, staging / "fusion.onnx", "onnx", dataset, output_name="logits")
        say("measuring each artifact's latency (ONNX Runtime, 1 thread, batch 1): the placement minimises it")
        latency = measure_latencies(staging, ["full", *(e.name for e in entries), "fusion"], latency_runs)
        for entry in entries:
            entry.latency_ms = latency[entry.name]
            costs.append(SubModelCost(entry.name, entry.artifacts["onnx"].size_bytes / 1e6, entry.latency_ms,
                                      entry.feature_dim * FLOAT_BYTES))
        placement = assign(costs, devices, input_bytes=int(np.prod(input_shape)))  # 8-bit pixels (see .wire)
        by_name = {d.name: d for d in devices}
        for entry, sub in zip(entries, submodels):
            if by_name[placement.assignment[entry.name]].target == "tflite":
                say(f"{entry.name}: exporting to tflite for {placement.assignment[entry.name]} and verifying")
                _export(sub, staging / f"{entry.name}.tflite", "tflite", dataset)
                entry.artifacts["tflite"] = artifact_record(staging, staging / f"{entry.name}.tflite")
        SplitPlan(
            directory=staging,
            model={"name": getattr(vit, "edgevit_name", type(vit).__name__), "config": getattr(vit, "edgevit_config", {}),
                   "params": full_params, "artifacts": {"onnx": asdict(artifact_record(staging, staging / "full.onnx"))},
                   "latency_ms": latency["full"], "edgevit_version": __version__},
            input={"name": "input", "shape": list(input_shape), "dtype": "float32", "layout": "NCHW",
                   "mean": list(dataset.mean), "std": list(dataset.std)},
            classes=list(dataset.classes), submodels=entries,
            fusion={"input_dim": sum(e.feature_dim for e in entries), "feature_order": [e.name for e in entries],
                    "artifacts": {"onnx": asdict(artifact_record(staging, staging / "fusion.onnx"))},
                    "latency_ms": latency["fusion"]},
            devices=devices, assignment=placement.assignment,
            placement={"loads": placement.loads, "memory_used_mb": placement.memory_used_mb,
                       "makespan": placement.makespan, "optimal": placement.optimal, "work_unit": "ms",
                       "latency_host": "the machine that split (ONNX Runtime, 1 thread)"},
            budget={"max_params": max_params, "given_as": budget_text},
        ).write(staging)
        plan = load_plan(staging, verify_checksums=False)  # what we publish must read back (hashed just now)
        say("checking the fused prediction of the exported artifacts on the test set")
        deployed_accuracy = accuracy(np.concatenate([run_plan(plan, dataset.x_test[i:i + 256]).logits  # bounded batches
                                                     for i in range(0, len(dataset.y_test), 256)]), dataset.y_test)
        report = build_report(plan, dataset, full_accuracy=full_accuracy, fused_accuracy=fused_accuracy,
                              deployed_accuracy=deployed_accuracy, separate_accuracy=separate_accuracy,
                              joint_epochs=joint_epochs, partition=partition,
                              seconds=time.perf_counter() - started)
        write_report(report, staging)
        publish(staging, final)
    say(f"plan written to {final}")
    return replace(plan, directory=final)
