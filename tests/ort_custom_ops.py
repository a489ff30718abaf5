#!/usr/bin/env python
"""libedgevit_ort.so on single-node graphs: hostile inputs and parity, in one process.

    python tests/ort_custom_ops.py LIBRARY     # prints one JSON line: {"hostile": {...}, "parity": {...}}

Imports onnxruntime, onnx and numpy only (the references are tests/native_stress.py's numpy
float64 ones), so it runs under an ASan preload too (tests/test_native_sanitize.py). Each
hostile case must fail the run with a clear status (EXPECTED: a fragment of the message);
the process must not die. Parity: each op on a few shapes, 1 and 2 threads, against float64.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

EXPECTED = {
    "XCA rank 2": "rank 3", "XCA rank 4": "rank 3", "XCA width not 3 x heads": "not 3 x heads x head_dim",
    "XCA heads not dividing": "not 3 x heads x head_dim", "XCA temperature count": "one value per head",
    "XCA empty batch": "must not be empty", "XCA empty tokens": "must not be empty",
    "XCA head width past the limit": "above the kernels' limit", "XCA heads 0": "heads must be between",
    "XCA heads negative": "heads must be between", "XCA heads huge": "heads must be between",
    "XCA no heads attribute": "attribute heads is missing", "XCA float64 input": "Type Error",
    "SLA positional count": "tokens x channels", "SLA int32 positional": "Type Error",
    "RLMHSA rank 2": "rank 3 or 4", "RLMHSA rank 5": "rank 3 or 4", "RLMHSA kv channels": "32 channels",
    "RLMHSA kv batch": "must have batch 1", "RLMHSA heads not dividing": "heads x head_dim",
    "RLMHSA empty keys": "must not be empty", "RLMHSA empty tokens": "must not be empty",
}


def graph(op: str, heads: int | None, first: np.ndarray, second: np.ndarray) -> bytes:
    """One ai.edgevit node (no heads attribute when ``heads`` is None)."""
    from onnx import TensorProto, helper

    kinds = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE, np.int32: TensorProto.INT32}
    inputs = [helper.make_tensor_value_info("a", kinds[first.dtype.type], None),
              helper.make_tensor_value_info("b", kinds[second.dtype.type], None)]
    node = helper.make_node(op, ["a", "b"], ["y"], domain="ai.edgevit", **({} if heads is None else {"heads": heads}))
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph([node], op, inputs, [output]), opset_imports=[
        helper.make_opsetid("", 18), helper.make_opsetid("ai.edgevit", 1)]).SerializeToString()


def hostile_cases() -> dict:
    def z(*shape, dtype=np.float32):
        return np.zeros(shape, dtype)

    return {
        "XCA rank 2": ("XCA", 2, z(10, 48), z(2)),
        "XCA rank 4": ("XCA", 2, z(1, 1, 10, 48), z(2)),
        "XCA width not 3 x heads": ("XCA", 2, z(1, 10, 47), z(2)),
        "XCA heads not dividing": ("XCA", 5, z(1, 10, 48), z(5)),
        "XCA temperature count": ("XCA", 2, z(1, 10, 48), z(3)),
        "XCA empty batch": ("XCA", 2, z(0, 10, 48), z(2)),
        "XCA empty tokens": ("XCA", 2, z(1, 0, 48), z(2)),
        "XCA head width past the limit": ("XCA", 1, z(1, 2, 3 * 4096), z(1)),
        "XCA heads 0": ("XCA", 0, z(1, 10, 48), z(2)),
        "XCA heads negative": ("XCA", -3, z(1, 10, 48), z(2)),
        "XCA heads huge": ("XCA", 2 ** 40, z(1, 10, 48), z(2)),
        "XCA no heads attribute": ("XCA", None, z(1, 10, 48), z(2)),
        "XCA float64 input": ("XCA", 2, z(1, 10, 48, dtype=np.float64), z(2)),
        "SLA positional count": ("SLA", 2, z(1, 10, 48), z(9, 16)),
        "SLA int32 positional": ("SLA", 2, z(1, 10, 48), z(10, 16, dtype=np.int32)),
        "RLMHSA rank 2": ("RLMHSA", 2, z(16, 9), z(1, 32, 4)),
        "RLMHSA rank 5": ("RLMHSA", 2, z(1, 16, 3, 3, 1), z(1, 32, 2, 2)),
        "RLMHSA kv channels": ("RLMHSA", 2, z(1, 16, 3, 3), z(1, 16, 2, 2)),
        "RLMHSA kv batch": ("RLMHSA", 2, z(1, 16, 3, 3), z(2, 32, 2, 2)),
        "RLMHSA heads not dividing": ("RLMHSA", 3, z(1, 16, 3, 3), z(1, 32, 2, 2)),
        "RLMHSA empty keys": ("RLMHSA", 2, z(1, 16, 3, 3), z(1, 32, 0, 2)),
        "RLMHSA empty tokens": ("RLMHSA", 2, z(1, 16, 0, 3), z(1, 32, 2, 2)),
    }


def session(library: str, model: bytes, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(library)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def hostile(library: str) -> dict[str, str]:
    results = {}
    for name, (op, heads, first, second) in hostile_cases().items():
        try:
            session(library, graph(op, heads, first, second)).run(None, {"a": first, "b": second})
            results[name] = "no error"
        except Exception as exc:  # the run's status, as ONNX Runtime raises it
            results[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return results


def parity(library: str) -> dict[str, float]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from native_stress import ref_rlmhsa, ref_sla, ref_xca

    rng = np.random.default_rng(0)
    worst = {"XCA": 0.0, "SLA": 0.0, "RLMHSA": 0.0}
    for batch, tokens, heads, dim in [(1, 1, 1, 1), (2, 17, 3, 13), (1, 196, 3, 64), (1, 1024, 8, 12)]:
        qkv = rng.standard_normal((batch, tokens, 3 * heads * dim)).astype(np.float32)
        tables = {"XCA": rng.uniform(0.25, 2.5, heads).astype(np.float32),
                  "SLA": (rng.standard_normal((tokens, heads * dim)) * 0.5).astype(np.float32)}
        for op, ref in (("XCA", ref_xca), ("SLA", ref_sla)):
            expected = ref(qkv, tables[op], heads)
            for threads in (1, 2):
                got = session(library, graph(op, heads, qkv, tables[op]), threads).run(None, {"a": qkv, "b": tables[op]})[0]
                worst[op] = max(worst[op], float(np.abs(got - expected).max()))
    for batch, heads, dim, side, pooled in [(1, 1, 8, 1, 1), (2, 3, 16, 9, 3), (1, 2, 32, 28, 7)]:
        q = (rng.standard_normal((batch, heads * dim, side, side)) / np.sqrt(dim)).astype(np.float32)
        kv = rng.standard_normal((batch, 2 * heads * dim, pooled, pooled)).astype(np.float32)
        expected = ref_rlmhsa(q.reshape(batch, heads * dim, -1), kv.reshape(batch, 2 * heads * dim, -1), heads)
        for threads in (1, 2):
            got = session(library, graph("RLMHSA", heads, q, kv), threads).run(None, {"a": q, "b": kv})[0]
            worst["RLMHSA"] = max(worst["RLMHSA"], float(np.abs(got.reshape(expected.shape) - expected).max()))
    return worst


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps({"hostile": hostile(argv[0]), "parity": parity(argv[0])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
