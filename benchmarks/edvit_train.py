"""How good is ``edgevit train``? A linear model on pixels against DeiT-Tiny trained from
scratch with the old and the new recipe, on digits and on generated textures.

Data (held-out test images only, never seen in training):

- ``digits``: scikit-learn's 8x8 digits at 32x32 (1347 train / 450 test images), the
  split ``edgevit train --data digits`` uses;
- ``textures``: :mod:`edgevit.edvit.synthetic`'s ten texture classes at 32x32 RGB
  (``--train-per-class`` / ``--test-per-class`` images, independent draws), written once
  to ``OUT/textures.npz`` and read back as ``--data`` would read it.

Per data set: logistic regression on the normalized pixels (scikit-learn; C chosen on a
fifth of the training images held out, then refit on all of them) and, per recipe arm
and seed, ``train_vit("deit_tiny", patch 8)`` with that arm's recipe, its test accuracy
and wall time. Arms: ``old`` (the recipe before issue 29: no augmentation, no EMA, one
epoch of warm-up), ``shift`` (+ random translation by 1/8 of the side), ``shift+ema``
(+ EMA 0.998), ``new`` (+ 5 warm-up epochs: the default recipe, with flips on textures,
whose classes a mirror image does not change), ``new+mix`` (+ mixup 0.2 / cutmix 1.0),
``new-flip`` (textures without flips), ``new+lr`` (peak lr 1e-3 instead of 5e-4).

    python benchmarks/edvit_train.py [--data digits,textures] [--arms old,new] [--seeds 0,1]
        [--epochs-digits 40] [--epochs-textures 30] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from edgevit.edvit.data import load_dataset
from edgevit.edvit.recipe import AUGMENTED, PLAIN, RECIPE
from edgevit.edvit.synthetic import save_npz
from edgevit.edvit.train import accuracy, predict, train_vit

SIZE, PATCH = 32, 8
COMPONENTS = {  # what each part of an arm's name changes in the recipe (and "lr" in the peak learning rate)
    "shift": {"shift": 0.125}, "shift/2": {"shift": 0.0625}, "flip": {"flip": True}, "ema": {"ema": 0.998},
    "warmup": {"warmup_epochs": 5.0}, "mix": {"mixup": 0.2, "cutmix": 1.0}, "lr": {},
}
OFF = {"shift": {"shift": 0.0}, "shift/2": {"shift": 0.0}, "flip": {"flip": False}, "ema": {"ema": None},
       "warmup": {"warmup_epochs": None}, "mix": {"mixup": 0.0, "cutmix": 0.0}, "lr": {}}


def recipe_of(arm: str, flips_allowed: bool):
    """``old`` (PLAIN), ``new`` (RECIPE; with translation and flips where flips are allowed:
    AUGMENTED, what ``--shift 0.125 --flip`` asks for), ``old+a+b`` (PLAIN with
    parts a and b) or ``new-a`` (RECIPE without part a); parts: the keys of COMPONENTS."""
    base, *changes = arm.replace("-", "+-").split("+")
    recipe = PLAIN if base == "old" else RECIPE if not flips_allowed else AUGMENTED
    for change in changes:
        name = change.lstrip("-")
        recipe = replace(recipe, **(OFF if change.startswith("-") else COMPONENTS)[name])
    return recipe


def say(message: str) -> None:
    print(f"- {message}", file=sys.stderr, flush=True)


def data_set(name: str, args) -> object:
    if name == "digits":
        return load_dataset("digits", SIZE)
    path = args.out / f"textures_{args.train_per_class}_{args.test_per_class}.npz"
    if not path.is_file():
        say(f"generating {path}")
        save_npz(path, args.train_per_class, args.test_per_class, SIZE, seed=0)
    return load_dataset(path, SIZE)


def linear_baseline(data) -> dict:
    """Logistic regression on the normalized pixels; C picked on a held-out fifth of train."""
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    x = np.asarray(data.x_train).reshape(len(data.y_train), -1)
    test = np.asarray(data.x_test).reshape(len(data.y_test), -1)
    held = np.random.default_rng(0).permutation(len(x)) < len(x) // 5
    scores = {}
    for c in (0.001, 0.01, 0.1):
        model = LogisticRegression(C=c, max_iter=300).fit(x[~held], data.y_train[~held])
        scores[c] = model.score(x[held], data.y_train[held])
    best = max(scores, key=scores.get)
    model = LogisticRegression(C=best, max_iter=300).fit(x, data.y_train)
    return {"accuracy": float(model.score(test, data.y_test)), "C": best, "seconds": time.perf_counter() - started}


def run_arm(data, name: str, arm: str, seed: int, epochs: int, args) -> dict:
    recipe = recipe_of(arm, flips_allowed=name != "digits")
    lr = 1e-3 if "+lr" in arm else args.lr
    history: list = []
    started = time.perf_counter()
    vit = train_vit("deit_tiny", data, patch_size=PATCH, epochs=epochs, lr=lr, seed=seed, recipe=recipe,
                    eval_every=args.eval_every, history=history, progress=say if args.verbose else None)
    seconds = time.perf_counter() - started
    score = accuracy(predict(vit, data.x_test), data.y_test)
    say(f"{name} {arm} seed {seed}: test accuracy {score:.4f} ({seconds:.0f} s)")
    return {"data": name, "arm": arm, "seed": seed, "epochs": epochs, "lr": lr, "accuracy": score,
            "seconds": seconds, "history": history, "recipe": repr(recipe)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits,textures")
    parser.add_argument("--arms", default="old,new", help="comma separated: old, new, old+PART..., new-PART... "
                                                          f"(parts: {', '.join(COMPONENTS)})")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs-digits", type=int, default=40)
    parser.add_argument("--epochs-textures", type=int, default=30)
    parser.add_argument("--train-per-class", type=int, default=400)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-every", type=int, default=0, help="also record test accuracy every N epochs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-linear", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("edvit_bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"linear": {}, "runs": []}
    for name in args.data.split(","):
        data = data_set(name, args)
        say(f"{name}: {len(data.y_train)} train / {len(data.y_test)} test images, {data.num_classes} classes")
        if not args.no_linear:
            results["linear"][name] = linear_baseline(data)
            say(f"{name} linear: {results['linear'][name]['accuracy']:.4f}")
        epochs = args.epochs_digits if name == "digits" else args.epochs_textures
        for arm in args.arms.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                results["runs"].append(run_arm(data, name, arm, seed, epochs, args))
                if args.json:
                    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print("| data | model | recipe | epochs | seeds | test accuracy (mean; per seed) | train time per run (s) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.data.split(","):
        if name in results["linear"]:
            lin = results["linear"][name]
            print(f"| {name} | logistic regression on pixels (C {lin['C']}) | - | - | - | {lin['accuracy']:.4f} | "
                  f"{lin['seconds']:.0f} |")
        for arm in args.arms.split(","):
            runs = [r for r in results["runs"] if r["data"] == name and r["arm"] == arm]
            if runs:
                scores = [r["accuracy"] for r in runs]
                print(f"| {name} | deit_tiny p{PATCH} | {arm} | {runs[0]['epochs']} | {len(runs)} | "
                      f"{np.mean(scores):.4f}; {', '.join(f'{s:.4f}' for s in scores)} | "
                      f"{np.mean([r['seconds'] for r in runs]):.0f} |")


if __name__ == "__main__":
    main()
