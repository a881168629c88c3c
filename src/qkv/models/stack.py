"""What the encoder and decoder stacks share: their layers, final norm and position bias."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class LayerStack(nn.Module):
    """``N`` layers applied in order, an optional final norm, and an optional position
    bias computed once per forward and shared by every layer (as in T5).

    Args:
        layers: the layers, applied in order; held as ``nn.ModuleList`` ``layers``.
        norm: final norm (pre-norm stacks need one: their residual stream is never
            normalized otherwise), or None.
        pos_bias: a module ``pos_bias(s_q, s_k, device=...) -> (1, h, s_q, s_k)`` whose
            output is added to every layer's self-attention scores
            (:class:`qkv.pos.ALiBi`, :class:`qkv.pos.RelativeBias`).

    Raises:
        ValueError: an empty ``layers``.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        *,
        norm: nn.Module | None = None,
        pos_bias: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(layers) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one layer, got 0")
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.pos_bias = pos_bias
