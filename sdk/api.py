"""The public Python API (re-exported by ``edgevit``). Heavy imports happen inside calls."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from .errors import EdgeVitError, InputError, ParityError
from .models.registry import get_spec
from .models.registry import list_models as _list_models
from .optional import require


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered models (optionally of one family)."""
    return _list_models(family)


def create_model(name: str, *, weights: str | Path | None = None, num_classes: int | None = None,
                 pretrained_layout: str = "auto", **config: Any) -> Any:
    """Build a registered model in eval mode, loading ``weights`` strictly if given.

    ``config`` overrides the registered architecture settings, e.g. ``img_size=32,
    patch_size=8`` for a DeiT on small images; an unknown setting is an InputError.

    Without ``weights`` the model has deterministic random weights (seed 0), so that an
    export and a later ``verify`` in another process agree.

    ``weights`` may be in edgevit's layout, the official repository's or timm's
    (``pretrained_layout="auto"`` detects which).
    """
    spec = get_spec(name)
    torch = require("torch", "to build PyTorch models")
    classes = spec.num_classes if num_classes is None else int(num_classes)
    if classes < 1:
        raise InputError(f"num_classes must be positive, got {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random weights are the same in every process (seed 0)
        try:
            model = spec.resolve_builder()(num_classes=classes, **{**spec.config, **config})
        except (TypeError, ValueError) as exc:
            if not config:
                raise
            raise InputError(f"{name} cannot be built with {config}: {exc}") from None
    model.edgevit_name = name
    model.edgevit_config = dict(config)
    if weights is not None:
        from .models.checkpoints import load_weights

        load_weights(model, spec, weights, pretrained_layout)
    return model.eval()


def export(model_or_name: Any, target: str = "onnx", output: str | Path = "edgevit_out", *,
           weights: str | Path | None = None, image_size: int | Sequence[int] | None = None,
           precision: str = "fp32", verify: bool = True, reparam: bool = True, **options: Any):
    """Export to ``target`` ("onnx", "coreml", "tflite" or "all") and verify parity.

    ``reparam`` (default on) folds the model with :func:`reparameterize` before export;
    parity is always checked against the unfolded model. ``target_form`` (default on)
    rewrites it into its target's layout first (:mod:`edgevit.forms`), checked exact.

    Returns an ``ExportResult`` (a list of them for ``"all"``). A parity failure raises
    :class:`ParityError` and writes nothing; its ``report`` holds the results.
    Keyword options: ``dynamic_batch``, ``layout`` ("nchw"/"nhwc"), ``image_input`` (RGB
    pixels 0-255 in; both default to the target's app form: NHWC pixels for TFLite),
    ``with_softmax``, ``labels``, ``image``, ``num_inputs``, ``seed``, ``progress`` and exporter ``options`` (``opset``,
    ``deployment_target``, ``native_ops``: ONNX with the attention as ``ai.edgevit`` nodes,
    run by edgevit's ONNX Runtime loader with the C++ kernels).
    ``precision="int8"`` takes ``calibration`` (``"digits"``, an image folder, an ``.npz``,
    an array or a mapping with ``images`` and ``labels``), ``eval_data``, ``max_drop``,
    ``calibration_samples``, ``eval_samples``, ``int8_mode`` and ``int8_io``; a model the
    guard cannot bring within ``max_drop`` raises :class:`ParityError` and writes nothing.
    """
    from .pipeline import export_model

    exporter_options = {k: options.pop(k) for k in ("opset", "deployment_target", "native_ops") if k in options}
    if exporter_options:
        options["options"] = {**options.get("options", {}), **exporter_options}
    results = export_model(model_or_name, target, output, weights=weights, image_size=image_size,
                           precision=precision, verify=verify, reparam=reparam, **options)
    failed = [r for r in results if not r.written]
    if failed:
        names = ", ".join(f"{r.target} (top-1 drop {r.guard.final.drop:.2f} points > {r.guard.max_drop:g})"
                          if r.guard else f"{r.target} (max abs err {r.parity.max_abs_err:.3g})"
                          for r in failed if r.parity or r.guard)
        raise ParityError(f"parity check failed, nothing written for: {names}", report=results)
    return results if target == "all" else results[0]


def model_cost(model_or_name: Any, *, image_size: int | Sequence[int] | None = None):
    """Parameters and GFLOPs (multiply-adds, as the papers count them) at batch 1.

    Counted on the re-parameterized model, the graph a deployed artifact runs; the
    parameters as trained are ``.params``, as deployed ``.deployed_params``. The input is
    the model's registered size unless ``image_size`` is given. Returns a
    :class:`edgevit.flops.ModelCost`.
    """
    from .flops import model_cost as _model_cost
    from .pipeline import model_input_shape, registered_spec

    if isinstance(model_or_name, str):
        spec, name = get_spec(model_or_name), model_or_name
        model = create_model(name)
    else:
        model = model_or_name
        spec, name = registered_spec(model)
    shape = model_input_shape(model, spec, name, image_size)
    return _model_cost(model, shape, deployed=True)


def reparameterize(model: Any) -> Any:
    """Fold ``model`` for deployment (eval mode, in place) and return it.

    BatchNorm, RepBN/PRepBN, layer-scale and foldable norm affines go into the
    neighbouring Conv/Linear layers, exactly. The report of what was folded and what
    was kept (and why) is ``model.edgevit_reparam_report``.
    """
    from .reparam import reparameterize as _reparameterize

    return _reparameterize(model)


def use_native(model: Any, enable: bool = True) -> Any:
    """Switch ``model``'s XCA / simplified-linear-attention modules to edgevit's C++ kernels
    (``enable=False``: back to the PyTorch ops); see :mod:`edgevit.native_torch`."""
    from .native_torch import use_native as _use_native

    return _use_native(model, enable)


def load(artifact_path: str | Path, *, runtime: str = "auto", threads: int | None = None,
         integrity_check: bool = True, **options: Any):
    """Load an artifact (.onnx, .tflite, .mlpackage, .pt2) with the runtime that fits it.

    One changed since edgevit exported it (its content digest is not the recorded one) is
    refused with an ArtifactError unless ``integrity_check`` is False; ``.integrity`` says.
    ONNX artifacts take ``providers=["tensorrt", "cuda", "cpu"]`` (best first; a name or
    (name, options)): ``.providers`` and ``describe()`` say which the session really uses.
    """
    from edgevit.runtimes.loader import load as _load

    return _load(artifact_path, runtime=runtime, threads=threads, integrity_check=integrity_check, **options)


def verify(artifact_path: str | Path, model: Any, *, weights: str | Path | None = None,
           image: str | Path | None = None, num_inputs: int = 3, seed: int = 0,
           runtime: str = "auto", integrity_check: bool = True):
    """Compare an artifact with the PyTorch model (a registered name or an nn.Module); an
    artifact changed since export is refused (ArtifactError) unless ``integrity_check`` is False."""
    from .artifact_module import artifact_module
    from .input_form import InputForm
    from .parity import check_parity, parity_inputs, structural_report
    from .pipeline import torch_reference
    from .preprocess import load_image

    rt = load(artifact_path, runtime=runtime, integrity_check=integrity_check)
    if isinstance(model, str):
        spec = get_spec(model)
        module = create_model(model, weights=weights)
    else:
        if weights is not None:
            raise EdgeVitError("weights can only be given with a registered model name")
        spec, module = None, model.eval()
    meta = rt.metadata
    precision = meta.precision if meta else "fp32"
    form = InputForm.of(meta, image_input=rt.inputs[0].image)
    if meta is None and spec is not None:  # no metadata: the model's own normalization
        form = dataclasses.replace(form, mean=tuple(spec.mean), std=tuple(spec.std))
    shape = tuple(1 if d is None else d for d in rt.inputs[0].shape)
    if not rt.can_run:
        return structural_report(rt, shape, precision)
    if len(shape) != 4:
        raise InputError(f"{artifact_path} takes a rank-{len(shape)} input; edgevit verifies image models")
    nchw = form.model_shape(shape)
    checks = parity_inputs(nchw, num_inputs, seed)
    if image is not None:
        crop = meta.crop_pct if meta else 0.875
        checks.append((f"image {Path(image).name}", load_image(image, nchw[2:], form.mean, form.std, crop)))
    softmax = meta is not None and meta.output_kind == "probabilities"
    reference = torch_reference(artifact_module(module, form, softmax))
    try:
        return check_parity(rt, reference, [(name, form.from_normalized(x)) for name, x in checks], precision)
    except RuntimeError as exc:  # the model cannot take the artifact's input shape
        raise InputError(f"the PyTorch model does not accept the artifact's input {shape}: {exc}") from None


def bundle(artifact_path: str | Path, platform: str, output: str | Path):
    """Write what an iOS or Android app needs into the new folder ``output``: the model,
    its labels, a Swift or Kotlin class using the artifact's real names and sizes, and a
    README (see :mod:`edgevit.app_bundle`). An artifact in the wrong form is an InputError."""
    from .app_bundle import write_bundle

    return write_bundle(artifact_path, platform, output)


def benchmark(artifact_paths: Sequence[str | Path], **options: Any):
    """Latency, throughput, size and peak memory of each artifact (see ``edgevit.bench``)."""
    from .bench import benchmark as _benchmark

    return _benchmark(artifact_paths, **options)


def split(model: Any, data: Any, num_submodels: int, devices: Any = None, budget: Any = None,
          output: str | Path = "edvit_plan", **options: Any):
    """ED-ViT: split a trained ViT into class-wise pruned sub-models placed on devices.

    ``model`` is a trained ViT (or a registered name with ``weights=``), ``data`` is
    "digits", a class-folder directory, an .npz or a Dataset, ``devices`` a list of
    :class:`edgevit.edvit.Device` or a devices.yaml path. Writes the plan directory
    ``output`` (plan.json, verified artifacts, report.json/.md) and returns the
    :class:`edgevit.edvit.SplitPlan`. Options: ``weights``, ``partition``
    ("balanced", "confusion", "embedding"), ``finetune_epochs``, ``fusion_epochs``,
    ``overwrite``, ``seed``, ``progress``.
    """
    from .edvit.devices import read_devices
    from .edvit.splitter import split as _split

    if isinstance(devices, (str, Path)):
        devices = read_devices(devices)
    return _split(model, data, num_submodels, devices, budget, output, **options)


def load_plan(plan_dir: str | Path, *, verify_checksums: bool = True):
    """Read and validate a split plan directory (checksums included by default)."""
    from .edvit.plan import load_plan as _load_plan

    return _load_plan(plan_dir, verify_checksums=verify_checksums)


def run_plan(plan_dir: Any, inputs: Any, *, backend: str = "local", deadline_s: float = 30.0, **options: Any):
    """Run a split plan (a directory or a loaded SplitPlan) on ``inputs`` (a float32 batch
    (N, C, H, W), or one or more image / .npy paths): every sub-model in parallel, then
    the fusion head. ``backend`` is "local" (threads of this process) or "ray" (actors on
    the plan's devices; ``address=`` joins a cluster). Returns a RunResult (predictions
    with softmax scores, fused logits, timings, where each sub-model ran). A sub-model
    that fails twice or does not answer within ``deadline_s`` fails the call with an error
    naming it. For many requests, keep the workers up with ``edgevit.open_plan``."""
    import numpy as np

    from .edvit.inputs import prepare_inputs
    from .edvit.plan import SplitPlan
    from .edvit.plan import load_plan as _load_plan
    from .edvit.runner import run_plan as _run_plan

    plan = plan_dir if isinstance(plan_dir, SplitPlan) else _load_plan(plan_dir)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    batch = inputs if isinstance(inputs, np.ndarray) else prepare_inputs(plan, list(inputs))[0]
    return _run_plan(plan, batch, backend=backend, deadline_s=deadline_s, **options)


def open_plan(plan_dir: Any, backend: str = "local", **options: Any):
    """Start a split plan's workers once and keep them up: a PlanSession whose
    ``run(batch, deadline_s)`` may be called from many threads (concurrent requests are
    batched); close it, or use it as a context manager. Options as for :func:`run_plan`
    (``address``, ``max_batch``, ``threads``)."""
    from .edvit.runner import PlanSession

    return PlanSession(plan_dir, backend, **options)
