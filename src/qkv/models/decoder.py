"""The decoder stack: ``N`` causal :class:`~qkv.models.blocks.DecoderLayer` s, with or
without cross-attention, and incremental decoding through per-layer KV caches."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from qkv.attn.functional import MaskLike
from qkv.models._decode import LayerCache, cache_length, decode_inputs
from qkv.models.stack import LayerStack


class Decoder(LayerStack):
    """A stack of causal decoder layers with an optional final norm and position bias.

    Causal masking is aligned to the end of the keys, so with a cache the new tokens see
    every cached token. A position bias is computed for the new queries against all keys
    (``offset = cached``), which is what a full forward pass would give them.

    Args:
        layers: the layers, applied in order; held as ``nn.ModuleList`` ``layers``.
        norm: final norm (for pre-norm stacks), or None.
        pos_bias: ``pos_bias(s_q, s_k, device=...) -> (1, h, s_q, s_k)`` added to every
            self-attention's scores (:class:`qkv.pos.ALiBi`, :class:`qkv.pos.RelativeBias`).

    Raises:
        ValueError: an empty ``layers``.
    """

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        padding_mask: Tensor | None = None,
        src_padding_mask: Tensor | None = None,
        mask: MaskLike = None,
        positions: Tensor | None = None,
        cache: Sequence[LayerCache] | None = None,
    ) -> Tensor:
        """Decode.

        Args:
            x: ``(b, s, d)`` embedded inputs (only the new tokens when using ``cache``).
            memory: ``(b, s_m, d)`` encoder output, for layers with cross-attention.
            padding_mask: ``(b, s_k)`` bool, True = real token, ``s_k = cached + s``.
            src_padding_mask: ``(b, s_m)`` bool, True = real memory token.
            mask: extra self-attention mask broadcastable to ``(b, h, s, s_k)``.
            positions: ``(s,)`` or ``(b, s)`` positions for rotary embeddings; default
                ``cached + arange(s)``.
            cache: one entry per layer (see :data:`LayerCache`); updated in place.

        Returns:
            ``(b, s, d)``.

        Raises:
            ValueError: a cache with the wrong number of layers.
        """
        positions, bias = decode_inputs(x, cache, len(self.layers), positions, self.pos_bias)
        for i, layer in enumerate(self.layers):
            entry = None if cache is None else cache[i]
            self_cache, cross_cache = entry if isinstance(entry, tuple) else (entry, None)
            x = layer(
                x,
                memory,
                mask=mask,
                padding_mask=padding_mask,
                src_padding_mask=src_padding_mask,
                attn_bias=bias,
                positions=positions,
                cache=self_cache,
                cross_cache=cross_cache,
            )
        return x if self.norm is None else self.norm(x)  # (b, s, d)


# LayerCache and cache_length live in qkv.models._decode; importable from here as before
__all__ = ["Decoder", "LayerCache", "cache_length"]
