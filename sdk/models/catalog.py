"""The built-in model zoo: one table per family, as :data:`BUILTIN_MODELS` (torch-free)."""

from __future__ import annotations

from .spec import ModelSpec, PaperFigures

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


def _any_size_family(family: str, builder: str, table: dict, common: dict, size: int, describe,
                     caveat: str = "") -> list[ModelSpec]:
    """Models that take any input size (a multiple of 32); ``describe(config)`` words each."""
    return [
        ModelSpec(
            name=name,
            family=family,
            builder=builder,
            config={**common, **config},
            input_size=(3, size, size),
            paper=paper,
            description=describe(config),
            caveat=caveat,
        )
        for name, (config, paper) in table.items()
    ]


_EDGENEXT_SPECS = _any_size_family(
    "edgenext", "edgevit.models.edgenext:build_edgenext", _EDGENEXT, _EDGENEXT_COMMON, 256,
    lambda config: ("EdgeNeXt, BatchNorm + Hardswish deployment variant" if config.get("bn_hs")
                    else "EdgeNeXt: conv encoders + split depth-wise transposed attention (SDTA)"),
)

# SLAB (Guo et al., ICML 2024). Parameter counts are those of the official code's models
# (all trainable parameters, the PRepBN LayerNorm branch and SLAB-DeiT's unused class
# token included); top-1 from the official README. deit_tiny_prepbn's official model
# uses plain RepBN (5.717M); ours trains with PRepBN like deit_small_prepbn, and loads
# either checkpoint layout.
_SLAB_SOURCE = "official SLAB repository (xinghaochen/SLAB): README top-1, parameters of its code"
_SLAB = {
    "slab_deit_tiny": ("edgevit.models.deit:build_deit", dict(embed_dim=192, num_heads=3, attention="linear", prepbn_step=60000),
                       PaperFigures(6.198, None, 74.3, _SLAB_SOURCE), "SLAB-DeiT-T: linear attention + PRepBN, no class token"),
    "slab_deit_small": ("edgevit.models.deit:build_deit", dict(embed_dim=384, num_heads=6, attention="linear", prepbn_step=60000),
                        PaperFigures(22.993, None, 80.0, _SLAB_SOURCE), "SLAB-DeiT-S: linear attention + PRepBN, no class token"),
    "deit_tiny_prepbn": ("edgevit.models.deit:build_deit", dict(embed_dim=192, num_heads=3, attention="softmax", class_token=True),
                         PaperFigures(5.717, None, 73.6, _SLAB_SOURCE), "DeiT-T with progressive RepBN (SLAB baseline)"),
    "deit_small_prepbn": ("edgevit.models.deit:build_deit", dict(embed_dim=384, num_heads=6, attention="softmax", class_token=True),
                          PaperFigures(22.070, None, 80.2, _SLAB_SOURCE), "DeiT-S with progressive RepBN (SLAB baseline)"),
    "slab_swin_tiny": ("edgevit.models.slab_swin:build_slab_swin", dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
                       PaperFigures(29.217, None, 81.8, _SLAB_SOURCE),
                       "SLAB-Swin-T: global linear attention (stages 1-2), shifted windows (3-4), PRepBN"),
}


def _fixed_size_family(family: str, table: dict) -> list[ModelSpec]:
    """ViTs with position tables learned for 224x224: only that size exports."""
    return [
        ModelSpec(
            name=name,
            family=family,
            builder=builder,
            config=config,
            input_size=(3, 224, 224),
            crop_pct=0.9 if "swin" in name else 0.875,
            fixed_size=True,
            paper=paper,
            description=description,
        )
        for name, (builder, config, paper, description) in table.items()
    ]


_SLAB_SPECS = _fixed_size_family("slab", _SLAB)

# Plain DeiT (Touvron et al., ICML 2021): LayerNorm, softmax attention, class token; the
# ViT family that ED-ViT splits. Image size, patch size and class count are configurable
# (``create_model("deit_tiny", num_classes=10, img_size=32, patch_size=8)``).
_DEIT_SOURCE = "Touvron et al., DeiT, ICML 2021 (Table 1)"
_DEIT_CONFIG = dict(attention="softmax", class_token=True, norm="layernorm")
_DEIT = {
    "deit_tiny": ("edgevit.models.deit:build_deit", dict(_DEIT_CONFIG, embed_dim=192, num_heads=3),
                  PaperFigures(5.7, 1.3, 72.2, _DEIT_SOURCE), "DeiT-T: plain ViT (LayerNorm, softmax attention, class token)"),
    "deit_small": ("edgevit.models.deit:build_deit", dict(_DEIT_CONFIG, embed_dim=384, num_heads=6),
                   PaperFigures(22.1, 4.6, 79.8, _DEIT_SOURCE), "DeiT-S: plain ViT (LayerNorm, softmax attention, class token)"),
}
_DEIT_SPECS = _fixed_size_family("deit", _DEIT)

# FMViT (Tan, Geng and Xie, arXiv 2311.05707): a RECONSTRUCTION from the paper's
# abstract (no code or weights were released); the design is ours, documented in
# edgevit.models.fmvit and docs/fmvit.md. Sizes were chosen so that the deployed
# (re-parameterized) model lands within 10% of the published parameters and GFLOPs at
# 224x224. The attention path's share of the channels ramps about 1/4, 3/8, 1/2, 3/4
# over the stages, rounded to whole heads of ``head_dim`` channels.
_FMVIT_SOURCE = "Tan et al., FMViT, arXiv 2311.05707 (abstract); architecture reconstructed, no official weights"
_FMVIT = {
    "fmvit_t": (dict(dims=(32, 64, 128, 224), depths=(2, 2, 5, 2), mixers=(1, 1, 2, 1),
                     attn_dims=(8, 24, 64, 168), head_dim=8), PaperFigures(2.0, 0.3, 72.9, _FMVIT_SOURCE)),
    "fmvit_s": (dict(dims=(48, 96, 192, 384), depths=(2, 2, 7, 3), mixers=(1, 1, 2, 1),
                     attn_dims=(16, 32, 96, 288), head_dim=16), PaperFigures(6.4, 0.8, 78.5, _FMVIT_SOURCE)),
    "fmvit_m": (dict(dims=(64, 128, 256, 512), depths=(3, 4, 10, 3), mixers=(1, 1, 3, 1),
                     attn_dims=(16, 48, 128, 384), head_dim=16), PaperFigures(12.8, 2.0, 80.3, _FMVIT_SOURCE)),
    "fmvit_b": (dict(dims=(96, 192, 384, 640), depths=(3, 4, 11, 3), mixers=(1, 1, 3, 1),
                     attn_dims=(32, 64, 192, 480), head_dim=32), PaperFigures(24.3, 4.2, 82.4, _FMVIT_SOURCE)),
    "fmvit_l": (dict(dims=(112, 224, 448, 704), depths=(4, 5, 14, 3), mixers=(1, 1, 4, 1),
                     attn_dims=(32, 96, 224, 512), head_dim=32), PaperFigures(35.3, 7.1, 83.3, _FMVIT_SOURCE)),
}
_FMVIT_SPECS = _any_size_family(
    "fmvit", "edgevit.models.fmvit:build_fmvit", _FMVIT, dict(sr_ratios=(8, 4, 2, 1), mlp_ratio=3.0), 224,
    lambda config: ("FMViT (reconstruction, no official weights): conv + pooled-KV attention mixed per stage, "
                    "gMLP multi-group re-parameterization, CFB fusion"),
    caveat=("reconstructed from the paper's description (no code or weights were released); "
            "the figures are the paper's, see docs/fmvit.md"),
)

BUILTIN_MODELS: tuple[ModelSpec, ...] = (*_EDGENEXT_SPECS, *_SLAB_SPECS, *_DEIT_SPECS, *_FMVIT_SPECS)
