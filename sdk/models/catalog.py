"""The built-in model zoo: one table per family, registered on import (torch-free)."""

from __future__ import annotations

from .registry import ModelSpec, PaperFigures, register_model

_EDGENEXT_SOURCE = "Maaz et al., EdgeNeXt, ECCVW 2022 (Table 2 / official README)"

# name -> (config, paper figures); configs follow the official repository.
_EDGENEXT_COMMON = dict(
    kernel_sizes=(3, 5, 7, 9),
    global_block=(0, 1, 1, 1),
    d2_scales=(2, 2, 3, 4),
    use_pos_embd_xca=(False, True, False, False),
    expan_ratio=4,
)
_BN_HS_SOURCE = "official EdgeNeXt repository README (BN + Hardswish models)"
_EDGENEXT = {
    "edgenext_xx_small": (
        dict(depths=(2, 2, 6, 2), dims=(24, 48, 88, 168), heads=(4, 4, 4, 4)),
        PaperFigures(1.33, 0.261, 71.2, _EDGENEXT_SOURCE),
    ),
    "edgenext_x_small": (
        dict(depths=(3, 3, 9, 3), dims=(32, 64, 100, 192), heads=(4, 4, 4, 4)),
        PaperFigures(2.34, 0.538, 75.0, _EDGENEXT_SOURCE),
    ),
    "edgenext_small": (
        dict(depths=(3, 3, 9, 3), dims=(48, 96, 160, 304), heads=(8, 8, 8, 8)),
        PaperFigures(5.59, 1.26, 79.4, _EDGENEXT_SOURCE),
    ),
    "edgenext_base": (
        dict(depths=(3, 3, 9, 3), dims=(80, 160, 288, 584), heads=(8, 8, 8, 8)),
        PaperFigures(18.51, 3.84, 82.5, _EDGENEXT_SOURCE),
    ),
    "edgenext_xx_small_bn_hs": (
        dict(depths=(2, 2, 6, 2), dims=(24, 48, 88, 168), heads=(4, 4, 4, 4), bn_hs=True),
        PaperFigures(1.33, 0.260, 70.33, _BN_HS_SOURCE),
    ),
    "edgenext_x_small_bn_hs": (
        dict(depths=(3, 3, 9, 3), dims=(32, 64, 100, 192), heads=(4, 4, 4, 4), bn_hs=True),
        PaperFigures(2.34, 0.536, 74.87, _BN_HS_SOURCE),
    ),
    "edgenext_small_bn_hs": (
        dict(depths=(3, 3, 9, 3), dims=(48, 96, 160, 304), heads=(8, 8, 8, 8), bn_hs=True),
        PaperFigures(5.58, 1.25, 78.39, _BN_HS_SOURCE),
    ),
}

for _name, (_cfg, _paper) in _EDGENEXT.items():
    register_model(
        ModelSpec(
            name=_name,
            family="edgenext",
            builder="edgevit.models.edgenext:build_edgenext",
            config={**_EDGENEXT_COMMON, **_cfg},
            input_size=(3, 256, 256),
            paper=_paper,
            description=(
                "EdgeNeXt, BatchNorm + Hardswish deployment variant" if _cfg.get("bn_hs")
                else "EdgeNeXt: conv encoders + split depth-wise transposed attention (SDTA)"
            ),
        )
    )
