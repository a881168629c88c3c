"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from qkv.attn.kv_cache import CrossKVCache, KVCache
from qkv.layers.head import OutputHead
from qkv.models._lean import DecodeStep, LeanDecoder, hooks_active
from qkv.models.base import GenerativeModel
from qkv.models.config import TransformerConfig
from qkv.models.decoder import Decoder, cache_length
from qkv.models.init import init_weights
from qkv.models.parts import decoder_for, embeddings_for, encoder_for, token_embedding
from qkv.models.seq2seq.config import Seq2SeqConfig


class CrossDecoding:
    """Decoding against an encoder's memory, shared by the encoder-decoders
    (:class:`Seq2SeqTransformer`, :class:`~qkv.models.captioner.Captioner`): the class
    supplies ``tgt_embed``, ``decoder`` (with ``cross_attn`` in each layer), ``lm_head`` and
    ``config`` (``output_scale`` read when present)."""

    tgt_embed: nn.Module
    decoder: Decoder
    lm_head: OutputHead
    config: TransformerConfig
    _kv_caches: Any

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        *,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
        cache: list[tuple[KVCache, CrossKVCache]] | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Decode target tokens against an encoded source.

        Args:
            tgt: ``(b, s)`` long target ids; with ``cache``, only the new tokens.
            memory: ``(b, s_src, d)`` from :meth:`encode`.
            src_padding_mask: ``(b, s_src)`` bool, True = real source token.
            tgt_padding_mask: ``(b, s_total)`` bool, True = real token, over cached + new tokens.
            cache: from :meth:`make_cache`; self-attention caches grow, cross-attention
                keys/values are projected on the first call and reused.
            positions: ``(s,)`` or ``(b, s)`` positions; default ``cached + arange(s)``.

        Returns:
            logits ``(b, s, tgt_vocab)``.
        """
        if positions is None:
            past = cache_length(cache)  # type: ignore[arg-type]
            positions = torch.arange(past, past + tgt.shape[1], device=tgt.device)  # (s,)
        y = self.tgt_embed(tgt, positions=positions)  # (b, s, d)
        y = self.decoder(
            y,
            memory,
            padding_mask=tgt_padding_mask,
            src_padding_mask=src_padding_mask,
            positions=positions,
            cache=cache,  # type: ignore[arg-type]
        )
        scale = getattr(self.config, "output_scale", 1.0)
        if scale != 1.0:
            y = y * scale
        return self.lm_head(y)  # (b, s, tgt_vocab)

    def make_decode_step(
        self, cache: list[tuple[KVCache, CrossKVCache]], *, src_padding_mask: Tensor | None = None
    ) -> DecodeStep | None:
        """The lean one-token step over ``cache`` after the prefill (see
        :mod:`qkv.models._lean`), bit-identical to :meth:`decode` of one token; None where
        it does not apply (rotary or biased attention, hooks, training mode, a subclass
        that overrides :meth:`decode`): call :meth:`decode` then.

        Args:
            cache: from :meth:`make_cache`, filled by the prefill (cross keys set).
            src_padding_mask: ``(b, s_src)`` bool, True = real source token, or None.
        """
        if type(self).decode is not CrossDecoding.decode:  # a subclass decodes otherwise
            return None
        if self.training or hooks_active(self):  # type: ignore[attr-defined]
            return None
        lean = LeanDecoder.build(self.decoder, cache, src_padding_mask=src_padding_mask)
        if lean is None:
            return None
        scale = getattr(self.config, "output_scale", 1.0)
        return DecodeStep(self.tgt_embed.forward, lean, self.lm_head.forward, scale)

    def make_cache(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> list[tuple[KVCache, CrossKVCache]]:
        """Per decoder layer, a preallocated self-attention cache and a cross-attention cache.

        Args:
            batch: batch size.
            max_len: most target tokens the cache will hold.
            dtype: cache dtype; default the autocast dtype under autocast, else the
                parameters' dtype.
            device: default the parameters' device.
        """
        attns = [layer.self_attn for layer in self.decoder.layers]
        selfs = self._kv_caches(attns, batch, max_len, dtype, device)
        return [(c, CrossKVCache()) for c in selfs]


class Seq2SeqTransformer(CrossDecoding, GenerativeModel):
    """Encoder-decoder Transformer.

    ``logits = W_out (c * decoder(E_tgt(y), encoder(E_src(x)))) [+ b_out]`` with
    ``c = config.output_scale`` (1 by default) and ``b_out`` only with ``config.output_bias``.
    With the defaults (the base model): embeddings scaled by ``sqrt(d_model)``, sinusoidal
    positions, post-norm, one embedding matrix shared by source, target and output
    projection (sec. 3.4), Xavier initialization. Other position kinds, pre-norm, RMSNorm,
    ... come from the config.

    Modules: ``src_embed``, ``tgt_embed`` (:class:`~qkv.models.embeddings.Embeddings`),
    ``encoder``, ``decoder`` (with ``cross_attn`` in each layer), ``lm_head``.

    Args:
        config: a :class:`~qkv.models.config.Seq2SeqConfig`.
    """

    config: Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig) -> None:
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(
                f"Seq2SeqTransformer needs a Seq2SeqConfig, got {type(config).__name__}"
            )
        super().__init__(config)
        cfg = config
        src_tok = token_embedding(cfg.vocab_size, cfg, cfg.pad_token_id)
        tgt_tok = (
            src_tok
            if cfg.share_embeddings
            else token_embedding(cfg.target_vocab, cfg, cfg.pad_token_id)
        )
        emb = {"max_len": cfg.max_len, "scale": cfg.scale_embeddings, "norm": cfg.embed_norm}
        self.src_embed = embeddings_for(cfg, src_tok, **emb)  # type: ignore[arg-type]
        self.tgt_embed = embeddings_for(cfg, tgt_tok, **emb)  # type: ignore[arg-type]
        self.encoder = encoder_for(cfg, cfg.n_encoder_layers)
        self.decoder = decoder_for(cfg, cfg.n_decoder_layers, cross_attention=True)
        self.lm_head = OutputHead(cfg.d_model, cfg.target_vocab, bias=cfg.output_bias)
        if cfg.tie_embeddings:
            self.lm_head.weight = tgt_tok.weight
        init_weights(
            self, cfg.init, std=cfg.init_std, n_layers=cfg.n_encoder_layers + cfg.n_decoder_layers
        )
        self._prune_from_config()

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        """Encode source tokens.

        Args:
            src: ``(b, s_src)`` long token ids.
            src_padding_mask: ``(b, s_src)`` bool, True = real token, or None.

        Returns:
            memory ``(b, s_src, d)``.
        """
        return self.encoder(self.src_embed(src), padding_mask=src_padding_mask)  # (b, s_src, d)

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        *,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced logits.

        Args:
            src: ``(b, s_src)`` long source ids.
            tgt_in: ``(b, s_tgt)`` long decoder inputs (the targets shifted right).
            src_padding_mask: ``(b, s_src)`` bool, True = real token.
            tgt_padding_mask: ``(b, s_tgt)`` bool, True = real token.

        Returns:
            logits ``(b, s_tgt, tgt_vocab)``.
        """
        memory = self.encode(src, src_padding_mask)
        return self.decode(
            tgt_in, memory, src_padding_mask=src_padding_mask, tgt_padding_mask=tgt_padding_mask
        )


__all__ = ["CrossDecoding", "Seq2SeqTransformer"]
