"""LiteRT latency of the TFLite app form (NHWC pixels in) against the tensor form (NCHW).

For each model, two TFLite exports of the same folded weights, timed in one process,
interleaved round by round with LiteRT (XNNPACK, batch 1, 2 threads), reported as the
ratio of per-round medians, with each graph's TRANSPOSE count and its first operator:

- ``app``: ``edgevit export --target tflite`` as it is by default: ``1 x H x W x 3`` RGB
  pixels 0-255, mean/std inside the model (what MediaPipe Tasks loads);
- ``tensor``: ``--layout nchw --no-image-input``: the normalized ``1 x 3 x H x W`` tensor.

    python benchmarks/tflite_app_form.py [--rounds 10] [--runs 20] [--json out.json]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import edgevit

from _timing import interleaved, parse_args, publish, ratio, summary  # noqa: E402,I001

THREADS = 2
MODELS = ("edgenext_xx_small", "slab_deit_tiny")


def runner(runtime, feed):
    return lambda: runtime.run(feed)


def main() -> int:
    args = parse_args(__doc__, rounds=10)
    rng = np.random.default_rng(0)
    candidates, graphs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            forms = {"app": {}, "tensor": {"layout": "nchw", "image_input": False}}
            for form, options in forms.items():
                result = edgevit.export(model, "tflite", Path(tmp) / form, **options)
                rt = edgevit.load(result.path, threads=THREADS)
                feed = rng.uniform(0, 255, rt.inputs[0].shape).astype(np.float32) if form == "app" else \
                    rng.standard_normal(rt.inputs[0].shape).astype(np.float32)
                key = f"{model}/{form}"
                candidates[key] = runner(rt, feed)
                ops = rt.interpreter._get_ops_details()
                input_index = rt.interpreter.get_input_details()[0]["index"]
                graphs[key] = {"input": list(rt.inputs[0].shape), "transposes": rt.op_census().get("TRANSPOSE", 0),
                               "first_ops": sorted({o["op_name"] for o in ops if input_index in o["inputs"]})}
        per_round = interleaved(candidates, args.rounds, args.runs)
    ratios = {m: round(ratio(per_round, f"{m}/app", f"{m}/tensor"), 3) for m in MODELS}
    result = summary(per_round, args, THREADS, ["per model"], latency_app_over_tensor=ratios, graphs=graphs)
    publish(result, [f"{m}: app form / tensor form latency = {ratios[m]:.3f} "
                     f"(TRANSPOSE ops {graphs[m + '/app']['transposes']} vs {graphs[m + '/tensor']['transposes']}; "
                     f"input feeds {graphs[m + '/app']['first_ops']} vs {graphs[m + '/tensor']['first_ops']})"
                     for m in MODELS], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
