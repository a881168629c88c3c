"""What every decoder stack works out before its layers run: the per-layer cache, the new
tokens' positions and their position bias (:class:`~qkv.models.decoder.Decoder` and its
reversible and Transformer-XL variants share it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

import torch
from torch import Tensor

from qkv.attn.kv_cache import CrossKVCache, KVCache

#: One layer's cache: a self-attention cache, or (self, cross) for encoder-decoders.
LayerCache: TypeAlias = KVCache | tuple[KVCache, CrossKVCache]


def cache_length(cache: Sequence[LayerCache] | None) -> int:
    """Tokens already held by a decoder cache (0 for None)."""
    if not cache:
        return 0
    first = cache[0]
    return (first[0] if isinstance(first, tuple) else first).length


def decode_inputs(
    x: Tensor,
    cache: Sequence[LayerCache] | None,
    n_layers: int,
    positions: Tensor | None,
    pos_bias: Callable[..., Tensor] | None,
) -> tuple[Tensor | None, Tensor | None]:
    """The positions and the position bias of the new tokens ``x`` ``(b, s, d)``: after
    ``cached`` tokens they sit at ``cached + arange(s)`` and their queries meet all
    ``cached + s`` keys, which is what a full forward pass would give them.

    Args:
        x: ``(b, s, d)`` the new tokens' embeddings.
        cache: one entry per layer, or None.
        n_layers: the stack's layers (the cache must have as many entries).
        positions: the caller's positions; None = ``cached + arange(s)`` with a cache.
        pos_bias: ``pos_bias(s_q, s_k, device=...) -> (1, h, s_q, s_k)``, or None.

    Returns:
        ``(positions, bias)``: ``(s,)`` positions (or the given ones, or None without a
        cache) and the ``(1, h, s, cached + s)`` bias (None without ``pos_bias``).

    Raises:
        ValueError: a cache with the wrong number of layers.
    """
    if cache is not None and len(cache) != n_layers:
        raise ValueError(f"cache has {len(cache)} entries but the decoder has {n_layers} layers")
    s = x.shape[1]
    past = cache_length(cache)
    if positions is None and past:
        positions = torch.arange(past, past + s, device=x.device)  # (s,)
    bias = None
    if pos_bias is not None:
        bias = pos_bias(s, past + s, device=x.device)  # (1, h, s, past + s)
    return positions, bias


__all__ = ["LayerCache", "cache_length", "decode_inputs"]
