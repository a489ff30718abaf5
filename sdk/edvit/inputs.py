"""Inputs for a split plan: images or ``.npy`` arrays -> one float32 batch (N, C, H, W).

Images are resized (bilinear) to the plan's input size and normalized with the plan's
mean and std, exactly as the training data was (see :mod:`.data`). ``.npy`` files are
taken as already preprocessed: (C, H, W) or (N, C, H, W), float32, finite. Torch-free:
this runs on the devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..artifact.preprocess import read_npy
from ..errors import InputError
from .data import IMAGE_SUFFIXES, read_rgb
from .plan import SplitPlan


def _image(path: Path, plan: SplitPlan) -> np.ndarray:
    _, channels, height, width = plan.input["shape"]
    if channels != 3:
        raise InputError(f"the plan takes {channels}-channel inputs; give .npy arrays, not images")
    mean = np.asarray(plan.input["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(plan.input["std"], dtype=np.float32)[:, None, None]
    return ((read_rgb(path, height, width) - mean) / std)[None]


def _array(path: Path, plan: SplitPlan) -> tuple[np.ndarray, list[str]]:
    """The array as a batch, and its rows' names (``file[i]`` when the file holds a batch)."""
    expected = tuple(plan.input["shape"][1:])
    array = read_npy(path, [expected, (None, *expected)], "float32", f"the plan's input {path.name}")
    names = [str(path)] if array.shape == expected else [f"{path}[{i}]" for i in range(len(array))]
    if array.shape == expected:
        array = array[None]
    if not np.isfinite(array).all():
        raise InputError(f"{path}: contains NaN or infinite values")
    return array, names


def prepare_inputs(plan: SplitPlan, items: Sequence[str | Path]) -> tuple[np.ndarray, list[str]]:
    """One normalized batch (N, C, H, W) float32 from image files and ``.npy`` files, and a
    name per input (the file, with ``[i]`` for the rows of an .npy batch)."""
    if not items:
        raise InputError("no inputs given: pass image files or .npy arrays")
    batches, names = [], []
    for item in items:
        path = Path(item)
        if not path.is_file():
            raise InputError(f"input not found: {path}")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            array, rows = _array(path, plan)
        elif suffix in IMAGE_SUFFIXES:
            array, rows = _image(path, plan), [str(path)]
        else:
            raise InputError(f"{path}: inputs are images ({', '.join(IMAGE_SUFFIXES)}) or .npy arrays")
        batches.append(array)
        names += rows
    return np.concatenate(batches).astype(np.float32, copy=False), names
