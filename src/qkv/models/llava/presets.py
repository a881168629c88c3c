"""The ``llava`` family's named sizes (registered with its :class:`~qkv.models.family.Family`
record; parameter counts in :mod:`qkv.models.presets`)."""

from __future__ import annotations

from typing import Any

from qkv.models.lm.presets import GPT2
from qkv.models.presets import TINY

#: preset name -> config fields.
PRESETS: dict[str, dict[str, Any]] = {
    "llava-tiny": {**GPT2, **TINY, "n_layers": 2, "vocab_size": 128, "max_len": 48}
    | {"image_size": 16, "patch_size": 4, "in_channels": 1}
    | {"vision_d_model": 32, "vision_n_heads": 4, "vision_d_ff": 64, "vision_n_layers": 2},
}

__all__ = ["PRESETS"]
