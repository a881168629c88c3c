"""BART (Lewis et al. 2020) <-> :class:`qkv.models.Seq2SeqTransformer`.

BART is the post-norm encoder-decoder with learned positions and a LayerNorm after the
embeddings (``layernorm_embedding``: ``embed_norm=True``), GELU, one embedding matrix for
source, target and output, and a ``final_logits_bias`` on the logits (``output_bias``).

Its position tables have ``max_position_embeddings + 2`` rows and are indexed at
``position + 2`` (an offset fairseq kept from its padding convention); rows 0 and 1 are never
read. The weight map drops them, so qkv's table is indexed at ``position`` as usual, and
writes zeros back in their place.

The layer names are shared with Marian (:mod:`qkv.interop.hf.marian`), which imports them.
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
    ignore_exactly,
    pad_id,
    required,
    tied,
    to_hf_issues,
)
from qkv.models import Seq2SeqConfig, TransformerConfig

# -- weight map ------------------------------------------------------------------------
#: HF ``BartEncoderLayer`` submodule -> qkv ``EncoderLayer`` submodule (weight and bias).
ENCODER_LAYER: dict[str, str] = {
    "self_attn.out_proj": "self_attn.out_proj",
    "self_attn_layer_norm": "self_attn_norm",
    "fc1": "ff.fc1",
    "fc2": "ff.fc2",
    "final_layer_norm": "ff_norm",
}
#: HF ``BartDecoderLayer`` submodule -> qkv ``DecoderLayer`` submodule (weight and bias).
DECODER_LAYER: dict[str, str] = {
    **ENCODER_LAYER,
    "encoder_attn.out_proj": "cross_attn.out_proj",
    "encoder_attn_layer_norm": "cross_attn_norm",
}
#: HF's separate query, key and value -> qkv's stacked projections (rows in this order).
ENCODER_QKV: dict[tuple[str, ...], str] = {
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"): "self_attn.qkv_proj"
}
DECODER_QKV: dict[tuple[str, ...], str] = {
    **ENCODER_QKV,
    ("encoder_attn.q_proj", "encoder_attn.k_proj", "encoder_attn.v_proj"): "cross_attn.qkv_proj",
}
EMBED_NORMS: dict[str, str] = {
    "encoder.layernorm_embedding": "src_embed.norm",
    "decoder.layernorm_embedding": "tgt_embed.norm",
}
POSITIONS: dict[str, str] = {
    "encoder.embed_positions.weight": "src_embed.pos_emb.emb.weight",
    "decoder.embed_positions.weight": "tgt_embed.pos_emb.emb.weight",
}
#: BART's position offset: table row ``position + 2`` holds ``position``.
POSITION_OFFSET = 2
SHARED = "shared.weight"
ENCODER_TOKENS = "encoder.embed_tokens.weight"
DECODER_TOKENS = "decoder.embed_tokens.weight"
LM_HEAD = "lm_head.weight"
FINAL_LOGITS_BIAS = "final_logits_bias"


def layer_rules(cfg: Seq2SeqConfig) -> list[Rule]:
    """The encoder and decoder layers (BART and Marian name them alike)."""
    rules: list[Rule] = []
    for i in range(cfg.n_encoder_layers):
        rules += modules(ENCODER_LAYER, f"encoder.layers.{i}.", f"encoder.layers.{i}.")
        rules += stacked(ENCODER_QKV, f"encoder.layers.{i}.", f"encoder.layers.{i}.")
    for i in range(cfg.n_decoder_layers):
        rules += modules(DECODER_LAYER, f"decoder.layers.{i}.", f"decoder.layers.{i}.")
        rules += stacked(DECODER_QKV, f"decoder.layers.{i}.", f"decoder.layers.{i}.")
    return rules


def token_rules(cfg: Seq2SeqConfig) -> list[Rule]:
    """Token tables, output projection and ``final_logits_bias`` (BART and Marian).

    Shared: one table (``shared``, also found as ``encoder.embed_tokens``,
    ``decoder.embed_tokens`` and a tied ``lm_head``). Not shared: ``encoder.embed_tokens`` and
    ``decoder.embed_tokens``, the output tied to the latter.
    """
    head = (LM_HEAD,) if cfg.tie_embeddings else ()
    if cfg.share_embeddings:
        rules = [
            copy(
                SHARED, "src_embed.tok_emb.weight", aliases=(ENCODER_TOKENS, DECODER_TOKENS, *head)
            )
        ]
    else:
        rules = [
            copy(ENCODER_TOKENS, "src_embed.tok_emb.weight"),
            copy(DECODER_TOKENS, "tgt_embed.tok_emb.weight", aliases=head),
        ]
    if not cfg.tie_embeddings:
        rules.append(copy(LM_HEAD, "lm_head.weight"))
    if cfg.output_bias:
        rules.append(
            Rule(
                (FINAL_LOGITS_BIAS,),
                ("lm_head.bias",),
                to_qkv=lambda ts: [ts[0].reshape(-1)],  # (1, V) -> (V,)
                to_hf=lambda ts: [ts[0][None]],
            )
        )
    else:  # written as zeros, as transformers keeps it; absent when loading
        v = cfg.target_vocab
        rules.append(
            Rule(
                (FINAL_LOGITS_BIAS,),
                (),
                to_qkv=lambda ts: [],
                to_hf=lambda ts: [torch.zeros(1, v)],
                optional=True,
            )
        )
    return rules


def _drop_offset(ts: Sequence[Tensor]) -> list[Tensor]:
    return [ts[0][POSITION_OFFSET:]]


def _add_offset(ts: Sequence[Tensor]) -> list[Tensor]:
    t = ts[0]
    return [torch.cat([t.new_zeros(POSITION_OFFSET, t.shape[1]), t])]


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a BART checkpoint (without the ``model.`` prefix) and a
    ``Seq2SeqTransformer`` of ``cfg``."""
    assert isinstance(cfg, Seq2SeqConfig)
    rules = token_rules(cfg)
    rules += [
        Rule((h,), (q,), to_qkv=_drop_offset, to_hf=_add_offset) for h, q in POSITIONS.items()
    ]
    rules += modules(EMBED_NORMS)
    return rules + layer_rules(cfg)


# -- config map ------------------------------------------------------------------------
def stack_fields(hf: Mapping[str, Any], issues: Issues) -> dict[str, Any]:
    """The ``Seq2SeqConfig`` fields BART and Marian configs share (one ``n_heads`` and
    ``d_ff`` for both stacks: different values are recorded as problems)."""
    required(hf, issues, "d_model", "encoder_layers", "decoder_layers", "vocab_size")
    required(hf, issues, "encoder_attention_heads", "encoder_ffn_dim", "max_position_embeddings")
    for enc, dec in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if hf.get(dec, hf.get(enc)) != hf.get(enc):
            issues.add(
                f"{enc}={hf.get(enc)!r} != {dec}={hf.get(dec)!r} (qkv uses one value for both)"
            )
    act = issues.activation("activation_function", hf.get("activation_function", "gelu"))
    return {
        "d_model": hf.get("d_model"),
        "n_heads": hf.get("encoder_attention_heads"),
        "d_ff": hf.get("encoder_ffn_dim"),
        "activation": act,
        "norm": "layer",
        "norm_eps": 1e-5,
        "norm_placement": "post",
        "bias": True,
        "dropout": hf.get("dropout", 0.1),
        "attn_dropout": hf.get("attention_dropout", 0.0),
        "ff_dropout": hf.get("activation_dropout", 0.0),
        "pos": "learned",
        "init": "normal",
        "init_std": hf.get("init_std", 0.02),
        "n_encoder_layers": hf.get("encoder_layers"),
        "n_decoder_layers": hf.get("decoder_layers"),
        "max_len": hf.get("max_position_embeddings"),
        "scale_embeddings": bool(hf.get("scale_embedding", False)),
    }


def token_fields(hf: Mapping[str, Any], weights: Mapping[str, Tensor]) -> dict[str, Any]:
    """Sharing and tying, read from the tensors as ``transformers`` 5 does: the source
    and target tables are shared when they are one tensor (or equal), and the output is tied
    to the target table unless the checkpoint holds a different ``lm_head``."""
    src = ENCODER_TOKENS if ENCODER_TOKENS in weights else SHARED
    tgt = DECODER_TOKENS if DECODER_TOKENS in weights else SHARED
    share = src == tgt or (
        src in weights and tgt in weights and torch.equal(weights[src], weights[tgt])
    )
    vocab = hf.get("vocab_size")
    tgt_vocab = weights[tgt].shape[0] if not share and tgt in weights else None
    return {
        "vocab_size": vocab,
        "tgt_vocab_size": None
        if share
        else int(tgt_vocab or hf.get("decoder_vocab_size") or vocab),
        "share_embeddings": share,
        "tie_embeddings": tied(hf, weights, tgt, LM_HEAD),
        "pad_token_id": pad_id(hf),
        "output_bias": FINAL_LOGITS_BIAS in weights,
    }


def config_from_hf(
    hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str
) -> Seq2SeqConfig:
    """``BartConfig`` -> :class:`~qkv.models.Seq2SeqConfig`.

    Raises:
        HFConversionError: values qkv cannot express (different encoder and decoder head
            counts or widths, pre-norm or static-position variants of old configs, an unknown
            activation), all listed.
    """
    issues = Issues(what)
    fields = stack_fields(hf, issues)
    for key, ok in (
        ("normalize_before", False),
        ("add_final_layer_norm", False),
        ("static_position_embeddings", False),
        ("add_bias_logits", False),
        ("normalize_embedding", True),
    ):
        issues.expect(hf, key, (ok,), ok)
    issues.raise_if_any()
    return Seq2SeqConfig(**fields, **token_fields(hf, weights), embed_norm=True)


def check_to_hf(cfg: TransformerConfig, family: str, *, embed_norm: bool) -> Issues:
    """The problems of writing ``cfg`` as BART or Marian (shared by both)."""
    issues = to_hf_issues(cfg, family, Seq2SeqConfig)
    common_to_hf(
        cfg,
        issues,
        norm="layer",
        norm_eps=1e-5,
        norm_placement="post",
        bias=True,
        pos="learned",
        n_kv_heads=None,
        head_dim=None,
        attn_scale=None,
        embed_norm=embed_norm,
        output_scale=1.0,
    )
    if not cfg.tie_embeddings:  # type: ignore[attr-defined]
        issues.add(f"tie_embeddings=False ({family} ties its output to the target embedding)")
    return issues


def stack_to_hf(cfg: Seq2SeqConfig, issues: Issues) -> dict[str, Any]:
    """The ``config.json`` entries BART and Marian share."""
    return {
        "d_model": cfg.d_model,
        "encoder_layers": cfg.n_encoder_layers,
        "decoder_layers": cfg.n_decoder_layers,
        "encoder_attention_heads": cfg.n_heads,
        "decoder_attention_heads": cfg.n_heads,
        "encoder_ffn_dim": cfg.d_ff,
        "decoder_ffn_dim": cfg.d_ff,
        "activation_function": activation_to_hf(cfg, issues, ("gelu", "gelu_tanh", "relu", "silu")),
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "activation_dropout": cfg.ff_dropout,
        "init_std": cfg.init_std,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_len,
        "scale_embedding": cfg.scale_embeddings,
        "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
    }


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.Seq2SeqConfig` -> ``BartConfig`` dict
    (``BartForConditionalGeneration``).

    Raises:
        HFConversionError: features BART lacks (pre-norm, RoPE, separate source and target
            tables, an untied output, ...), all listed.
    """
    issues = check_to_hf(cfg, "BART", embed_norm=True)
    assert isinstance(cfg, Seq2SeqConfig)
    if not cfg.share_embeddings:
        issues.add("share_embeddings=False (BART shares one table)")
    out = stack_to_hf(cfg, issues)
    issues.raise_if_any()
    return {"model_type": "bart", "architectures": ["BartForConditionalGeneration"], **out}


#: Known tensors deliberately left unread: fairseq's version markers and the unused
#: ``shared`` table that transformers 5 saves beside separate source and target tables.
IGNORED: tuple[str, ...] = ("encoder.version", "decoder.version", SHARED)


FAMILY = HFFamily(
    name="bart",
    model_types=("bart",),
    config_family="seq2seq",
    prefix="model.",
    heads=("lm_head.", FINAL_LOGITS_BIAS),
    base_architectures=("BartModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=ignore_exactly(IGNORED),
)
