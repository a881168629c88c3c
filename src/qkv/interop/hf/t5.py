"""T5 (Raffel et al. 2020), T5 v1.1 and Flan-T5 <-> :class:`qkv.models.Seq2SeqTransformer`.

T5 is a pre-norm encoder-decoder with RMSNorm (no mean, no bias), no biases anywhere,
unscaled dot-product attention (``attn_scale=1.0``: the ``1/sqrt(d_h)`` is folded into the
initialization), no absolute positions but a learned, bucketed relative bias computed in
the first layer of each stack and shared by all its layers (``pos="relative"``; qkv's
:class:`~qkv.pos.RelativeBias` sits once per stack, as ``encoder.pos_bias`` and
``decoder.pos_bias``), and a ReLU (T5) or gated-GELU (v1.1, Flan: ``"geglu_tanh"``, the tanh
GELU of ``gelu_new``) feed-forward.

The original T5 ties the output projection to the embeddings and scales the decoder output
by ``d_model ** -0.5`` first (``output_scale``); v1.1 has a separate ``lm_head`` and no scale.
``transformers`` 5 records the scale as ``scale_decoder_outputs``; older configs imply it by
``tie_word_embeddings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from qkv.interop._convert import Rule, copy, modules, stacked
from qkv.interop.hf._common import (
    HFFamily,
    Issues,
    common_to_hf,
    ignore_exactly,
    pad_id,
    required,
    tied,
    to_hf_issues,
)
from qkv.models import Seq2SeqConfig, TransformerConfig

# -- weight map ------------------------------------------------------------------------
#: HF encoder ``T5Block`` submodule -> qkv ``EncoderLayer`` submodule (weights only; T5 has
#: no biases). ``layer.0`` is the self-attention sublayer, ``layer.1`` the feed-forward.
ENCODER_BLOCK: dict[str, str] = {
    "layer.0.SelfAttention.o": "self_attn.out_proj",
    "layer.0.layer_norm": "self_attn_norm",
    "layer.1.layer_norm": "ff_norm",
}
#: HF decoder ``T5Block`` submodule -> qkv ``DecoderLayer`` submodule: ``layer.0``
#: self-attention, ``layer.1`` cross-attention, ``layer.2`` feed-forward.
DECODER_BLOCK: dict[str, str] = {
    "layer.0.SelfAttention.o": "self_attn.out_proj",
    "layer.0.layer_norm": "self_attn_norm",
    "layer.1.EncDecAttention.o": "cross_attn.out_proj",
    "layer.1.layer_norm": "cross_attn_norm",
    "layer.2.layer_norm": "ff_norm",
}
#: HF's separate query, key and value -> qkv's stacked projections (rows in this order).
ENCODER_QKV: dict[tuple[str, ...], str] = {
    tuple(f"layer.0.SelfAttention.{x}" for x in "qkv"): "self_attn.qkv_proj"
}
DECODER_QKV: dict[tuple[str, ...], str] = {
    **ENCODER_QKV,
    tuple(f"layer.1.EncDecAttention.{x}" for x in "qkv"): "cross_attn.qkv_proj",
}
#: The feed-forward sublayer's index in each stack's blocks.
FF_SUBLAYER: dict[str, int] = {"encoder": 1, "decoder": 2}
#: ``T5DenseActDense`` -> qkv ``FeedForward``.
FF_PLAIN: dict[str, str] = {"DenseReluDense.wi": "ff.fc1", "DenseReluDense.wo": "ff.fc2"}
#: ``T5DenseGatedActDense`` (``act(wi_0 x) * wi_1 x``) -> qkv gated ``FeedForward``
#: (``act(fc_gate x) * fc1 x``).
FF_GATED: dict[str, str] = {
    "DenseReluDense.wi_0": "ff.fc_gate",
    "DenseReluDense.wi_1": "ff.fc1",
    "DenseReluDense.wo": "ff.fc2",
}
#: The relative bias lives in block 0 of each stack; qkv holds it once per stack.
RELATIVE_BIAS: dict[str, str] = {
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias": "encoder.pos_bias.relative_attention_bias",
    "decoder.block.0.layer.0.SelfAttention.relative_attention_bias": "decoder.pos_bias.relative_attention_bias",
}
FINAL_NORMS: dict[str, str] = {
    "encoder.final_layer_norm": "encoder.norm",
    "decoder.final_layer_norm": "decoder.norm",
}
SHARED = "shared.weight"
LM_HEAD = "lm_head.weight"
#: Known tensors deliberately left unread: a cross-attention relative bias that the original
#: checkpoints carry and that T5 never uses (``transformers`` ignores it too).
IGNORED: tuple[str, ...] = (
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
)
TOKEN_ALIASES: tuple[str, ...] = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
#: HF ``dense_act_fn`` of a gated feed-forward -> qkv activation.
GATED: dict[str, str] = {
    "gelu_new": "geglu_tanh",
    "gelu_pytorch_tanh": "geglu_tanh",
    "gelu": "geglu",
    "silu": "swiglu",
    "swish": "swiglu",
}
#: HF ``dense_act_fn`` of a plain feed-forward -> qkv activation.
PLAIN: dict[str, str] = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
}


def _blocks(
    stack: str,
    n: int,
    block: dict[str, str],
    qkv: dict[tuple[str, ...], str],
    cfg: Seq2SeqConfig,
) -> list[Rule]:
    ff = FF_GATED if cfg.activation in ("geglu_tanh", "geglu", "swiglu") else FF_PLAIN
    k = FF_SUBLAYER[stack]
    pairs = block | {f"layer.{k}.{h}": q for h, q in ff.items()}
    rules: list[Rule] = []
    for i in range(n):
        hf, qk = f"{stack}.block.{i}.", f"{stack}.layers.{i}."
        rules += modules(pairs, hf, qk, suffixes=("weight",))
        rules += stacked(qkv, hf, qk, suffixes=("weight",))
    return rules


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a T5 checkpoint and a ``Seq2SeqTransformer`` of ``cfg``."""
    assert isinstance(cfg, Seq2SeqConfig)
    head = (LM_HEAD,) if cfg.tie_embeddings else ()
    rules = [copy(SHARED, "src_embed.tok_emb.weight", aliases=(*TOKEN_ALIASES, *head))]
    rules += _blocks("encoder", cfg.n_encoder_layers, ENCODER_BLOCK, ENCODER_QKV, cfg)
    rules += _blocks("decoder", cfg.n_decoder_layers, DECODER_BLOCK, DECODER_QKV, cfg)
    rules += modules(RELATIVE_BIAS, suffixes=("weight",))
    rules += modules(FINAL_NORMS, suffixes=("weight",))
    if not cfg.tie_embeddings:
        rules.append(copy(LM_HEAD, "lm_head.weight"))
    return rules


# -- config map ------------------------------------------------------------------------
def _activation(hf: Mapping[str, Any], issues: Issues) -> str:
    proj = str(hf.get("feed_forward_proj", "relu"))
    gated = proj.startswith("gated-")
    act = proj.split("-")[-1]
    if proj == "gated-gelu":  # transformers' backward-compatible reading
        act = "gelu_new"
    table = GATED if gated else PLAIN
    if act not in table:
        issues.add(
            f"feed_forward_proj={proj!r} (qkv supports {sorted(table)} {'gated' if gated else 'plain'})"
        )
        return "relu"
    return table[act]


def config_from_hf(
    hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str
) -> Seq2SeqConfig:
    """``T5Config`` -> :class:`~qkv.models.Seq2SeqConfig`.

    ``max_len`` (no table depends on it) is set to ``n_positions`` or 512.

    Raises:
        HFConversionError: values qkv cannot express (an unknown feed-forward), all listed.
    """
    issues = Issues(what)
    required(hf, issues, "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "vocab_size")
    act = _activation(hf, issues)
    issues.raise_if_any()
    d = hf["d_model"]
    if "scale_decoder_outputs" in hf:
        scale = bool(hf["scale_decoder_outputs"])
    else:
        scale = hf.get("tie_word_embeddings", True) is not False
    rate = hf.get("dropout_rate", 0.1)
    vocab = hf["vocab_size"]
    return Seq2SeqConfig(
        d_model=d,
        n_heads=hf["num_heads"],
        head_dim=hf["d_kv"],
        d_ff=hf["d_ff"],
        activation=act,  # type: ignore[arg-type]
        norm="rms",
        norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        norm_placement="pre",
        bias=False,
        dropout=rate,
        attn_dropout=rate,
        ff_dropout=rate,
        pos="relative",
        rel_buckets=hf.get("relative_attention_num_buckets", 32),
        rel_max_distance=hf.get("relative_attention_max_distance", 128),
        attn_scale=1.0,
        init="normal",
        init_std=hf.get("initializer_factor", 1.0) * d**-0.5,
        vocab_size=vocab,
        n_encoder_layers=hf["num_layers"],
        n_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        max_len=hf.get("n_positions", 512),
        pad_token_id=pad_id(hf, 0),
        share_embeddings=True,
        tie_embeddings=tied({}, weights, SHARED, LM_HEAD),
        scale_embeddings=False,
        embed_norm=False,
        output_scale=d**-0.5 if scale else 1.0,
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.Seq2SeqConfig` -> ``T5Config`` dict
    (``T5ForConditionalGeneration``).

    Raises:
        HFConversionError: features T5 lacks (LayerNorm, biases, absolute positions, a scale
            other than none or ``d_model ** -0.5``, ...), all listed.
    """
    issues = to_hf_issues(cfg, "T5", Seq2SeqConfig)
    assert isinstance(cfg, Seq2SeqConfig)
    common_to_hf(
        cfg,
        issues,
        norm="rms",
        norm_placement="pre",
        bias=False,
        pos="relative",
        n_kv_heads=None,
        attn_scale=1.0,
        share_embeddings=True,
        scale_embeddings=False,
        embed_norm=False,
        output_bias=False,
    )
    d = cfg.d_model
    if cfg.output_scale not in (1.0, d**-0.5):
        issues.add(f"output_scale={cfg.output_scale!r} (T5 has 1.0 or d_model ** -0.5)")
    proj = {
        "relu": "relu",
        "gelu": "gelu",
        "gelu_tanh": "gelu_new",
        "silu": "silu",
        "geglu_tanh": "gated-gelu",
        "geglu": "gated-gelu",
        "swiglu": "gated-silu",
    }
    if cfg.activation == "geglu":
        issues.add("activation='geglu' (T5's gated-gelu uses the tanh GELU: 'geglu_tanh')")
    issues.raise_if_any()
    return {
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "d_model": d,
        "d_kv": cfg.resolved_head_dim,
        "d_ff": cfg.d_ff,
        "num_heads": cfg.n_heads,
        "num_layers": cfg.n_encoder_layers,
        "num_decoder_layers": cfg.n_decoder_layers,
        "feed_forward_proj": proj[cfg.activation],
        "layer_norm_epsilon": cfg.norm_eps,
        "relative_attention_num_buckets": cfg.rel_buckets,
        "relative_attention_max_distance": cfg.rel_max_distance,
        "dropout_rate": cfg.dropout,
        "vocab_size": cfg.vocab_size,
        "pad_token_id": cfg.pad_token_id,
        "decoder_start_token_id": cfg.pad_token_id,
        "tie_word_embeddings": cfg.tie_embeddings,
        "scale_decoder_outputs": cfg.output_scale != 1.0,
        "is_encoder_decoder": True,
    }


FAMILY = HFFamily(
    name="t5",
    model_types=("t5",),
    config_family="seq2seq",
    prefix="",
    heads=("lm_head.",),
    base_architectures=("T5Model",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=ignore_exactly(IGNORED),
)
