"""A generated image set that a linear model on pixels cannot learn: ten texture classes.

Each image is a cluttered background (a two-colour gradient, a few blobs of random colour
and pixel noise) with one object on it: a region of random shape (ellipse or rounded
square), size, place and rotation, filled with its class's texture drawn in two random
colours of random polarity, at a random orientation, period and phase. The class is the
texture's *structure* (stripes, checkerboard, dot lattice, rings, ...): colour, mean
intensity, position and the phase of the pattern carry no information, so every class
has the same mean image and a linear model on pixels stays near chance, while a model
that looks at local structure (a ViT's patches) can tell them apart.

:func:`textures` returns uint8 images (N, H, W, 3) and labels; :func:`save_npz` writes an
``.npz`` that ``--data`` reads; :func:`write_image_folder` writes one JPEG or PNG per image
into class folders (what a folder dataset looks like). Seeded: the same arguments give the
same images. numpy only (PIL to write a folder).

    python -m edgevit.edvit.synthetic textures.npz [--train 500] [--test 200] [--size 32]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..optional import require

CLASSES = ("stripes", "checkerboard", "dots", "rings", "spokes", "grid", "zigzag", "spots", "bricks", "squares")


def _pattern(kind: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class ``kind`` as a 0/1 mask over texture coordinates (u, v) in periods, (n, S, S),
    centred on the object (random phases drawn here)."""
    n = len(u)

    def phase() -> np.ndarray:
        return rng.uniform(0, 1, (n, 1, 1))

    if kind == "stripes":
        return np.sin(2 * np.pi * (u + phase())) > 0
    if kind == "checkerboard":
        return np.sin(2 * np.pi * (u + phase())) * np.sin(2 * np.pi * (v + phase())) > 0
    if kind == "dots":
        return np.hypot((u + phase()) % 1 - 0.5, (v + phase()) % 1 - 0.5) < 0.3
    if kind == "rings":
        return np.sin(2 * np.pi * (np.hypot(u, v) + phase())) > 0
    if kind == "spokes":
        sectors = rng.integers(5, 9, (n, 1, 1))
        return np.sin(sectors * np.arctan2(v, u) + 2 * np.pi * phase()) > 0
    if kind == "grid":
        return np.minimum(np.abs((u + phase()) % 1 - 0.5), np.abs((v + phase()) % 1 - 0.5)) < 0.14
    if kind == "zigzag":
        tooth = np.abs((v + phase()) % 1 - 0.5)  # a triangle wave across the stripes
        return np.sin(2 * np.pi * (u + 1.2 * tooth + phase())) > 0
    if kind == "spots":  # dots at random places, not on a lattice
        mask = np.zeros(u.shape, dtype=bool)
        for _ in range(14):
            cu, cv = rng.uniform(-2.2, 2.2, (2, n, 1, 1))
            mask |= np.hypot(u - cu, v - cv) < rng.uniform(0.2, 0.35, (n, 1, 1))
        return mask
    if kind == "bricks":
        row = np.floor(v + phase())
        mortar_h = np.abs((v + phase()) % 1 - 0.5) > 0.38
        mortar_v = np.abs((u / 1.6 + 0.5 * row + phase()) % 1 - 0.5) > 0.42
        return ~(mortar_h | mortar_v)
    if kind == "squares":  # concentric squares: rings in the max norm
        return np.sin(2 * np.pi * (np.maximum(np.abs(u), np.abs(v)) + phase())) > 0
    raise ValueError(kind)


def _render(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images for ``labels``, float (n, size, size, 3) in [0, 1]."""
    n = len(labels)
    scale = 2 if size <= 64 else 1  # drawn at twice the size and averaged down: smooth edges
    side = size * scale
    grid = (np.arange(side) + 0.5) / side
    y, x = np.meshgrid(grid, grid, indexing="ij")
    x, y = x[None], y[None]  # (1, S, S), image units 0..1

    def draw(shape=(n, 1, 1, 3)):
        return rng.uniform(0, 1, shape)

    # background: a gradient between two random colours, then blobs of random colour
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    ramp = np.clip((np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) + 0.5, 0, 1)[..., None]
    image = draw() * ramp + draw() * (1 - ramp)
    for _ in range(5):
        cx, cy = rng.uniform(0, 1, (2, n, 1, 1))
        rx, ry = rng.uniform(0.04, 0.14, (2, n, 1, 1))
        blob = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1)[..., None]
        image = np.where(blob & (rng.uniform(0, 1, (n, 1, 1, 1)) < 0.8), draw(), image)
    # the object: a region of random shape, place, size and rotation
    cx, cy = rng.uniform(0.35, 0.65, (2, n, 1, 1))
    turn = rng.uniform(0, np.pi, (n, 1, 1))
    dx, dy = x - cx, y - cy
    ru, rv = np.cos(turn) * dx + np.sin(turn) * dy, -np.sin(turn) * dx + np.cos(turn) * dy
    a, b = rng.uniform(0.26, 0.42, (2, n, 1, 1))
    power = np.where(rng.uniform(0, 1, (n, 1, 1)) < 0.5, 2.0, 5.0)  # ellipse or rounded square
    region = (np.abs(ru / a) ** power + np.abs(rv / b) ** power < 1)[..., None]
    # its texture: random orientation, period (in image units) and phase, in two colours
    spin = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    period = rng.uniform(0.13, 0.2, (n, 1, 1))
    ox, oy = rng.uniform(-0.04, 0.04, (2, n, 1, 1))  # the pattern's centre, near the region's
    tx, ty = dx - ox, dy - oy
    u = (np.cos(spin) * tx + np.sin(spin) * ty) / period
    v = (-np.sin(spin) * tx + np.cos(spin) * ty) / period
    mask = np.zeros(u.shape, dtype=bool)
    for index, kind in enumerate(CLASSES):
        chosen = labels == index
        if chosen.any():
            mask[chosen] = _pattern(kind, u[chosen], v[chosen], rng)
    base = rng.uniform(0.25, 0.75, (n, 1, 1, 3))
    contrast = rng.choice([-1.0, 1.0], (n, 1, 1, 1)) * rng.uniform(0.25, 0.45, (n, 1, 1, 1))
    tint = rng.uniform(-0.15, 0.15, (n, 1, 1, 3))
    ink, paper = base + contrast + tint, base - contrast - tint
    image = np.where(region, np.where(mask[..., None], ink, paper), image)
    if scale > 1:
        image = image.reshape(n, size, scale, size, scale, 3).mean(axis=(2, 4))
    image = image + rng.normal(0, rng.uniform(0.02, 0.06, (n, 1, 1, 1)), image.shape)
    return np.clip(image, 0, 1)


def textures(per_class: int, size: int = 32, *, seed: int = 0, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each of the ten classes: uint8 (N, size, size, 3), labels
    int64 (N,), in a seeded random order."""
    if per_class < 1 or size < 8:
        raise InputError(f"need at least one image per class and a size of at least 8, got {per_class}, {size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(CLASSES)), per_class))
    chunk = max(1, min(chunk, (1 << 22) // (size * size)))  # bounded memory at any size
    images = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    for start in range(0, len(labels), chunk):
        part = _render(labels[start:start + chunk], size, rng)
        images[start:start + chunk] = np.round(part * 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def save_npz(path: str | Path, train_per_class: int, test_per_class: int, size: int = 32, *,
             seed: int = 0) -> Path:
    """Write a train and a test set (independent draws) as an ``.npz`` that ``--data`` reads."""
    x_train, y_train = textures(train_per_class, size, seed=seed)
    x_test, y_test = textures(test_per_class, size, seed=seed + 1_000_003)
    path = Path(path)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        classes=np.array(CLASSES))
    return path


def write_image_folder(path: str | Path, per_class: int, size: int = 224, *, seed: int = 0,
                       suffix: str = ".jpg", chunk: int = 64, draw_size: int = 64) -> Path:
    """Write ``per_class`` images of each class as files in ``path/<class>/`` (JPEG quality 90
    or PNG), a chunk at a time (bounded memory). Images larger than ``draw_size`` are drawn
    at that size and scaled up bilinearly (drawing costs the square of the size)."""
    image_module = require("PIL.Image", "to write image files")
    path = Path(path)
    for name in CLASSES:
        (path / name).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(CLASSES)), per_class))
    for start in range(0, len(labels), chunk):
        part = np.round(_render(labels[start:start + chunk], min(size, draw_size), rng) * 255).astype(np.uint8)
        for offset, (pixels, label) in enumerate(zip(part, labels[start:start + chunk])):
            image = image_module.fromarray(pixels)
            if image.size != (size, size):
                image = image.resize((size, size), image_module.BILINEAR)
            file = path / CLASSES[label] / f"{start + offset:06d}{suffix}"
            image.save(file, **({"quality": 90} if suffix in (".jpg", ".jpeg") else {}))
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="an .npz file, or a folder with --folder")
    parser.add_argument("--train", type=int, default=500, help="training images per class (npz)")
    parser.add_argument("--test", type=int, default=200, help="test images per class (npz)")
    parser.add_argument("--per-class", type=int, default=1000, help="images per class (--folder)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", action="store_true", help="write JPEG class folders instead of an .npz")
    args = parser.parse_args()
    if args.folder:
        print(write_image_folder(args.output, args.per_class, args.size, seed=args.seed))
    else:
        print(save_npz(args.output, args.train, args.test, args.size, seed=args.seed))
