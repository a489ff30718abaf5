"""Re-parameterization: fold training-time structure (BatchNorm, RepBN, PRepBN,
layer-scale, norm affines) into the neighbouring Conv/Linear layers, exactly.

One protocol: a module that can fold itself implements ``reparameterize(self) -> None``
using the fold functions of :mod:`edgevit.reparam.folds`; :func:`reparameterize` walks
the model and also applies the generic folds where the data flow is known.
"""

from .calibrate import recalibrate_batchnorm
from .engine import reparameterize
from .folds import ChannelAffine, affine_of, fold_into_next, fold_into_previous, fold_layer_scale, keep_as_affine
from .report import FoldEntry, FoldReport

__all__ = [
    "reparameterize",
    "recalibrate_batchnorm",
    "ChannelAffine",
    "affine_of",
    "fold_into_next",
    "fold_into_previous",
    "fold_layer_scale",
    "keep_as_affine",
    "FoldEntry",
    "FoldReport",
]
