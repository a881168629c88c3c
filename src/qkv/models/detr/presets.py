"""The ``detr`` family's named sizes (registered with its :class:`~qkv.models.family.Family`
record; parameter counts in :mod:`qkv.models.presets`)."""

from __future__ import annotations

from typing import Any

from qkv.models.presets import TINY

#: preset name -> config fields.
PRESETS: dict[str, dict[str, Any]] = {
    # DETR's Transformer (Carion et al. 2020, sec. 4: d = 256, 8 heads, 2048 FFN, 6 + 6
    # layers, 100 queries, dropout 0.1) on qkv's small CNN backbone, 91 COCO classes.
    "detr": {},
    "detr-tiny": {**TINY, "n_encoder_layers": 2, "n_decoder_layers": 2, "n_queries": 6}
    | {"n_classes": 10, "image_size": 32, "in_channels": 1, "backbone_channels": [8, 16]},
}

__all__ = ["PRESETS"]
