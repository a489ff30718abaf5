"""Sample sets for int8 calibration and the accuracy guard.

A sample set is images in the model's training form (normalized NCHW float32) with
optional class labels, read from: ``"digits"`` (scikit-learn's handwritten digits, upsampled
to the model's size), an image folder (labels from class-named subfolders), an ``.npz`` file
or a mapping with ``images`` (and optionally ``labels``), or an array / list in Python.
Pixel images (uint8) are framed exactly as ``edgevit predict`` frames an image file;
float arrays must already be normalized model inputs. Every source is read up to a bound:
nothing is allocated because a header claims it.

A source may say which of its images were used to train the model, so that the guard never
scores them (docs/int8.md): an image folder named ``train``/``training`` (all of it) or
``val``/``valid``/``validation``/``test``/``holdout`` (none of it), or holding one folder of
each kind (``data/train/<class>/...`` and ``data/test/<class>/...``); an ``.npz`` or mapping
with ``split`` (one of those names, for all of it) or ``train`` (one boolean per image).
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..artifact.input_form import InputForm
from ..artifact.preprocess import frame_pixels, load_image, read_npy_header
from ..errors import InputError
from ..optional import require

DEFAULT_CALIBRATION_SAMPLES = 64  # onnxruntime, ai-edge-quantizer and coremltools ranges settle well before this
DEFAULT_EVAL_SAMPLES = 256
TRAINING_NAMES = ("train", "training")
HELD_OUT_NAMES = ("val", "valid", "validation", "test", "testing", "holdout", "heldout", "held_out")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_MAX_ARRAY_BYTES = 1 << 30  # an .npz member larger than this is refused before reading
_MAX_PIXEL_SIDE = 8192


@dataclass
class SampleSet:
    """Model inputs (normalized NCHW float32), their labels (or None), where they came from
    and, where the source says, which were used for training."""

    name: str
    inputs: np.ndarray
    labels: np.ndarray | None = None
    training: np.ndarray | None = None  # one bool per sample (True: trained on); None: the source does not say

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def subset(self, start: int, stop: int | None = None) -> "SampleSet":
        return self.take(np.arange(len(self))[start:stop])

    def take(self, index: np.ndarray) -> "SampleSet":
        """The samples at ``index`` (an index array)."""
        index = np.asarray(index, dtype=np.int64)
        pick = (lambda a: None if a is None else a[index])
        return SampleSet(self.name, self.inputs[index], pick(self.labels), pick(self.training))

    @property
    def use(self) -> str:
        """What the source says of these samples: training, held out, mixed or not said."""
        if self.training is None:
            return "not said"
        return "training" if self.training.all() else "held out" if not self.training.any() else "mixed"

    @property
    def digest(self) -> str:
        """sha256 of the inputs (and labels) as the model sees them."""
        sha = hashlib.sha256(np.ascontiguousarray(self.inputs, dtype=np.float32).tobytes())
        if self.labels is not None:
            sha.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return sha.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "count": len(self), "sha256": self.digest,
                "labelled": self.labels is not None, "source_says": self.use}


Progress = Callable[[str], None]


def load_samples(data: Any, shape: tuple[int, ...], mean: Sequence[float], std: Sequence[float],
                 crop_pct: float = 0.875, *, limit: int, class_names: Sequence[str] | None = None,
                 progress: Progress | None = None, what: str = "calibration data") -> SampleSet:
    """Up to ``limit`` samples from ``data`` as model inputs of ``shape`` (batch 1, NCHW);
    ``what`` names the data in errors (``--verify-data``, ...)."""
    if len(shape) != 4:
        raise InputError(f"{what} needs an image model (an input of shape 1 x C x H x W)")
    framer = _Framer(shape, InputForm(mean=tuple(mean), std=tuple(std)), crop_pct, progress, what)
    if isinstance(data, (str, Path)):
        text = str(data)
        if text == "digits":
            return _digits(framer, limit)
        path = Path(text)
        if path.is_dir():
            return _folder(path, framer, limit, class_names)
        if path.suffix.lower() == ".npz":
            return _mapping(path.name, _read_npz(path), framer, limit)
        if not path.exists():
            raise InputError(f"{what} not found: {path} (give an image folder, an .npz file or 'digits')")
        raise InputError(f"{what} {path} is neither an image folder nor an .npz file")
    if isinstance(data, Mapping):
        return _mapping("mapping", data, framer, limit)
    if isinstance(data, np.ndarray):
        return _mapping("array", {"images": data}, framer, limit)
    if isinstance(data, (list, tuple)) and data:
        if all(isinstance(item, (str, Path)) for item in data):
            files = [Path(item) for item in data][:limit]
            return SampleSet("list of images", framer.files(files), None)
        return _mapping("list", {"images": np.stack([np.asarray(item) for item in data[:limit]])}, framer, limit)
    raise InputError(f"{what} must be 'digits', an image folder, an .npz file, an array or a list "
                     f"of images, not {type(data).__name__}")


class _Framer:
    """Turns pixels or files into normalized inputs of one shape, as ``predict`` does."""

    def __init__(self, shape: tuple[int, ...], form: InputForm, crop_pct: float, progress: Progress | None,
                 what: str):
        self.shape, self.form, self.crop_pct, self.what = shape, form, crop_pct, what
        self.say = progress or (lambda message: None)

    def _each(self, items: Sequence[Any], frame: Callable[[Any], np.ndarray], what: str) -> np.ndarray:
        out = np.empty((len(items), *self.shape[1:]), dtype=np.float32)
        step = max(1, len(items) // 4)
        for i, item in enumerate(items):
            if i % step == 0:
                self.say(f"reading {what}: {i}/{len(items)}")
            out[i] = frame(item)[0]
        return out

    def files(self, files: Sequence[Path]) -> np.ndarray:
        return self._each(files, lambda f: load_image(f, self.shape[2:], self.form.mean, self.form.std,
                                                      self.crop_pct), "images")

    def pixels(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, h, w) or (N, h, w, 3) pixels -> normalized inputs."""
        require("PIL", "to read images")
        from PIL import Image
        return self._each(images, lambda im: self.form.from_pixels(
            frame_pixels(Image.fromarray(im), self.shape[2:], self.crop_pct)), "pixel images")


def _digits(framer: _Framer, limit: int) -> SampleSet:
    """scikit-learn's 8x8 digits (1797, values 0-16) as gray RGB pixels, framed like photos."""
    datasets = require("sklearn.datasets", "for the digits calibration set")
    digits = datasets.load_digits()
    count = min(limit, len(digits.images))
    pixels = np.rint(digits.images[:count] * (255 / 16)).astype(np.uint8)
    return SampleSet("digits", framer.pixels(pixels), digits.target[:count].astype(np.int64))


def _folder(path: Path, framer: _Framer, limit: int, class_names: Sequence[str] | None) -> SampleSet:
    """Images under ``path`` (sorted); labels when each sits in a folder named after a class."""
    parts = _split_folders(path)
    if parts is None:
        return _images_in(path, framer, limit, class_names, _declared_use(path.name, f"folder {path}"))
    sets = [_images_in(part, framer, limit, class_names, trained) for part, trained in parts]
    labels = None if any(s.labels is None for s in sets) else np.concatenate([s.labels for s in sets])
    return SampleSet(path.name or str(path), np.concatenate([s.inputs for s in sets]), labels,
                     np.concatenate([s.training for s in sets]))


def _split_folders(path: Path) -> list[tuple[Path, bool]] | None:
    """(training folder, True) and (held-out folder, False) when ``path`` holds one of each."""
    children = {child.name.lower(): child for child in sorted(path.iterdir()) if child.is_dir()}
    training = next((children[n] for n in TRAINING_NAMES if n in children), None)
    held_out = next((children[n] for n in HELD_OUT_NAMES if n in children), None)
    return None if training is None or held_out is None else [(training, True), (held_out, False)]


def _images_in(path: Path, framer: _Framer, limit: int, class_names: Sequence[str] | None,
               trained: bool | None) -> SampleSet:
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    files = files[:limit]
    labels = _folder_labels(path, files, class_names)
    training = None if trained is None else np.full(len(files), trained)
    return SampleSet(path.name or str(path), framer.files(files), labels, training)


def _declared_use(name: Any, where: str) -> bool | None:
    """True for a training split's name, False for a held-out one's, None for any other
    folder name; a ``split`` value (``where``) must be one of them."""
    text = str(np.asarray(name).item() if isinstance(name, np.ndarray) else name).strip().lower()
    if text in TRAINING_NAMES:
        return True
    if text in HELD_OUT_NAMES:
        return False
    if where.startswith("folder"):
        return None
    raise InputError(f"{where}: 'split' must be one of {', '.join(TRAINING_NAMES + HELD_OUT_NAMES)}, not {text[:40]!r}")


def _folder_labels(root: Path, files: Sequence[Path], class_names: Sequence[str] | None) -> np.ndarray | None:
    """Class index per file from its subfolder: a class name from ``class_names`` or an index."""
    parents = [f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else None for f in files]
    if any(p is None for p in parents):
        return None
    if class_names and all(p in class_names for p in parents):
        index = {name: i for i, name in enumerate(class_names)}
        return np.array([index[p] for p in parents], dtype=np.int64)
    if all(p.isdigit() for p in parents):
        return np.array([int(p) for p in parents], dtype=np.int64)
    return None


def _mapping(name: str, data: Mapping[str, Any], framer: _Framer, limit: int) -> SampleSet:
    """``images`` (pixels or normalized inputs) and optional ``labels`` from a mapping."""
    if "images" not in data:
        raise InputError(f"{framer.what} {name}: expected an 'images' array (and optionally 'labels'), "
                         f"found {', '.join(map(str, data)) or 'nothing'}")
    images = np.asarray(data["images"])
    if len(images) == 0:
        raise InputError(f"{framer.what} {name}: 'images' is empty")
    count = len(images)
    training = _training_marks(f"{framer.what} {name}", data, count)
    index = np.arange(min(limit, count)) if training is None else np.sort(np.concatenate(
        [np.flatnonzero(training == kind)[:limit] for kind in (True, False)]))  # up to ``limit`` of each kind
    images = images[index]
    want = tuple(framer.shape[1:])
    if images.dtype == np.uint8 and images.ndim in (3, 4) and (images.ndim == 3 or images.shape[3] in (1, 3)):
        if images.ndim == 4 and images.shape[3] == 1:
            images = images[..., 0]
        if max(images.shape[1:3]) > _MAX_PIXEL_SIDE:
            raise InputError(f"{framer.what} {name}: images larger than {_MAX_PIXEL_SIDE} pixels")
        inputs = framer.pixels(images)
    elif images.dtype in (np.float32, np.float64) and images.shape[1:] == want:
        inputs = images.astype(np.float32)
    else:
        raise InputError(f"{framer.what} {name}: 'images' must be uint8 pixels (N, H, W[, 3]) or normalized "
                         f"float32 inputs (N, {', '.join(map(str, want))}), got {images.dtype} "
                         f"{tuple(images.shape)}")
    if not np.all(np.isfinite(inputs)):
        raise InputError(f"{framer.what} {name}: the images hold NaN or infinite values")
    labels = None
    if data.get("labels") is not None:
        labels = np.asarray(data["labels"])
        if labels.shape != (count,) or labels.dtype.kind not in "iu":
            raise InputError(f"{framer.what} {name}: 'labels' must be {count} integers (one per image), "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        labels = labels[index].astype(np.int64)
    return SampleSet(name, inputs, labels, None if training is None else training[index])


def _training_marks(where: str, data: Mapping[str, Any], count: int) -> np.ndarray | None:
    """Per-sample training marks from ``train`` (booleans) or ``split`` (one name for all);
    ``where`` names the data in errors."""
    if data.get("train") is not None:
        marks = np.asarray(data["train"])
        if marks.shape != (count,) or marks.dtype.kind not in "biu" or not np.isin(marks, (0, 1)).all():
            raise InputError(f"{where}: 'train' must be {count} booleans (True: used for "
                             f"training), got {marks.dtype} {tuple(marks.shape)}")
        return marks.astype(bool)
    if data.get("split") is not None:
        split = np.asarray(data["split"])
        if split.ndim != 0 or split.dtype.kind not in "US":
            raise InputError(f"{where}: 'split' must be one name (train, test, ...), "
                             f"got {split.dtype} {tuple(split.shape)}")
        return np.full(count, _declared_use(split, where))
    return None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The ``images`` and ``labels`` members of an .npz, each checked before it is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(info.filename).stem: info for info in archive.infolist()
                       if info.filename.endswith(".npy")}
            return {key: _read_member(archive, members[key], path) for key in ("images", "labels", "split", "train")
                    if key in members}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path}: not a valid .npz file ({str(exc)[:120]})") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    with archive.open(info) as file:
        try:
            shape, fortran, dtype = read_npy_header(file)
        except (ValueError, SyntaxError, TypeError) as exc:
            raise InputError(f"cannot read {path}: member {info.filename} is not a valid array "
                             f"({str(exc)[:120]})") from None
        claimed = math.prod(shape) * dtype.itemsize
        if dtype.hasobject or claimed > min(info.file_size, _MAX_ARRAY_BYTES):
            raise InputError(f"cannot read {path}: member {info.filename} claims {claimed} bytes "
                             f"but holds {info.file_size} (or holds objects)")
        data = file.read(claimed)
        if len(data) != claimed:
            raise InputError(f"cannot read {path}: member {info.filename} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
