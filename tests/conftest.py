"""Shared fixtures: a CLI runner in a real subprocess, and one set of exported artifacts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SMALL = 64  # export size for tests (EdgeNeXt needs multiples of 32)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, block: tuple[str, ...] = (), tmp: Path | None = None,
            timeout: int = 600, env: dict[str, str] | None = None) -> CliResult:
    """Run ``python -m edgevit ARGS`` in a fresh process; ``block`` makes those modules unimportable,
    ``env`` adds to the environment."""
    env = {**os.environ, **(env or {})}
    env.pop("EDGEVIT_DEBUG", None)
    if block:
        shadow = Path(tmp or cwd) / "_blocked_modules"
        shadow.mkdir(parents=True, exist_ok=True)
        for name in block:
            (shadow / f"{name}.py").write_text(f"raise ImportError('{name} is blocked by the test')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(shadow), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "edgevit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_failure(result: CliResult, code: int = 2, contains: str | None = None) -> None:
    """Exit ``code``, exactly one line on stderr, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == code, (result.code, result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("edgevit: error:"), lines[0]
    if contains:
        assert contains in lines[0], lines[0]


# --- two workers (pytest -n 2 --dist loadgroup, the README's test command) --------------------

# Tests that use these session fixtures run on one worker, so that each is built once (trained
# models, app and int8 artifacts, the wheel and the venvs made from it) ...
ONE_WORKER_FIXTURES = frozenset({"app_artifacts", "int8_artifacts", "digits_model", "trained", "plan",
                                 "edgevit_wheel", "device_venv", "tflite_runtime_venv", "pi_worker_venv",
                                 "native_exports"})
# ... and so do the tests that start Ray on this machine, one after another: one of them checks
# that Ray leaves no process behind, which a cluster on the other worker would spoil.
ONE_WORKER_FILES = frozenset({"test_edvit_ray.py", "test_readme.py", "test_edvit_fleet.py"})

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one core per worker: torch's second OpenMP thread would only compete with the other worker
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if ONE_WORKER_FIXTURES & set(item.fixturenames) or item.path.name in ONE_WORKER_FILES:
            item.add_marker(pytest.mark.xdist_group("one_worker"))


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_finish(session):
    """Under --dist loadgroup, check that xdist took the groups (it marks them in the node ids;
    on pytest 9.2 that has no effect, pytest-xdist issue 1386): every test fails otherwise."""
    yield
    if getattr(session.config.option, "loadgroup", False):
        lost = [item.nodeid for item in session.items
                if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if lost:
            session.config.ungrouped = (f"pytest-xdist did not group {len(lost)} tests (e.g. {lost[0]}) on pytest "
                                        f"{pytest.__version__}: install the pytest that the dev extra pins")


def pytest_runtest_setup(item):
    if getattr(item.config, "ungrouped", None):
        pytest.fail(item.config.ungrouped, pytrace=False)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """edgenext_xx_small exported to every target at 64x64 (seeded random weights)."""
    import edgevit

    out = tmp_path_factory.mktemp("artifacts")
    results = edgevit.export("edgenext_xx_small", "all", out, image_size=SMALL)
    return {r.target: r.path for r in results}


@pytest.fixture(scope="session")
def native_exports(tmp_path_factory) -> dict:
    """A small EdgeNeXt, SLAB-DeiT and FMViT (tests/native_cases.py), each exported to ONNX
    twice, verified on the way: standard, and with --native-ops (ai.edgevit nodes).
    family -> (model, standard ExportResult, native ExportResult)."""
    import edgevit

    from .native_cases import SMALL_MODELS

    out = tmp_path_factory.mktemp("native_exports")
    exports = {}
    for family, (build, size) in SMALL_MODELS.items():
        model = build()
        model.input_size = (3, size, size)
        exports[family] = (model, *(edgevit.export(model, "onnx", out / f"{family}_{kind}", native_ops=kind == "native",
                                                   num_inputs=2) for kind in ("standard", "native")))
    return exports


@pytest.fixture(scope="session")
def photo() -> Path:
    """A real photograph that ships inside scikit-learn."""
    import sklearn.datasets

    path = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def frames(photo, tmp_path_factory) -> Path:
    """A folder as a camera roll: the photo, a crop of it as PNG, a grayscale copy, and a
    file that is not an image (skipped)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("frames")
    shutil.copy(photo, folder / "a_photo.jpg")
    with Image.open(photo) as img:
        img.crop((100, 50, 400, 300)).save(folder / "b_crop.png")
        img.convert("L").save(folder / "c_gray.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


# --- app-ready artifacts: TFLite in its default (app) form, Core ML image-input classifiers ---

APP_MODELS = ("edgenext_xx_small", "slab_deit_tiny")
LABELS = [f"label {i} ({'odd' if i % 2 else 'even'})" for i in range(1000)]


@pytest.fixture(scope="session")
def photo_png(photo, tmp_path_factory) -> Path:
    """The photo, stored losslessly: MediaPipe and edgevit decode exactly the same pixels."""
    from PIL import Image

    path = tmp_path_factory.mktemp("photo") / "china.png"
    Image.open(photo).convert("RGB").save(path)
    return path


@pytest.fixture(scope="session")
def app_artifacts(tmp_path_factory, photo) -> dict[tuple[str, str, str], Path]:
    """(model, target, precision) -> artifact with labels: TFLite in its default (app) form,
    Core ML with image input; each verified at export, on the photo too."""
    import edgevit

    out = tmp_path_factory.mktemp("app")
    labels = out / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    paths = {}
    for model in APP_MODELS:
        for precision in ("fp32", "fp16"):
            for target, extra in (("tflite", {}), ("coreml", {"image_input": True})):
                result = edgevit.export(model, target, out, precision=precision, labels=labels, image=photo, **extra)
                assert result.written and result.parity.numerically_verified, result.parity.note
                paths[(model, target, precision)] = result.path
    return paths


# --- ED-ViT: a tiny trained DeiT and a 3-way split plan, shared by the split and run tests ---

TINY = dict(img_size=16, patch_size=4, embed_dim=48, depth=2, num_heads=2)


def tiny_vit(name: str = "deit_tiny", classes: int = 10):
    """A 2-block DeiT at 16x16 (patch 4, width 48) for ED-ViT tests."""
    import edgevit

    return edgevit.create_model(name, num_classes=classes, **TINY)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny DeiT trained briefly on digits at 16x16 (seconds)."""
    import torch

    from edgevit.edvit.data import load_dataset
    from edgevit.edvit.train import fit

    torch.manual_seed(0)
    data = load_dataset("digits", 16)
    vit = tiny_vit()
    fit(vit, data.x_train, data.y_train, epochs=10, lr=3e-3)
    return vit, data


@pytest.fixture(scope="session")
def plan(trained, tmp_path_factory):
    """A confusion split into 3 sub-models on a jetson (ONNX) and a pi (TFLite)."""
    import edgevit
    from edgevit.edvit import Device

    vit, data = trained
    out = tmp_path_factory.mktemp("edvit") / "plan"
    devices = [Device("jetson", 1.0, speed=2.0), Device("pi", 1.0, speed=1.0, target="tflite")]
    return edgevit.split(vit, data, 3, devices=devices, budget=0.4, output=out, finetune_epochs=3,
                         fusion_epochs=20, joint_epochs=2, partition="confusion")


# --- int8: a model trained on digits, exported in every (target, int8 mode) pair ---

INT8_EXPORTS = [("onnx", "full"), ("onnx", "dynamic"), ("tflite", "full"), ("tflite", "dynamic"),
              ("coreml", "weights"), ("coreml", "palettize"), ("coreml", "full")]


@pytest.fixture(scope="session")
def digits_model():
    """edgenext_xx_small trained 4 epochs on digits at 64x64 (about 96% test accuracy)."""
    import torch

    import edgevit
    from edgevit.edvit.data import load_dataset
    from edgevit.edvit.train import fit

    torch.manual_seed(0)
    data = load_dataset("digits", SMALL)
    model = edgevit.create_model("edgenext_xx_small", num_classes=10)
    fit(model, data.x_train, data.y_train, epochs=4, lr=3e-3, batch_size=64)
    return model, data


def export_int8(model, data, target, out, **options):
    import edgevit

    return edgevit.export(model, target, out, image_size=SMALL, precision="int8", mean=data.mean, std=data.std,
                          calibration={"images": data.x_train[:64]},
                          eval_data={"images": data.x_test, "labels": data.y_test}, **options)


@pytest.fixture(scope="session")
def int8_artifacts(digits_model, tmp_path_factory):
    """The digits model in every int8 mode of every target (guard at the default 1-point budget)."""
    model, data = digits_model
    out = tmp_path_factory.mktemp("int8")
    return {(target, mode): export_int8(model, data, target, out / mode, int8_mode=mode)
            for target, mode in INT8_EXPORTS}


# --- venvs built from this repository (the wheel built once): what users install ---

@pytest.fixture(scope="session")
def edgevit_wheel(tmp_path_factory) -> Path:
    from .venvs import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def device_venv(edgevit_wheel, tmp_path_factory) -> Path:
    """The device profile: ``pip install "edgevit-*.whl[onnx,tflite]"``, no torch."""
    from .venvs import make_venv

    return make_venv(tmp_path_factory.mktemp("device") / "venv", f"{edgevit_wheel}[onnx,tflite]")


@pytest.fixture(scope="session")
def tflite_runtime_venv(edgevit_wheel, tmp_path_factory) -> Path:
    """What many Raspberry Pi images carry: tflite-runtime (which needs numpy < 2) and edgevit
    without extras; no ai-edge-litert, no torch."""
    from .venvs import make_venv

    return make_venv(tmp_path_factory.mktemp("tflite-runtime") / "venv", "numpy<2", "tflite-runtime",
                     str(edgevit_wheel))
