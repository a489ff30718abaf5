"""Labelled image data for ED-ViT: scikit-learn's digits, an image folder, or an ``.npz``.

Every source becomes a :class:`Dataset`: float32 images (N, 3, H, W) at the model's input
size, normalized with the training set's per-channel mean and std (kept, so that a plan
can preprocess new inputs the same way), integer labels and class names.

- ``"digits"``: the 8x8 digits shipped with scikit-learn (1797 images, 10 classes),
  upsampled bilinearly and repeated over 3 channels; a stratified 75/25 split.
- a directory: one sub-folder per class (images PIL can read), or ``train/`` and
  ``test/`` folders that each hold one sub-folder per class. Its images are not read
  into memory: ``x_train`` and ``x_test`` are :class:`~edgevit.edvit.images.ImageFiles`,
  which decode, resize and normalize the files a batch at a time when indexed. The mean
  and std come from the training images, all of them up to ``STATS_SAMPLE``, else a
  seeded sample of that many (every file's header is checked before that).
- an ``.npz``: ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test`` (else ``x``
  and ``y``), optionally ``classes``; images (N, H, W), (N, H, W, C) or (N, C, H, W),
  uint8 (0-255) or float (0-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from ..optional import require
from .images import ImageFiles, channel_stats, decoders, read_rgb_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
STATS_SAMPLE = 2048  # a folder's mean and std come from at most this many training images


@dataclass
class Dataset:
    """Normalized train/test images (N, 3, H, W) float32, labels int64, class names. The
    images are numpy arrays, or :class:`ImageFiles` (read on access) for a folder."""

    x_train: np.ndarray | ImageFiles
    y_train: np.ndarray
    x_test: np.ndarray | ImageFiles
    y_test: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    seed: int = 0  # of the train/test split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


def load_dataset(source: str | Path, image_size: int, *, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Read ``source`` ("digits", a directory or an .npz) at ``image_size`` x ``image_size``."""
    if image_size < 1:
        raise InputError(f"image size must be positive, got {image_size}")
    if not 0 < test_fraction < 1:
        raise InputError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    if str(source) == "digits":
        images, labels, classes = _digits()
        train_x, train_y, test_x, test_y = _stratified_split(images, labels, test_fraction, seed)
    else:
        path = Path(source)
        if path.is_dir():
            return _folder(path, image_size, test_fraction, seed)
        if path.suffix == ".npz" and path.is_file():
            train_x, train_y, test_x, test_y, classes = _npz(path, test_fraction, seed)
        else:
            raise InputError(f"data {source!s} is neither 'digits', a directory of class folders nor an .npz file")
    train_x, test_x = _resize(train_x, image_size), _resize(test_x, image_size)
    _check(train_x, train_y, classes, "training")
    _check(test_x, test_y, classes, "test")
    mean = train_x.mean(axis=(0, 2, 3))
    std = np.maximum(train_x.std(axis=(0, 2, 3)), 1e-6)

    def normalize(x: np.ndarray) -> np.ndarray:
        return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)

    return Dataset(normalize(train_x), train_y.astype(np.int64), normalize(test_x), test_y.astype(np.int64),
                   list(classes), tuple(float(v) for v in mean), tuple(float(v) for v in std), str(source), seed)


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    load_digits = require("sklearn.datasets", "for the built-in digits data").load_digits
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return np.repeat(images, 3, axis=1), digits.target.astype(np.int64), [str(c) for c in digits.target_names]


def _stratified_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """The same fraction of every class goes to the test set (seeded, deterministic)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        if len(members) < 2:
            raise InputError(f"class {label} has {len(members)} sample: each class needs at least 2 to split")
        test[members[: max(1, round(len(members) * test_fraction))]] = True
    return x[~test], y[~test], x[test], y[test]


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}, uint8 or float -> float32 (N, 3, H, W)."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InputError(f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or 3 "
                         f"channels, got shape {tuple(x.shape)}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    else:
        raise InputError(f"{where}: images must be uint8 or float, got {x.dtype}")
    return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x


def _npz(path: Path, test_fraction: float, seed: int):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as exc:  # noqa: BLE001 (np.load raises many kinds on a damaged archive)
        raise InputError(f"cannot read {path}: {first_line(exc)}") from None
    if "x_train" in arrays and "y_train" in arrays:
        train_x, train_y = _to_nchw(arrays["x_train"], f"{path}:x_train"), arrays["y_train"]
        if ("x_test" in arrays) != ("y_test" in arrays):
            raise InputError(f"{path} has only one of x_test and y_test")
        if "x_test" in arrays:
            test_x, test_y = _to_nchw(arrays["x_test"], f"{path}:x_test"), arrays["y_test"]
        else:
            train_x, train_y, test_x, test_y = _stratified_split(train_x, _labels(train_y, path), test_fraction, seed)
    elif "x" in arrays and "y" in arrays:
        train_x, train_y, test_x, test_y = _stratified_split(_to_nchw(arrays["x"], f"{path}:x"),
                                                             _labels(arrays["y"], path), test_fraction, seed)
    else:
        raise InputError(f"{path} needs arrays x_train and y_train (optionally x_test, y_test) or x and y; "
                         f"it has {', '.join(sorted(arrays)) or 'none'}")
    train_y, test_y = _labels(train_y, path), _labels(test_y, path)
    count = int(max(train_y.max(), test_y.max())) + 1
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(count)]
    return train_x, train_y, test_x, test_y, classes


def _labels(y: np.ndarray, path: Path) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{path}: labels must be a 1-D integer array, got {y.dtype} {tuple(y.shape)}")
    return y.astype(np.int64)


def _folder(path: Path, image_size: int, test_fraction: float, seed: int) -> Dataset:
    """A folder's images as :class:`ImageFiles`, normalized with the training images' stats."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = _class_dirs(path / "train")
        train_files, train_y = _list_images(path / "train", classes)
        test_files, test_y = _list_images(path / "test", classes)
    else:
        classes = _class_dirs(path)
        files, labels = _list_images(path, classes)
        train_files, train_y, test_files, test_y = _stratified_split(files, labels, test_fraction, seed)
    _check_headers(np.concatenate([train_files, test_files]))
    _check(train_files, train_y, classes, "training")
    _check(test_files, test_y, classes, "test")
    train_x = ImageFiles(train_files, image_size)
    sample = train_x
    if len(train_x) > STATS_SAMPLE:
        chosen = np.zeros(len(train_x), dtype=bool)
        chosen[np.random.default_rng(seed).choice(len(train_x), STATS_SAMPLE, replace=False)] = True
        sample = train_x[chosen]
    mean, std = channel_stats(sample)
    mean, std = mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)
    return Dataset(train_x.normalized(mean, std), train_y, ImageFiles(test_files, image_size, mean, std), test_y,
                   list(classes), tuple(float(v) for v in mean), tuple(float(v) for v in std), str(path), seed)


def _class_dirs(path: Path) -> list[str]:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"{path} needs one sub-folder per class (at least 2), found {len(classes)}")
    return classes


def read_rgb(file: Path, height: int, width: int) -> np.ndarray:
    """An image file as float32 RGB (3, height, width) in [0, 1], resized bilinearly."""
    return read_rgb_uint8(file, height, width).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)


def _list_images(path: Path, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every image file of every class folder (sorted), and its label."""
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = path / name
        found = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not found:
            raise InputError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += [str(f) for f in found]
        labels += [label] * len(found)
    return np.asarray(files, dtype=object), np.asarray(labels, dtype=np.int64)


def _check_headers(files: np.ndarray) -> None:
    """Every file opens as an image (its header only: quick), or an error naming the first that does not."""
    image_module = require("PIL.Image", "to read image files")

    def opens(file: str) -> str | None:
        try:
            with image_module.open(file):
                return None
        except (OSError, image_module.UnidentifiedImageError, ValueError) as exc:
            return f"cannot read image {file}: {exc}"

    for problem in decoders().map(opens, files):
        if problem:
            raise InputError(problem)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, 3, h, w) to (N, 3, size, size)."""
    if x.shape[-2:] == (size, size):
        return x
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        return F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=(size, size), mode="bilinear",
                             align_corners=False).numpy()


def _check(x: np.ndarray, y: np.ndarray, classes: Sequence[str], part: str) -> None:
    if len(x) != len(y):
        raise InputError(f"the {part} set has {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise InputError(f"the {part} set is empty")
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InputError(f"the {part} images contain NaN or infinite values")
    if y.min() < 0 or y.max() >= len(classes):
        raise InputError(f"the {part} labels must lie in 0..{len(classes) - 1}, got {y.min()}..{y.max()}")
