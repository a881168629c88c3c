"""Whisper (Radford et al. 2022) <-> :class:`qkv.models.Whisper`.

``WhisperForConditionalGeneration`` is a pre-norm encoder-decoder: BART's layer names
(:mod:`qkv.interop.hf.bart`) plus the encoder's two convolutions, its fixed sinusoids
(``encoder.embed_positions``, stored in the checkpoint: copied into qkv's ``enc_pos``),
a final ``layer_norm`` per stack, and ``proj_out`` tied to the decoder's tokens.

Whisper's key projections have no bias. qkv's stacked projection has one; the map reads
zeros into it and drops it when writing, which is exact whatever its value: a key bias
``b`` adds ``q . b`` to every score of a query's row, and softmax ignores a constant shift.

``Speech2TextForConditionalGeneration`` is not mapped: its subsampler is a stack of
GLU-gated convolutions (``conv_kernel_sizes``, channels doubled then halved by the GLU),
its encoder and decoder positions are fixed sinusoids with fairseq's padding offset, and
its embeddings are scaled; that is another encoder front end, not Whisper's classes with
other weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from qkv.interop._convert import Rule, copy, modules, stacked
from qkv.interop.hf._common import (
    HFFamily,
    Issues,
    activation_to_hf,
    common_to_hf,
    pad_id,
    required,
    tied,
    to_hf_issues,
)
from qkv.interop.hf.bart import DECODER_LAYER, ENCODER_LAYER
from qkv.models import TransformerConfig, WhisperConfig

#: Whisper's convolutions, sinusoids, decoder positions and final norms -> qkv.
STEM: dict[str, str] = {
    "encoder.conv1": "conv1",
    "encoder.conv2": "conv2",
    "encoder.layer_norm": "encoder.norm",
    "decoder.layer_norm": "decoder.norm",
}
TABLES: dict[str, str] = {
    "encoder.embed_positions.weight": "enc_pos",
    "decoder.embed_positions.weight": "tgt_embed.pos_emb.emb.weight",
}
TOKENS = "decoder.embed_tokens.weight"
PROJ_OUT = "proj_out.weight"
#: The Whisper strides qkv's ``conv_strides`` must equal to be written as Whisper.
STRIDES = [1, 2]


def _qkv_bias(ts: Sequence[Tensor]) -> list[Tensor]:
    q, v = ts
    return [torch.cat([q, torch.zeros_like(q), v])]  # (3 d,): no key bias


def _qv_bias(ts: Sequence[Tensor]) -> list[Tensor]:
    q, _, v = ts[0].chunk(3)  # the key bias cancels in the softmax (module docstring)
    return [q, v]


def _attention_rules(hf: str, qkv: str) -> list[Rule]:
    names = tuple(f"{hf}.{p}_proj" for p in "qkv")
    rules = stacked({names: f"{qkv}.qkv_proj"}, suffixes=("weight",))
    bias = (f"{hf}.q_proj.bias", f"{hf}.v_proj.bias")
    return [*rules, Rule(bias, (f"{qkv}.qkv_proj.bias",), to_qkv=_qkv_bias, to_hf=_qv_bias)]


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a Whisper checkpoint (without the ``model.`` prefix) and a
    :class:`~qkv.models.Whisper` of ``cfg``."""
    assert isinstance(cfg, WhisperConfig)
    head = (PROJ_OUT,) if cfg.tie_embeddings else ()
    rules = [copy(TOKENS, "tgt_embed.tok_emb.weight", aliases=head)]
    if not cfg.tie_embeddings:
        rules.append(copy(PROJ_OUT, "lm_head.weight"))
    rules += modules(STEM) + [copy(h, q) for h, q in TABLES.items()]
    for i in range(cfg.n_encoder_layers):
        pre = f"encoder.layers.{i}."
        rules += modules(ENCODER_LAYER, pre, pre)
        rules += _attention_rules(pre + "self_attn", pre + "self_attn")
    for i in range(cfg.n_decoder_layers):
        pre = f"decoder.layers.{i}."
        rules += modules(DECODER_LAYER, pre, pre)
        rules += _attention_rules(pre + "self_attn", pre + "self_attn")
        rules += _attention_rules(pre + "encoder_attn", pre + "cross_attn")
    return rules


def config_from_hf(
    hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str
) -> WhisperConfig:
    """``WhisperConfig`` (transformers) -> :class:`~qkv.models.WhisperConfig`.

    Raises:
        HFConversionError: values qkv cannot express (different encoder and decoder head
            counts or widths, scaled embeddings, an unknown activation), all listed.
    """
    issues = Issues(what)
    required(hf, issues, "d_model", "encoder_layers", "decoder_layers", "vocab_size")
    required(hf, issues, "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins")
    for enc, dec in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if hf.get(dec, hf.get(enc)) != hf.get(enc):
            issues.add(f"{enc}={hf.get(enc)!r} != {dec}={hf.get(dec)!r} (qkv uses one value)")
    issues.expect(hf, "scale_embedding", (False,), False)
    act = issues.activation("activation_function", hf.get("activation_function", "gelu"))
    issues.raise_if_any()
    return WhisperConfig(
        d_model=hf["d_model"],
        n_heads=hf["encoder_attention_heads"],
        d_ff=hf["encoder_ffn_dim"],
        activation=act,  # type: ignore[arg-type]
        norm_eps=1e-5,
        dropout=hf.get("dropout", 0.0),
        attn_dropout=hf.get("attention_dropout", 0.0),
        ff_dropout=hf.get("activation_dropout", 0.0),
        init_std=hf.get("init_std", 0.02),
        n_encoder_layers=hf["encoder_layers"],
        n_decoder_layers=hf["decoder_layers"],
        vocab_size=hf["vocab_size"],
        max_len=hf.get("max_target_positions", 448),
        n_mels=hf["num_mel_bins"],
        max_frames=2 * hf.get("max_source_positions", 1500),
        pad_token_id=pad_id(hf),
        tie_embeddings=tied(hf, weights, TOKENS, PROJ_OUT),
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.WhisperConfig` -> a ``WhisperConfig`` dict
    (``WhisperForConditionalGeneration``).

    Raises:
        HFConversionError: what Whisper lacks (other strides, post-norm, RMSNorm, an
            untied output, an output bias, ...), all listed.
    """
    issues = to_hf_issues(cfg, "Whisper", WhisperConfig)
    assert isinstance(cfg, WhisperConfig)
    common_to_hf(
        cfg, issues, norm="layer", norm_eps=1e-5, norm_placement="pre", bias=True,
        n_kv_heads=None, head_dim=None, attn_scale=None, embed_norm=False, output_scale=1.0,
        output_bias=False, scale_embeddings=False, conv_strides=STRIDES, tie_embeddings=True,
        ctc_head=False,
    )  # fmt: skip
    act = activation_to_hf(cfg, issues, ("gelu", "gelu_tanh", "relu", "silu"))
    issues.raise_if_any()
    return {
        "model_type": "whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "d_model": cfg.d_model,
        "encoder_layers": cfg.n_encoder_layers,
        "decoder_layers": cfg.n_decoder_layers,
        "encoder_attention_heads": cfg.n_heads,
        "decoder_attention_heads": cfg.n_heads,
        "encoder_ffn_dim": cfg.d_ff,
        "decoder_ffn_dim": cfg.d_ff,
        "activation_function": act,
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "activation_dropout": cfg.ff_dropout,
        "init_std": cfg.init_std,
        "vocab_size": cfg.vocab_size,
        "num_mel_bins": cfg.n_mels,
        "max_source_positions": cfg.max_source_len,
        "max_target_positions": cfg.max_len,
        "scale_embedding": False,
        "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
    }


FAMILY = HFFamily(
    name="whisper",
    model_types=("whisper",),
    config_family="whisper",
    prefix="model.",
    heads=(PROJ_OUT,),
    base_architectures=("WhisperModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
)
