"""The public Python API (re-exported by ``edgevit``): a thin face over the subpackages.

Nothing inside edgevit imports this module. The subpackages that need torch (or other
optional dependencies) at import time are imported inside the calls that use them, so that
``edgevit.load`` and the other device-side calls never import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from edgevit.runtimes.loader import load as load_artifact

from .apps.bundle import write_bundle
from .edvit.plan import load_plan as read_plan
from .edvit.runner import PlanSession
from .edvit.runner import run_plan as run_split_plan
from .errors import ParityError
from .inspect.preflight import check_artifact
from .inspect.bench import benchmark as run_benchmark
from .models.factory import create_model as create_model  # the public function itself
from .models.registry import get_spec
from .models.registry import list_models as list_models  # the public function itself
from .optional import require
from .pipeline.checks import DEFAULT_VERIFY_SAMPLES
from .pipeline.flow import export_model
from .pipeline.verify import verify_artifact


def export(model_or_name: Any, target: str = "onnx", output: str | Path = "edgevit_out", *,
           weights: str | Path | None = None, image_size: int | Sequence[int] | None = None,
           precision: str = "fp32", verify: bool = True, reparam: bool = True, **options: Any):
    """Export to ``target`` ("onnx", "coreml", "tflite" or "all") and verify parity.

    ``reparam`` (default on) folds the model with :func:`reparameterize` before export;
    parity is always checked against the unfolded model. ``target_form`` (default on)
    rewrites it into its target's layout first (:mod:`edgevit.reparam.forms`), checked exact.

    Returns an ``ExportResult`` (a list of them for ``"all"``). A parity failure raises
    :class:`ParityError` and writes nothing; its ``report`` holds the results.
    Keyword options: ``dynamic_batch``, ``layout`` ("nchw"/"nhwc"), ``image_input`` (RGB
    pixels 0-255 in; both default to the target's app form: NHWC pixels for TFLite),
    ``with_softmax``, ``labels``, ``image``, ``verify_data`` and ``verify_samples`` (also verify on
    these images: the sources of ``calibration``), ``num_inputs``, ``seed``, ``progress`` and exporter ``options`` (``opset``,
    ``deployment_target``, ``native_ops``: ONNX with the attention as ``ai.edgevit`` nodes,
    run by edgevit's ONNX Runtime loader with the C++ kernels).
    ``precision="int8"`` takes ``calibration`` (``"digits"``, an image folder, an ``.npz``,
    an array or a mapping with ``images`` and ``labels``), ``eval_data``, ``max_drop``,
    ``calibration_samples``, ``eval_samples``, ``int8_mode`` and ``int8_io``; a model the
    guard cannot bring within ``max_drop`` raises :class:`ParityError` and writes nothing, as
    does an fp16 program whose tensors leave fp16's safe range on the verification inputs.
    """
    exporter_options = {k: options.pop(k) for k in ("opset", "deployment_target", "native_ops") if k in options}
    if exporter_options:
        options["options"] = {**options.get("options", {}), **exporter_options}
    results = export_model(model_or_name, target, output, weights=weights, image_size=image_size,
                           precision=precision, verify=verify, reparam=reparam, **options)
    failed = [r for r in results if not r.written]
    if failed:
        raise ParityError("nothing written for " + "; ".join(map(_why_refused, failed)), report=results)
    return results if target == "all" else results[0]


def _why_refused(result: Any) -> str:
    """One clause: why ``result``'s artifact was not written."""
    if result.fp16_range is not None and not result.fp16_range.passed:
        return f"{result.target}: {result.fp16_range.reason()}"
    if result.guard is not None:
        return f"{result.target} (top-1 drop {result.guard.final.drop:.2f} points > {result.guard.max_drop:g})"
    if result.parity is not None:
        return f"{result.target} (parity check failed: max abs err {result.parity.max_abs_err:.3g})"
    return result.target


def model_cost(model_or_name: Any, *, image_size: int | Sequence[int] | None = None):
    """Parameters and GFLOPs (multiply-adds, as the papers count them) at batch 1.

    Counted on the re-parameterized model, the graph a deployed artifact runs; the
    parameters as trained are ``.params``, as deployed ``.deployed_params``. The input is
    the model's registered size unless ``image_size`` is given. Returns a
    :class:`edgevit.inspect.cost.ModelCost`.
    """
    if isinstance(model_or_name, str):
        get_spec(model_or_name)  # an unknown name is reported before torch is needed
    require("torch", "to count parameters and FLOPs")
    from .inspect.cost import cost_of  # torch

    return cost_of(model_or_name, image_size)


def reparameterize(model: Any) -> Any:
    """Fold ``model`` for deployment (eval mode, in place) and return it.

    BatchNorm, RepBN/PRepBN, layer-scale and foldable norm affines go into the
    neighbouring Conv/Linear layers, exactly. The report of what was folded and what
    was kept (and why) is ``model.edgevit_reparam_report``.
    """
    require("torch", "to fold PyTorch models")
    from .reparam import reparameterize as _reparameterize  # torch

    return _reparameterize(model)


def use_native(model: Any, enable: bool = True) -> Any:
    """Switch ``model``'s XCA / simplified-linear-attention modules to edgevit's C++ kernels
    (``enable=False``: back to the PyTorch ops); see :mod:`edgevit.native.torch_ops`."""
    require("torch", "to run PyTorch models with the native kernels")
    from .native.torch_ops import use_native as _use_native  # torch

    return _use_native(model, enable)


def load(artifact_path: str | Path, *, runtime: str = "auto", threads: int | None = None,
         integrity_check: bool = True, **options: Any):
    """Load an artifact (.onnx, .tflite, .mlpackage, .pt2) with the runtime that fits it.

    One changed since edgevit exported it (its content digest is not the recorded one) is
    refused with an ArtifactError unless ``integrity_check`` is False; ``.integrity`` says.
    ONNX artifacts take ``providers=["tensorrt", "cuda", "cpu"]`` (best first; a name or
    (name, options)): ``.providers`` and ``describe()`` say which the session really uses.
    """
    return load_artifact(artifact_path, runtime=runtime, threads=threads, integrity_check=integrity_check, **options)


def verify(artifact_path: str | Path, model: Any, *, weights: str | Path | None = None,
           image: str | Path | None = None, verify_data: Any = None,
           verify_samples: int = DEFAULT_VERIFY_SAMPLES,
           num_inputs: int = 3, seed: int = 0, runtime: str = "auto", integrity_check: bool = True):
    """Compare an artifact with the PyTorch model (a registered name or an nn.Module) on
    random inputs, edgevit's photos, ``verify_data`` and ``image``; an artifact changed since
    export is refused (ArtifactError) unless ``integrity_check`` is False."""
    return verify_artifact(artifact_path, model, weights=weights, image=image, verify_data=verify_data,
                           verify_samples=verify_samples, num_inputs=num_inputs, seed=seed, runtime=runtime,
                           integrity_check=integrity_check)


def bundle(artifact_path: str | Path, platform: str, output: str | Path):
    """Write what an iOS or Android app needs into the new folder ``output``: the model,
    its labels, a Swift or Kotlin class using the artifact's real names and sizes, and a
    README (see :mod:`edgevit.apps.bundle`). An artifact in the wrong form is an InputError."""
    return write_bundle(artifact_path, platform, output)


def check(artifact_path: str | Path):
    """Where the artifact can run: each accelerator's partitions, share of nodes, unsupported
    operators (with their layers) and verdict, from the vendors' analyzers (a
    :class:`~edgevit.inspect.accelerators.CheckReport`; ``edgevit check``)."""
    return check_artifact(artifact_path)


def benchmark(artifact_paths: Sequence[str | Path], **options: Any):
    """Latency, throughput, size and peak memory of each artifact (see ``edgevit.inspect.bench``)."""
    return run_benchmark(artifact_paths, **options)


def split(model: Any, data: Any, num_submodels: int, devices: Any = None, budget: Any = None,
          output: str | Path = "edvit_plan", **options: Any):
    """ED-ViT: split a trained ViT into class-wise pruned sub-models placed on devices.

    ``model`` is a trained ViT (or a registered name with ``weights=``), ``data`` is
    "digits", a class-folder directory, an .npz or a Dataset, ``devices`` a list of
    :class:`edgevit.edvit.Device` or a devices.yaml path. Writes the plan directory
    ``output`` (plan.json, verified artifacts, report.json/.md) and returns the
    :class:`edgevit.edvit.SplitPlan`. Options: ``weights``, ``partition``
    ("balanced", "confusion", "embedding"), ``finetune_epochs``, ``fusion_epochs``, ``joint_epochs``,
    ``overwrite``, ``seed``, ``progress``.
    """
    require("torch", "to split a ViT")
    from .edvit.splitter import split as _split  # torch

    return _split(model, data, num_submodels, devices, budget, output, **options)


def load_plan(plan_dir: str | Path, *, verify_checksums: bool = True):
    """Read and validate a split plan directory (checksums included by default)."""
    return read_plan(plan_dir, verify_checksums=verify_checksums)


def run_plan(plan_dir: Any, inputs: Any, *, backend: str = "local", deadline_s: float = 30.0, **options: Any):
    """Run a split plan (a directory or a loaded SplitPlan) on ``inputs`` (a float32 batch
    (N, C, H, W), or one or more image / .npy paths): every sub-model in parallel, then
    the fusion head. ``backend`` is "local" (threads of this process) or "ray" (actors on
    the plan's devices; ``address=`` joins a cluster). Returns a RunResult (predictions
    with softmax scores, fused logits, timings, where each sub-model ran). A sub-model
    that fails twice or does not answer within ``deadline_s`` fails the call with an error
    naming it. For many requests, keep the workers up with ``edgevit.open_plan``."""
    return run_split_plan(plan_dir, inputs, backend=backend, deadline_s=deadline_s, **options)


def open_plan(plan_dir: Any, backend: str = "local", **options: Any):
    """Start a split plan's workers once and keep them up: a PlanSession whose
    ``run(batch, deadline_s)`` may be called from many threads (concurrent requests are
    batched); close it, or use it as a context manager. Options as for :func:`run_plan`
    (``address``, ``max_batch``, ``threads``)."""
    return PlanSession(plan_dir, backend, **options)
