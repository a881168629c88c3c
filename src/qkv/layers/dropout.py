"""Dropout that costs nothing when it does nothing."""

from __future__ import annotations

from torch import Tensor, nn


def dropout(drop: nn.Dropout, x: Tensor) -> Tensor:
    """``drop(x)``, or ``x`` itself without the module call when ``drop`` is the identity
    (eval mode or ``p = 0``): a decoding step makes some twenty such calls per token, and
    per-call overhead is what a decoding step on a CPU spends most of its time on."""
    return drop(x) if drop.training and drop.p > 0 else x
