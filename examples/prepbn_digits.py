"""Train a small SLAB-style ViT with progressive RepBN on scikit-learn's digits, then deploy it.

The full SLAB recipe on data that ships with scikit-learn (8x8 digits, upsampled to 16x16):

1. train with PRepBN: LayerNorm at first, handing over linearly to RepBN (BatchNorm + alpha*x)
   over a step budget, then RepBN alone;
2. recalibrate BatchNorm statistics with every weight frozen (the paper's last phase);
3. fold: ``edgevit.reparameterize`` removes every norm (RepBN becomes part of the Linears);
4. export to ONNX (verified against the unfolded model) and measure the artifact's accuracy.

The test accuracy must be identical before and after folding, and on the ONNX artifact.

    python examples/prepbn_digits.py [--epochs 40] [--output digits_out] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import edgevit
from edgevit.models.deit import VisionTransformer
from edgevit.models.slab_layers import PRepBN
from edgevit.reparam import recalibrate_batchnorm

IMAGE = 16


def load_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as (N, 3, 16, 16) float tensors, standardized; a stratified 75/25 split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    images = F.interpolate(images, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).repeat(1, 3, 1, 1)  # (N, 3, 16, 16), grey in every channel
    labels = torch.from_numpy(digits.target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=0.25, random_state=seed,
                                           stratify=digits.target)
    return images[idx_train], labels[idx_train], images[idx_test], labels[idx_test]


def build_model(step_budget: int) -> VisionTransformer:
    """SLAB-DeiT in miniature: 4x4 patches (a 4x4 token grid), linear attention, PRepBN."""
    return VisionTransformer(img_size=IMAGE, patch_size=4, num_classes=10, embed_dim=48, depth=3, num_heads=2,
                             mlp_ratio=2.0, attention="linear", class_token=False, norm="prepbn",
                             prepbn_step=step_budget)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        logits = model.eval()(x)
    return int((logits.argmax(1) == y).sum()) / len(y), logits


def train(model: VisionTransformer, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int,
          seed: int, log) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = epochs * ((len(x) + batch - 1) // batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    prepbn = next(m for m in model.modules() if isinstance(m, PRepBN))
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss) * len(idx)
        log(f"epoch {epoch + 1:3d}/{epochs}  loss {total / len(x):.4f}  LayerNorm share (lambda) {prepbn.lam:.3f}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("digits_out"))
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args(argv)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print

    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits(args.seed)
    steps_per_epoch = (len(x_train) + args.batch - 1) // args.batch
    budget = max(1, int(0.6 * args.epochs * steps_per_epoch))  # LN -> RepBN over 60% of training
    model = build_model(budget)
    log(f"training on {len(x_train)} digits ({steps_per_epoch} steps/epoch), "
        f"PRepBN hands LayerNorm over to RepBN in {budget} steps")
    started = time.perf_counter()
    train(model, x_train, y_train, args.epochs, args.batch, args.seed, log)
    trained_acc, _ = accuracy(model, x_test, y_test)

    used = recalibrate_batchnorm(model, (x_train[i:i + 256] for i in range(0, len(x_train), 256)))
    recalibrated_acc, logits = accuracy(model, x_test, y_test)
    log(f"BatchNorm recalibrated on {used} batches")

    folded = edgevit.reparameterize(copy.deepcopy(model))
    folded_acc, folded_logits = accuracy(folded, x_test, y_test)
    report = folded.edgevit_reparam_report
    norms_left = [n for n, m in folded.named_modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm1d))]

    model.edgevit_name = "slab_digits"
    result = edgevit.export(model, "onnx", args.output, image_size=IMAGE)
    runtime = edgevit.load(result.path)
    onnx_pred = np.concatenate([runtime.run(x_test[i:i + 1].numpy()).argmax(1) for i in range(len(x_test))])
    onnx_acc = int((onnx_pred == y_test.numpy()).sum()) / len(y_test)

    results = {
        "train_samples": len(x_train),
        "test_samples": len(x_test),
        "epochs": args.epochs,
        "prepbn_step_budget": budget,
        "train_seconds": round(time.perf_counter() - started, 1),
        "accuracy_trained": trained_acc,
        "accuracy_recalibrated": recalibrated_acc,
        "accuracy_folded": folded_acc,
        "accuracy_onnx": onnx_acc,
        "predictions_identical": bool(torch.equal(logits.argmax(1), folded_logits.argmax(1))),
        "max_logit_change": float((logits - folded_logits).abs().max()),
        "folds": len(report.folded),
        "norms_left_after_folding": norms_left,
        "onnx": str(result.path),
        "onnx_parity_max_abs_err": result.parity.max_abs_err,
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        log(f"test accuracy: trained {trained_acc:.4f}, recalibrated {recalibrated_acc:.4f}, "
            f"folded {folded_acc:.4f}, ONNX {onnx_acc:.4f}")
        log(f"{len(report.folded)} folds, norms left: {norms_left or 'none'}; "
            f"max logit change {results['max_logit_change']:.2g}; wrote {result.path}")
    return results


if __name__ == "__main__":
    main()
