#!/usr/bin/env python3
"""Run an edgevit ``--native-ops`` ONNX file in a plain ONNX Runtime app: no edgevit, no torch.

The file's attention nodes (``ai.edgevit::XCA`` / ``SLA`` / ``RLMHSA``) run in
``libedgevit_ort.so``, which the app registers by path. Copy that library from the package
(``edgevit info --native`` prints where it is) next to the app, or build it from the
repository with CMake (``docs/native.md``). A C++ app does the same with
``Ort::SessionOptions::RegisterCustomOpsLibrary(ORT_TSTR("libedgevit_ort.so"))``.

    python onnxruntime_custom_ops.py model_native.onnx --library ./libedgevit_ort.so \\
        [--input x.npy] [--compare model.onnx] [--threads 2]

Needs only ``onnxruntime`` and ``numpy``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnxruntime as ort


def session(path: str, library: str | None, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if library:
        options.register_custom_ops_library(library)  # serves the ai.edgevit domain
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX file exported with --native-ops")
    parser.add_argument("--library", default="./libedgevit_ort.so", help="path of libedgevit_ort.so")
    parser.add_argument("--input", help="a .npy array of the model's input shape (default: seeded noise)")
    parser.add_argument("--compare", help="the standard export of the same model, to compare outputs with")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    try:
        app = session(args.model, args.library, args.threads)
    except Exception as exc:  # a missing library or domain: ONNX Runtime's one-line reason
        print(f"error: cannot load {args.model}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    spec = app.get_inputs()[0]
    if args.input:
        x = np.load(args.input).astype(np.float32)
    else:
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    scores = app.run(None, {spec.name: x})[0]
    top = np.argsort(scores[0])[::-1][:5]
    print("top-5 classes:", ", ".join(f"{i} ({scores[0, i]:.4f})" for i in top))
    if args.compare:
        reference = session(args.compare, None, args.threads)
        expected = reference.run(None, {reference.get_inputs()[0].name: x})[0]
        print(f"max abs difference from {args.compare}: {float(np.abs(scores - expected).max()):.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
