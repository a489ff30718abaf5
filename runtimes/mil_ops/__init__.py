"""MIL operations in numpy, one small function per op, registered by name and opset.

Semantics follow the coremltools MIL op reference (``coremltools.converters.mil.mil.ops.defs``).
Precision: each op returns its declared output dtype. Element-wise ops on fp16 tensors are
computed in fp16 (numpy rounds every result to fp16, as Core ML's fp16 paths do, so
overflow to inf shows up here too); matmul, conv, linear, reductions and normalizations
accumulate in fp32 and round the result once, as Core ML's GPU and Neural Engine
accumulate in higher precision.

Compressed weights (``constexpr_*`` ops) are decompressed on every run, as the coremltools
op definitions decompress them.
"""

from . import compressed_ops, tensor_ops  # noqa: F401  (each registers its ops)
from .registry import ALL_OPSETS, implemented_ops, lookup, register

__all__ = ["ALL_OPSETS", "implemented_ops", "lookup", "register"]
