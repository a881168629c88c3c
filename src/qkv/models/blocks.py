"""Transformer layers: self-attention (+ cross-attention) + feed-forward, pre- or post-norm.

Each sublayer ``f`` (attention or feed-forward) is wrapped as

* post-norm (Vaswani et al. 2017, sec. 5.4): ``x = norm(x + dropout(f(x)))``;
* pre-norm (GPT-2; Xiong et al. 2020): ``x = x + dropout(f(norm(x)))``.

The layers are written out rather than built from :class:`qkv.layers.Residual` so that the
attention modules sit at the module paths other code looks for (``layers.0.self_attn``,
``layers.3.cross_attn``), not under a wrapper.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from qkv.attn.functional import MaskLike
from qkv.attn.kv_cache import CrossKVCache, KVCache
from qkv.attn.mha import MultiHeadAttention
from qkv.layers.dropout import dropout
from qkv.models.config import Placement


def _check_placement(placement: str) -> None:
    if placement not in ("pre", "post"):
        raise ValueError(f"placement must be one of ('pre', 'post'), got {placement!r}")


def _sublayer(
    x: Tensor, norm: nn.Module, f: Callable[[Tensor], Tensor], placement: str, drop: nn.Dropout
) -> Tensor:
    """``norm(x + drop(f(x)))`` (post-norm) or ``x + drop(f(norm(x)))`` (pre-norm)."""
    if placement == "pre":
        return x + dropout(drop, f(norm(x)))  # (b, s, d)
    return norm(x + dropout(drop, f(x)))  # (b, s, d)


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with a residual connection and a norm.

    Args:
        self_attn: the self-attention module.
        ff: the position-wise feed-forward module ``(b, s, d) -> (b, s, d)``.
        self_attn_norm: norm of the attention sublayer.
        ff_norm: norm of the feed-forward sublayer.
        placement: ``"pre"`` or ``"post"`` norm.
        dropout: residual dropout on each sublayer output.

    Raises:
        ValueError: an unknown placement.
    """

    def __init__(
        self,
        self_attn: nn.Module,
        ff: nn.Module,
        self_attn_norm: nn.Module,
        ff_norm: nn.Module,
        *,
        placement: Placement = "post",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_placement(placement)
        self.self_attn, self.self_attn_norm = self_attn, self_attn_norm
        self.ff, self.ff_norm = ff, ff_norm
        self.placement = placement
        self.dropout = nn.Dropout(dropout)

    def _sub(self, x: Tensor, norm: nn.Module, f: Callable[[Tensor], Tensor]) -> Tensor:
        return _sublayer(x, norm, f, self.placement, self.dropout)

    def forward(
        self,
        x: Tensor,
        *,
        mask: MaskLike = None,
        padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Apply the layer.

        Args:
            x: ``(b, s, d)``.
            mask: extra attention mask (bool True = may attend, float bias or a
                :mod:`qkv.masks` object) broadcastable to ``(b, h, s, s_k)``.
            padding_mask: ``(b, s_k)`` bool, True = real token.
            attn_bias: float bias ``(1 | b, h, s, s_k)`` (ALiBi, relative positions).
            positions: ``(s,)`` or ``(b, s)`` absolute positions for rotary embeddings.

        Returns:
            ``(b, s, d)``.
        """

        def attend(h: Tensor) -> Tensor:
            return self.self_attn(  # type: ignore[no-any-return]
                h,
                mask=mask,
                padding_mask=padding_mask,
                attn_bias=attn_bias,
                positions=positions,
            )

        x = self._sub(x, self.self_attn_norm, attend)
        return self._sub(x, self.ff_norm, self.ff)


class DecoderLayer(nn.Module):
    """Causal self-attention, optional cross-attention to a memory, then feed-forward.

    Without ``cross_attn`` this is the GPT block; with it, the decoder layer of Vaswani et
    al. (2017, fig. 1).

    Args:
        self_attn: the (causal) self-attention module.
        ff: the position-wise feed-forward module.
        self_attn_norm: norm of the self-attention sublayer.
        ff_norm: norm of the feed-forward sublayer.
        cross_attn: attention from the decoder to the encoder memory, or None.
        cross_attn_norm: norm of the cross-attention sublayer (needed with ``cross_attn``).
        placement: ``"pre"`` or ``"post"`` norm.
        dropout: residual dropout on each sublayer output.

    Raises:
        ValueError: an unknown placement, or ``cross_attn`` without ``cross_attn_norm``.
    """

    def __init__(
        self,
        self_attn: nn.Module,
        ff: nn.Module,
        self_attn_norm: nn.Module,
        ff_norm: nn.Module,
        *,
        cross_attn: MultiHeadAttention | None = None,
        cross_attn_norm: nn.Module | None = None,
        placement: Placement = "post",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_placement(placement)
        if (cross_attn is None) != (cross_attn_norm is None):
            raise ValueError("cross_attn and cross_attn_norm must be given together")
        self.self_attn, self.self_attn_norm = self_attn, self_attn_norm
        self.cross_attn, self.cross_attn_norm = cross_attn, cross_attn_norm
        self.ff, self.ff_norm = ff, ff_norm
        self.placement = placement
        self.dropout = nn.Dropout(dropout)

    def _sub(self, x: Tensor, norm: nn.Module, f: Callable[[Tensor], Tensor]) -> Tensor:
        return _sublayer(x, norm, f, self.placement, self.dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        mask: MaskLike = None,
        padding_mask: Tensor | None = None,
        src_padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        cross_cache: CrossKVCache | None = None,
    ) -> Tensor:
        """Apply the layer.

        Args:
            x: ``(b, s, d)`` decoder states (only the new tokens when decoding with a cache).
            memory: ``(b, s_m, d_m)`` encoder output; required with cross-attention.
            mask: extra self-attention mask broadcastable to ``(b, h, s, s_k)``; the causal
                mask is always applied.
            padding_mask: ``(b, s_k)`` bool, True = real token, over cached + new tokens.
            src_padding_mask: ``(b, s_m)`` bool, True = real memory token.
            attn_bias: float self-attention bias ``(1 | b, h, s, s_k)``.
            positions: ``(s,)`` or ``(b, s)`` absolute positions for rotary embeddings.
            cache: the self-attention :class:`KVCache`.
            cross_cache: the cross-attention :class:`CrossKVCache`.

        Returns:
            ``(b, s, d)``.

        Raises:
            ValueError: cross-attention without a memory.
        """

        def self_attend(h: Tensor) -> Tensor:
            return self.self_attn(  # type: ignore[no-any-return]
                h,
                mask=mask,
                padding_mask=padding_mask,
                attn_bias=attn_bias,
                positions=positions,
                is_causal=True,
                cache=cache,
            )

        x = self._sub(x, self.self_attn_norm, self_attend)
        if self.cross_attn is not None:
            cross, cross_norm = self.cross_attn, self.cross_attn_norm
            assert cross_norm is not None
            if memory is None:
                raise ValueError("this decoder layer cross-attends: pass memory")

            def cross_attend(h: Tensor) -> Tensor:
                # With a filled cross_cache, MHA reuses its keys/values and ignores memory.
                return cross(  # type: ignore[no-any-return]
                    h, memory, padding_mask=src_padding_mask, cache=cross_cache
                )

            x = self._sub(x, cross_norm, cross_attend)
        return self._sub(x, self.ff_norm, self.ff)
