"""The order of the training examples: the global batches of each epoch, a pure function of
``(seed, epoch)``, so that a resumed run reads exactly the batches an uninterrupted one would.

Two ways to batch:

* by examples (``batch_tokens = 0``): a seeded permutation cut into batches of
  ``batch_size`` (the last partial batch of an epoch is dropped);
* by tokens (``batch_tokens > 0``), for data of mixed lengths (translation with dictionary
  phrases next to sentences): the permutation is cut into pools of a few hundred batches,
  each pool is sorted by length and cut into batches of at most ``batch_tokens`` tokens
  counting padding (``len(batch) * longest``), and the batches are shuffled. Short examples
  then travel in large batches and long ones in small, with little padding
  (Vaswani et al. 2017, sec. 5.1: "sentence pairs were batched together by approximate
  sequence length").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

#: batches per pool of length-sorted examples (larger: less padding, less randomness)
POOL_BATCHES = 100


class EpochBatches:
    """The global batches of each epoch, cached for the current epoch.

    Args:
        n: number of examples.
        seed: the run's seed.
        batch_size: examples per batch (batching by examples).
        batch_tokens: 0, or the most tokens (padding included) of a batch.
        length: ``length(i)`` of example ``i`` in tokens (batching by tokens).
        multiple: a token batch's size is a multiple of this (processes x accumulation, so
            that every part gets the same number of examples).
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        batch_size: int,
        batch_tokens: int = 0,
        length: Callable[[int], int] | None = None,
        multiple: int = 1,
    ) -> None:
        if batch_tokens and length is None:
            raise ValueError(
                "batching by tokens needs the examples' lengths: an objective with length(example)"
            )
        self.n, self.seed, self.batch_size, self.batch_tokens = n, seed, batch_size, batch_tokens
        self._length, self.multiple = length, multiple
        self._lengths: list[int] | None = None
        self._cached: tuple[int, list[list[int]]] | None = None

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def lengths(self) -> list[int]:
        """Every example's length (computed once)."""
        if self._lengths is None:
            assert self._length is not None
            self._lengths = [int(self._length(i)) for i in range(self.n)]
        return self._lengths

    def batches(self, epoch: int) -> list[list[int]]:
        """The global batches (example indices) of ``epoch``."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        g = self._generator(epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if not self.batch_tokens:
            b = self.batch_size
            out = [order[i : i + b] for i in range(0, self.n - b + 1, b)]
        else:
            out = self._token_batches(order, g)
        self._cached = (epoch, out)
        return out

    def _token_batches(self, order: Sequence[int], g: torch.Generator) -> list[list[int]]:
        lengths = self.lengths()
        mean = max(1.0, sum(lengths) / max(len(lengths), 1))
        pool = max(self.multiple, int(POOL_BATCHES * self.batch_tokens / mean))
        out: list[list[int]] = []
        m = self.multiple
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
            batch: list[int] = []
            longest = 0
            for i in chunk:
                grown = max(longest, lengths[i])
                if batch and grown * (len(batch) + 1) > self.batch_tokens and len(batch) >= m:
                    out.append(batch[: len(batch) - len(batch) % m])
                    leftover = batch[len(batch) - len(batch) % m :]
                    batch, longest = leftover, max((lengths[j] for j in leftover), default=0)
                    grown = max(longest, lengths[i])
                batch.append(i)
                longest = grown
            if len(batch) >= m:
                out.append(batch[: len(batch) - len(batch) % m])
        perm = torch.randperm(len(out), generator=g).tolist()
        return [out[k] for k in perm]

    def per_epoch(self, epoch: int) -> int:
        """Number of batches in ``epoch``."""
        return len(self.batches(epoch))


__all__ = ["POOL_BATCHES", "EpochBatches"]
