"""The ``vit`` family's named sizes (registered with its :class:`~qkv.models.family.Family`
record; parameter counts in :mod:`qkv.models.presets`)."""

from __future__ import annotations

from typing import Any

from qkv.models.presets import BASE_12, LARGE_24, TINY

# ViT (Dosovitskiy et al. 2021, tables 1 and 3): 224 px, 16 px patches, 1000 ImageNet
# classes, pre-norm, GELU, LayerNorm eps 1e-6 (the reference code), dropout 0.1.
VIT: dict[str, Any] = {
    "image_size": 224,
    "patch_size": 16,
    "in_channels": 3,
    "n_classes": 1000,
    "activation": "gelu",
    "norm_eps": 1e-6,
    "norm_placement": "pre",
    "pos": "learned",
    "dropout": 0.1,
    "attn_dropout": 0.0,
    "init": "normal",
}

#: preset name -> config fields.
PRESETS: dict[str, dict[str, Any]] = {
    "vit-b16": {**VIT, **BASE_12, "n_layers": 12},
    "vit-l16": {**VIT, **LARGE_24, "n_layers": 24},
    "vit-tiny": {**VIT, **TINY, "n_layers": 2, "image_size": 32, "patch_size": 8, "n_classes": 10},
}

__all__ = ["PRESETS", "VIT"]
