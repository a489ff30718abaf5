"""The emulated fleet (issue 29): devices.yaml checks, refusal without root, a fleet coming up
with its quotas, limits and shaped links and leaving nothing behind (on exit, on Ctrl-C, and
after a kill, through --cleanup), the lossless pixel transport and the unsplit plan view.

The fleets here are small (one or two devices) and quick; a plan on a fleet with its faults
(a cut link, a killed worker, a device short of memory) runs with ``-m fleet`` (as root):

    .venv/bin/python -m pytest -m fleet tests/test_edvit_fleet.py
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from edgevit.edvit.assign import Device
from edgevit.edvit.fleet import (
    Fleet,
    FleetError,
    FleetUnavailable,
    cgroups,
    check_host,
    host,
    leftovers,
    network,
    nodes,
    unsplit_plan,
)
from edgevit.edvit.wire import pack, to_pixels, unpack

from .conftest import assert_clean_failure, run_cli


def fleet_possible() -> str | None:
    """Why a fleet cannot run here (None: it can)."""
    try:
        check_host()
    except FleetUnavailable as exc:
        return str(exc)
    return None


needs_fleet = pytest.mark.skipif(fleet_possible() is not None, reason=f"no fleet here: {fleet_possible()}")


def run_gone(run: str, pids: set[int]) -> None:
    """Nothing of run ``run`` is left: no cgroup, namespace, link, directory or process."""
    assert run not in leftovers(), leftovers().get(run)
    assert not (host.RUN_ROOT / run).exists()
    alive = [p for p in pids if host.process_started(p) is not None and not _zombie(p)]
    assert alive == [], alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- quick checks, no fleet ------------------------------------------------------------------

def test_cpu_quota_uses_a_period_short_against_one_request():
    assert cgroups.cfs_period_quota(0.3) == (3333, 1000)
    assert cgroups.cfs_period_quota(0.16) == (6250, 1000)  # the kernel's smallest quota is 1 ms
    assert cgroups.cfs_period_quota(0.8) == (2000, 1600)
    assert cgroups.cfs_period_quota(2.0) == (2000, 4000)


def test_devices_the_fleet_cannot_emulate_are_refused_by_name():
    with pytest.raises(FleetError, match="'pi'.*link_delay_ms is not emulated"):
        Fleet([Device("pi", 16, link_delay_ms=5.0)])
    with pytest.raises(FleetError, match="'CPU'.*Ray's own resources"):
        Fleet([Device("CPU", 16)])
    with pytest.raises(FleetError, match="down names no device"):
        Fleet([Device("pi", 16)], down=["jetson"])


def test_the_cli_refuses_in_one_line_without_root(tmp_path):
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the CLI as nobody")
    (tmp_path / "devices.yaml").write_text("devices:\n  - {name: pi, memory_mb: 16, cpus: 0.5}\n")
    tmp_path.chmod(0o755)
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m",
                           "edgevit", "fleet", "--devices", "devices.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)}, check=False)
    from .conftest import CliResult

    assert_clean_failure(CliResult(done.returncode, done.stdout, done.stderr), 2, "needs root")


def test_the_host_check_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(host.sys, "platform", "darwin")
    with pytest.raises(FleetUnavailable, match="needs Linux"):
        check_host()
    monkeypatch.setattr(host.sys, "platform", "linux")
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host.shutil, "which", lambda tool: None if tool == "tc" else "/usr/sbin/" + tool)
    with pytest.raises(FleetUnavailable, match="needs tc"):
        check_host()
    monkeypatch.setattr(host.shutil, "which", lambda tool: "/usr/sbin/" + tool)
    monkeypatch.setattr(host, "CGROUP_ROOT", Path("/nonexistent"))
    with pytest.raises(FleetUnavailable, match="cgroup v1 cpu and memory"):
        check_host()


def test_batches_travel_as_pixels_only_when_that_is_exact():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    images = (pixels.astype(np.float32) / 255.0 - m) / s  # as edgevit.edvit.inputs normalizes an image
    header, chunks = pack(images, mean, std)
    assert header["pixels"] and sum(map(len, chunks)) == pixels.nbytes
    assert np.array_equal(unpack(header, chunks), images)  # bit for bit
    noisy = images.copy()
    noisy[1, 2, 3, 4] += 1e-3  # no longer an image: sent as float32, unchanged
    header, chunks = pack(noisy, mean, std)
    assert not header["pixels"] and np.array_equal(unpack(header, chunks), noisy)
    assert to_pixels(rng.standard_normal((1, 3, 8, 8)).astype(np.float32), mean, std) is None
    big = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    header, chunks = pack(big, None, None)
    assert max(map(len, chunks)) <= 64 * 1024 and np.array_equal(unpack(header, chunks), big)


def test_the_unsplit_view_runs_full_onnx_through_the_runner(plan, trained):
    from edgevit.edvit.runner import PlanSession
    from edgevit.runtimes.loader import load

    _, data = trained
    view = unsplit_plan(plan, "dev0")
    assert [s.name for s in view.submodels] == ["full"] and view.assignment == {"full": "dev0"}
    with PlanSession(view, "local") as session:
        result = session.run(data.x_test[:3])
    expected = np.concatenate([load(plan.artifact_path("full")).run(x[None]) for x in data.x_test[:3]])
    assert np.allclose(result.logits, expected, atol=1e-5)
    assert result.workers[0]["submodel"] == "full" and result.workers[0]["device"] == "dev0"


# --- small fleets (root) -----------------------------------------------------------------------

@needs_fleet
def test_a_fleet_comes_up_shaped_and_limited_and_leaves_nothing():
    devices = [Device("pi", 40, cpus=0.3, link_mbps=20), Device("jetson", 60, cpus=0.5)]
    with Fleet(devices, down=()) as fleet:
        run, address = fleet.run, fleet.address
        offered = {r for res in nodes.alive_nodes(address).values() for r in res}
        assert {"pi", "jetson"} <= offered
        pids = fleet.pids("pi") | fleet.pids("jetson") | fleet.pids(None)
        assert fleet.pids("pi") and fleet.pids("jetson") and fleet.pids(None)
        pi, jetson = fleet.group("pi"), fleet.group("jetson")
        assert cgroups.read_stat(pi, "cpu", "cpu.cfs_quota_us") == 1000
        assert cgroups.read_stat(pi, "cpu", "cpu.cfs_period_us") == 3333
        assert cgroups.read_stat(jetson, "cpu", "cpu.cfs_quota_us") == 1000
        assert cgroups.read_stat(jetson, "cpu", "cpu.cfs_period_us") == 2000
        assert cgroups.read_stat(pi, "cpu", "cpu.shares") == cgroups.SHARES  # its quota before other work
        assert fleet.usage("pi")["memory_limit_mb"] == pytest.approx(40 + fleet.node_memory_mb, abs=0.1)
        assert "rate 20Mbit" in host.sh("tc", "qdisc", "show", "dev", network.host_end(run, 0))
        assert "rate 20Mbit" in host.sh("tc", "qdisc", "show", netns=network.netns_name(run, 0))
        assert "tbf" not in host.sh("tc", "qdisc", "show", "dev", network.host_end(run, 1))  # no link_mbps
        fleet.cut("pi")
        assert "state DOWN" in host.sh("ip", "link", "show", network.host_end(run, 0))
        fleet.restore("pi")
        assert "state DOWN" not in host.sh("ip", "link", "show", network.host_end(run, 0))
        assert run in leftovers()
    run_gone(run, pids)
    fleet.stop()  # idempotent


@needs_fleet
def test_a_killed_fleet_is_swept_and_an_interrupted_one_cleans_up_itself(tmp_path):
    """Two fleets from the CLI at once: one killed outright (SIGKILL) and swept by
    --cleanup, which leaves the other (its owner alive) alone; that one stops on Ctrl-C."""
    (tmp_path / "devices.yaml").write_text("devices:\n  - {name: cam, memory_mb: 30, cpus: 0.5, link_mbps: 100}\n")
    command = [sys.executable, "-m", "edgevit", "--json", "fleet", "--devices", "devices.yaml"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        infos = [json.loads(_read_json(p)) for p in procs]
        runs = [info["run"] for info in infos]
        pids = [cgroups.pids(f"{r}-d0") | cgroups.pids(f"{r}-head") for r in runs]
        assert all(pids) and all(r in leftovers() for r in runs)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        assert runs[0] in leftovers()  # a kill leaves everything behind ...
        swept = run_cli("--json", "fleet", "--cleanup", cwd=tmp_path, timeout=120)
        assert swept.code == 0, swept.stderr
        assert list(json.loads(swept.stdout)["removed"]) == [runs[0]]  # ... until --cleanup, which keeps the live one
        run_gone(runs[0], pids[0])
        assert runs[1] in leftovers()
        procs[1].send_signal(signal.SIGINT)
        assert procs[1].wait(60) == 0, procs[1].stderr.read()
        run_gone(runs[1], pids[1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _read_json(proc: subprocess.Popen, timeout_s: float = 150.0) -> str:
    """The JSON document a fleet CLI prints once it is up (it then waits)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    text, deadline = "", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                raise AssertionError(f"the fleet CLI exited ({proc.returncode}): {proc.stderr.read()}") from None
            continue
        text += line
        if line.startswith("}"):
            return text
    raise AssertionError("the fleet did not come up")


# --- a plan on a fleet, with its faults (-m fleet, root; about 2 minutes) -----------------------

class Loader:
    """``edgevit.load``, whose runtimes for the sub-models in ``slow`` take ``delay`` s more per
    run (so that a fault lands mid-request), and which holds ``hog_mb`` MB once it loads the
    unsplit model (a model too big for its device). Pickled by value into the Ray workers."""

    def __init__(self, slow=(), delay: float = 0.0, hog_mb: int = 0) -> None:
        self.slow, self.delay, self.hog_mb = set(slow), delay, hog_mb

    def __call__(self, path, threads=None):
        import edgevit

        runtime = edgevit.load(path, threads=threads)
        if Path(path).stem == "full" and self.hog_mb:
            runtime.ballast = np.ones(self.hog_mb * 1_000_000 // 8)  # touched: really resident
        return Slow(runtime, self.delay) if Path(path).stem in self.slow else runtime


class Slow:
    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def run(self, x):
        time.sleep(self.delay)
        return self.inner.run(x)


@pytest.fixture
def on_demand(request):
    if "fleet" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("plans on a fleet run on request: pytest -m fleet (as root)")
    if fleet_possible():
        pytest.skip(fleet_possible())


@pytest.mark.fleet
def test_a_plan_on_a_fleet_and_its_faults(on_demand, plan, trained):
    import ray
    from edgevit.edvit.runner import PlanSession, run_plan
    from edgevit.errors import DeadlineError, WorkerError

    _, data = trained
    x = data.x_test[:2]
    local = run_plan(plan, x).logits
    devices = [Device(d.name, 60, d.speed, d.target, cpus=0.5, link_mbps=100) for d in plan.devices]
    with Fleet(devices) as fleet:
        ray.init(address=fleet.address, log_to_driver=False, logging_level="ERROR")
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        on_pi = [s for s, d in plan.assignment.items() if d == "pi"]
        with PlanSession(plan, "ray", load=Loader(slow=on_pi, delay=0.5)) as session:
            assert np.allclose(session.run(x).logits, local, atol=1e-5)
            threading.Timer(0.2, fleet.cut, args=("pi",)).start()  # while the pi computes
            with pytest.raises(DeadlineError, match=f"no answer from sub-model {on_pi[0]}"):
                session.run(x, deadline_s=2.0)
            fleet.restore("pi")
            assert np.allclose(session.run(x, deadline_s=60).logits, local, atol=1e-5)  # the link is back
            worker = next(w for w in session.placement if w["device"] == "pi")
            assert worker["pid"] in fleet.pids("pi")  # the worker runs inside the device's cgroups
            threading.Timer(0.2, os.kill, args=(worker["pid"], signal.SIGKILL)).start()  # mid-request
            result = session.run(x, deadline_s=60)
            assert np.allclose(result.logits, local, atol=1e-5)
            assert [w["restarted"] for w in result.workers if w["submodel"] == worker["submodel"]] == [True]
        before = fleet.usage("jetson")["oom_kills"]
        with pytest.raises(WorkerError, match="does not fit the memory of device 'jetson'.*out-of-memory killer"):
            PlanSession(unsplit_plan(plan, "jetson"), "ray", load=Loader(hog_mb=400))
        assert fleet.usage("jetson")["oom_kills"] > before
        ray.shutdown()


@pytest.mark.fleet
def test_a_device_that_never_comes_up_is_refused_by_name(on_demand):
    before = set(leftovers())
    fleet = Fleet([Device("cam", 30, cpus=0.5), Device("gate", 30, cpus=0.5)], down=["cam"], startup_timeout_s=15)
    with pytest.raises(FleetError, match="device 'cam' did not"):
        fleet.start()
    assert set(leftovers()) - before == set()  # torn down on the failure
    assert not (host.RUN_ROOT / fleet.run).exists()
