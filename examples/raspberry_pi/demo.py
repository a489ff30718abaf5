"""Raspberry Pi demo: classify camera frames, a video or a folder of images with a .tflite
artifact made by ``edgevit export`` (fp32, fp16 or int8), through ai-edge-litert or
tflite-runtime (whichever is installed; ``edgevit.load`` picks). Torch-free.

    python demo.py edgenext_xx_small.tflite --source camera --threads 4
    python demo.py edgenext_xx_small.tflite --source clip.mp4 --top-k 5
    python demo.py edgenext_xx_small.tflite --source photos/ --save scores.npz --json
"""

from __future__ import annotations

import sys

import edgevit
from edgevit.errors import EdgeVitError
from edgevit.apps.frames import demo_main, demo_parser


def load(args):
    if args.threads < 1:
        raise EdgeVitError("--threads must be at least 1")
    return edgevit.load(args.model, threads=args.threads)


def main(argv: list[str] | None = None) -> int:
    parser = demo_parser(__doc__.split("\n\n")[0], ".tflite")
    parser.add_argument("--source", default="camera", help="camera (picamera2), /dev/videoN (USB camera), a video "
                                                           "file, a folder of images or one image (default: camera)")
    parser.add_argument("--threads", type=int, default=4, help="interpreter threads (a Pi 4/5 has 4 cores)")
    return demo_main(parser, load, argv)


if __name__ == "__main__":
    sys.exit(main())
