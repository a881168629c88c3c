"""The ``lm`` family's named sizes (registered with its :class:`~qkv.models.family.Family`
record; parameter counts in :mod:`qkv.models.presets`)."""

from __future__ import annotations

from typing import Any

from qkv.models.presets import BASE_12, LARGE_24, TINY

# GPT-2 (Radford et al. 2019): BPE 50,257, 1024 positions, pre-norm + final norm, tanh GELU,
# output projection tied to the token embedding, dropout 0.1.
GPT2: dict[str, Any] = {
    "vocab_size": 50257,
    "max_len": 1024,
    "activation": "gelu_tanh",
    "norm_placement": "pre",
    "pos": "learned",
    "tie_embeddings": True,
    "dropout": 0.1,
    "attn_dropout": 0.1,
    "init": "gpt2",
}

#: preset name -> config fields.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": {**GPT2, **BASE_12, "n_layers": 12},
    "gpt2-medium": {**GPT2, **LARGE_24, "n_layers": 24},
    "gpt2-tiny": {**GPT2, **TINY, "d_ff": 128, "n_layers": 2, "vocab_size": 128, "max_len": 64},
}

__all__ = ["GPT2", "PRESETS"]
