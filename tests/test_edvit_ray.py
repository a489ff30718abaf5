"""The Ray backend on a multi-node Ray cluster started on this machine: placement by
device, parity with the local backend, and the faults of issue 6 (killed, slow and
corrupt workers, absent devices), with nothing left running after a run or a failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from edgevit.edvit import PlanError, load_plan
from edgevit.edvit.runner import PlanSession, run_plan
from edgevit.errors import ClusterError, DeadlineError, WorkerError

from . import fault_runtimes
from .conftest import assert_clean_failure, run_cli
from .fault_runtimes import FaultyLoader


@pytest.fixture(scope="module")
def cluster():
    """Two simulated devices: the head node is the 'jetson', a second node the 'pi'."""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"jetson": 1}})
    nodes.add_node(num_cpus=1, resources={"pi": 1})
    ray.init(address=nodes.address, log_to_driver=False, logging_level="ERROR")
    ray.cloudpickle.register_pickle_by_value(fault_runtimes)  # the workers cannot import tests/
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def live_actors() -> list[str]:
    """Actors of this job that are not dead."""
    from ray._private import state

    return [a["ActorClassName"] for a in state.actors().values() if a["State"] != "DEAD"]


def gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether process ``pid`` has exited (waiting up to ``within_s``)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def wait_for(predicate, within_s: float = 30.0):
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def ray_processes() -> set[int]:
    """Pids of Ray's processes on this machine (GCS, raylets, workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if entry.name.isdigit() and any(k in command for k in (b"gcs_server", b"raylet", b"default_worker", b"ray::")):
            found.add(int(entry.name))
    return found


def test_cli_without_an_address_rehearses_on_one_machine_and_leaves_nothing_running(plan, trained, tmp_path):
    """No cluster yet (this test runs before the fixture starts one): the CLI starts a
    one-machine Ray offering the plan's devices, runs, and shuts all of it down."""
    _, data = trained
    np.save(tmp_path / "x.npy", data.x_test[:2])
    before = ray_processes()
    done = run_cli("--json", "run", "--plan", str(plan.directory), "--backend", "ray", "x.npy", cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert [p["index"] for p in json.loads(done.stdout)["predictions"]] == \
        list(run_plan(plan, data.x_test[:2]).logits.argmax(1))
    assert wait_for(lambda: not (ray_processes() - before), 15)


def test_sub_models_run_on_their_devices_and_match_the_local_backend(cluster, plan, trained):
    _, data = trained
    x = data.x_test[:6]
    local = run_plan(plan, x).logits
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    with PlanSession(plan, "ray") as session:
        placement = session.placement
        result = session.run(x)
        with ThreadPoolExecutor(4) as pool:  # concurrent requests, batched
            parts = list(pool.map(lambda i: session.run(x[i:i + 2]), range(0, 6, 2)))
    for where in placement:
        device = plan.assignment[where["submodel"]]
        assert where["device"] == device and device in nodes[where["node"]]  # on the node offering it
        assert where["torch_loaded"] is False  # workers run the device profile
        assert where["runtime"].startswith("ai-edge-litert" if device == "pi" else "onnxruntime")
    assert np.allclose(result.logits, local, atol=1e-5)
    assert np.allclose(np.concatenate([p.logits for p in parts]), local, atol=1e-5)
    assert set(result.timings_ms) == {"queue", "scatter", "compute", "gather", "fuse", "total"}
    assert live_actors() == [] and all(gone(w["pid"]) for w in placement)


def test_a_worker_killed_mid_request_is_restarted_and_the_request_retried(cluster, plan, trained, tmp_path):
    _, data = trained
    x = data.x_test[:2]
    marks = tmp_path / "marks"
    marks.mkdir()
    loader = FaultyLoader("sub1", delay=1.0, marks=str(marks))
    with PlanSession(plan, "ray", load=loader) as session:
        first_pid = next(w["pid"] for w in session.placement if w["submodel"] == "sub1")
        answer: dict = {}
        request = threading.Thread(target=lambda: answer.update(result=session.run(x, deadline_s=60)))
        request.start()
        wait_for(lambda: (marks / f"{first_pid}.running").exists())
        os.kill(first_pid, signal.SIGKILL)  # mid-request
        request.join(60)
        assert "result" in answer
        restarted = [int(p.name.split(".")[0]) for p in marks.iterdir()]
        assert first_pid in restarted and len(set(restarted)) == 2  # a new worker process answered
        (new_pid,) = set(restarted) - {first_pid}
        where = {w["submodel"]: w for w in answer["result"].workers}
        assert where["sub1"]["pid"] == new_pid != first_pid  # where it really ran, not the start-up placement
        assert where["sub1"]["restarted"] and where["sub1"]["restarts"] == 1
        assert not where["sub0"]["restarted"] and where["sub0"]["restarts"] == 0
        again = {w["submodel"]: w for w in session.run(x, deadline_s=60).workers}
        assert again["sub1"]["pid"] == new_pid and not again["sub1"]["restarted"] and again["sub1"]["restarts"] == 1
    assert np.allclose(answer["result"].logits, run_plan(plan, x).logits, atol=1e-5)
    assert live_actors() == []


def test_a_worker_killed_again_fails_the_request_by_name_before_its_deadline(cluster, plan, trained, tmp_path):
    _, data = trained
    marks = tmp_path / "marks"
    marks.mkdir()
    killed: set[int] = set()

    def kill_each_worker_that_runs():
        end = time.monotonic() + 40
        while time.monotonic() < end and len(killed) < 2:
            for mark in marks.iterdir():
                pid = int(mark.name.split(".")[0])
                if pid not in killed:
                    killed.add(pid)
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_each_worker_that_runs, daemon=True)
    started = time.perf_counter()
    with pytest.raises(WorkerError, match="sub-model sub1: its worker on device '(pi|jetson)' died"):
        with PlanSession(plan, "ray", load=FaultyLoader("sub1", delay=2.0, marks=str(marks))) as session:
            killer.start()
            session.run(data.x_test[:1], deadline_s=45)
    assert len(killed) == 2 and time.perf_counter() - started < 45
    assert live_actors() == []


def test_a_slow_worker_fails_the_request_at_its_deadline(cluster, plan, trained):
    _, data = trained
    started = time.perf_counter()
    with pytest.raises(DeadlineError, match="no answer from sub-model sub2 within the 1 s deadline"):
        run_plan(plan, data.x_test[:1], backend="ray", deadline_s=1.0, load=FaultyLoader("sub2", delay=30.0))
    assert time.perf_counter() - started < 15  # start-up plus the deadline, not the 30 s worker
    assert wait_for(lambda: live_actors() == [], 10) is True


def test_a_round_trip_probe_reaches_the_devices_without_computing(cluster, plan, trained):
    _, data = trained
    with PlanSession(plan, "ray", load=FaultyLoader("sub2", delay=2.0)) as session:
        assert session.round_trip_ms(data.x_test[:1], runs=3) < 1000


def test_an_artifact_that_does_not_match_the_plan_is_refused_on_the_device(cluster, plan, tmp_path):
    copy = load_plan(shutil.copytree(plan.directory, tmp_path / "plan"))
    name = next(n for n, d in copy.assignment.items() if d == "pi")
    artifact = copy.artifact_path(name, "tflite")
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\0")  # changed after the plan was checked
    with pytest.raises(PlanError, match=f"sub-model {name}: artifact {name}.tflite does not match the plan"):
        PlanSession(copy, "ray")
    assert live_actors() == []


def absent_device_plan(plan, tmp_path) -> Path:
    """A copy of the plan that puts sub0 on a 'phone' no node of the cluster offers."""
    copy = Path(shutil.copytree(plan.directory, tmp_path / "plan"))
    record = json.loads((copy / "plan.json").read_text())
    record["devices"].append({"name": "phone", "memory_mb": 64.0, "speed": 1.0, "target": "onnx"})
    record["assignment"]["sub0"] = "phone"
    (copy / "plan.json").write_text(json.dumps(record))
    return copy


def test_a_device_absent_from_the_cluster_fails_at_start_up_by_name(cluster, plan, tmp_path):
    started = time.perf_counter()
    with pytest.raises(ClusterError, match="device 'phone' is not in the Ray cluster"):
        PlanSession(absent_device_plan(plan, tmp_path), "ray")
    assert time.perf_counter() - started < 5 and live_actors() == []


def test_cli_run_on_the_cluster_and_its_errors(cluster, plan, trained, tmp_path):
    _, data = trained
    np.save(tmp_path / "x.npy", data.x_test[:3])
    done = run_cli("--json", "run", "--plan", str(plan.directory), "--backend", "ray", "--address", cluster.address,
                   "x.npy", cwd=tmp_path)
    assert done.code == 0, done.stderr
    out = json.loads(done.stdout)
    assert [p["index"] for p in out["predictions"]] == list(run_plan(plan, data.x_test[:3]).logits.argmax(1))
    bad = absent_device_plan(plan, tmp_path)
    assert_clean_failure(run_cli("run", "--plan", str(bad), "--backend", "ray", "--address", cluster.address,
                                 "x.npy", cwd=tmp_path), contains="device 'phone' is not in the Ray cluster")
    assert_clean_failure(run_cli("run", "--plan", str(plan.directory), "--backend", "grpc", "x.npy", cwd=tmp_path),
                         contains="unknown backend 'grpc'")
    assert_clean_failure(run_cli("run", "--plan", str(plan.directory), "--backend", "ray", "--address", "127.0.0.1:1",
                                 "x.npy", cwd=tmp_path, timeout=60), contains="cannot reach the Ray cluster at 127.0.0.1:1")
    assert live_actors() == []

