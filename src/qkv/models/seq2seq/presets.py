"""The ``seq2seq`` family's named sizes (registered with its :class:`~qkv.models.family.Family`
record; parameter counts in :mod:`qkv.models.presets`)."""

from __future__ import annotations

from typing import Any

from qkv.models.presets import TINY

# "Attention Is All You Need", table 3 and sec. 5.4/6.1: N=6 layers, shared 37,000-token
# BPE vocabulary (WMT14 En-De), sinusoidal positions, post-norm, P_drop on sublayer outputs
# and embedding sums, embeddings shared with the pre-softmax projection, scaled by sqrt(d).
TRANSFORMER: dict[str, Any] = {
    "vocab_size": 37000,
    "n_encoder_layers": 6,
    "n_decoder_layers": 6,
    "activation": "relu",
    "norm_placement": "post",
    "pos": "sinusoidal",
    "share_embeddings": True,
    "tie_embeddings": True,
    "scale_embeddings": True,
    "init": "xavier",
}

# T5 (Raffel et al. 2020, sec. 2.1 and 3.1; the released t5-small): pre-norm RMSNorm (eps 1e-6),
# no biases, ReLU, unscaled attention scores (the 1/sqrt(d_h) folded into the query's
# initialization), a learned relative bias with 32 log buckets up to distance 128 shared by
# the layers of each stack, no absolute positions, one 32,128-token SentencePiece vocabulary
# for encoder, decoder and output (the output scaled by d ** -0.5), dropout 0.1. The layout
# of interop/hf/t5.py, so these models load T5 checkpoints.
T5: dict[str, Any] = {
    "vocab_size": 32128,
    "max_len": 512,
    "pad_token_id": 0,
    "activation": "relu",
    "norm": "rms",
    "norm_eps": 1e-6,
    "norm_placement": "pre",
    "bias": False,
    "pos": "relative",
    "rel_buckets": 32,
    "rel_max_distance": 128,
    "attn_scale": 1.0,
    "share_embeddings": True,
    "tie_embeddings": True,
    "scale_embeddings": False,
    "dropout": 0.1,
    "attn_dropout": 0.1,
    "ff_dropout": 0.1,
    "init": "t5",
}

#: preset name -> config fields.
PRESETS: dict[str, dict[str, Any]] = {
    "transformer-base": {**TRANSFORMER, "d_model": 512, "d_ff": 2048, "n_heads": 8, "dropout": 0.1},
    "transformer-big": {
        **TRANSFORMER,
        "d_model": 1024,
        "d_ff": 4096,
        "n_heads": 16,
        "dropout": 0.3,
    },
    "transformer-tiny": {**TRANSFORMER, **TINY, "vocab_size": 128, "max_len": 64, "pad_token_id": 0}
    | {"n_encoder_layers": 2, "n_decoder_layers": 2},
    "t5-small": {**T5, "d_model": 512, "n_heads": 8, "head_dim": 64, "d_ff": 2048}
    | {"n_encoder_layers": 6, "n_decoder_layers": 6, "output_scale": 512**-0.5},
    # qkv's small size of the same shape (the width of the translate task's old model, 3 + 3
    # layers): text2text's default until its recipe was measured on a CPU.
    "t5-mini": {**T5, "d_model": 256, "n_heads": 4, "head_dim": 64, "d_ff": 1024}
    | {"n_encoder_layers": 3, "n_decoder_layers": 3, "output_scale": 256**-0.5},
    # A CPU size of the same shape (the width and depth of the summarize task's model: d 192,
    # 4 heads of 48, 2 + 2 layers): the text2text task's default, at ~1 step/s on one thread
    # where t5-mini took 4.4 s (docs/recipes.md).
    "t5-micro": {**T5, "d_model": 192, "n_heads": 4, "head_dim": 48, "d_ff": 768}
    | {"n_encoder_layers": 2, "n_decoder_layers": 2, "output_scale": 192**-0.5},
    "t5-tiny": {**T5, **TINY, "head_dim": 8, "vocab_size": 128, "max_len": 64, "rel_buckets": 8}
    | {"rel_max_distance": 20, "n_encoder_layers": 2, "n_decoder_layers": 2}
    | {"output_scale": 32**-0.5},
}

__all__ = ["PRESETS", "T5", "TRANSFORMER"]
