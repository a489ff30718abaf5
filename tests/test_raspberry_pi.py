"""The Raspberry Pi demo as users run it, in venvs built from this repository without torch:
TFLite through ai-edge-litert or tflite-runtime (numpy < 2), from a folder, a video, an
animated image or the camera; and a Pi as a Ray worker of a split plan."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from .conftest import CliResult, run_cli
from .demos import EXAMPLES, PI_DEMO, assert_demo_failure, demo_output, predicted
from .venvs import venv_run

# --- Raspberry Pi -------------------------------------------------------------------------

def test_pi_demo_classifies_a_folder_of_images_without_torch(device_venv, app_artifacts, frames, tmp_path):
    artifact = app_artifacts[("edgenext_xx_small", "tflite", "fp32")]
    save = tmp_path / "scores.npz"
    rows, summary = demo_output(venv_run(device_venv, "python", PI_DEMO, artifact, "--source", frames,
                                         "--threads", "2", "--top-k", "3", "--save", save, "--json"))
    assert [r["frame"] for r in rows] == ["a_photo.jpg", "b_crop.png", "c_gray.png"]
    for row in rows:  # the same framing as edgevit predict, and the labels packed in the model
        assert [c["class"] for c in row["top"]] == predicted(artifact, frames / row["frame"])
        assert row["top"][0]["label"].startswith("label ") and row["latency_ms"] > 0
    assert summary["frames"] == 3 and summary["fps"] > 0 and summary["median_ms"] > 0
    assert summary["backend"].startswith("ai-edge-litert")
    scores = np.load(save)
    assert list(scores["names"]) == ["a_photo.jpg", "b_crop.png", "c_gray.png"]
    assert scores["scores"].shape == (3, 1000)


def test_pi_demo_reads_an_animated_image_as_a_video_and_stops_at_frames(device_venv, artifacts, photo, tmp_path):
    from PIL import Image

    with Image.open(photo) as img:
        shots = [img.rotate(angle).resize((160, 120)) for angle in (0, 10, 20, 30)]
    clip = tmp_path / "clip.gif"
    shots[0].save(clip, save_all=True, append_images=shots[1:], duration=40)
    rows, summary = demo_output(venv_run(device_venv, "python", PI_DEMO, artifacts["tflite"], "--source", clip,
                                         "--frames", "3", "--json"))
    assert [r["frame"] for r in rows] == ["clip.gif#0", "clip.gif#1", "clip.gif#2"] and summary["frames"] == 3
    human = venv_run(device_venv, "python", PI_DEMO, artifacts["tflite"], "--source", clip)
    assert human.code == 0 and "4 frames on ai-edge-litert" in human.stdout and "frames/s" in human.stdout


def test_pi_demo_reads_an_mp4_through_opencv(artifacts, photo, tmp_path):
    """Video files Pillow cannot read go through OpenCV (here the workstation venv has it)."""
    import subprocess
    import sys

    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    with Image.open(photo) as img:
        for angle in (0, 15, 30):
            writer.write(np.asarray(img.rotate(angle).resize((160, 120)))[:, :, ::-1].copy())
    writer.release()
    proc = subprocess.run([sys.executable, str(PI_DEMO), str(artifacts["tflite"]), "--source", str(video), "--json"],
                          capture_output=True, text=True, timeout=300)
    rows, summary = demo_output(CliResult(proc.returncode, proc.stdout, proc.stderr))
    assert [r["frame"] for r in rows] == ["clip.mp4#0", "clip.mp4#1", "clip.mp4#2"] and summary["frames"] == 3


def test_pi_demo_refuses_bad_input_in_one_line(device_venv, artifacts, frames, tmp_path):
    def pi(*args):
        return venv_run(device_venv, "python", PI_DEMO, *args)

    model = artifacts["tflite"]
    assert_demo_failure(pi(model, "--source", tmp_path / "nowhere"), "no such camera, video, folder or image")
    assert_demo_failure(pi(model), "picamera2 is not installed")  # the default source is the camera
    assert_demo_failure(pi(artifacts["onnx"], "--source", frames), "runs .tflite artifacts")
    assert_demo_failure(pi(model, "--source", frames, "--frames", "0"), "--frames must be at least 1")
    assert_demo_failure(pi(model, "--source", frames, "--threads", "0"), "--threads must be at least 1")
    assert_demo_failure(pi(model, "--source", frames, "--top-k", "0"), "--top-k must be at least 1")
    (tmp_path / "labels.txt").write_bytes(b"\xff\xfe not utf-8")
    assert_demo_failure(pi(model, "--source", frames, "--labels", tmp_path / "labels.txt"), "cannot read labels file")
    assert_demo_failure(pi(model, "--source", tmp_path), "no images in")
    (tmp_path / "clip.mp4").write_bytes(b"not a video")
    assert_demo_failure(pi(model, "--source", tmp_path / "clip.mp4"), "opencv-python-headless is not installed")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(model.read_bytes()[:1000])
    assert_demo_failure(pi(broken, "--source", frames), "broken.tflite")
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert_demo_failure(pi(model, "--source", frames, "--save", blocked / "scores.npz"), "file")
    assert not list(tmp_path.glob("**/*.npz"))


# --- tflite-runtime (numpy < 2): what many Raspberry Pi images carry ----------------------

def test_tflite_runtime_venv_has_no_litert_and_numpy_1(tflite_runtime_venv):
    probe = venv_run(tflite_runtime_venv, "python", "-c",
                     "import numpy, tflite_runtime, importlib.util as u; "
                     "print(numpy.__version__, u.find_spec('ai_edge_litert') is None, u.find_spec('torch') is None)")
    version, no_litert, no_torch = probe.stdout.split()
    assert probe.code == 0 and version.startswith("1.") and no_litert == no_torch == "True", probe.stderr


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tflite_runtime_runs_info_predict_and_bench(precision, tflite_runtime_venv, app_artifacts, int8_artifacts,
                                                    photo, tmp_path):
    artifact = int8_artifacts[("tflite", "full")].path if precision == "int8" else \
        app_artifacts[("edgenext_xx_small", "tflite", precision)]
    info = venv_run(tflite_runtime_venv, "edgevit", "--json", "info", artifact)
    assert info.code == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["runtime"].startswith("tflite-runtime 2.") and meta["integrity"]["status"] == "intact"
    assert meta["metadata"]["precision"] == precision  # edgevit's metadata, read without ai_edge_litert
    here = venv_run(tflite_runtime_venv, "edgevit", "--json", "predict", artifact, photo)
    assert here.code == 0, here.stderr
    workstation = json.loads(run_cli("--json", "predict", str(artifact), str(photo)).stdout)["top"]
    got = json.loads(here.stdout)["top"]
    assert [r["class"] for r in got] == [r["class"] for r in workstation]
    if precision != "int8":  # int8 kernels of tflite-runtime 2.14 and ai-edge-litert 2.x may round a
        # value one quantization step apart (seen: one top-5 score 0.028 off); the classes must agree
        assert np.allclose([r["score"] for r in got], [r["score"] for r in workstation], atol=1e-4)
    bench = venv_run(tflite_runtime_venv, "edgevit", "--json", "bench", artifact, "--runs", "2", "--warmup", "1",
                     cwd=tmp_path)
    assert bench.code == 0, bench.stderr
    (row,) = json.loads(bench.stdout)["rows"]
    assert row["backend"].startswith("tflite-runtime") and row["median_ms"] > 0


def test_pi_demo_runs_through_tflite_runtime(tflite_runtime_venv, int8_artifacts, frames):
    rows, summary = demo_output(venv_run(tflite_runtime_venv, "python", PI_DEMO,
                                         int8_artifacts[("tflite", "full")].path, "--source", frames, "--json"))
    assert len(rows) == 3 and summary["backend"].startswith("tflite-runtime 2.")


# --- a Raspberry Pi as a Ray worker of a split plan ----------------------------------------

@pytest.fixture(scope="module")
def pi_worker_venv(edgevit_wheel, tmp_path_factory) -> Path:
    """What a Pi that hosts sub-models installs: the device profile with LiteRT and Ray (the
    head's Ray version: Ray refuses to mix versions), no torch."""
    from importlib.metadata import version

    from .venvs import make_venv

    return make_venv(tmp_path_factory.mktemp("pi-worker") / "venv", f"{edgevit_wheel}[tflite,distributed]",
                     f"ray=={version('ray')}")


def test_a_pi_worker_runs_its_sub_model_of_a_split_plan(pi_worker_venv, plan, trained, tmp_path, monkeypatch):
    """The head (this venv) offers the 'jetson' device; examples/raspberry_pi/worker.sh joins
    from the torch-free Pi venv as 'pi'; the plan's pi sub-model must run there. Every node
    and the driver share the cluster's token (Ray's token authentication, as on real boards)."""
    import secrets
    import socket
    import subprocess
    import sys

    from .venvs import venv_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    for key, value in auth.items():
        monkeypatch.setenv(key, value)  # the driver: edgevit run, below
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = str(Path(sys.executable).parent / "ray")
    env = {**venv_env(Path(sys.executable).parent.parent), **auth}
    _, data = trained
    batch = tmp_path / "batch.npy"
    np.save(batch, data.x_test[:4])
    try:
        head = subprocess.run([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                               "--resources", '{"jetson": 1}', "--num-cpus=1", "--include-dashboard=false",
                               "--disable-usage-stats"], capture_output=True, text=True, timeout=180, env=env)
        assert head.returncode == 0, head.stderr[-2000:]
        pi_env = {**venv_env(pi_worker_venv), "RAY_AUTH_TOKEN_PATH": str(token)}
        pi_env.pop("RAY_AUTH_MODE")  # worker.sh turns token mode on when it finds the token
        worker = subprocess.run(["bash", str(EXAMPLES / "raspberry_pi" / "worker.sh"), address, "pi",
                                 "--node-ip-address=127.0.0.1", "--num-cpus=1"],
                                capture_output=True, text=True, timeout=180, env=pi_env)
        assert worker.returncode == 0, worker.stderr[-2000:]
        result = run_cli("--json", "run", "--plan", str(plan.directory), "--backend", "ray", "--address", address,
                         str(batch), timeout=300)
        assert result.code == 0, result.stderr
        answer = json.loads(result.stdout)
        assert len(answer["predictions"]) == 4
        on_pi = [w for w in answer["workers"] if w["device"] == "pi"]
        assert on_pi and all(w["python"] == str(pi_worker_venv / "bin" / "python3") or
                             Path(w["python"]).parent == pi_worker_venv / "bin" for w in on_pi), on_pi
        assert not any(w["torch_loaded"] for w in on_pi)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env=env)


FAKE_PICAMERA2 = '''
import numpy as np

if {mode!r} == "numpy-mismatch":
    raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")


class Picamera2:
    """A stand-in for picamera2 (which needs a Pi): frames of the photo, B, G, R in memory as
    picamera2's "RGB888" gives them; the mode makes it fail as real cameras do."""

    def __init__(self):
        if {mode!r} == "no-camera":
            raise RuntimeError("list index out of range")
        self.frame, self.served = np.load({frame!r}), 0

    def create_preview_configuration(self, main):
        assert main == {{"format": "RGB888", "size": (640, 480)}}
        return main

    def configure(self, config):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def capture_array(self):
        self.served += 1
        if self.served == 3 and {mode!r} == "ctrl-c":
            raise KeyboardInterrupt
        if self.served == 3 and {mode!r} == "unplugged":
            raise RuntimeError("Camera frontend has timed out!")
        return self.frame[:, :, ::-1].copy()
'''


def test_pi_demo_reads_the_camera_through_picamera2(artifacts, photo, tmp_path):
    """picamera2 replaced by a stand-in that serves the photo as the Pi camera would (BGR in
    memory): the demo classifies it exactly as edgevit predict classifies the photo; Ctrl-C
    ends a camera run with its summary and scores; failures are one line."""
    import subprocess
    import sys

    from PIL import Image

    rgb = np.asarray(Image.open(photo).convert("RGB").resize((640, 480)))
    Image.fromarray(rgb).save(tmp_path / "frame.png")
    np.save(tmp_path / "frame.npy", rgb)

    def demo(mode: str, *args: str) -> CliResult:
        fake = tmp_path / mode
        fake.mkdir(exist_ok=True)
        (fake / "picamera2.py").write_text(FAKE_PICAMERA2.format(mode=mode, frame=str(tmp_path / "frame.npy")))
        proc = subprocess.run([sys.executable, str(PI_DEMO), str(artifacts["tflite"]), "--json", *args],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(fake)})
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    rows, summary = demo_output(demo("camera", "--frames", "2"))
    assert [r["frame"] for r in rows] == ["camera#0", "camera#1"] and summary["frames"] == 2
    want = json.loads(run_cli("--json", "predict", str(artifacts["tflite"]), str(tmp_path / "frame.png")).stdout)
    assert [(c["class"], round(c["score"], 5)) for c in rows[0]["top"]] == \
        [(c["class"], round(c["score"], 5)) for c in want["top"][:3]]  # the colours in RGB order
    rows, summary = demo_output(demo("ctrl-c", "--save", str(tmp_path / "scores.npz")))
    assert summary["frames"] == 2 and len(rows) == 2 and np.load(tmp_path / "scores.npz")["scores"].shape[0] == 2
    assert_demo_failure(demo("no-camera"), "cannot open the Raspberry Pi camera: list index out of range")
    assert_demo_failure(demo("unplugged"), "the Raspberry Pi camera stopped: Camera frontend has timed out!")
    assert_demo_failure(demo("numpy-mismatch"), 'picamera2 is installed but fails to import (numpy.dtype size changed')


def test_worker_script_refuses_bad_use_in_one_line(tmp_path):
    import subprocess

    script = str(EXAMPLES / "raspberry_pi" / "worker.sh")

    def worker(*args, path="/usr/bin:/bin"):
        proc = subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60,
                              env={"PATH": path, "HOME": str(tmp_path)})
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        return lines[0]

    assert worker().startswith("usage:")
    assert worker("--block").startswith("usage:")
    assert "bad device name 'pi 5'" in worker("10.0.0.1:6379", "pi 5")
    assert "ray is not installed" in worker("10.0.0.1:6379", "pi-5", "--block")
