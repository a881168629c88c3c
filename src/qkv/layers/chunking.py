"""Chunked position-wise layers (Kitaev et al. 2020, Reformer, sec. 4 "Chunking"): a
feed-forward network applied ``chunk`` positions at a time, so its ``d_ff``-wide hidden
activations exist for one chunk at a time instead of the whole sequence (inference, and the
recomputation inside :mod:`qkv.layers.reversible`'s backward pass)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from qkv.layers.feedforward import Activation, FeedForward


def chunked(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int, dim: int = -2) -> Tensor:
    """``fn`` applied to ``chunk`` positions of ``x`` at a time along ``dim`` and the
    results concatenated (``fn`` must be position-wise); ``chunk <= 0`` applies it at once.
    """
    if chunk <= 0 or x.shape[dim] <= chunk:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk, dim=dim)], dim=dim)


class ChunkedFeedForward(FeedForward):
    """:class:`~qkv.layers.FeedForward` run ``chunk_size`` positions at a time. Same
    parameters and outputs (dropout aside, whose masks are drawn chunk by chunk).

    Args:
        d_model, d_ff, activation, dropout, bias: as in :class:`~qkv.layers.FeedForward`.
        chunk_size: positions per chunk (along dim -2).

    Raises:
        ValueError: a non-positive ``chunk_size`` (and :class:`FeedForward`'s errors).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: Activation = "relu",
        dropout: float = 0.0,
        bias: bool = True,
        *,
        chunk_size: int,
    ) -> None:
        super().__init__(d_model, d_ff, activation, dropout, bias)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.chunk_size = chunk_size

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to ``(..., s, d_model)`` in chunks of ``chunk_size`` positions."""
        return chunked(super().forward, x, self.chunk_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk_size={self.chunk_size}"


__all__ = ["ChunkedFeedForward", "chunked"]
