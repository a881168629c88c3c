"""Global tokens (Longformer, Beltagy et al. 2020; BigBird's ITC, Zaheer et al. 2020).

A global token attends to every key and is attended to by every query. Alone the mask
allows exactly those rows and columns; combine it with a local pattern through ``|``, e.g.
``sliding_window(256) | global_tokens([0])`` for a ``[CLS]`` token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._tiles import BlockBounds, DeviceLocal, register_bounds, vector_bounds


class GlobalTokens(Mask):
    r"""Query ``i`` (absolute position ``p = i + s_k - s_q``) may attend to key ``j`` iff
    :math:`p \in G` or :math:`j \in G`, for the set ``G`` of global positions.

    Args:
        indices: global positions in the key sequence (non-negative ints; duplicates are
            ignored). A query is global when its absolute position is in the set.

    Raises:
        TypeError: indices that are not integers.
        ValueError: negative indices, or (when used) an index ``>= s_k``.
    """

    def __init__(self, indices: Sequence[int] | Tensor) -> None:
        t = indices if isinstance(indices, Tensor) else torch.as_tensor(list(indices))
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"global_tokens(indices) needs integer positions, got dtype {t.dtype}")
        if t.ndim != 1:
            raise ValueError(f"global_tokens(indices) needs shape (n,), got {tuple(t.shape)}")
        if (t < 0).any():
            raise ValueError(f"global_tokens(indices) must be >= 0, got {t.tolist()}")
        self.indices = torch.unique(t.long())

    def flags(self, s_k: int) -> Tensor:
        """``(s_k,)`` bool: which key positions are global."""
        if len(self.indices) and int(self.indices.max()) >= s_k:
            raise ValueError(
                f"global_tokens(indices) index {int(self.indices.max())} is out of range for "
                f"s_k={s_k}"
            )
        g = torch.zeros(s_k, dtype=torch.bool, device=self.indices.device)
        g[self.indices] = True
        return g

    def query_flags(self, s_q: int, s_k: int) -> Tensor:
        """``(s_q,)`` bool: which queries are global (by absolute position)."""
        g = self.flags(s_k)
        p = torch.arange(s_q, device=g.device) + (s_k - s_q)
        return (p >= 0) & g[p.clamp(min=0)] if s_k else torch.zeros(s_q, dtype=torch.bool)

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        gk = DeviceLocal(self.flags(s_k))
        gq = DeviceLocal(self.query_flags(s_q, s_k))

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            return gq.on(q.device)[q] | gk.on(k.device)[k]

        return mask_mod

    def _device(self) -> torch.device:
        return self.indices.device

    def __repr__(self) -> str:
        return f"global_tokens({self.indices.tolist()})"


@register_bounds(GlobalTokens)
def _bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, GlobalTokens)
    any_q, all_q = vector_bounds(mask.query_flags(s_q, s_k).to(device), s_q, block)
    any_k, all_k = vector_bounds(mask.flags(s_k).to(device), s_k, block)
    maybe = any_q[:, None] | any_k[None, :]
    full = all_q[:, None] | all_k[None, :]  # some pair has neither a global query nor key
    return BlockBounds(maybe[None], full[None])


def global_tokens(indices: Sequence[int] | Tensor) -> GlobalTokens:
    """A global-tokens mask; see :class:`GlobalTokens`."""
    return GlobalTokens(indices)
