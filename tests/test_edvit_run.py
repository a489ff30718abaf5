"""Running a split plan: inputs, the local backend, batching, and its faults (the Ray
backend's are in test_edvit_ray.py)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgevit
from edgevit.edvit import PlanError, load_plan
from edgevit.edvit.runner import PlanSession, run_plan
from edgevit.errors import DeadlineError, EdgeVitError, InputError, WorkerError

from .conftest import assert_clean_failure, run_cli
from .fault_runtimes import FaultyLoader


def test_plan_inputs_from_images_and_arrays(plan, tmp_path, trained):
    """Images are resized and normalized like the training data; .npy arrays are checked."""
    from PIL import Image

    from edgevit.edvit.data import read_rgb
    from edgevit.edvit.inputs import prepare_inputs

    _, data = trained
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(image)
    np.save(tmp_path / "one.npy", data.x_test[0])
    np.save(tmp_path / "two.npy", data.x_test[:2])
    batch, names = prepare_inputs(plan, [image, tmp_path / "one.npy", tmp_path / "two.npy"])
    assert batch.shape == (4, 3, 16, 16) and batch.dtype == np.float32
    assert names == [str(image), str(tmp_path / "one.npy"), f"{tmp_path / 'two.npy'}[0]", f"{tmp_path / 'two.npy'}[1]"]
    expected = (read_rgb(image, 16, 16) - np.float32(data.mean[0])) / np.float32(data.std[0])
    assert np.allclose(batch[0], expected, atol=1e-6)
    assert np.array_equal(batch[1:], np.concatenate([data.x_test[:1], data.x_test[:2]]))
    np.save(tmp_path / "f64.npy", data.x_test[0].astype(np.float64))
    np.save(tmp_path / "shape.npy", data.x_test[0][:, :8])
    np.save(tmp_path / "nan.npy", np.full((3, 16, 16), np.nan, dtype=np.float32))
    (tmp_path / "notes.txt").write_text("x")
    for bad, message in (("f64.npy", "input dtype float64 does not match"), ("shape.npy", "input shape 3x8x16 does not"),
                         ("nan.npy", "NaN"), ("notes.txt", "inputs are images"), ("gone.png", "not found")):
        with pytest.raises(InputError, match=message):
            prepare_inputs(plan, [tmp_path / bad])


def test_local_run_equals_the_artifacts_run_one_by_one(plan, trained):
    _, data = trained
    x = data.x_test[:5]
    result = run_plan(plan.directory, x)
    assert np.array_equal(edgevit.run_plan(plan.directory, x).logits, result.logits)
    subs = [edgevit.load(plan.artifact_path(s.name)) for s in plan.submodels]
    fusion = edgevit.load(plan.artifact_path("fusion"))
    for i, row in enumerate(x):
        features = np.concatenate([rt.run(row[None]) for rt in subs], axis=1)
        assert np.allclose(result.logits[i], fusion.run(features)[0], atol=1e-5)
    assert [p.index for p in result.predictions] == list(result.logits.argmax(1))
    assert all(abs(sum(p.scores) - 1) < 1e-6 and p.label == plan.classes[p.index] for p in result.predictions)
    with pytest.raises(InputError, match="inputs must be float32"):
        run_plan(plan, x[:, :, :8])


def test_a_slow_sub_model_fails_the_request_by_name_at_its_deadline(plan, trained):
    _, data = trained
    started = time.perf_counter()
    with pytest.raises(DeadlineError, match="no answer from sub-model sub1 within the 0.5 s deadline"):
        run_plan(plan, data.x_test[:2], deadline_s=0.5, load=FaultyLoader("sub1", delay=3.0))
    assert time.perf_counter() - started < 2.5  # the deadline, not the slow worker, decides


def test_a_round_trip_probe_travels_to_every_worker_and_computes_nothing(plan, trained):
    """The probe behind latency prediction's ``round_trip_ms``: a sub-model that takes 1 s
    per run does not slow it, a request does; its inputs are checked like a run's."""
    _, data = trained
    with PlanSession(plan, load=FaultyLoader("sub1", delay=1.0)) as session:
        assert session.round_trip_ms(data.x_test[:1], runs=3) < 500
        started = time.perf_counter()
        session.run(data.x_test[:1])
        assert time.perf_counter() - started >= 1.0
        with pytest.raises(InputError, match="inputs must be float32"):
            session.round_trip_ms(data.x_test[:1, :, :8])
    with pytest.raises(EdgeVitError, match="closed"):
        session.round_trip_ms(data.x_test[:1])


def test_a_failed_worker_is_restarted_and_the_request_retried_once(plan, trained):
    _, data = trained
    expected = run_plan(plan, data.x_test[:3]).logits
    once = FaultyLoader("sub1", fail="once")
    with PlanSession(plan, load=once) as session:
        first = {w["submodel"]: w for w in session.placement}
        result = session.run(data.x_test[:3])
        assert session.backend.restarts == [0, 1, 0] and once.loads == 2  # loaded again, from its spec
        where = {w["submodel"]: w for w in result.workers}  # the worker that answered, not the first one
        assert where["sub1"]["worker_id"] != first["sub1"]["worker_id"]
        assert where["sub1"]["restarted"] and where["sub1"]["restarts"] == 1
        assert where["sub0"]["worker_id"] == first["sub0"]["worker_id"] and where["sub0"]["restarts"] == 0
        later = {w["submodel"]: w for w in session.run(data.x_test[:1]).workers}
        assert not later["sub1"]["restarted"] and later["sub1"]["restarts"] == 1
    assert np.allclose(result.logits, expected, atol=1e-5)
    always = FaultyLoader("sub1", fail="always")
    started = time.perf_counter()
    with pytest.raises(WorkerError, match="sub-model sub1 failed again after a restart .*RuntimeError: device lost"):
        run_plan(plan, data.x_test[:2], deadline_s=20, load=always)
    assert always.failures == 2 and time.perf_counter() - started < 20


def test_an_artifact_that_does_not_match_the_plan_is_refused_at_start_up(plan, tmp_path):
    copy = load_plan(shutil.copytree(plan.directory, tmp_path / "plan"))
    # the artifact its worker loads: the one for its device's target (placement depends on training)
    target = next(d.target for d in copy.devices if d.name == copy.assignment["sub0"])
    artifact = copy.artifact_path("sub0", target)
    data = artifact.read_bytes()
    artifact.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one byte changed after the plan was checked
    with pytest.raises(PlanError, match=f"sub-model sub0: artifact {artifact.name} does not match the plan"):
        PlanSession(copy)


def test_concurrent_requests_are_batched_with_the_same_results(plan, trained):
    _, data = trained
    x = data.x_test[:8]
    expected = run_plan(plan, x).logits
    with edgevit.open_plan(plan.directory, load=FaultyLoader("sub0", delay=0.05)) as session:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: session.run(x[i:i + 1]), range(8)))
    assert np.allclose(np.concatenate([r.logits for r in results]), expected, atol=1e-5)
    assert max(r.batch for r in results) > 1  # requests that waited went out together
    assert all(set(r.timings_ms) == {"queue", "scatter", "compute", "gather", "fuse", "total"} for r in results)
    assert [w["submodel"] for w in results[0].workers] == ["sub0", "sub1", "sub2"]


def test_session_inputs_and_options_are_checked(plan, trained):
    _, data = trained
    with PlanSession(plan) as session:
        for bad, message in ((data.x_test[:1, :, :8], "inputs must be float32"),
                             (data.x_test[:0], "N >= 1"), (np.full_like(data.x_test[:1], np.nan), "NaN")):
            with pytest.raises(InputError, match=message):
                session.run(bad)
    with pytest.raises(EdgeVitError, match="closed"):
        session.run(data.x_test[:1])
    with pytest.raises(InputError, match="unknown backend 'grpc'"):
        PlanSession(plan, "grpc")
    with pytest.raises(InputError, match="an address is for the ray backend"):
        PlanSession(plan, address="10.0.0.1:6379")


def test_cli_run_prints_predictions_and_fails_cleanly(plan, trained, tmp_path):
    _, data = trained
    np.save(tmp_path / "batch.npy", data.x_test[:3])
    result = run_cli("--json", "run", "--plan", str(plan.directory), "batch.npy", cwd=tmp_path)
    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["inputs"] == ["batch.npy[0]", "batch.npy[1]", "batch.npy[2]"] and len(out["predictions"]) == 3
    expected = edgevit.run_plan(plan.directory, data.x_test[:3])
    assert [p["index"] for p in out["predictions"]] == [p.index for p in expected.predictions]
    np.save(tmp_path / "wrong.npy", data.x_test[:1, :, :4])
    assert_clean_failure(run_cli("run", "--plan", str(plan.directory), "wrong.npy", cwd=tmp_path),
                         contains="does not match the plan's input wrong.npy (3x16x16 or ?x3x16x16)")
    assert_clean_failure(run_cli("run", "--plan", str(tmp_path), "batch.npy", cwd=tmp_path),
                         contains="plan.json not found")


def test_cli_run_takes_top_k_like_every_command(plan, trained, tmp_path):
    """--top-k, as predict and the board demos spell it; the old --top still works, unshown."""
    _, data = trained
    np.save(tmp_path / "batch.npy", data.x_test[:1])
    for option in ("--top-k", "--top"):
        result = run_cli("run", "--plan", str(plan.directory), option, "2", "batch.npy", cwd=tmp_path)
        assert result.code == 0 and "top 2" in result.stdout, (option, result.stderr)
    usage = run_cli("run", "--help")
    assert "--top-k" in usage.stdout and "--top " not in usage.stdout
    assert_clean_failure(run_cli("run", "--plan", str(plan.directory), "--top", "2", "--top-k", "3", "batch.npy",
                                 cwd=tmp_path), contains="give --top-k once")
    assert_clean_failure(run_cli("run", "--plan", str(plan.directory), "--top-k", "0", "batch.npy", cwd=tmp_path),
                         contains="--top-k must be at least 1")


def test_a_hung_sub_model_does_not_keep_the_process_alive(plan, trained, tmp_path):
    """After the deadline error the process exits at once, with the worker still stuck."""
    import subprocess
    import sys
    import time

    _, data = trained
    np.save(tmp_path / "x.npy", data.x_test[:1])
    script = f"""
import time, numpy as np, edgevit
from edgevit.edvit.runner import DeadlineError, run_plan

class Stuck:
    def run(self, x):
        time.sleep(120)

def load(path, threads=None):
    return Stuck() if path.stem == "sub0" else edgevit.load(path, threads=threads)

try:
    run_plan({str(plan.directory)!r}, np.load({str(tmp_path / 'x.npy')!r}), deadline_s=0.5, load=load)
except DeadlineError as exc:
    print("deadline:", exc)
"""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert "deadline: no answer from sub-model sub0" in done.stdout, done.stderr
    assert time.perf_counter() - started < 60  # not the stuck worker's 120 s


def test_run_plan_takes_one_path_or_a_loaded_plan(plan, trained, tmp_path):
    _, data = trained
    np.save(tmp_path / "x.npy", data.x_test[0])
    by_path = edgevit.run_plan(plan.directory, str(tmp_path / "x.npy"))
    by_plan = edgevit.run_plan(plan, [tmp_path / "x.npy"])
    assert np.array_equal(by_path.logits, by_plan.logits) and by_path.logits.shape == (1, 10)


def test_closing_a_session_fails_its_queued_requests_at_once(plan, trained):
    _, data = trained
    session = PlanSession(plan, load=FaultyLoader("sub0", delay=1.0))
    outcomes: dict = {}

    def request(key):
        try:
            outcomes[key] = session.run(data.x_test[:1], deadline_s=30)
        except EdgeVitError as exc:
            outcomes[key] = exc

    first = threading.Thread(target=request, args=("first",))
    first.start()
    time.sleep(0.3)  # the first request is out; the second waits in the queue
    second = threading.Thread(target=request, args=("second",))
    second.start()
    time.sleep(0.2)
    started = time.perf_counter()
    session.close()
    second.join(5)
    assert "closed before this request was sent" in str(outcomes["second"])
    assert time.perf_counter() - started < 1.0  # not at its 30 s deadline
    first.join(10)
    assert outcomes["first"].logits.shape == (1, 10)  # the batch already out still finishes
