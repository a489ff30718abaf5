"""ED-ViT plans served three ways, side by side: local backend, Ray across nodes, unsplit.

One run, on this machine: the digits plans with K = 2 and K = 5 sub-models (written by
``benchmarks/edvit_digits.py`` into ``--plans``; built here with a short training when
they are missing, which changes accuracy, not timing: same budgets, same shapes) are
placed one sub-model per device, ``dev0``..``dev4``. Ray runs them on a
``ray.cluster_utils.Cluster`` whose nodes each offer one device (simulated nodes: they
share this machine's cores). For every configuration, interleaved in the same rounds:

- latency: requests of one input, one after another; the median total and its split
  (queue, scatter, compute, gather, fuse: see ``edgevit.edvit.scatter``), and the ratio
  to the unsplit ``full.onnx`` (ONNX Runtime, 1 thread) timed in the same round;
- throughput: ``--clients`` threads sending one-input requests at once, with batching
  (``max_batch`` 32, the default) and without (``max_batch`` 1); the unsplit model
  serves the same clients from one ONNX Runtime session.

    python benchmarks/distributed_overhead.py [--plans edvit_bench] [--rounds 5] [--runs 30] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgevit.edvit.plan import load_plan
from edgevit.edvit.runner import PlanSession

from _timing import median_ms, ort_runner, ort_session  # noqa: E402,I001

SPLITS = {2: 0.5, 5: 0.2}  # K: budget, as in edvit_digits.py
PARTS = ("queue", "scatter", "compute", "gather", "fuse")


def say(message: str) -> None:
    print(f"- {message}", file=sys.stderr, flush=True)


def digits_plans(root: Path) -> dict[int, Path]:
    """The K = 2 and 5 plans under ``root``; missing ones are built with a short training."""
    missing = [k for k in SPLITS if not (root / f"k{k}" / "plan.json").is_file()]
    if missing:
        import edgevit
        from edgevit.edvit.data import load_dataset
        from edgevit.edvit.train import train_vit

        say(f"no plans for K={missing} under {root}: building them (2 training epochs; timing only)")
        data = load_dataset("digits", 32)
        vit = train_vit("deit_tiny", data, patch_size=8, epochs=2, lr=5e-4, progress=say)
        for k in missing:
            edgevit.split(vit, data, k, budget=SPLITS[k], output=root / f"k{k}", overwrite=True,
                          finetune_epochs=1, fusion_epochs=5, progress=say)
    return {k: root / f"k{k}" for k in SPLITS}


def one_per_device(plan_dir: Path, scratch: Path) -> Path:
    """A copy of the plan with sub-model i on its own device ``dev<i>`` (same artifacts)."""
    copy = Path(shutil.copytree(plan_dir, scratch / plan_dir.name))
    record = json.loads((copy / "plan.json").read_text())
    names = [s["name"] for s in record["submodels"]]
    record["devices"] = [{"name": f"dev{i}", "memory_mb": 1e6, "speed": 1.0, "target": "onnx"} for i in range(len(names))]
    record["assignment"] = {name: f"dev{i}" for i, name in enumerate(names)}
    (copy / "plan.json").write_text(json.dumps(record, indent=2))
    return copy


def latency_round(sessions: dict, full, x: np.ndarray, runs: int) -> dict[str, dict[str, float]]:
    """Median total and parts (ms) of ``runs`` one-input requests, per configuration."""
    out = {"unsplit": {"total": median_ms(ort_runner(full, x), runs)}}
    for key, session in sessions.items():
        results = [session.run(x) for _ in range(runs)]
        out[key] = {part: statistics.median(r.timings_ms[part] for r in results) for part in (*PARTS, "total")}
    return out


def throughput(call, clients: int, per_client: int) -> float:
    """Requests per second with ``clients`` threads each making ``per_client`` calls."""
    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: [call() for _ in range(per_client)], range(clients)))
        return clients * per_client / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=Path, default=Path("edvit_bench"), help="where edvit_digits.py wrote k2/, k5/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30, help="one-input requests per configuration and round")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput")
    parser.add_argument("--per-client", type=int, default=10, help="requests per client per round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()

    import ray
    from ray.cluster_utils import Cluster

    plans = digits_plans(args.plans)
    scratch = Path(tempfile.mkdtemp(prefix="edgevit-bench-"))
    placed = {k: one_per_device(p, scratch) for k, p in plans.items()}
    say(f"starting a Ray cluster: a head and {max(SPLITS)} device nodes (dev0..dev{max(SPLITS) - 1})")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for i in range(max(SPLITS)):
        cluster.add_node(num_cpus=1, resources={f"dev{i}": 1})
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    sessions: dict[str, PlanSession] = {}
    try:
        for k, path in placed.items():
            for backend in ("local", "ray"):
                sessions[f"{backend} K={k}"] = PlanSession(path, backend)
        full = ort_session(load_plan(placed[2]).artifact_path("full"), 1)
        x = np.random.default_rng(0).standard_normal((1, *load_plan(placed[2]).input["shape"][1:])).astype(np.float32)
        latency_round(sessions, full, x, 5)  # warm-up
        rounds: list[dict] = []
        rates: dict[str, list[float]] = {}
        for r in range(args.rounds):
            say(f"round {r + 1}/{args.rounds}")
            rounds.append(latency_round(sessions, full, x, args.runs))
            rates.setdefault("unsplit", []).append(throughput(ort_runner(full, x), args.clients, args.per_client))
            for key, session in sessions.items():
                for batch in (32, 1):
                    session.max_batch = batch
                    rates.setdefault(f"{key} batch<={batch}", []).append(
                        throughput(lambda: session.run(x), args.clients, args.per_client))
                session.max_batch = 32
    finally:
        for session in sessions.values():
            session.close()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    keys = ["unsplit", *sessions]
    median = {key: {part: statistics.median(rd[key][part] for rd in rounds) for part in rounds[0][key]} for key in keys}
    over_unsplit = {key: statistics.median(rd[key]["total"] / rd["unsplit"]["total"] for rd in rounds) for key in keys}
    rate = {key: statistics.median(v) for key, v in rates.items()}
    print(f"one input per request, {args.rounds} rounds x {args.runs} requests; medians in ms\n")
    print("| configuration | total | x unsplit | queue | scatter | compute | gather | fuse |")
    print("|---|---|---|---|---|---|---|---|")
    for key in keys:
        parts = " | ".join(f"{median[key][p]:.2f}" if p in median[key] else "-" for p in PARTS)
        print(f"| {key} | {median[key]['total']:.2f} | {over_unsplit[key]:.2f} | {parts} |")
    print(f"\nthroughput, {args.clients} concurrent clients, requests/s (median of rounds)\n")
    print("| configuration | batched (<=32) | unbatched | batched / unbatched | batched / unsplit |")
    print("|---|---|---|---|---|")
    print(f"| unsplit | {rate['unsplit']:.0f} | - | - | 1.00 |")
    for key in sessions:
        batched, single = rates[f"{key} batch<=32"], rates[f"{key} batch<=1"]
        gain = statistics.median(b / s for b, s in zip(batched, single))
        vs_full = statistics.median(b / u for b, u in zip(batched, rates["unsplit"]))
        print(f"| {key} | {statistics.median(batched):.0f} | {statistics.median(single):.0f} | {gain:.2f} | {vs_full:.2f} |")
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"latency_ms": median, "latency_over_unsplit": over_unsplit,
                                         "throughput_rps": rate, "clients": args.clients}, indent=2) + "\n")


if __name__ == "__main__":
    main()
