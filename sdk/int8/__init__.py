"""int8 with an accuracy guard: :mod:`.calibration` (sample sets from digits, image folders,
``.npz`` or arrays), :mod:`.guard` (quantize with a target's own tools, measure on held-out
samples, keep the most sensitive layers in float or write nothing) and :mod:`.sensitivity`
(layers ranked one at a time in PyTorch)."""
