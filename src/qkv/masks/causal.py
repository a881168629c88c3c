"""Causal (autoregressive) masks."""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._tiles import BlockBounds, interval_bounds, register_bounds, relative_span


class Causal(Mask):
    """Query ``i`` may attend to key ``j`` iff ``j <= i + offset``.

    With ``offset=None`` (the default) queries are aligned to the *end* of the keys
    ("bottom-right"): ``offset = s_k - s_q``. For ``s_q == s_k`` this is the usual lower
    triangle; for a decoding step with a KV cache (``s_q = 1``) the new token sees the whole
    cache. Note that ``F.scaled_dot_product_attention(is_causal=True)`` aligns top-left, which
    differs only when ``s_q != s_k``.

    Args:
        offset: absolute position of query 0 minus that of key 0, or ``None`` for bottom-right.
    """

    def __init__(self, offset: int | None = None) -> None:
        if offset is not None and not isinstance(offset, int):
            raise TypeError(f"offset must be an int or None, got {type(offset).__name__}")
        self.offset = offset

    def key_offset(self, s_q: int, s_k: int) -> int:
        """The offset for ``s_q`` queries and ``s_k`` keys (``s_k - s_q`` when bottom-right):
        query ``i`` sees keys ``0 .. i + offset``."""
        return s_k - s_q if self.offset is None else self.offset

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        off = self.key_offset(s_q, s_k)

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            return k <= q + off

        return mask_mod

    def __repr__(self) -> str:
        return "causal()" if self.offset is None else f"causal(offset={self.offset})"


@register_bounds(Causal)
def _causal_bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, Causal)
    r_min, r_max = relative_span(s_q, s_k, block, device, mask.offset)
    return interval_bounds(r_min, r_max, 0, s_q + s_k + abs(mask.offset or 0))


def causal(offset: int | None = None) -> Causal:
    """A causal mask; see :class:`Causal`."""
    return Causal(offset)
