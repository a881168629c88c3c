"""The ``bert`` family's named sizes (registered with its :class:`~qkv.models.family.Family`
record; parameter counts in :mod:`qkv.models.presets`)."""

from __future__ import annotations

from typing import Any

from qkv.models.presets import BASE_12, LARGE_24, TINY

# BERT (Devlin et al. 2019): WordPiece 30,522, 512 positions, 2 segments, GELU, post-norm,
# LayerNorm eps 1e-12 on the embeddings and in every layer, dropout 0.1 everywhere.
BERT: dict[str, Any] = {
    "vocab_size": 30522,
    "max_len": 512,
    "type_vocab_size": 2,
    "pad_token_id": 0,
    "activation": "gelu",
    "norm_eps": 1e-12,
    "norm_placement": "post",
    "pos": "learned",
    "embed_norm": True,
    "dropout": 0.1,
    "attn_dropout": 0.1,
    "init": "normal",
}

#: preset name -> config fields.
PRESETS: dict[str, dict[str, Any]] = {
    # The published BertModel (pooler, no masked-LM head); mlm_head=True adds the head
    # (+622,650 parameters; its output projection is tied to the token embedding).
    "bert-base": {**BERT, **BASE_12, "n_layers": 12, "mlm_head": False},
    "bert-large": {**BERT, **LARGE_24, "n_layers": 24, "mlm_head": False},
    "bert-tiny": {
        **BERT,
        **TINY,
        "n_layers": 2,
        "vocab_size": 128,
        "max_len": 64,
        "mlm_head": True,
    },
}

__all__ = ["BERT", "PRESETS"]
