"""Jetson demo: classify camera frames, a video or a folder of images with an .onnx artifact
made by ``edgevit export``, on ONNX Runtime (JetPack's onnxruntime-gpu). The execution
provider is the first that works of TensorRT, CUDA and the CPU; TensorRT builds an fp16
engine (cached, so only the first start is slow). Torch-free.

    python demo.py edgenext_xx_small.onnx --source /dev/video0
    python demo.py edgenext_xx_small.onnx --source clip.mp4 --providers cuda,cpu
    python demo.py edgenext_xx_small.onnx --source photos/ --providers cpu --save scores.npz --json
"""

from __future__ import annotations

import sys
from pathlib import Path

import edgevit
from edgevit.errors import EdgeVitError
from edgevit.apps.frames import demo_main, demo_parser
from edgevit.runtimes.onnxruntime import GPU_PROVIDERS, parse_providers


def providers_with_options(names: list[str], fp16: bool, cache: Path) -> list:
    """TensorRT with fp16 and an engine cache (made only where TensorRT is there); the others as named."""
    from edgevit.optional import require

    onnxruntime = require("onnxruntime", "to run .onnx artifacts")
    chosen = []
    for name in names:
        if name.lower().startswith("tensorrt"):
            if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
                cache.mkdir(parents=True, exist_ok=True)
            chosen.append((name, {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
                                  "trt_engine_cache_path": str(cache)}))
        else:
            chosen.append(name)
    return chosen


def load(args):
    if args.threads is not None and args.threads < 1:
        raise EdgeVitError("--threads must be at least 1")
    providers = providers_with_options(parse_providers(args.providers), not args.fp32, args.trt_cache)
    runtime = edgevit.load(args.model, threads=args.threads, providers=providers)
    if runtime.fallback:  # ONNX Runtime would say nothing: say it here, once
        print(f"demo: note: running on {runtime.providers[0]}: {runtime.fallback}", file=sys.stderr)
    return runtime


def main(argv: list[str] | None = None) -> int:
    parser = demo_parser(__doc__.split("\n\n")[0], ".onnx")
    parser.add_argument("--source", required=True, help="/dev/videoN (USB camera), a video file, a folder of "
                                                        "images or one image")
    parser.add_argument("--providers", default=",".join(GPU_PROVIDERS),
                        help="ONNX Runtime execution providers, best first (default: %(default)s)")
    parser.add_argument("--fp32", action="store_true", help="TensorRT in fp32 (default: an fp16 engine)")
    parser.add_argument("--trt-cache", type=Path, default=Path.home() / ".cache" / "edgevit" / "tensorrt",
                        help="where TensorRT keeps its built engines (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="CPU threads (the CPU provider only)")
    return demo_main(parser, load, argv)


if __name__ == "__main__":
    sys.exit(main())
