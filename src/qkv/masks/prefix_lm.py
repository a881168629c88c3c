"""Prefix language modelling (Raffel et al. 2020, T5 section 3.2.1; Dong et al. 2019, UniLM).

The first ``n`` positions (the prefix: a prompt, an input) are seen bidirectionally; the
rest is generated causally.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._tiles import (
    BlockBounds,
    block_spans,
    interval_bounds,
    n_blocks,
    register_bounds,
    relative_span,
)


class PrefixLM(Mask):
    r"""Query ``i`` (absolute position ``p = i + s_k - s_q``) may attend to key ``j`` iff
    :math:`j \le p` or :math:`j < n`: causal, plus every key of the prefix.

    Args:
        n: prefix length: an int for the whole batch, or ``(b,)`` ints, one per batch row.

    Raises:
        TypeError: a non-integer ``n``.
        ValueError: a negative ``n`` or a tensor of the wrong rank.
    """

    def __init__(self, n: int | Sequence[int] | Tensor) -> None:
        if isinstance(n, int) and not isinstance(n, bool):
            if n < 0:
                raise ValueError(f"prefix_lm(n) must be >= 0, got {n}")
            self.n: int | Tensor = n
            return
        values = n if isinstance(n, Tensor) else list(n)  # type: ignore[arg-type]
        # an empty list would become a float tensor: it is an empty batch of lengths
        t = torch.as_tensor(values) if len(values) else torch.zeros(0, dtype=torch.long)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"prefix_lm(n) needs integer lengths, got dtype {t.dtype}")
        if t.ndim != 1:
            raise ValueError(f"prefix_lm(n) needs an int or shape (b,), got {tuple(t.shape)}")
        if (t < 0).any():
            raise ValueError(f"prefix_lm(n) must be >= 0, got {t.tolist()}")
        self.n = t.long()
        self.batch_size = t.shape[0]

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        off = s_k - s_q
        n = self.n
        if isinstance(n, Tensor):
            return lambda b, h, q, k: (k <= q + off) | (k < n[b])
        return lambda b, h, q, k: (k <= q + off) | (k < n)

    def _device(self) -> torch.device:
        return self.n.device if isinstance(self.n, Tensor) else torch.device("cpu")

    def __repr__(self) -> str:
        n = self.n.tolist() if isinstance(self.n, Tensor) else self.n
        return f"prefix_lm({n})"


@register_bounds(PrefixLM)
def _bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, PrefixLM)
    causal = interval_bounds(*relative_span(s_q, s_k, block, device), 0, s_q + s_k)
    k_lo, k_hi = block_spans(s_k, block, device)
    n = torch.as_tensor(mask.n, device=device).view(-1, 1, 1)  # (b_m, 1, 1)
    shape = (n.shape[0], n_blocks(s_q, block), n_blocks(s_k, block))
    maybe = causal.maybe | (k_lo[None, None, :] < n)
    full = causal.full | (k_hi[None, None, :] < n)
    return BlockBounds(maybe.expand(shape), full.expand(shape))


def prefix_lm(n: int | Sequence[int] | Tensor) -> PrefixLM:
    """A prefix-LM mask; see :class:`PrefixLM`."""
    return PrefixLM(n)
