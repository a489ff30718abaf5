"""edgevit's attention as single ONNX nodes (domain ``ai.edgevit``), exported and run.

Export: ``torch.ops.edgevit.xca`` / ``.sla`` / ``.rlmhsa`` become ``ai.edgevit::XCA`` /
``SLA`` / ``RLMHSA`` nodes (attribute ``heads``) through torch.onnx's custom translation table.
Run: ONNX Runtime registers ``libedgevit_ort.so`` (:mod:`.ort_library`), the C++ custom ops,
and runs the file as it is. Where that library was not built, onnxruntime-extensions'
Python custom ops call ``edgevit._native`` instead; they only serve their own
``ai.onnx.contrib`` domain, so the nodes are moved there in memory (the file is not changed).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from ..errors import ArtifactError, first_line
from ..optional import require
from . import bindings as native
from . import ort_library

DOMAIN = "ai.edgevit"
VERSION = 1
_ORTX_DOMAIN = "ai.onnx.contrib"  # the only domain onnxruntime-extensions' Python ops serve


def translation_table() -> dict[Any, Any]:
    """torch.onnx ``custom_translation_table``: the native ops as ``ai.edgevit`` nodes."""
    import torch

    from . import torch_ops  # noqa: F401  (torch: defines torch.ops.edgevit.*)
    from .onnx_script import edgevit_opset, rlmhsa_node, sla_node, xca_node  # onnxscript

    assert edgevit_opset.domain == DOMAIN and edgevit_opset.version == VERSION
    return {torch.ops.edgevit.xca.default: xca_node, torch.ops.edgevit.sla.default: sla_node,
            torch.ops.edgevit.rlmhsa.default: rlmhsa_node}


def uses_native_ops(model) -> bool:
    """True if an onnx ModelProto imports the ``ai.edgevit`` domain."""
    return any(entry.domain == DOMAIN for entry in model.opset_import)


@lru_cache(maxsize=1)
def _register_ops() -> str:
    """Registers the Python custom ops once per process; returns the extensions library path."""
    require("onnxruntime_extensions", f"to run ONNX models with {DOMAIN} attention nodes without "
                                      f"{ort_library.FILE_NAME}")
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    float_ = PyCustomOpDef.dt_float
    heads = {"heads": PyCustomOpDef.dt_int64}

    @onnx_op(op_type="XCA", domain=_ORTX_DOMAIN, inputs=[float_, float_], outputs=[float_], attrs=heads)
    def xca(qkv, temperature, heads):
        return native.xca(qkv, temperature, heads)

    @onnx_op(op_type="SLA", domain=_ORTX_DOMAIN, inputs=[float_, float_], outputs=[float_], attrs=heads)
    def sla(qkv, positional, heads):
        return native.sla(qkv, positional, heads)

    @onnx_op(op_type="RLMHSA", domain=_ORTX_DOMAIN, inputs=[float_, float_], outputs=[float_], attrs=heads)
    def rlmhsa(q, kv, heads):
        return native.rlmhsa(q, kv, heads)

    return get_library_path()


def _moved_to_extensions_domain(data: bytes) -> bytes:
    import onnx

    model = onnx.load_model_from_string(data)
    for node in model.graph.node:
        if node.domain == DOMAIN:
            node.domain = _ORTX_DOMAIN
    kept = [entry for entry in model.opset_import if entry.domain not in (DOMAIN, _ORTX_DOMAIN)]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    model.opset_import.add(domain=_ORTX_DOMAIN, version=VERSION)
    return model.SerializeToString()


def session(path: Path, data: bytes, options, providers: Sequence[str] | None):
    """An ``onnxruntime.InferenceSession`` for the model ``data`` (read from ``path``) with
    ``ai.edgevit`` nodes: through ``libedgevit_ort.so``, else onnxruntime-extensions."""
    import onnxruntime

    library = ort_library.status()
    if library.path is not None:
        try:
            options.register_custom_ops_library(str(library.path))
        except Exception as exc:
            raise ArtifactError(f"cannot load {library.path} for the {DOMAIN} nodes of {path}: "
                                f"{first_line(exc)}") from None
    else:
        if not native.available():
            raise ArtifactError(f"{path} has {DOMAIN} attention nodes, which need {ort_library.FILE_NAME} "
                                f"({library.describe()}) or the native kernels ({native.status().reason})")
        options.register_custom_ops_library(_register_ops())
        data = _moved_to_extensions_domain(data)
    try:
        return onnxruntime.InferenceSession(data, options, providers=providers)
    except Exception as exc:
        raise ArtifactError(f"cannot load ONNX model {path}: {first_line(exc)}") from None
