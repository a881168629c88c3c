"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"): drop a
residual branch for a whole example, as Swin and DeiT train (``drop_path``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DropPath(nn.Module):
    """During training, zero a residual branch's output for each example with probability
    ``p`` and scale the kept ones by ``1 / (1 - p)``; the identity in eval mode or at
    ``p = 0``.

    Args:
        p: drop probability in ``[0, 1)``.

    Raises:
        ValueError: ``p`` outside ``[0, 1)``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` with whole examples (dim 0) dropped."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["DropPath"]
