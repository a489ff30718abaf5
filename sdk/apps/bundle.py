"""App bundles: what an iOS, Android or web developer copies into a project.

``write_bundle(artifact, "ios" | "android" | "web", output)`` checks that the artifact is in
the form the platform's runtime takes, then writes the model, its labels, one short source
file that uses the artifact's real names, sizes and normalization, and a README with the steps:

- iOS: an image-input Core ML classifier (``--image-input --labels``) and a Swift class
  that runs it with Vision (``VNCoreMLRequest``) on a ``CGImage`` or ``CVPixelBuffer``;
- Android: a TFLite model with standard metadata and NHWC pixel input (edgevit's TFLite
  default) and a Kotlin class that runs it with MediaPipe Tasks' ``ImageClassifier``;
- web: a static page and ES module (``web/``, copied as they are) that run a TFLite model
  with MediaPipe Tasks for the web or an ONNX model with onnxruntime-web, ``model.json``
  (the input form the module needs) and a ``package.json`` pinning that one package, which
  ``npm install`` puts in the folder's own ``node_modules`` (no CDN).

Both frame the image the same way: the whole image stretched to the input size (Vision's
``scaleFill``, MediaPipe's default), which ``edgevit predict --resize stretch`` reproduces.
The sources cannot be compiled here; the bundle's README says what was checked.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from edgevit.runtimes.loader import load

from ..artifact.input_form import InputForm
from ..errors import InputError, OutputPathError
from ..paths import ensure_writable_dir, publish, staged_path
from .templates import ANDROID_README, IOS_README, KOTLIN, SWIFT, WEB_README

PLATFORMS = ("ios", "android", "web")
WEB_PACKAGES = {  # runtime -> (npm package, the version the bundle pins: tested in headless Chromium)
    "mediapipe": ("@mediapipe/tasks-vision", "1.1.0"),
    "onnxruntime-web": ("onnxruntime-web", "1.31.1"),
}
WEB_FILES = ("index.html", "app.mjs", "classify.mjs")  # copied from edgevit/apps/web as they are
WEB_SOURCES = Path(__file__).resolve().parent / "web"


@dataclass
class Bundle:
    """What :func:`write_bundle` wrote."""

    platform: str
    output: Path
    files: list[str] = field(default_factory=list)  # relative to ``output``
    facts: dict[str, object] = field(default_factory=dict)  # the names and sizes the sources use

    def to_dict(self) -> dict[str, object]:
        return {"platform": self.platform, "output": str(self.output), "files": self.files, "facts": self.facts}


def type_name(model: str) -> str:
    """``edgenext_xx_small`` -> ``EdgenextXxSmall`` (a Swift/Kotlin type name)."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in model).split() if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    return name if name[0].isalpha() else "Model" + name


def write_bundle(artifact: str | Path, platform: str, output: str | Path) -> Bundle:
    """Write ``platform``'s bundle of ``artifact`` into ``output`` (a new or empty folder)."""
    if platform not in PLATFORMS:
        raise InputError(f"unknown platform {platform!r}: choose ios, android or web")
    artifact, output = Path(artifact), Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputPathError(f"{output} exists and is not an empty folder: choose a new one")
    runtime = load(artifact)
    facts = {"ios": _ios_facts, "android": _android_facts, "web": _web_facts}[platform](runtime)
    ensure_writable_dir(output.parent)
    result = Bundle(platform, output, facts=facts)
    with staged_path(output) as staged:
        staged.mkdir()
        model_file = staged / facts["model_file"]
        _copy_artifact(artifact, model_file)
        texts = {"ios": _ios_texts, "android": _android_texts, "web": _web_texts}[platform](facts)
        if runtime.metadata and runtime.metadata.labels:
            texts["labels.txt"] = "\n".join(runtime.metadata.labels) + "\n"
        if platform == "web":
            texts.update({name: (WEB_SOURCES / name).read_text(encoding="utf-8") for name in WEB_FILES})
        for name, text in texts.items():
            (staged / name).write_text(text, encoding="utf-8")
        result.files = sorted([facts["model_file"], *texts])
        if output.exists():
            output.rmdir()  # empty (checked above): the staged folder takes its place
        publish(staged, output)
    return result


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _summary(meta, runtime) -> dict[str, object]:
    height, width = InputForm.of(meta, image_input=runtime.inputs[0].image).image_size(runtime.inputs[0].shape)
    return {
        "model": meta.model, "type": type_name(meta.model) + "Classifier", "precision": meta.precision,
        "input_name": runtime.inputs[0].name, "height": height, "width": width,
        "classes": len(meta.labels or []), "output_kind": meta.output_kind, "mean": meta.mean, "std": meta.std,
    }


def _ios_facts(runtime) -> dict[str, object]:
    meta = runtime.metadata
    _require(runtime.backend == "coreml", f"{runtime.path}: an iOS bundle takes a Core ML package (.mlpackage); "
             "export with --target coreml --image-input --labels labels.txt")
    _require(meta is not None, f"{runtime.path} was not exported by edgevit (no edgevit metadata)")
    _require(runtime.inputs[0].image and getattr(runtime, "classes", None) is not None,
             f"{runtime.path} is not an image-input classifier: export with --image-input --labels labels.txt")
    facts = _summary(meta, runtime)
    facts.update(model_file=f"{meta.model}.mlpackage", scores_output=runtime.outputs[0].name,
                 label_output=runtime.app_metadata["label_output"], classes=len(runtime.classes))
    return facts


def _android_facts(runtime) -> dict[str, object]:
    facts = _mediapipe_facts(runtime, "an Android bundle", " --labels labels.txt")
    _require("labels.txt" in runtime.app_metadata.get("packed_files", []),
             f"{runtime.path} has no packed label file: export with --labels labels.txt")
    return facts


def _mediapipe_facts(runtime, what: str, options: str = "") -> dict[str, object]:
    """The facts of a TFLite model in the form MediaPipe Tasks loads (NHWC RGB pixels, metadata)."""
    meta = runtime.metadata
    _require(runtime.backend == "litert", f"{runtime.path}: {what} takes a TFLite model (.tflite); "
             f"export with --target tflite{options}")
    _require(meta is not None, f"{runtime.path} was not exported by edgevit (no edgevit metadata)")
    _require(meta.layout == "NHWC" and meta.image_input,
             f"{runtime.path} takes {meta.layout} {'pixels' if meta.image_input else 'normalized tensors'}; "
             "MediaPipe needs NHWC RGB pixels: export with --layout nhwc --image-input (the TFLite defaults)")
    facts = _summary(meta, runtime)
    facts.update(model_file=f"{meta.model}.tflite", output_name=runtime.outputs[0].name)
    return facts


def _web_facts(runtime) -> dict[str, object]:
    """A TFLite model for MediaPipe Tasks, or an ONNX image model for onnxruntime-web."""
    if runtime.backend == "litert":
        facts = _mediapipe_facts(runtime, "a web bundle", " (or --target onnx)")
        facts.update(runtime="mediapipe", input_shape=[1, facts["height"], facts["width"], 3], layout="NHWC",
                     image_input=True)
    else:
        meta = runtime.metadata
        _require(runtime.backend == "onnxruntime", f"{runtime.path}: a web bundle takes a TFLite or ONNX model; "
                 "export with --target tflite or --target onnx")
        _require(meta is not None, f"{runtime.path} was not exported by edgevit (no edgevit metadata)")
        shape = list(runtime.inputs[0].shape)
        _require(len(shape) == 4 and shape[1 if meta.layout == "NCHW" else 3] == 3,
                 f"{runtime.path} does not take RGB images (its input is {shape}, {meta.layout})")
        _require(not runtime.app_metadata.get("native_ops"),
                 f"{runtime.path} has ai.edgevit nodes, which onnxruntime-web cannot run: export without --native-ops")
        facts = _summary(meta, runtime)
        shape = [1, 3, facts["height"], facts["width"]] if meta.layout == "NCHW" else \
            [1, facts["height"], facts["width"], 3]  # batch 1, also for a --dynamic-batch file
        facts.update(runtime="onnxruntime-web", model_file=f"{meta.model}.onnx", input_shape=shape,
                     layout=meta.layout, image_input=bool(meta.image_input))
    facts["classes"] = int(runtime.outputs[0].shape[-1])
    facts["labels"] = list(runtime.metadata.labels) if runtime.metadata.labels else None
    facts["package"], facts["package_version"] = WEB_PACKAGES[str(facts["runtime"])]
    return facts


def _ios_texts(facts: dict[str, object]) -> dict[str, str]:
    values = {k: str(v) for k, v in facts.items()}
    return {f"{facts['type']}.swift": Template(SWIFT).substitute(values),
            "README.md": Template(IOS_README).substitute(values)}


def _android_texts(facts: dict[str, object]) -> dict[str, str]:
    values = {k: str(v) for k, v in facts.items()}
    return {f"{facts['type']}.kt": Template(KOTLIN).substitute(values),
            "README.md": Template(ANDROID_README).substitute(values)}


def _web_texts(facts: dict[str, object]) -> dict[str, str]:
    config = {"model": facts["model"], "runtime": facts["runtime"], "package_version": facts["package_version"],
              "model_file": facts["model_file"], "classes": facts["classes"], "labels": facts["labels"],
              "output_kind": facts["output_kind"],
              "input": {"height": facts["height"], "width": facts["width"], "layout": facts["layout"],
                        "image_input": facts["image_input"], "mean": list(facts["mean"]), "std": list(facts["std"]),
                        "shape": facts["input_shape"]}}
    package = {"name": f"{str(facts['model']).replace('_', '-')}-web-classifier", "version": "1.0.0",
               "private": True, "type": "module",
               "description": f"{facts['model']} in the browser ({facts['runtime']}), written by edgevit bundle",
               "scripts": {"start": "python3 -m http.server 8000 --bind 127.0.0.1"},
               "dependencies": {str(facts["package"]): str(facts["package_version"])}}
    values = {k: str(v) for k, v in facts.items()}
    return {"model.json": json.dumps(config, indent=2) + "\n", "package.json": json.dumps(package, indent=2) + "\n",
            "README.md": Template(WEB_README).substitute(values)}


def _copy_artifact(source: Path, destination: Path) -> None:
    """Copy a file, or a package's regular files (links are not followed or copied)."""
    if source.is_file():
        shutil.copyfile(source, destination)
        return
    for folder, _, names in os.walk(source):
        target = destination / Path(folder).relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                shutil.copyfile(path, target / name)
