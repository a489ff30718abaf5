"""Export edgenext_xx_small to every target, verify, classify a photo, benchmark.

    python examples/quickstart.py [--weights edgenext_xx_small.pth] [--image photo.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import edgevit
from edgevit.apps.predict import predict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--image", type=Path, default=None, help="default: a photo shipped with scikit-learn")
    parser.add_argument("--output", type=Path, default=Path("edgevit_out"))
    args = parser.parse_args()
    image = args.image
    if image is None:
        import sklearn.datasets

        image = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"

    results = edgevit.export("edgenext_xx_small", "all", args.output, weights=args.weights, image=image)
    for r in results:
        verdict = "verified" if r.parity.numerically_verified else "structural check only"
        print(f"{r.target:7s} {r.path}  {verdict}, max abs err {r.parity.max_abs_err}")
    runnable = [r.path for r in results if r.target != "coreml"]
    for path in runnable:
        top = predict(path, image, top_k=1)["top"][0]
        print(f"{path.name}: class {top['class']} p={top['probability']:.3f}")
    for row in edgevit.benchmark(runnable, runs=20, threads=2).rows:
        print(f"{Path(row.artifact).name}: median {row.median_ms:.2f} ms, p90 {row.p90_ms:.2f} ms")


if __name__ == "__main__":
    main()
