"""onnxscript functions that emit edgevit's attention ops as ``ai.edgevit`` nodes.

A module of its own, imported only at export time: onnxscript reads these functions'
source and resolves names in the module globals (so no ``from __future__ import annotations``).
"""

import onnxscript
from onnxscript import FLOAT

edgevit_opset = onnxscript.values.Opset("ai.edgevit", 1)


@onnxscript.script(edgevit_opset)
def xca_node(qkv: FLOAT, temperature: FLOAT, heads: int) -> FLOAT:
    return edgevit_opset.XCA(qkv, temperature, heads=heads)


@onnxscript.script(edgevit_opset)
def sla_node(qkv: FLOAT, positional: FLOAT, heads: int) -> FLOAT:
    return edgevit_opset.SLA(qkv, positional, heads=heads)


@onnxscript.script(edgevit_opset)
def rlmhsa_node(q: FLOAT, kv: FLOAT, heads: int) -> FLOAT:
    return edgevit_opset.RLMHSA(q, kv, heads=heads)
