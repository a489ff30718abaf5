"""Mutation fuzzing of every artifact format: corrupted ONNX, TFLite and Core ML files go
through ``edgevit predict`` (with and without the integrity check) and ``info`` (its
human output, which prints the artifact's own names).

Every outcome must be exit 0, 1 or a clean exit 2 (one ``edgevit: error:`` line): never a
hang, a signal, a traceback or an internal error, and never more than 1 GiB of memory. A
mutant that still loads and computes something else when the integrity check is off
(silent corruption) must be refused when it is on. ``EDGEVIT_FUZZ_MUTANTS`` sets the
number of mutants per format (default 300); the seed is fixed, so a run is repeatable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import edgevit
import numpy as np
import pytest

from .cli_pool import CliWorker, Outcome

MUTANTS = int(os.environ.get("EDGEVIT_FUZZ_MUTANTS", "300"))
PEAK_LIMIT = 1 << 30
INTEGRITY_LINE = re.compile(r"^integrity: (\w+)", re.M)
COREML_FILES = (("Data/com.apple.CoreML/model.mlmodel", 0.6), ("Data/com.apple.CoreML/weights/weight.bin", 0.3),
                ("Manifest.json", 0.1))


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption, biased towards the first and last 4 KiB (headers, tables, metadata)."""
    size = len(data)
    out = bytearray(data)

    def near_an_end() -> int:
        edge = min(size, 4096)
        return int(rng.integers(0, edge)) if rng.random() < 0.5 else int(rng.integers(size - edge, size))

    kind = int(rng.integers(9))
    if kind == 0:  # a bit anywhere (mostly weights)
        at = int(rng.integers(size))
        out[at] ^= 1 << int(rng.integers(8))
    elif kind == 8:  # a 4-byte word anywhere (mostly a weight) replaced
        at = int(rng.integers(size)) & ~3
        out[at:at + 4] = rng.bytes(4)
    elif kind == 1:  # a bit in a header or table
        at = near_an_end()
        out[at] ^= 1 << int(rng.integers(8))
    elif kind == 2:  # a byte set to an extreme
        out[near_an_end()] = int(rng.choice([0x00, 0xFF, 0x7F, 0x80, int(rng.integers(256))]))
    elif kind == 3:  # truncated
        del out[int(rng.integers(size)):]
    elif kind == 4:  # bytes inserted
        at = near_an_end()
        out[at:at] = rng.bytes(int(rng.integers(1, 17)))
    elif kind == 5:  # bytes deleted
        at = near_an_end()
        del out[at:at + int(rng.integers(1, 65))]
    elif kind == 6:  # a length or offset field set to an extreme
        at = near_an_end() & ~3
        value = int(rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000000, 0]))
        out[at:at + 4] = value.to_bytes(4, "little")
    else:  # a chunk copied over another place
        length = int(rng.integers(4, 257))
        source, target = int(rng.integers(size)), near_an_end()
        out[target:target + length] = data[source:source + length]
    if bytes(out) == data:  # the mutation changed nothing: change one byte for sure
        out[int(rng.integers(len(out)))] ^= 0xFF if out else 0
    return bytes(out)


def make_mutant(source: Path, target: str, index: int, rng: np.random.Generator, tmp_path: Path) -> tuple[Path, str]:
    """A corrupted copy of ``source`` and the file that was changed."""
    mutant = tmp_path / f"mutant{index}{source.suffix}"
    if target != "coreml":
        mutant.write_bytes(mutate(source.read_bytes(), rng))
        return mutant, source.name
    shutil.copytree(source, mutant)
    names, weights = zip(*COREML_FILES)
    changed = str(rng.choice(names, p=weights))
    path = mutant / changed
    path.write_bytes(mutate(path.read_bytes(), rng))
    return mutant, changed


def logits(outcome: Outcome) -> list[tuple[int, float]] | None:
    if outcome.code != 0:
        return None
    return [(row["class"], row["score"]) for row in json.loads(outcome.stdout)["top"]]


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
def test_mutated_artifacts_never_crash_hang_or_corrupt_silently(artifacts, target, tmp_path):
    rng = np.random.default_rng(["onnx", "tflite", "coreml"].index(target))
    x = tmp_path / "x.npy"
    shape = edgevit.load(artifacts[target]).inputs[0].shape  # TFLite: NHWC
    np.save(x, np.random.default_rng(7).standard_normal(shape).astype(np.float32))
    worker = CliWorker(block=("torch",), cwd=tmp_path)
    try:
        reference = logits(worker.run(["--json", "predict", str(artifacts[target]), str(x), "--top-k", "5"]))
        assert reference is not None
        counts: Counter = Counter()
        problems, peak = [], 0
        for index in range(MUTANTS):
            mutant, changed = make_mutant(artifacts[target], target, index, rng, tmp_path)
            unchecked = worker.run(["--json", "predict", str(mutant), str(x), "--top-k", "5", "--no-integrity-check"])
            checked = worker.run(["--json", "predict", str(mutant), str(x), "--top-k", "5"])
            described = worker.run(["info", str(mutant)])  # the human output: tables of untrusted names
            for name, outcome in (("unchecked", unchecked), ("checked", checked), ("info", described)):
                counts[f"{name}: exit {outcome.code}"] += 1
                peak = max(peak, outcome.peak_rss)
                if not outcome.clean:
                    problems.append(f"mutant {index} ({changed}) {name}: {outcome}")
                elif outcome.peak_rss > PEAK_LIMIT:
                    problems.append(f"mutant {index} ({changed}) {name}: peak RSS {outcome.peak_rss >> 20} MiB")
            silently_wrong = logits(unchecked) is not None and logits(unchecked) != reference
            counts["silently wrong without the check"] += silently_wrong
            if silently_wrong and checked.code != 2:
                problems.append(f"mutant {index} ({changed}) computes something else and was not refused: {checked}")
            if described.code == 0:
                status = INTEGRITY_LINE.search(described.stdout)
                counts[f"info: integrity {status.group(1) if status else 'line missing'}"] += 1
            shutil.rmtree(mutant) if mutant.is_dir() else mutant.unlink()
        print(f"\n{target}: {MUTANTS} mutants, worker restarts {worker.restarts}, peak RSS {peak >> 20} MiB: "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        assert problems == [], "\n".join(problems[:10])
        assert counts["silently wrong without the check"] > 0  # the mutants did reach the weights
    finally:
        worker.close()
