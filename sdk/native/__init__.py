"""The Python face of the C++ attention kernels in ``native/`` (built as ``edgevit._native``).

- :mod:`.bindings`: the compiled kernels on numpy arrays, or why they are not in use
  (``status()``); torch-free, re-exported here;
- :mod:`.torch_ops`: ``torch.ops.edgevit.xca`` / ``.sla`` / ``.rlmhsa`` and ``use_native`` (needs torch);
- :mod:`.ort_library`: ``libedgevit_ort.so``, the same kernels as ONNX Runtime custom ops;
- :mod:`.onnx_nodes`: the same attention as single ``ai.edgevit`` ONNX nodes, exported and
  run (its :mod:`.onnx_script` functions are imported at export time only).
"""

from .bindings import NativeStatus, available, kernels, rlmhsa, sla, status, xca

__all__ = ["NativeStatus", "available", "kernels", "rlmhsa", "sla", "status", "xca"]
