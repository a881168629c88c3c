"""A decoder-only language model (GPT-2; Radford et al. 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from qkv import masks
from qkv.attn.kv_cache import KVCache
from qkv.layers.head import OutputHead
from qkv.models._lean import DecodeStep, LeanDecoder, hooks_active
from qkv.models.base import GenerativeModel
from qkv.models.decoder import cache_length
from qkv.models.init import init_weights
from qkv.models.lm.config import LMConfig
from qkv.models.parts import decoder_for, embeddings_for, token_embedding
from qkv.models.transformer_xl import SegmentMemory


def positions_from_mask(padding_mask: Tensor, s: int) -> Tensor:
    """Positions of the last ``s`` tokens counting only real tokens: ``cumsum(mask) - 1``.

    With left padding, the first real token gets position 0 whatever the padding, so a
    padded batch sees the positions each sequence would see alone. Padding gets 0.

    Args:
        padding_mask: ``(b, s_total)`` bool, True = real token.
        s: number of new tokens (the last ``s`` columns).

    Returns:
        ``(b, s)`` long.
    """
    pos = padding_mask.long().cumsum(-1) - 1  # (b, s_total)
    return pos[:, -s:].clamp(min=0)  # (b, s)


class DecoderLM(GenerativeModel):
    """GPT-style language model: ``logits = W_out decoder(E(x))``.

    Pre-norm with a final norm, learned (or sinusoidal, RoPE, ALiBi, relative) positions,
    output projection tied to the token embedding (all set by the config; defaults GPT-2).
    With ``pos="xl"`` and ``mem_len`` it is Transformer-XL: a segment attends to the
    :class:`~qkv.models.transformer_xl.SegmentMemory` of the previous ones
    (``segment_memory=``; see :mod:`qkv.models.transformer_xl`).

    Modules: ``embed`` (:class:`~qkv.models.embeddings.Embeddings`), ``decoder`` (a
    :class:`~qkv.models.decoder.Decoder` without cross-attention), ``lm_head``.

    Args:
        config: an :class:`~qkv.models.config.LMConfig`.
    """

    config: LMConfig

    def __init__(self, config: LMConfig) -> None:
        if not isinstance(config, LMConfig):
            raise TypeError(f"DecoderLM needs an LMConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        tok = token_embedding(cfg.vocab_size, cfg, cfg.pad_token_id)
        self.embed = embeddings_for(
            cfg, tok, max_len=cfg.max_len, scale=cfg.scale_embeddings, norm=cfg.embed_norm
        )
        self.decoder = decoder_for(cfg, cfg.n_layers, cross_attention=False)
        #: the local-attention mask of ``sliding_window`` (ANDed with causality), or None
        self.window_mask = (
            masks.sliding_window(cfg.sliding_window, causal=True) if cfg.sliding_window else None
        )
        self.lm_head = OutputHead(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = tok.weight
        init_weights(self, cfg.init, std=cfg.init_std, n_layers=cfg.n_layers)
        self._prune_from_config()

    def forward(
        self,
        input_ids: Tensor,
        *,
        padding_mask: Tensor | None = None,
        positions: Tensor | None = None,
        cache: list[KVCache] | None = None,
        segment_memory: SegmentMemory | None = None,
    ) -> Tensor:
        """Next-token logits.

        Args:
            input_ids: ``(b, s)`` long; with ``cache``, only the new tokens.
            padding_mask: ``(b, s_total)`` bool, True = real token, ``s_total`` = cached +
                new tokens; padded keys are never attended.
            positions: ``(s,)`` or ``(b, s)`` absolute positions. Default: from
                ``padding_mask`` when given (:func:`positions_from_mask`, so left padding
                is harmless), else ``cached + arange(s)``. ALiBi and relative biases use
                token distances and need no positions.
            cache: from :meth:`make_cache`; updated in place.
            segment_memory: Transformer-XL memory from :meth:`make_memory`: the tokens
                attend to it (``padding_mask`` then covers the ``s`` new tokens only), and
                it is updated in place. Without one, an input longer than
                ``config.segment_len`` runs segment by segment through a fresh memory.

        Returns:
            logits ``(b, s, vocab)``.
        """
        s = input_ids.shape[1]
        seg = self.config.segment_len
        if segment_memory is None and seg and s > seg and cache is None:
            memory = self.make_memory()
            parts = [
                self(
                    input_ids[:, i : i + seg],
                    padding_mask=None if padding_mask is None else padding_mask[:, i : i + seg],
                    segment_memory=memory,
                )
                for i in range(0, s, seg)
            ]
            return torch.cat(parts, dim=1)  # (b, s, vocab)
        if segment_memory is not None:
            x = self.embed(input_ids)  # (b, s, d); positions are relative
            x = self.decoder(x, padding_mask=padding_mask, segment_memory=segment_memory)
            return self.lm_head(x)  # (b, s, vocab)
        if positions is None:
            if padding_mask is not None:
                positions = positions_from_mask(padding_mask, s)  # (b, s)
            else:
                past = cache_length(cache)  # type: ignore[arg-type]
                positions = torch.arange(past, past + s, device=input_ids.device)  # (s,)
        x = self.embed(input_ids, positions=positions)  # (b, s, d)
        x = self.decoder(
            x,
            padding_mask=padding_mask,
            mask=self.window_mask,
            positions=positions,
            cache=cache,  # type: ignore[arg-type]
        )
        return self.lm_head(x)  # (b, s, vocab)

    def make_decode_step(
        self, cache: list[KVCache], *, padding_mask: Tensor | None = None
    ) -> DecodeStep | None:
        """The lean one-token step over ``cache`` after the prefill (see
        :mod:`qkv.models._lean`), bit-identical to ``self(token, cache=cache, ...)``; None
        where it does not apply (a sliding window, Transformer-XL segments, rotary or
        biased attention, hooks, training mode, a subclass that overrides ``forward``):
        call the model then.

        Args:
            cache: from :meth:`make_cache`, filled by the prefill.
            padding_mask: ``(b, s_cached)`` bool over the cached tokens, or None (unpadded).
        """
        cfg = self.config
        if self.training or self.window_mask is not None or cfg.mem_len or cfg.segment_len:
            return None
        if type(self).forward is not DecoderLM.forward or hooks_active(self):
            return None
        lean = LeanDecoder.build(self.decoder, cache, padding_mask=padding_mask)
        return None if lean is None else DecodeStep(self.embed.forward, lean, self.lm_head.forward)

    def make_memory(self) -> SegmentMemory:
        """An empty Transformer-XL memory of ``config.mem_len`` states per layer.

        Raises:
            ValueError: a model without memory (``mem_len=0``).
        """
        if not self.config.mem_len:
            raise ValueError("make_memory needs a model with pos='xl' and mem_len > 0")
        return SegmentMemory(self.config.n_layers, self.config.mem_len)

    def make_cache(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> list[KVCache]:
        """One preallocated self-attention cache per layer.

        Args:
            batch: batch size.
            max_len: most tokens (prompt + generated) the cache will hold.
            dtype: default the autocast dtype under autocast, else the parameters' dtype.
            device: default the parameters' device.
        """
        attns = [layer.self_attn for layer in self.decoder.layers]
        return self._kv_caches(attns, batch, max_len, dtype, device)
