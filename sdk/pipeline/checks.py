"""The inputs an artifact is verified on, by kind.

Random normals (``random``) have the statistics of a normalized image but not its
structure, and with trained weights they do not reach the activation ranges real images
reach: a defect that only real data shows (fp16 overflow, int8 clipping) passes them. So
every verification also runs natural photos (``photo``: the package's own, framed as
``edgevit predict`` frames an image), the user's data when given (``data``: ``--verify-data``,
the sources of ``--calibration``) and an ``--image`` (``image``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifact.preprocess import load_image
from ..errors import InputError
from ..int8.calibration import load_samples
from .parity import parity_inputs

PHOTOS_DIR = Path(__file__).resolve().parent / "photos"  # sources and licences: photos/README.md
DEFAULT_VERIFY_SAMPLES = 16
KINDS = ("random", "photo", "data", "image")


@dataclass(frozen=True)
class Probe:
    """One verification input: its name, its kind (:data:`KINDS`) and the normalized NCHW tensor."""

    name: str
    kind: str
    x: np.ndarray

    def in_form(self, form: Any) -> "Probe":
        """The same probe in an artifact's input form."""
        return Probe(self.name, self.kind, form.from_normalized(self.x))


def random_probes(shape: tuple[int, ...], count: int, seed: int = 0) -> list[Probe]:
    """``count`` fixed N(0, 1) inputs (normalized-image statistics), seeded."""
    return [Probe(name, "random", x) for name, x in parity_inputs(shape, count, seed)]


def photo_files() -> list[Path]:
    """The package's verification photos, sorted by name."""
    return sorted(PHOTOS_DIR.glob("*.jpg"))


def verification_probes(shape: tuple[int, ...], mean: Sequence[float], std: Sequence[float], crop_pct: float, *,
                        num_inputs: int, seed: int = 0, photos: bool = True, data: Any = None,
                        samples: int = DEFAULT_VERIFY_SAMPLES, image: str | Path | None = None,
                        progress: Any = None) -> tuple[list[Probe], dict[str, str]]:
    """Every verification input for a model input of ``shape`` (normalized NCHW), and what
    each kind is made of (for the report and the metadata). Photos and data apply to image
    models (3-channel NCHW inputs) only."""
    probes = random_probes(shape, num_inputs, seed)
    sources = {"random": f"{num_inputs} N(0, 1) tensors, seed {seed}"} if num_inputs else {}
    takes_images = len(shape) == 4 and shape[1] == 3
    if photos and takes_images:
        files = photo_files()
        probes += [Probe(f"photo {f.stem}", "photo", load_image(f, shape[2:], mean, std, crop_pct)) for f in files]
        sources["photo"] = f"{len(files)} photos ({', '.join(f.stem for f in files)}), edgevit's own"
    if data is not None:
        if not takes_images:
            raise InputError("--verify-data applies to image models (a 1 x 3 x H x W input)")
        samples_set = load_samples(data, shape, mean, std, crop_pct, limit=samples, progress=progress,
                                   what="--verify-data").subset(0, samples)
        probes += [Probe(f"{samples_set.name}#{i}", "data", samples_set.inputs[i:i + 1])
                   for i in range(len(samples_set))]
        sources["data"] = f"{len(samples_set)} samples of {samples_set.name} (sha256 {samples_set.digest[:12]})"
    if image is not None:
        probes.append(Probe(f"image {Path(image).name}", "image", load_image(image, shape[2:], mean, std, crop_pct)))
        sources["image"] = Path(image).name
    return probes, sources
