"""The export pipeline: a model in, verified artifacts out.

:mod:`.flow` (``export_model``: build -> fold -> target form -> trace -> exporter ->
verify -> metadata -> digest -> atomic rename), :mod:`.tracing` (its PyTorch side),
:mod:`.targets` (what each target gets), :mod:`.artifact_module` (the model behind an input
form), :mod:`.parity` (the comparison with PyTorch), :mod:`.verify` (``edgevit verify``) and
:mod:`.fold` (``edgevit reparam``).

The package is not named ``export``: ``edgevit.export`` is the public function.
"""
