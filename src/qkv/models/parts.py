"""Builders that wire the small modules of a stack from a config.

Models call these; nothing here holds state. Every attention module gets its own
:class:`qkv.pos.RoPE` (it has no parameters) when ``pos="rope"``; score biases
(``alibi``, ``relative``) live once per stack (:class:`~qkv.models.encoder.Encoder`,
:class:`~qkv.models.decoder.Decoder`); absolute encodings (``sinusoidal``, ``learned``) live in
the model's :class:`~qkv.models.embeddings.Embeddings`.
"""

from __future__ import annotations

import math

from torch import nn

from qkv.attn.favor import FavorAttention
from qkv.attn.linformer import LinformerAttention
from qkv.attn.lsh import LSHSelfAttention
from qkv.attn.mha import MultiHeadAttention
from qkv.layers.chunking import ChunkedFeedForward
from qkv.layers.feedforward import FeedForward
from qkv.layers.norms import make_norm
from qkv.models.blocks import DecoderLayer, EncoderLayer
from qkv.models.config import TransformerConfig
from qkv.models.decoder import Decoder
from qkv.models.embeddings import Embeddings
from qkv.models.encoder import Encoder
from qkv.models.reversible import ReversibleDecoder, ReversibleEncoder, ReversibleLayer
from qkv.models.transformer_xl import XLDecoder, XLDecoderLayer
from qkv.pos import ALiBi, Learned, RelativeBias, RoPE, Sinusoidal, XLRelativeScore


def norm_for(cfg: TransformerConfig) -> nn.Module:
    """A norm of kind ``cfg.norm`` over ``d_model`` with ``cfg.norm_eps``."""
    return make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)


def attention_for(cfg: TransformerConfig, *, cross: bool = False) -> nn.Module:
    """Self-attention of kind ``cfg.attn`` (:mod:`qkv.models.efficient`) (rotary when ``pos="rope"``, with
    Transformer-XL's relative score when ``pos="xl"``), or cross-attention (always
    softmax, never rotary)."""
    rope = (
        RoPE(cfg.resolved_head_dim, base=cfg.rope_base) if cfg.pos == "rope" and not cross else None
    )
    kw = {
        "n_kv_heads": cfg.n_kv_heads,
        "bias": cfg.bias,
        "dropout": cfg.attn_dropout,
        "backend": cfg.attn_backend,
        "head_dim": cfg.head_dim,
        "scale": cfg.attn_scale,
        "rope": rope,
    }
    attn = None if cross else getattr(cfg, "attn", None)  # EfficientConfig's
    kind = "softmax" if attn is None else attn.kind
    if cfg.pos == "xl" and not cross:
        kw["score"] = XLRelativeScore(cfg.d_model, cfg.n_heads, cfg.resolved_head_dim)
        kw["scale"] = cfg.attn_scale or 1.0 / math.sqrt(
            cfg.resolved_head_dim
        )  # a score module's is 1
    if kind == "lsh":
        return LSHSelfAttention(
            cfg.d_model,
            cfg.n_heads,
            head_dim=cfg.head_dim,
            bucket_size=attn.bucket_size,
            n_hashes=attn.n_hashes,
            n_buckets=attn.n_buckets,
            bias=cfg.bias,
            dropout=cfg.attn_dropout,
            seed=attn.seed,
        )
    if kind == "favor":
        return FavorAttention(cfg.d_model, cfg.n_heads, n_features=attn.features, **kw)
    if kind == "linformer":
        max_len = cfg.max_len  # type: ignore[attr-defined]
        return LinformerAttention(cfg.d_model, cfg.n_heads, max_len=max_len, k=attn.k, **kw)
    return MultiHeadAttention(cfg.d_model, cfg.n_heads, **kw)  # type: ignore[arg-type]


def feedforward_for(cfg: TransformerConfig) -> FeedForward:
    """The position-wise feed-forward network of ``cfg`` (chunked when ``ff_chunk_size``)."""
    args = (cfg.d_model, cfg.d_ff, cfg.activation, cfg.ff_dropout, cfg.bias)
    chunk = getattr(cfg, "ff_chunk_size", 0)  # EfficientConfig's
    if chunk:
        return ChunkedFeedForward(*args, chunk_size=chunk)
    return FeedForward(*args)


def reversible_layers(cfg: TransformerConfig, n_layers: int, *, causal: bool) -> list[nn.Module]:
    """``n_layers`` :class:`~qkv.models.reversible.ReversibleLayer` s of ``cfg``."""
    return [
        ReversibleLayer(
            attention_for(cfg),
            feedforward_for(cfg),
            norm_for(cfg),
            norm_for(cfg),
            causal=causal,
            dropout=cfg.dropout,
        )
        for _ in range(n_layers)
    ]


def pos_bias_for(cfg: TransformerConfig, *, causal: bool) -> nn.Module | None:
    """The stack's score bias: ALiBi (one-sided when causal) or T5's relative bias
    (bidirectional buckets in encoders, one-sided in decoders); None for other kinds."""
    if cfg.pos == "alibi":
        return ALiBi(cfg.n_heads, causal=causal)
    if cfg.pos == "relative":
        return RelativeBias(
            cfg.n_heads, cfg.rel_buckets, cfg.rel_max_distance, bidirectional=not causal
        )
    return None


def abs_pos_for(cfg: TransformerConfig, max_len: int) -> nn.Module | None:
    """The absolute position encoding added to embeddings, or None."""
    if cfg.pos == "sinusoidal":
        return Sinusoidal(cfg.d_model, max_len=max_len)
    if cfg.pos == "learned":
        return Learned(max_len, cfg.d_model)
    return None


def encoder_for(cfg: TransformerConfig, n_layers: int) -> Encoder:
    """``n_layers`` encoder layers (reversible ones when ``cfg.reversible``); a final
    norm for pre-norm stacks."""
    if getattr(cfg, "reversible", False):  # EfficientConfig's
        rev = reversible_layers(cfg, n_layers, causal=False)
        return ReversibleEncoder(rev, norm=norm_for(cfg), pos_bias=pos_bias_for(cfg, causal=False))
    layers = [
        EncoderLayer(
            attention_for(cfg),
            feedforward_for(cfg),
            norm_for(cfg),
            norm_for(cfg),
            placement=cfg.norm_placement,
            dropout=cfg.dropout,
        )
        for _ in range(n_layers)
    ]
    final = norm_for(cfg) if cfg.norm_placement == "pre" else None
    return Encoder(layers, norm=final, pos_bias=pos_bias_for(cfg, causal=False))


def decoder_for(cfg: TransformerConfig, n_layers: int, *, cross_attention: bool) -> Decoder:
    """``n_layers`` causal decoder layers, with cross-attention for encoder-decoders
    (reversible layers, without cross-attention, when ``cfg.reversible``)."""
    if getattr(cfg, "reversible", False) and not cross_attention:
        rev = reversible_layers(cfg, n_layers, causal=True)
        return ReversibleDecoder(rev, norm=norm_for(cfg), pos_bias=pos_bias_for(cfg, causal=True))
    xl = cfg.pos == "xl" and not cross_attention  # segment memory (Transformer-XL)
    layer_cls = XLDecoderLayer if xl else DecoderLayer
    layers = [
        layer_cls(
            attention_for(cfg),
            feedforward_for(cfg),
            norm_for(cfg),
            norm_for(cfg),
            cross_attn=attention_for(cfg, cross=True) if cross_attention else None,
            cross_attn_norm=norm_for(cfg) if cross_attention else None,
            placement=cfg.norm_placement,
            dropout=cfg.dropout,
        )
        for _ in range(n_layers)
    ]
    final = norm_for(cfg) if cfg.norm_placement == "pre" else None
    return (XLDecoder if xl else Decoder)(
        layers, norm=final, pos_bias=pos_bias_for(cfg, causal=True)
    )


def token_embedding(vocab_size: int, cfg: TransformerConfig, pad: int | None) -> nn.Embedding:
    """``nn.Embedding(vocab_size, d_model)``; the padding row gets no gradient."""
    return nn.Embedding(vocab_size, cfg.d_model, padding_idx=pad)


def embeddings_for(
    cfg: TransformerConfig,
    tok_emb: nn.Embedding,
    *,
    max_len: int,
    scale: bool,
    norm: bool,
    type_vocab_size: int = 0,
) -> Embeddings:
    """Token (+ absolute position, + token type) embeddings for ``cfg``."""
    return Embeddings(
        tok_emb,
        pos_emb=abs_pos_for(cfg, max_len),
        type_emb=nn.Embedding(type_vocab_size, cfg.d_model) if type_vocab_size else None,
        scale=math.sqrt(cfg.d_model) if scale else 1.0,
        norm=norm_for(cfg) if norm else None,
        dropout=cfg.dropout,
    )
