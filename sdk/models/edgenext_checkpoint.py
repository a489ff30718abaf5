"""EdgeNeXt checkpoints: timm's key layout renamed into the official one (edgevit's own)."""

from __future__ import annotations

import re

# timm renames (official -> timm) in the order timm applies them; inverted below.
_TIMM_TO_OFFICIAL = (
    (re.compile(r"^stem\."), "downsample_layers.0."),
    (re.compile(r"^stages\.(\d+)\.downsample\.(\d+)"), r"downsample_layers.\1.\2"),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)"), r"stages.\1.\2"),
    (re.compile(r"\.conv_dw\."), ".dwconv."),
    (re.compile(r"\.mlp\.fc(\d)\."), r".pwconv\1."),
    (re.compile(r"^head\.fc\."), "head."),
    (re.compile(r"^head\.norm\."), "norm."),
)


def detect_checkpoint_layout(state_dict: dict[str, object]) -> str:
    """``"timm"`` or ``"official"`` (edgevit's own names are the official ones)."""
    if any(k.startswith(("stem.", "head.fc.")) or ".blocks." in k for k in state_dict):
        return "timm"
    return "official"


def remap_checkpoint(state_dict: dict[str, object], layout: str) -> tuple[dict[str, object], str]:
    """Rename a checkpoint's keys into edgevit's layout; returns (state_dict, layout used)."""
    if layout == "auto":
        layout = detect_checkpoint_layout(state_dict)
    if layout in ("official", "edgevit"):
        return dict(state_dict), layout
    if layout != "timm":
        raise ValueError(f"unknown checkpoint layout {layout!r}: use auto, official, timm or edgevit")
    renamed = {}
    for key, value in state_dict.items():
        for pattern, repl in _TIMM_TO_OFFICIAL:
            key = pattern.sub(repl, key)
        renamed[key] = value
    return renamed, layout
