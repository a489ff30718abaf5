"""fp16 on real data: a trained SLAB-style PRepBN ViT in Core ML and TFLite fp16, as trained
and in its target form (SLAB's fp16-safe linear attention, docs/target_forms.md).

Trains ``slab_deit_tiny`` at 32x32 (patch 4: 64 tokens, head dim 64, the model of
docs/int8.md "Accuracy on trained models") on scikit-learn's digits training split, exports
it at ``--precision fp16`` with and without its target form, and runs every artifact on the
held-out test images (normalized, as the model saw them): max abs logit error against
PyTorch (float32), top-1 agreement, how many outputs were not finite, and the largest
magnitude the attention's sums reach in float32 (fp16's limit is 65504).

    python benchmarks/fp16_slab.py            # 2 epochs, the full 12-block model
    python benchmarks/fp16_slab.py --depth 4 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edgevit

FP16_MAX = 65504.0
TARGETS = ("coreml", "tflite")


def train_slab(epochs: int, depth: int = 12, size: int = 32, seed: int = 0, **config):
    """(model, data): a PRepBN SLAB-DeiT (``slab_deit_tiny`` with ``config`` overrides) trained
    ``epochs`` on the digits training split at ``size`` (patch 4)."""
    import torch

    from edgevit.edvit.data import load_dataset
    from edgevit.edvit.train import fit

    torch.manual_seed(seed)
    data = load_dataset("digits", size)
    steps = max(1, epochs * -(-len(data.x_train) // 64))
    model = edgevit.create_model("slab_deit_tiny", num_classes=10, img_size=size, patch_size=4, depth=depth,
                                 prepbn_step=steps, **config)
    fit(model, data.x_train, data.y_train, epochs=epochs, lr=1e-3, batch_size=64)
    return model, data


def attention_peaks(model, x: np.ndarray) -> dict[str, float]:
    """The largest |k|, |v| and as-trained sums (K^T V, the denominator) over every attention
    of ``model`` (as trained) on ``x``, float32."""
    import torch

    from edgevit.models.slab_layers import SimplifiedLinearAttention

    peaks = {"k": 0.0, "v": 0.0, "kv": 0.0, "denominator": 0.0}

    def hook(module, args, _output):
        qkv = module.qkv(args[0])  # (B, N, 3C)
        B, N, _ = qkv.shape
        h, d = module.num_heads, module.head_dim
        q, k, v = qkv.reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4)  # (B, heads, N, d) each
        k = torch.relu(k + module.positional_encoding.reshape(1, N, h, d).transpose(1, 2))
        q = torch.relu(q)
        kv = torch.matmul(k.transpose(-2, -1), v)
        den = torch.matmul(q, k.sum(dim=2, keepdim=True).transpose(-2, -1))
        for key, value in (("k", k), ("v", v), ("kv", kv), ("denominator", den)):
            peaks[key] = max(peaks[key], float(value.abs().max()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SimplifiedLinearAttention)]
    try:
        with torch.inference_mode():
            model(torch.from_numpy(x))
    finally:
        for handle in handles:
            handle.remove()
    return peaks


def fidelity(model, data, target: str, out: Path, target_form: bool, count: int = 64) -> dict:
    """Export ``model`` at fp16 to ``target`` and compare it with PyTorch on ``count`` test images."""
    import torch

    from edgevit.artifact.input_form import InputForm

    result = edgevit.export(model, target, out, image_size=data.x_test.shape[-1], precision="fp16",
                            mean=data.mean, std=data.std, num_inputs=1, target_form=target_form)
    runtime = edgevit.load(result.path)
    form = InputForm.of(runtime.metadata, image_input=runtime.inputs[0].image)
    x = data.x_test[:count]
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        got = np.concatenate([runtime.run(form.from_normalized(xi[None])) for xi in x])
    finite = np.isfinite(got).all(axis=1)
    error = float(np.abs(got - reference).max()) if finite.all() else float("inf")
    return {"form": result.form["form"] if result.form else "as trained", "images": len(x),
            "non_finite_outputs": int((~finite).sum()), "max_abs_error": error,
            "top1_agreement": float(np.mean(got.argmax(1) == reference.argmax(1))),
            "top1_accuracy": float(np.mean(got.argmax(1) == data.y_test[:count]))}


def torch_half(model, data, target_form: bool, count: int = 64) -> dict:
    """The model (as trained, or folded and in its channels_first form) run in torch float16
    on the CPU against float32: a converter-free view of what an fp16 program computes."""
    import copy

    import torch

    from edgevit.reparam.forms import to_form

    x = data.x_test[:count]
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
        half = copy.deepcopy(model)
        if target_form:
            half = edgevit.reparameterize(half)
            to_form(half, "channels_first")
        got = half.half()(torch.from_numpy(x).half()).float().numpy()
    finite = np.isfinite(got).all(axis=1)
    return {"images": len(x), "non_finite_outputs": int((~finite).sum()),
            "max_abs_error": float(np.abs(got - reference).max()) if finite.all() else float("inf"),
            "top1_agreement": float(np.mean(got.argmax(1) == reference.argmax(1)))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--images", type=int, default=200, help="held-out test images to compare on")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--cache", type=Path, help="keep the trained model here (trained once, then loaded)")
    args = parser.parse_args()
    start = time.time()
    if args.cache and args.cache.is_file():
        import torch

        from edgevit.edvit.data import load_dataset

        model, data = torch.load(args.cache, weights_only=False), load_dataset("digits", 32)
    else:
        model, data = train_slab(args.epochs, args.depth)
        if args.cache:
            import torch

            torch.save(model, args.cache)
    results: dict = {"training_s": round(time.time() - start, 1),
                     "peaks_float32": attention_peaks(model, data.x_test[:args.images])}
    print(f"trained {args.epochs} epoch(s), depth {args.depth}, in {results['training_s']} s; "
          f"as-trained attention peaks on test images: " +
          ", ".join(f"{k} {v:.1f}" for k, v in results["peaks_float32"].items()) + f" (fp16 max {FP16_MAX:.0f})")
    for target_form in (False, True):
        key = f"torch fp16/{'form' if target_form else 'as trained'}"
        results[key] = r = torch_half(model, data, target_form, args.images)
        print(f"{key:22s}: max |logit error| {r['max_abs_error']:.4g}, non-finite outputs "
              f"{r['non_finite_outputs']}/{r['images']}, top-1 agreement {r['top1_agreement']:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        for target in TARGETS:
            for target_form in (False, True):
                key = f"{target}/{'form' if target_form else 'as trained'}"
                try:
                    results[key] = r = fidelity(model, data, target, Path(tmp) / key, target_form, args.images)
                except edgevit.EdgeVitError as exc:  # the export's own verification refused it
                    results[key] = {"refused": str(exc)}
                    print(f"{key:22s} fp16: refused: {exc}")
                    continue
                print(f"{key:22s} fp16: max |logit error| {r['max_abs_error']:.4g}, non-finite outputs "
                      f"{r['non_finite_outputs']}/{r['images']}, top-1 agreement {r['top1_agreement']:.3f}, "
                      f"accuracy {r['top1_accuracy']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
