"""ED-ViT on an emulated fleet (issue 29): the unsplit model on one device vs the K-way plan on K.

One run, as root, on this Linux machine (``edgevit.edvit.fleet``): for each K, a fleet of K
devices ``dev0``..``dev{K-1}``, each a Ray node in its own network namespace with a CPU
quota (``--cpus`` in all, split evenly: 0.8 each for K = 2, 0.3 for K = 5, 0.16 for K = 10)
and a shaped link; the coordinator (this process) and the Ray head run outside the
devices. On each fleet, in the same interleaved rounds, at every link speed (``--links``,
Mbit/s, changed in place between runs):

- **unsplit**: ``full.onnx`` as the only worker, on ``dev0`` (same quota as each device);
- **split**: the K-way plan, one sub-model per device, fused here;

with per-request latency (one-input requests one after another; medians over rounds of
per-round medians, and the split along the critical path) and throughput (``--clients``
threads sending one-input requests at once, batched by the session). Inputs are images
(8-bit pixels normalized with the plan's mean and std, as ``edgevit run`` makes them), so
they travel as pixels (``edgevit.edvit.wire``). Then, on the K = 5 fleet: a device whose
memory limit is below what the unsplit model needs and above what a sub-model needs, and
the faults: a link cut mid-request, a worker process killed mid-request, a device that
never comes up.

The plans are ``deit_tiny`` at 224x224 with 16x16 patches (197 tokens, 10 classes),
**untrained** and trained 1 epoch per step on a small generated image set: latency does not
depend on the weights (accuracy is measured by ``benchmarks/edvit_digits.py``). They are
built into a temporary directory removed at the end, unless ``--plans DIR`` (kept, and
reused when present).

    sudo .venv/bin/python benchmarks/edvit_fleet.py [--ks 2,5,10] [--links 1000,20] [--rounds 5]
        [--runs 8] [--clients 4] [--seconds 5] [--plans DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from edgevit.edvit.assign import Device
from edgevit.edvit.fleet import Fleet, FleetError, cleanup, leftovers, unsplit_plan
from edgevit.edvit.latency import predict_latency
from edgevit.edvit.plan import load_plan
from edgevit.edvit.runner import PlanSession, run_plan
from edgevit.errors import EdgeVitError

PARTS = ("scatter", "compute", "gather", "fuse")
GENEROUS_MB = 400.0  # devices' memory_mb for the timing runs: no limit in the way


def say(message: str) -> None:
    print(f"- {message}", file=sys.stderr, flush=True)


# --- plans ---------------------------------------------------------------------------------

def synthetic_pixels(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images per class of 10 classes (a class colour plus noise), uint8 NCHW, labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n)
    base = np.random.default_rng(0).integers(0, 256, (10, 3, 1, 1))
    pixels = np.clip(base[labels] + rng.normal(0, 40, (len(labels), 3, size, size)), 0, 255).astype(np.uint8)
    return pixels, labels


def normalize(pixels: np.ndarray, mean, std) -> np.ndarray:
    """As ``edgevit.edvit.inputs`` normalizes an image."""
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    return (pixels.astype(np.float32) / 255.0 - m) / s


def build_plans(root: Path, ks: list[int]) -> dict[int, Path]:
    """deit_tiny at 224/16, untrained, split K ways with 1 epoch of each training step (timing only)."""
    missing = [k for k in ks if not (root / f"k{k}" / "plan.json").is_file()]
    if missing:
        import edgevit
        from edgevit.edvit.data import Dataset

        say(f"building plans for K = {missing} under {root} (untrained deit_tiny 224/16, 1 epoch of each training step)")
        train, y_train = synthetic_pixels(12, 224, 1)
        test, y_test = synthetic_pixels(4, 224, 2)
        f = train.astype(np.float32) / 255.0
        mean, std = f.mean(axis=(0, 2, 3)), f.std(axis=(0, 2, 3))
        data = Dataset(normalize(train, mean, std), y_train, normalize(test, mean, std), y_test,
                       [f"c{i}" for i in range(10)], tuple(map(float, mean)), tuple(map(float, std)), "generated")
        vit = edgevit.create_model("deit_tiny", num_classes=10, img_size=224, patch_size=16)
        for k in missing:
            devices = [Device(f"dev{i}", 1000.0) for i in range(k)]
            edgevit.split(vit, data, k, devices=devices, output=root / f"k{k}", overwrite=True, finetune_epochs=1,
                          fusion_epochs=1, joint_epochs=1, latency_runs=10, progress=say)
    return {k: root / f"k{k}" for k in ks}


# --- measuring -----------------------------------------------------------------------------

def latency(session: PlanSession, x: np.ndarray, runs: int) -> dict[str, float]:
    """Median total and parts (ms) of ``runs`` one-input requests one after another."""
    timings = [session.run(x).timings_ms for _ in range(runs)]
    return {k: statistics.median(t[k] for t in timings) for k in ("total", *PARTS)}


def throughput(session: PlanSession, x: np.ndarray, clients: int, seconds: float) -> float:
    """Requests per second answered with ``clients`` threads sending one-input requests."""
    done, stop = [0] * clients, time.monotonic() + seconds

    def client(i: int) -> None:
        while time.monotonic() < stop:
            session.run(x, deadline_s=60)
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - start)


def predicted(plan, devices: list[Device], assignment=None, round_trip_ms: float | None = None) -> float:
    """``edgevit.edvit.latency.predict_latency`` (ms): the link model, or with a measured round trip."""
    return predict_latency(plan, devices, assignment, round_trip_ms=round_trip_ms).total_ms


def measure_k(k: int, plan_dir: Path, args, x: np.ndarray, extra=None) -> tuple[list[dict], dict]:
    """Latency and throughput of unsplit vs split on a K-device fleet, at every link speed;
    then ``extra(fleet, plan, x)`` on the same fleet, if given (its result is returned too)."""
    import ray

    plan = load_plan(plan_dir)
    cpus = round(args.cpus / k, 3)
    devices = [Device(f"dev{i}", GENEROUS_MB, cpus=cpus, link_mbps=args.links[0]) for i in range(k)]
    rows = []
    with Fleet(devices, say=say) as fleet:
        ray.init(address=fleet.address, log_to_driver=False, logging_level="ERROR")
        reference = run_plan(plan, x).logits
        with PlanSession(plan, "ray") as split, PlanSession(unsplit_plan(plan, "dev0"), "ray") as full:
            assert np.allclose(split.run(x).logits, reference, atol=1e-4), "the fleet's answer differs"
            configs = {"unsplit": full, "split": split}
            per_round = {(link, c): [] for link in args.links for c in configs}
            trips = {key: [] for key in per_round}
            for r in range(args.rounds):
                for link in args.links:
                    fleet.set_bandwidth(link)
                    for name, session in configs.items():
                        latency(session, x, 2)  # warm up after the change
                        per_round[link, name].append(latency(session, x, args.runs))
                        trips[link, name].append(session.round_trip_ms(x, args.runs))
                say(f"K = {k}: round {r + 1}/{args.rounds} done")
            rates = {key: [] for key in per_round}
            for _ in range(args.throughput_rounds):
                for link in args.links:
                    fleet.set_bandwidth(link)
                    for name, session in configs.items():
                        rates[link, name].append(throughput(session, x, args.clients, args.seconds))
        for link in args.links:
            shaped = [Device(d.name, d.memory_mb, cpus=cpus, link_mbps=link) for d in devices]
            row = {"K": k, "cpus_per_device": cpus, "link_mbps": link}
            for name in configs:
                rounds = per_round[link, name]
                row[name] = {p: statistics.median(r[p] for r in rounds) for p in ("total", *PARTS)}
                row[name]["throughput_rps"] = statistics.median(rates[link, name])
            row["latency_ratio"] = statistics.median(u["total"] / s["total"] for u, s in
                                                     zip(per_round[link, "unsplit"], per_round[link, "split"]))
            row["throughput_ratio"] = row["split"]["throughput_rps"] / row["unsplit"]["throughput_rps"]
            row["round_trip_ms"] = {c: statistics.median(trips[link, c]) for c in configs}
            row["predicted_ms"] = {"unsplit": predicted(plan, shaped, {"full": "dev0"}),
                                   "split": predicted(plan, shaped)}
            row["predicted_with_round_trip_ms"] = {
                "unsplit": predicted(plan, shaped, {"full": "dev0"}, row["round_trip_ms"]["unsplit"]),
                "split": predicted(plan, shaped, None, row["round_trip_ms"]["split"])}
            rows.append(row)
        peaks = [round(fleet.usage(d.name)["memory_peak_mb"]) for d in devices]
        say(f"K = {k}: device memory peaks (MB, node and workers) {peaks}")
        for row in rows:
            row["memory_peaks_mb"] = peaks
        fleet.set_bandwidth(args.links[0])
        more = extra(fleet, plan, x) if extra else {}
        ray.shutdown()
    return rows, more


# --- memory and faults (K = 5) -------------------------------------------------------------

def memory_case(fleet: Fleet, plan, x: np.ndarray, tight_mb: float) -> dict:
    """dev0's memory set between a sub-model's need and the unsplit model's: unsplit fails, split runs."""
    fleet.set_memory("dev0", tight_mb)
    result: dict = {"memory_mb": tight_mb, "memory_limit_mb": fleet.usage("dev0")["memory_limit_mb"]}
    try:
        with PlanSession(unsplit_plan(plan, "dev0"), "ray") as full:
            full.run(x)
        result["unsplit"] = "ran (not refused)"
    except EdgeVitError as exc:
        result["unsplit"] = f"refused: {type(exc).__name__}: {exc}"
    result["dev0_after_unsplit"] = fleet.usage("dev0")
    try:
        with PlanSession(plan, "ray") as split:
            ok = np.allclose(split.run(x).logits, run_plan(plan, x).logits, atol=1e-4)
            result["split"] = "ran, answer matches the local backend" if ok else "ran, WRONG answer"
    except EdgeVitError as exc:
        result["split"] = f"FAILED: {type(exc).__name__}: {exc}"
    result["dev0_after_split"] = fleet.usage("dev0")
    fleet.set_memory("dev0", GENEROUS_MB)
    return result


def faults(fleet: Fleet, plan, x: np.ndarray, cut_deadline: float) -> dict:
    """A link cut mid-request, then a worker process killed mid-request."""
    out: dict = {}
    reference = run_plan(plan, x).logits
    victim = "dev2"
    held = ", ".join(s for s, d in plan.assignment.items() if d == victim)
    with PlanSession(plan, "ray") as session:
        session.run(x)
        threading.Timer(0.01, fleet.cut, args=(victim,)).start()
        start = time.monotonic()
        try:
            session.run(x, deadline_s=cut_deadline)
            out["link_cut"] = "answered (the cut came too late)"
        except EdgeVitError as exc:
            out["link_cut"] = (f"{victim}'s link (it holds {held}) cut 10 ms into a request with a "
                               f"{cut_deadline:g} s deadline: {type(exc).__name__} after "
                               f"{time.monotonic() - start:.2f} s: {exc}")
        time.sleep(1.0)
        fleet.restore(victim)
        start = time.monotonic()
        try:
            again = session.run(x, deadline_s=60)
            ok = np.allclose(again.logits, reference, atol=1e-4)
            out["after_restore"] = f"answered in {time.monotonic() - start:.2f} s, correct: {ok}"
        except EdgeVitError as exc:
            out["after_restore"] = f"FAILED: {exc}"
        target = next(w for w in session.placement if w["device"] == "dev3")
        out["killed"] = f"the worker of {target['submodel']} on dev3 (pid {target['pid']}), 10 ms into a request"
        threading.Timer(0.01, os.kill, args=(target["pid"], signal.SIGKILL)).start()
        start = time.monotonic()
        try:
            result = session.run(x, deadline_s=60)
            restarted = [w["submodel"] for w in result.workers if w["restarted"]]
            ok = np.allclose(result.logits, reference, atol=1e-4)
            out["worker_killed"] = (f"answered in {time.monotonic() - start:.2f} s, restarted: {restarted}, "
                                    f"correct: {ok}")
        except EdgeVitError as exc:
            out["worker_killed"] = f"FAILED: {type(exc).__name__}: {exc}"
    return out


def never_up(args) -> dict:
    """A device whose node cannot reach the head (its link cut from the start): the fleet
    refuses to start, naming it; and a plan naming a device no node offers is refused."""
    devices = [Device("dev0", GENEROUS_MB, cpus=0.3), Device("dev1", GENEROUS_MB, cpus=0.3)]
    out = {}
    start = time.monotonic()
    try:
        with Fleet(devices, down=["dev1"], startup_timeout_s=args.down_timeout, say=say):
            out["fleet"] = "came up (not refused)"
    except FleetError as exc:
        out["fleet"] = f"refused after {time.monotonic() - start:.0f} s: {exc}"
    return out


def prioritize(nice: int) -> None:
    """Give this process (and its session) priority ``nice`` against other sessions' work."""
    try:
        Path("/proc/self/autogroup").write_text(f"{nice}\n")  # across sessions: the autogroup's weight
    except OSError:
        pass
    os.nice(nice)  # within this session


# --- report --------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    lines = [("| K | cpus/device | link Mbit/s | unsplit ms | split ms | x lower | unsplit scatter / compute / gather ms | "
              "split scatter / compute / gather / fuse ms | unsplit req/s | split req/s | x throughput |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        u, s = r["unsplit"], r["split"]
        parts = " / ".join(f"{s[x]:.1f}" for x in PARTS)
        whole = " / ".join(f"{u[x]:.1f}" for x in PARTS[:3])
        lines.append(f"| {r['K']} | {r['cpus_per_device']} | {r['link_mbps']:g} | {u['total']:.1f} | "
                     f"{s['total']:.1f} | {r['latency_ratio']:.2f} | {whole} | {parts} | {u['throughput_rps']:.1f} | "
                     f"{s['throughput_rps']:.1f} | {r['throughput_ratio']:.2f} |")
    return "\n".join(lines)


def error(predicted_ms: float, measured_ms: float) -> float:
    """Signed relative error of a prediction, in per cent of the measurement."""
    return 100 * (predicted_ms - measured_ms) / measured_ms


def prediction_table(rows: list[dict]) -> tuple[str, list[tuple[str, bool]]]:
    """Predicted vs measured per configuration: the plan's link model, and with the measured
    empty round trip; and the verdicts against the 25 % target."""
    lines = ["| K | link Mbit/s | config | measured ms | link model ms (error) | measured round trip ms | "
             "round trip + compute ms (error) |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for r in rows:
        for c in ("unsplit", "split"):
            measured, link, trip = r[c]["total"], r["predicted_ms"][c], r["predicted_with_round_trip_ms"][c]
            lines.append(f"| {r['K']} | {r['link_mbps']:g} | {c} | {measured:.1f} | {link:.1f} "
                         f"({error(link, measured):+.0f} %) | {r['round_trip_ms'][c]:.1f} | {trip:.1f} "
                         f"({error(trip, measured):+.0f} %) |")
            verdicts.append((f"K = {r['K']}, {r['link_mbps']:g} Mbit/s, {c}",
                             abs(error(link, measured)) <= 25, abs(error(trip, measured)) <= 25))
    return "\n".join(lines), verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="2,5,10")
    parser.add_argument("--links", default="1000,20", help="link speeds, Mbit/s")
    parser.add_argument("--cpus", type=float, default=1.6, help="cores of all devices together")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=8, help="requests per configuration and round")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    parser.add_argument("--throughput-rounds", type=int, default=2)
    parser.add_argument("--tight-mb", type=float, default=40.0, help="memory_mb of the memory-limited device")
    parser.add_argument("--cut-deadline", type=float, default=3.0)
    parser.add_argument("--down-timeout", type=float, default=20.0)
    parser.add_argument("--skip", default="", help="comma-separated: memory, faults")
    parser.add_argument("--nice", type=int, default=-10,
                        help="priority of this process, the coordinator (its session's autogroup, which is what "
                             "the scheduler weighs against other sessions' work); the devices have their own "
                             "cgroups' shares")
    parser.add_argument("--plans", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.ks = [int(v) for v in args.ks.split(",")]
    args.links = [float(v) for v in args.links.split(",")]
    if args.nice:
        prioritize(args.nice)
    scratch = None if args.plans else Path(tempfile.mkdtemp(prefix="edvit-fleet-plans-"))
    try:
        plans = build_plans(args.plans or scratch, sorted(set(args.ks) | {5}))
        mean, std = load_plan(plans[5]).input["mean"], load_plan(plans[5]).input["std"]
        x = normalize(synthetic_pixels(1, 224, 7)[0][:1], mean, std)
        started = time.strftime("%Y-%m-%d %H:%M")
        load_before = os.getloadavg()
        report: dict = {"date": started, "load_before": load_before, "cpu_count": os.cpu_count(), "nice": args.nice,
                        "rows": []}

        def at_k5(fleet, plan, x):
            more = {}
            if "memory" not in args.skip:
                more["memory"] = memory_case(fleet, plan, x, args.tight_mb)
            if "faults" not in args.skip:
                more["faults"] = faults(fleet, plan, x, args.cut_deadline)
                absent = dataclasses.replace(plan, devices=[*plan.devices, Device("dev-off", GENEROUS_MB)],
                                             assignment={**plan.assignment, plan.submodels[-1].name: "dev-off"})
                try:  # a plan placed on a device that has no node in the fleet
                    PlanSession(absent, "ray").close()
                    more["faults"]["absent_device"] = "started (not refused)"
                except EdgeVitError as exc:
                    more["faults"]["absent_device"] = f"refused: {exc}"
            return more

        for k in args.ks:
            rows, more = measure_k(k, plans[k], args, x, at_k5 if k == 5 else None)
            report["rows"] += rows
            report.update(more)
        if "faults" not in args.skip:
            report.setdefault("faults", {})["never_up"] = never_up(args)["fleet"]
        report["load_after"] = os.getloadavg()
        rows = report["rows"]
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    left = leftovers()
    report["left_behind"] = left
    if left:
        cleanup()
    print(f"\nED-ViT on an emulated fleet, {started}, {os.cpu_count()} cores, load {load_before[0]:.1f} before, "
          f"{report['load_after'][0]:.1f} after, nice {args.nice} (plans: untrained deit_tiny 224/16, 197 tokens; "
          "timing only)\n")
    print(table(rows))
    text, verdicts = prediction_table(rows)
    print(f"\npredicted vs measured latency (plan latencies measured at split time, ONNX Runtime, 1 thread):\n\n{text}\n")
    for name, link_ok, trip_ok in verdicts:
        print(f"target, prediction within 25 %, {name}: link model {'met' if link_ok else 'NOT met'}, "
              f"with the measured round trip {'met' if trip_ok else 'NOT met'}")
    for key in ("memory", "faults"):
        if key in report:
            print(f"\n{key}:")
            for name, value in report[key].items():
                print(f"- {name}: {value}")
    print(f"\nleft behind after the runs: {left or 'nothing'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
