"""ONNX Runtime latency of slab_deit_tiny folded, against its LayerNorm counterpart and unfolded.

Three ONNX graphs, timed in one process, interleaved round by round, reported as ratios of
per-round medians (224x224, batch 1, 2 threads):

- ``folded``: ``slab_deit_tiny`` as ``edgevit export`` writes it (re-parameterized: no norm left);
- ``unfolded``: the same model exported with ``reparam=False`` (RepBN as BatchNorm + alpha*x);
- ``layernorm``: ``deit_tiny_prepbn`` evaluated with LayerNorm, i.e. before the progressive
  switch (every PRepBN at lambda = 1): the plain DeiT-T graph, softmax attention + LayerNorm.

Target: folded at least 1.15x faster than the LayerNorm model.

    python benchmarks/reparam_latency.py [--rounds 12] [--runs 20] [--json out.json]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

import edgevit
from edgevit.models.deit import build_deit
from edgevit.models.registry import get_spec

from _timing import interleaved, ort_runner, ort_session, parse_args, publish, ratio, summary  # noqa: E402,I001

SIZE, THREADS = 224, 2


def layernorm_counterpart() -> torch.nn.Module:
    """deit_tiny_prepbn's architecture with its norms at lambda = 1: LayerNorm only."""
    config = dict(get_spec("deit_tiny_prepbn").config, norm="layernorm")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_deit(**config).eval()
    model.edgevit_name = "deit_tiny_layernorm"
    return model


def main() -> int:
    args = parse_args(__doc__, rounds=12)
    torch.set_num_threads(THREADS)

    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            "folded": edgevit.export("slab_deit_tiny", "onnx", Path(tmp) / "folded").path,
            "unfolded": edgevit.export("slab_deit_tiny", "onnx", Path(tmp) / "unfolded", reparam=False).path,
            "layernorm": edgevit.export(layernorm_counterpart(), "onnx", Path(tmp) / "ln", image_size=SIZE).path,
        }
        ops = {}
        for key, path in paths.items():
            graph = onnx.load(str(path), load_external_data=False).graph
            ops[key] = {op: sum(n.op_type == op for n in graph.node)
                        for op in ("BatchNormalization", "LayerNormalization", "MatMul", "Softmax")}
        feed = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
        candidates = {k: ort_runner(ort_session(p, THREADS), feed) for k, p in paths.items()}
        per_round = interleaved(candidates, args.rounds, args.runs)

    result = summary(per_round, args, THREADS, [1, 3, SIZE, SIZE],
                     speedup_folded_vs_layernorm=round(1 / ratio(per_round, "folded", "layernorm"), 3),
                     speedup_folded_vs_unfolded=round(1 / ratio(per_round, "folded", "unfolded"), 3),
                     target_speedup_vs_layernorm=1.15, graph_ops=ops)
    publish(result, [f"slab_deit_tiny folded vs LayerNorm DeiT-T: {result['speedup_folded_vs_layernorm']:.3f}x "
                     "faster (target >= 1.15x)",
                     f"slab_deit_tiny folded vs unfolded:          {result['speedup_folded_vs_unfolded']:.3f}x "
                     "faster"], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
