"""Sliding-window (local) attention: each query sees a band of nearby keys.

Used by Longformer (Beltagy et al. 2020, symmetric window) and Mistral 7B (Jiang et al.
2023, causal window). Positions are aligned like :class:`~qkv.masks.Causal`: query ``i``
sits at absolute position ``p = i + (s_k - s_q)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._tiles import BlockBounds, interval_bounds, register_bounds, relative_span


def _check_window(w: object, name: str = "w") -> int:
    if not isinstance(w, int) or isinstance(w, bool) or w <= 0:
        raise ValueError(f"{name} must be a positive int, got {w!r}")
    return w


class SlidingWindow(Mask):
    r"""Key ``j`` is visible from query ``i`` (absolute position ``p``) iff it is near ``p``.

    * causal (Mistral; HF ``sliding_window``; FlashAttention ``window_size=(w-1, 0)``):
      :math:`p - w < j \le p`, the ``w`` most recent keys including the query's own;
    * symmetric (Longformer): :math:`|p - j| \le \lfloor w/2 \rfloor`, ``w//2`` keys on each
      side (``2*(w//2) + 1`` keys; ``w = 1`` is the diagonal).

    Args:
        w: window size, a positive int.
        causal: one-sided (past only) instead of symmetric.

    Raises:
        ValueError: ``w`` is not a positive int.
    """

    def __init__(self, w: int, causal: bool = False) -> None:
        self.w = _check_window(w)
        self.causal = bool(causal)

    def interval(self) -> tuple[int, int]:
        """Allowed range ``[lo, hi]`` of the relative position ``p - j``."""
        return (0, self.w - 1) if self.causal else (-(self.w // 2), self.w // 2)

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        off = s_k - s_q
        lo, hi = self.interval()

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            r = q + off - k
            return (r >= lo) & (r <= hi)

        return mask_mod

    def __repr__(self) -> str:
        return f"sliding_window({self.w}{', causal=True' if self.causal else ''})"


@register_bounds(SlidingWindow)
def _bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, SlidingWindow)
    return interval_bounds(*relative_span(s_q, s_k, block, device), *mask.interval())


def sliding_window(w: int, causal: bool = False) -> SlidingWindow:
    """A sliding-window mask; see :class:`SlidingWindow`."""
    return SlidingWindow(w, causal)
