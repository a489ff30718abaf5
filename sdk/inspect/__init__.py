"""Describing and measuring: :mod:`.artifact` (``edgevit info``), :mod:`.bench` (latency,
throughput, size and memory, one fresh process per artifact) and :mod:`.cost` (parameters and
GFLOPs of the deployed graph; needs torch)."""
