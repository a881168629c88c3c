"""Reversible Transformer stacks (Kitaev et al. 2020, Reformer, sec. 4): each layer is a
:class:`~qkv.layers.ReversibleBlock` with ``f`` = pre-norm attention and ``g`` = pre-norm
feed-forward::

    y1 = x1 + attn(norm1(x2))
    y2 = x2 + ff(norm2(y1))

The stack starts from ``x1 = x2 = x`` and ends with the mean of the two streams and the
final norm (``transformers``' Reformer concatenates them and normalizes ``2 d`` features
instead; the mean keeps the model's width, so the usual heads fit). Training memory for
activations does not grow with depth (:func:`~qkv.layers.reversible_stack`).

The layers keep the module names of :class:`~qkv.models.blocks.DecoderLayer`
(``self_attn``, ``self_attn_norm``, ``ff``, ``ff_norm``), so ``decoder.layers.3.self_attn``
is where tools look for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from qkv.attn.functional import MaskLike
from qkv.layers.chunking import ChunkedFeedForward
from qkv.layers.dropout import dropout
from qkv.layers.reversible import ReversibleBlock, reversible_stack
from qkv.models._decode import LayerCache, decode_inputs
from qkv.models.decoder import Decoder
from qkv.models.encoder import Encoder


class ReversibleLayer(ReversibleBlock):
    """One reversible Transformer layer (see the module docstring).

    Args:
        self_attn: the self-attention module (any of :mod:`qkv.attn`'s).
        ff: the position-wise feed-forward module (a
            :class:`~qkv.layers.ChunkedFeedForward` is recomputed chunk by chunk).
        self_attn_norm, ff_norm: the pre-norms.
        causal: causal self-attention (decoders).
        dropout: residual dropout on each function's output.
    """

    def __init__(
        self,
        self_attn: nn.Module,
        ff: nn.Module,
        self_attn_norm: nn.Module,
        ff_norm: nn.Module,
        *,
        causal: bool,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.self_attn, self.self_attn_norm = self_attn, self_attn_norm
        self.ff, self.ff_norm = ff, ff_norm
        self.causal = causal
        self.dropout = nn.Dropout(dropout)
        self.chunk = ff.chunk_size if isinstance(ff, ChunkedFeedForward) else 0

    def f(self, x: Tensor, **kwargs: Any) -> Tensor:
        """``dropout(attn(norm1(x)))``; ``kwargs`` go to the attention (masks, cache)."""
        out = self.self_attn(self.self_attn_norm(x), is_causal=self.causal, **kwargs)
        return dropout(self.dropout, out)

    def g(self, x: Tensor) -> Tensor:
        """``dropout(ff(norm2(x)))``, position-wise."""
        return dropout(self.dropout, self.ff(self.ff_norm(x)))


def _merge(y1: Tensor, y2: Tensor, norm: nn.Module | None) -> Tensor:
    x = (y1 + y2) / 2  # (b, s, d)
    return x if norm is None else norm(x)


class ReversibleEncoder(Encoder):
    """:class:`~qkv.models.encoder.Encoder` of :class:`ReversibleLayer` s (same forward)."""

    def forward(
        self,
        x: Tensor,
        *,
        padding_mask: Tensor | None = None,
        mask: MaskLike = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Encode ``(b, s, d)`` (see :meth:`Encoder.forward`)."""
        s = x.shape[1]
        bias = None if self.pos_bias is None else self.pos_bias(s, s, device=x.device)
        kw: dict[str, Any] = {"mask": mask, "padding_mask": padding_mask}
        if bias is not None:
            kw["attn_bias"] = bias
        if positions is not None:
            kw["positions"] = positions
        y1, y2 = reversible_stack(self.layers, x, x, **kw)  # type: ignore[arg-type]
        return _merge(y1, y2, self.norm)


class ReversibleDecoder(Decoder):
    """:class:`~qkv.models.decoder.Decoder` of causal :class:`ReversibleLayer` s, without
    cross-attention (same forward; with a cache, the layers run one after another)."""

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
        """Decode ``(b, s, d)`` (see :meth:`Decoder.forward`).

        Raises:
            ValueError: a ``memory`` (reversible decoders do not cross-attend) or a cache
                of the wrong length.
        """
        if memory is not None:
            raise ValueError("a reversible decoder has no cross-attention: pass no memory")
        positions, bias = decode_inputs(x, cache, len(self.layers), positions, self.pos_bias)
        kw: dict[str, Any] = {"mask": mask, "padding_mask": padding_mask}
        if bias is not None:
            kw["attn_bias"] = bias
        if positions is not None:
            kw["positions"] = positions
        if cache is None:
            y1, y2 = reversible_stack(self.layers, x, x, **kw)  # type: ignore[arg-type]
            return _merge(y1, y2, self.norm)
        y1 = y2 = x
        for layer, entry in zip(self.layers, cache):
            y1, y2 = layer(y1, y2, cache=entry, **kw)
        return _merge(y1, y2, self.norm)


__all__ = ["ReversibleDecoder", "ReversibleEncoder", "ReversibleLayer"]
