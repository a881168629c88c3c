"""Batching helpers shared by the trainer's objectives and the tasks: padding id lists and
slicing sequences into batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor

from qkv.data.tokenizers import PAD_ID

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items.

    Raises:
        ValueError: ``size < 1``.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for i in range(0, len(items), size):
        yield items[i : i + size]


def pad_ids(seqs: Sequence[Sequence[int]], pad: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """Right-pad id lists into ``(ids, mask)``, both ``(b, s)``; mask True = real token.

    The width is at least 1, so a batch of empty sequences is still a valid tensor.
    """
    width = max([1, *(len(s) for s in seqs)])
    ids = torch.tensor([[*s, *([pad] * (width - len(s)))] for s in seqs], dtype=torch.long)
    ids = ids.reshape(len(seqs), width)  # (b, s), also when the batch is empty
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    mask = torch.arange(width)[None, :] < lengths[:, None]  # (b, s)
    return ids, mask


__all__ = ["batched", "pad_ids"]
