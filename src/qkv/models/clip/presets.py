"""The ``clip`` family's named sizes (registered with its :class:`~qkv.models.family.Family`
record; parameter counts in :mod:`qkv.models.presets`)."""

from __future__ import annotations

from typing import Any

from qkv.models.presets import TINY

#: preset name -> config fields.
PRESETS: dict[str, dict[str, Any]] = {
    # CLIP ViT-B/32 (Radford et al. 2021, table 20; OpenAI's ``clip-vit-base-patch32``):
    # the config's defaults.
    "clip-vit-b32": {},
    "clip-tiny": {**TINY, "n_layers": 2, "vocab_size": 128, "max_len": 16, "eos_token_id": 127}
    | {"image_size": 16, "patch_size": 4, "in_channels": 1, "embed_dim": 16}
    | {"vision_d_model": 32, "vision_n_heads": 4, "vision_d_ff": 64, "vision_n_layers": 2},
}

__all__ = ["PRESETS"]
