"""The ``swin`` family's named sizes (registered with its :class:`~qkv.models.family.Family`
record; parameter counts in :mod:`qkv.models.presets`)."""

from __future__ import annotations

from typing import Any

from qkv.models.presets import TINY

# Swin-T (Liu et al. 2021, sec. 3.3): C = 96, depths 2, 2, 6, 2, heads 3, 6, 12, 24, window
# 7, MLP ratio 4, 224 px, 4 px patches; stochastic depth 0.2 (sec. 4.1, ImageNet-1K).
SWIN_T: dict[str, Any] = {
    "d_model": 96,
    "n_heads": 3,
    "d_ff": 384,
    "depths": [2, 2, 6, 2],
    "window_size": 7,
    "image_size": 224,
    "patch_size": 4,
    "in_channels": 3,
    "n_classes": 1000,
    "drop_path": 0.2,
}

#: preset name -> config fields.
PRESETS: dict[str, dict[str, Any]] = {
    "swin-t": SWIN_T,
    "swin-tiny": {**TINY, "n_heads": 2, "depths": [2, 2], "image_size": 32, "patch_size": 2}
    | {"window_size": 4, "n_classes": 10, "drop_path": 0.1},
}

__all__ = ["PRESETS", "SWIN_T"]
