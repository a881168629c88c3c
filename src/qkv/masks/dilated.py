"""Dilated sliding windows (Longformer, Beltagy et al. 2020, section 3.1).

A window of ``w`` keys spread ``d`` positions apart widens the receptive field to ``w * d``
at the cost of a window of ``w``. Positions are aligned like :class:`~qkv.masks.Causal`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._tiles import BlockBounds, interval_bounds, register_bounds, relative_span
from qkv.masks.sliding_window import _check_window


class Dilated(Mask):
    r"""Key ``j`` is visible from query ``i`` (absolute position ``p``) iff ``p - j = m d``
    for an integer ``m`` with

    * :math:`-\lfloor w/2 \rfloor \le m \le \lfloor w/2 \rfloor` (symmetric, the default), or
    * :math:`0 \le m < w` (``causal=True``).

    ``d = 1`` is :class:`~qkv.masks.SlidingWindow` with the same ``w``.

    Args:
        w: keys in the window (positive).
        d: dilation, the gap between attended keys (positive).
        causal: one-sided (past only) instead of symmetric.

    Raises:
        ValueError: ``w`` or ``d`` is not a positive int.
    """

    def __init__(self, w: int, d: int, causal: bool = False) -> None:
        self.w = _check_window(w)
        self.d = _check_window(d, "d")
        self.causal = bool(causal)

    def interval(self) -> tuple[int, int]:
        """Allowed range ``[lo, hi]`` of ``p - j`` (before the divisibility condition)."""
        if self.causal:
            return 0, (self.w - 1) * self.d
        return -(self.w // 2) * self.d, (self.w // 2) * self.d

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        off = s_k - s_q
        lo, hi = self.interval()
        d = self.d

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            r = q + off - k
            return (r >= lo) & (r <= hi) & (r % d == 0)

        return mask_mod

    def __repr__(self) -> str:
        return f"dilated({self.w}, {self.d}{', causal=True' if self.causal else ''})"


@register_bounds(Dilated)
def _bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, Dilated)
    lo, hi = mask.interval()
    return interval_bounds(*relative_span(s_q, s_k, block, device), lo, hi, mask.d)


def dilated(w: int, d: int, causal: bool = False) -> Dilated:
    """A dilated sliding-window mask; see :class:`Dilated`."""
    return Dilated(w, d, causal)
