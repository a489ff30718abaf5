#!/usr/bin/env python
"""Stress the native attention kernels: many shapes, thread counts, error paths, NaN/inf.

Meant for the sanitizer build (tests/test_native_sanitize.py runs it with the ASan/UBSan
``_native`` on PYTHONPATH and libasan preloaded), but runs against any build:

    python tests/native_stress.py                     # edgevit._native (or a top-level _native), both ISAs
    python tests/native_stress.py --require-sanitized # a top-level _native built with EDGEVIT_SANITIZE=ON

Every array is its own numpy allocation of exactly the size the kernel is told about, so a read
or write past an edge lands in ASan's redzone. The reference is numpy in float64 (no torch: it
is slow and noisy under an ASan preload). ``EDGEVIT_NATIVE_ISA`` is read once per process, so
without ``--one-isa`` the script runs once with the default ISA and once more per narrower build,
each in a child process with ``EDGEVIT_NATIVE_ISA`` set (avx2, baseline). Exit status 0 when
every check passed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import threading

import numpy as np

ATOL = 1e-5


def load(require_sanitized: bool):
    """The top-level ``_native`` (a build directory on PYTHONPATH) if there is one, else edgevit's."""
    try:
        module = importlib.import_module("_native")
    except ImportError:
        if require_sanitized:
            raise SystemExit("native_stress: --require-sanitized needs the sanitized _native on PYTHONPATH")
        module = importlib.import_module("edgevit._native")
    if require_sanitized and module.sanitized is not True:
        raise SystemExit(f"native_stress: {module.__file__} is not a sanitized build")
    return module


# --- numpy references (float64) ------------------------------------------------------------

def ref_xca(qkv, temperature, heads):
    batch, tokens, width = qkv.shape
    dim = width // 3 // heads
    parts = qkv.astype(np.float64).reshape(batch, tokens, 3, heads, dim).transpose(2, 0, 3, 4, 1)  # (3,B,H,d,N)
    q, k, v = parts

    def normalize(x):
        return x / np.maximum(np.sqrt((x * x).sum(-1, keepdims=True)), 1e-12)

    attn = normalize(q) @ normalize(k).transpose(0, 1, 3, 2) * temperature.astype(np.float64).reshape(heads, 1, 1)
    attn = np.exp(attn - attn.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    return (attn @ v).transpose(0, 3, 1, 2).reshape(batch, tokens, heads * dim)


def ref_sla(qkv, positional, heads):
    batch, tokens, width = qkv.shape
    dim = width // 3 // heads
    parts = qkv.astype(np.float64).reshape(batch, tokens, 3, heads, dim).transpose(2, 0, 3, 1, 4)  # (3,B,H,N,d)
    q, k, v = parts
    pos = positional.astype(np.float64).reshape(tokens, heads, dim).transpose(1, 0, 2)[None]
    q, k = np.maximum(q, 0.0), np.maximum(k + pos, 0.0)
    z = 1.0 / (q @ k.sum(2)[..., None] + 1e-6)  # (B, H, N, 1)
    out = q @ (k.transpose(0, 1, 3, 2) @ v) * z
    return out.transpose(0, 2, 1, 3).reshape(batch, tokens, heads * dim)


def ref_rlmhsa(q, kv, heads):
    """q (B, C, N) scaled, kv (B, 2C, M) -> (B, C, N): per head, v softmax_m(k^T q)."""
    batch, channels, tokens = q.shape
    dim = channels // heads
    qh = q.astype(np.float64).reshape(batch, heads, dim, tokens)
    k, v = kv.astype(np.float64).reshape(batch, 2, heads, dim, -1).transpose(1, 0, 2, 3, 4)  # (B, H, d, M) each
    scores = k.transpose(0, 1, 3, 2) @ qh  # (B, H, M, N)
    scores = np.exp(scores - scores.max(2, keepdims=True))
    scores /= scores.sum(2, keepdims=True)
    return (v @ scores).reshape(batch, channels, tokens)


# --- the checks -------------------------------------------------------------------------------

class Stress:
    def __init__(self, module, verbose: bool = False):
        self.m = module
        self.verbose = verbose
        self.failures: list[str] = []
        self.calls = 0
        self.worst = 0.0

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"FAIL {message}", file=sys.stderr, flush=True)

    def inputs(self, rng, batch, tokens, heads, dim, scale=1.0):
        channels = heads * dim
        qkv = (rng.standard_normal((batch, tokens, 3 * channels)) * scale).astype(np.float32)
        temperature = rng.uniform(-1.0, 3.0, heads).astype(np.float32)
        positional = (rng.standard_normal((tokens, channels)) * 0.5 * scale).astype(np.float32)
        return qkv, temperature, positional

    def run(self, op, qkv, extra, heads, threads):
        out = np.empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3), np.float32)  # exact size, no slack
        getattr(self.m, op)(qkv, extra, out, heads, threads)
        self.calls += 1
        return out

    def parity(self, rng, batch, tokens, heads, dim, scale=1.0, threads=(1, 2)):
        qkv, temperature, positional = self.inputs(rng, batch, tokens, heads, dim, scale)
        shape = f"B{batch} N{tokens} H{heads} d{dim} scale {scale:g}"
        for op, extra, ref in (("xca", temperature, ref_xca), ("sla", positional, ref_sla)):
            expected = ref(qkv, extra, heads)
            first = None
            for t in threads:
                out = self.run(op, qkv, extra, heads, t)
                err = float(np.abs(out - expected).max())
                self.worst = max(self.worst, err)
                if not err <= ATOL * max(1.0, scale):
                    self.fail(f"{op} {shape} threads {t}: max abs error {err:.3g}")
                if first is None:
                    first = out
                elif not np.array_equal(out, first):
                    self.fail(f"{op} {shape}: threads {t} differs from threads {threads[0]}")

    def pooled(self, seed=1):
        """RLMHSA: head widths 1..33, token counts around the 16-query groups and 128-query
        blocks, key counts around the 4-key steps; 1 and 2 threads, bit-identical."""
        rng = np.random.default_rng(seed)
        for dim, tokens, keys, heads, batch in [(8, 1, 1, 1, 1), (8, 15, 3, 2, 2), (16, 16, 4, 3, 1), (16, 17, 5, 1, 3),
                                               (32, 129, 49, 2, 1), (3, 33, 7, 5, 2), (1, 300, 2, 4, 1),
                                               (13, 255, 9, 1, 2), (16, 49, 49, 6, 1), (33, 8, 50, 2, 1)]:
            channels = heads * dim
            q = (rng.standard_normal((batch, channels, tokens)) / np.sqrt(dim)).astype(np.float32)
            kv = rng.standard_normal((batch, 2 * channels, keys)).astype(np.float32)
            expected, first = ref_rlmhsa(q, kv, heads), None
            for threads in (1, 2):
                out = np.empty_like(q)  # exact size, no slack
                self.m.rlmhsa(q, kv, out, heads, threads)
                self.calls += 1
                err = float(np.abs(out - expected).max())
                self.worst = max(self.worst, err)
                if not err <= ATOL:
                    self.fail(f"rlmhsa B{batch} H{heads} d{dim} N{tokens} M{keys} threads {threads}: error {err:.3g}")
                if first is not None and not np.array_equal(out, first):
                    self.fail(f"rlmhsa B{batch} H{heads} d{dim} N{tokens} M{keys}: threads differ")
                first = out

    def shapes(self, rng):
        """Every head dim 1..24 and the awkward larger ones, against token counts around the lane width."""
        dims = list(range(1, 25)) + [31, 33, 40, 42, 47, 64, 73]
        token_counts = [1, 2, 3, 5, 7, 8, 9, 16, 17, 33]
        for i, dim in enumerate(dims):
            for j, tokens in enumerate(token_counts):
                if (i + j) % 2 and tokens > 3:  # half the grid (all of N <= 3), to keep it quick under ASan
                    continue
                batch = 1 + (i + 2 * j) % 3
                heads = 1 + (3 * i + j) % 8
                yield batch, tokens, heads, dim
        yield from [(1, 1, 1, 1), (3, 1, 8, 1), (1, 197, 4, 64), (2, 49, 3, 73), (1, 300, 2, 13),
                    (2, 64, 8, 24), (1, 7, 1, 96), (1, 129, 1, 8), (4, 3, 2, 5)]

    def grid(self, seed=0):
        rng = np.random.default_rng(seed)
        shapes = list(self.shapes(rng))
        # shuffled: big and small shapes interleave, so the per-thread scratch is reused dirty
        for index in rng.permutation(len(shapes)):
            batch, tokens, heads, dim = shapes[index]
            threads = (1, 2) if index % 3 else (1, 2, 5)
            self.parity(rng, batch, tokens, heads, dim, scale=float(rng.choice([0.1, 1.0, 3.0])), threads=threads)

    def special_values(self):
        rng = np.random.default_rng(1)
        for batch, tokens, heads, dim in [(2, 9, 3, 13), (1, 1, 1, 1), (2, 17, 2, 8), (1, 5, 4, 7)]:
            channels = heads * dim
            for value in (np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30, 1e-30):
                qkv, temperature, positional = self.inputs(rng, batch, tokens, heads, dim)
                qkv.reshape(-1)[rng.integers(0, qkv.size, 3)] = value
                for threads in (1, 2):
                    xca = self.run("xca", qkv, temperature, heads, threads)
                    sla = self.run("sla", qkv, positional, heads, threads)
                    if np.isnan(value) and not (np.isnan(xca).any() and np.isnan(sla).any()):
                        self.fail(f"NaN in qkv (B{batch} N{tokens} H{heads} d{dim}) vanished")
            qkv, temperature, positional = self.inputs(rng, batch, tokens, heads, dim)
            qkv[:] = 0.0  # zero norms: F.normalize's floor, relu(q) = 0
            for op, extra, ref in (("xca", temperature, ref_xca), ("sla", positional, ref_sla)):
                out = self.run(op, qkv, extra, heads, 2)
                if not np.allclose(out, ref(qkv, extra, heads), atol=ATOL, rtol=0):
                    self.fail(f"{op} all-zero qkv (B{batch} N{tokens} H{heads} d{dim}) is off")
            qkv, temperature, positional = self.inputs(rng, batch, tokens, heads, dim)
            qkv[:, :, :channels] = -np.abs(qkv[:, :, :channels]) - 0.01  # relu(q) = 0
            if np.abs(self.run("sla", qkv, positional, heads, 2)).max() > 1e-6:
                self.fail("sla with negative q is not ~0")
            temperature[:] = np.nan
            positional[0, 0] = np.nan
            self.run("xca", qkv, temperature, heads, 2)
            self.run("sla", qkv, positional, heads, 2)

    def errors(self):
        """Every bad argument raises TypeError or ValueError, and never touches memory it should not."""
        B, N, H, D = 2, 5, 2, 3
        C = H * D
        rng = np.random.default_rng(2)
        qkv, temperature, positional = self.inputs(rng, B, N, H, D)
        out = np.empty((B, N, C), np.float32)
        flat = np.zeros(B * N * 3 * C, np.float32)
        shared = flat.reshape(B, N, 3 * C)
        readonly = np.zeros((B, N, C), np.float32)
        readonly.flags.writeable = False
        cases = {
            "float64 qkv": dict(qkv=qkv.astype(np.float64)),
            "int32 qkv": dict(qkv=qkv.astype(np.int32)),
            "float16 qkv": dict(qkv=qkv.astype(np.float16)),
            "2-D qkv": dict(qkv=qkv[0]),
            "4-D qkv": dict(qkv=qkv[None]),
            "None qkv": dict(qkv=None),
            "width % 3": dict(qkv=np.zeros((B, N, 3 * C + 1), np.float32)),
            "width % 3 heads": dict(qkv=np.zeros((B, N, 3 * C + 3), np.float32)),
            "heads 0": dict(heads=0),
            "heads -1": dict(heads=-1),
            "heads 4": dict(heads=4),
            "heads huge": dict(heads=2**40),
            "out channels": dict(out=np.empty((B, N, C + 1), np.float32)),
            "out tokens": dict(out=np.empty((B, N + 1, C), np.float32)),
            "out batch": dict(out=np.empty((B - 1, N, C), np.float32)),
            "out float64": dict(out=np.empty((B, N, C), np.float64)),
            "out read-only": dict(out=readonly),
            "transposed qkv": dict(qkv=np.zeros((B, 3 * C, N), np.float32).transpose(0, 2, 1)),
            "strided qkv": dict(qkv=np.zeros((B, N, 6 * C), np.float32)[:, :, ::2]),
            "strided out": dict(out=np.empty((B, N, 2 * C), np.float32)[:, :, ::2]),
            "out = head of qkv": dict(qkv=shared, out=flat[:B * N * C].reshape(B, N, C)),
            "out = tail of qkv": dict(qkv=shared, out=flat[2 * B * N * C:].reshape(B, N, C)),
            "empty batch": dict(qkv=np.zeros((0, N, 3 * C), np.float32), out=np.empty((0, N, C), np.float32)),
            "empty tokens": dict(qkv=np.zeros((B, 0, 3 * C), np.float32), out=np.empty((B, 0, C), np.float32)),
            "empty width": dict(qkv=np.zeros((B, N, 0), np.float32), out=np.empty((B, N, 0), np.float32)),
        }
        extras = {
            "xca": {"temperature long": np.ones(H + 1, np.float32), "temperature empty": np.ones(0, np.float32),
                    "temperature float64": np.ones(H, np.float64), "temperature 2-D": np.ones((H, 1), np.float32)},
            "sla": {"positional tokens": np.zeros((N + 1, C), np.float32),
                    "positional channels": np.zeros((N, C - 1), np.float32),
                    "positional (C, N)": np.zeros((C, N), np.float32),
                    "positional 3-D": np.zeros((1, N, C), np.float32),
                    "positional empty": np.zeros((0, C), np.float32)},
        }
        for op, good_extra in (("xca", temperature), ("sla", positional)):
            calls = [(name, dict(dict(qkv=qkv, out=out, heads=H, extra=good_extra), **change))
                     for name, change in cases.items()]
            calls += [(name, dict(qkv=qkv, out=out, heads=H, extra=bad)) for name, bad in extras[op].items()]
            for name, args in calls:
                try:
                    getattr(self.m, op)(args["qkv"], args["extra"], args["out"], args["heads"], 1)
                except (TypeError, ValueError):
                    continue
                self.fail(f"{op} {name}: no exception")
            sentinel = np.full((B, N, C), 5.0, np.float32)
            try:
                getattr(self.m, op)(qkv, extras[op][next(iter(extras[op]))], sentinel, H, 1)
            except ValueError:
                pass
            if not (sentinel == 5.0).all():
                self.fail(f"{op}: a rejected call wrote to out")

    def concurrent(self):
        """Python threads calling at once (the GIL is released): one gets the pool, the others run alone."""
        rng = np.random.default_rng(3)
        jobs = []
        for shape in [(2, 33, 4, 13), (3, 17, 8, 7), (1, 64, 2, 40), (2, 9, 5, 1)]:
            qkv, temperature, positional = self.inputs(rng, *shape)
            heads = shape[2]
            jobs.append((qkv, temperature, positional, heads, ref_xca(qkv, temperature, heads),
                         ref_sla(qkv, positional, heads)))
        errors: list[str] = []

        def work(index):
            qkv, temperature, positional, heads, xca, sla = jobs[index % len(jobs)]
            for repeat in range(15):
                threads = 1 + (index + repeat) % 3
                for op, extra, expected in (("xca", temperature, xca), ("sla", positional, sla)):
                    out = np.empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3), np.float32)
                    getattr(self.m, op)(qkv, extra, out, heads, threads)
                    if not np.abs(out - expected).max() <= ATOL:
                        errors.append(f"{op} from Python thread {index}, threads {threads}")

        workers = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for message in errors:
            self.fail(f"concurrent {message}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-sanitized", action="store_true",
                        help="import a top-level _native (a build directory on PYTHONPATH) built with ASan/UBSan")
    parser.add_argument("--one-isa", action="store_true",
                        help="run with this process's ISA only (no runs of the narrower builds)")
    args = parser.parse_args(argv)

    module = load(args.require_sanitized)
    stress = Stress(module)
    isa = module.isa()
    print(f"native_stress: {module.__file__} isa={isa} sanitized={module.sanitized}", flush=True)
    stress.grid()
    stress.pooled()
    stress.special_values()
    stress.errors()
    stress.concurrent()
    print(f"native_stress: isa={isa} {stress.calls} kernel calls, worst error {stress.worst:.3g}, "
          f"{len(stress.failures)} failures", flush=True)
    code = 1 if stress.failures else 0

    narrower = {"avx512": ("avx2", "baseline"), "avx2": ("baseline",)}.get(isa, ())
    for child_isa in () if args.one_isa else narrower:
        env = dict(os.environ, EDGEVIT_NATIVE_ISA=child_isa)
        child = [sys.executable, os.path.abspath(__file__), "--one-isa"]
        if args.require_sanitized:
            child.append("--require-sanitized")
        code = max(code, subprocess.run(child, env=env).returncode)
    return code


if __name__ == "__main__":
    sys.exit(main())
