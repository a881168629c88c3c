"""Key padding masks: batch row ``b`` may attend only to its first ``lengths[b]`` keys."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._tiles import BlockBounds, block_spans, n_blocks, register_bounds, vector_bounds


class Padding(Mask):
    """A key-padding mask built from per-row lengths or a ``(b, s_k)`` bool tensor.

    Args:
        lengths: ``(b,)`` integer lengths (right padding), **or** a ``(b, s_k)`` boolean tensor
            in which ``True`` marks a real token (the opposite of torch's
            ``padding_mask``, where ``True`` marks padding). Empty lengths (``b = 0``) make
            a mask for an empty batch only: attention refuses it for any other batch.

    Raises:
        ValueError: negative lengths, or a tensor of the wrong rank.
        TypeError: a tensor that is neither integer nor bool.
    """

    def __init__(self, lengths: Tensor | Sequence[int]) -> None:
        if isinstance(lengths, Tensor):
            t = lengths
        else:
            values = list(lengths)
            # an empty list would become a float tensor: it is an empty batch of lengths
            t = torch.as_tensor(values) if values else torch.zeros(0, dtype=torch.long)
        if t.dtype == torch.bool:
            if t.ndim != 2:
                raise ValueError(
                    f"padding(key_mask) needs a (b, s_k) bool tensor, got shape {tuple(t.shape)}"
                )
            self.key_mask: Tensor | None = t
            self.lengths: Tensor | None = None
        else:
            if t.is_floating_point() or t.is_complex():
                raise TypeError(f"padding(lengths) needs integer lengths, got dtype {t.dtype}")
            if t.ndim != 1:
                raise ValueError(f"padding(lengths) needs shape (b,), got {tuple(t.shape)}")
            if (t < 0).any():
                raise ValueError(f"padding(lengths) must be >= 0, got {t.tolist()}")
            self.key_mask = None
            self.lengths = t.long()
        self.batch_size = t.shape[0]

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        if self.key_mask is not None:
            km = self.key_mask
            if km.shape[1] != s_k:
                raise ValueError(
                    f"padding mask covers {km.shape[1]} keys but attention has s_k={s_k}"
                )
            return lambda b, h, q, k: km[b, k]
        lengths = self.lengths
        assert lengths is not None
        if lengths.numel() and int(lengths.max()) > s_k:
            raise ValueError(f"padding lengths {lengths.tolist()} exceed s_k={s_k}")
        return lambda b, h, q, k: k < lengths[b]

    def _device(self) -> torch.device:
        t = self.key_mask if self.key_mask is not None else self.lengths
        assert t is not None
        return t.device

    def __repr__(self) -> str:
        if self.lengths is not None:
            return f"padding({self.lengths.tolist()})"
        return f"padding(key_mask of shape {tuple(self.key_mask.shape)})"  # type: ignore[union-attr]


@register_bounds(Padding)
def _padding_bounds(
    mask: Mask, s_q: int, s_k: int, block: int, device: torch.device
) -> BlockBounds:
    assert isinstance(mask, Padding)
    mask.mod(s_q, s_k)  # validates the lengths against s_k
    n_qb = n_blocks(s_q, block)
    if mask.key_mask is not None:
        any_k, all_k = vector_bounds(mask.key_mask.to(device), s_k, block)  # (b, n_kb)
    else:
        assert mask.lengths is not None
        k_lo, k_hi = block_spans(s_k, block, device)
        n = mask.lengths.to(device)[:, None]
        any_k, all_k = k_lo[None] < n, k_hi[None] < n  # (b, n_kb)
    shape = (any_k.shape[0], n_qb, any_k.shape[1])
    return BlockBounds(any_k[:, None].expand(shape), all_k[:, None].expand(shape))


def padding(lengths: Tensor | Sequence[int]) -> Padding:
    """A key-padding mask; see :class:`Padding`."""
    return Padding(lengths)
