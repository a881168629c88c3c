"""Key padding masks: batch row ``b`` may attend only to its first ``lengths[b]`` keys."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod


class Padding(Mask):
    """A key-padding mask built from per-row lengths or a ``(b, s_k)`` bool tensor.

    Args:
        lengths: ``(b,)`` integer lengths (right padding), **or** a ``(b, s_k)`` boolean tensor
            in which ``True`` marks a real token (the opposite of torch's
            ``key_padding_mask``, where ``True`` marks padding).

    Raises:
        ValueError: negative lengths, or a tensor of the wrong rank.
        TypeError: a tensor that is neither integer nor bool.
    """

    def __init__(self, lengths: Tensor | Sequence[int]) -> None:
        t = lengths if isinstance(lengths, Tensor) else torch.as_tensor(list(lengths))
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
        if int(lengths.max()) > s_k:
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


def padding(lengths: Tensor | Sequence[int]) -> Padding:
    """A key-padding mask; see :class:`Padding`."""
    return Padding(lengths)
