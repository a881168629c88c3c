"""The trainer's data order: which examples (or batches) each step and each rank reads.

The batches of each epoch depend only on ``(seed, epoch)`` (:mod:`qkv.training.sampler`), so a
resumed run reads exactly what the uninterrupted one would have.
:class:`~qkv.training.Trainer` inherits :class:`DataOrder`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from qkv.training.config import TrainConfig
from qkv.training.distributed import DistInfo
from qkv.training.evaluate import to_device
from qkv.training.objective import Batch, Objective
from qkv.training.prefix_cache import PrefixCache, Suffix, build_prefix_cache
from qkv.training.sampler import EpochBatches


class DataOrder:
    """Mixin of :class:`~qkv.training.Trainer`: the next global batch, split per rank and
    per micro-batch."""

    cfg: TrainConfig
    objective: Objective
    device: torch.device
    dist: DistInfo
    train_examples: Sequence[Any] | None
    _batches: Iterable[Any] | None
    _sampler: EpochBatches | None
    _iter: Iterator[Any] | None
    epoch: int
    batch_in_epoch: int
    model: nn.Module
    ddp: nn.Module
    frozen: list[str]
    #: the frozen prefix's outputs (``cache_frozen``), or None
    prefix_cache: PrefixCache | None = None

    def _set_up_prefix_cache(self) -> nn.Module:
        """With ``cache_frozen``, build :attr:`prefix_cache`
        (:func:`~qkv.training.prefix_cache.build_prefix_cache`, which raises ValueError
        naming why it cannot); return the module a step calls: the model after its frozen
        prefix, or the (DDP-wrapped) model."""
        if not self.cfg.cache_frozen:
            return self.ddp
        self.prefix_cache = build_prefix_cache(
            self.model,
            self.frozen,
            self.train_examples,
            self.objective,
            self.device,
            world_size=self.dist.world_size,
        )
        return Suffix(self.model, self.prefix_cache.depth)

    def _make_sampler(self, n: int) -> EpochBatches:
        cfg = self.cfg
        length = getattr(self.objective, "length", None)
        if cfg.batch_tokens and length is None:
            raise ValueError(
                "batch_tokens needs an objective with length(example) (the tasks with text "
                "have one)"
            )
        examples = self.train_examples
        assert examples is not None
        return EpochBatches(
            n,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            batch_tokens=cfg.batch_tokens,
            length=(lambda i: length(examples[i])) if length is not None else None,
            multiple=cfg.grad_accum * self.dist.world_size,
        )

    def _next_global_batch(self) -> list[int]:
        assert self._sampler is not None
        if self.batch_in_epoch >= self._sampler.per_epoch(self.epoch):
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        idx = self._sampler.batches(self.epoch)[self.batch_in_epoch]
        self.batch_in_epoch += 1
        return idx

    def _next_item(self) -> Any:
        """The next batch of an iterable, restarting it (a new epoch) when exhausted."""
        assert self._batches is not None
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self._batches)
            try:
                item = next(self._iter)
            except StopIteration:
                self._iter, self.epoch, self.batch_in_epoch = None, self.epoch + 1, 0
                continue
            self.batch_in_epoch += 1
            return item
        raise ValueError("the training data yielded no batches")

    def _skip_to_position(self) -> None:
        """After a resume, advance an iterable to the saved position (the batches before it
        are read again and dropped: an iterable cannot seek)."""
        if self._batches is None:
            return
        epoch, pos = self.epoch, self.batch_in_epoch
        self.epoch, self.batch_in_epoch, self._iter = 0, 0, None
        while (self.epoch, self.batch_in_epoch) < (epoch, pos):
            self._next_item()

    def _micro_batches(self) -> Iterator[Batch]:
        world, rank, k = self.dist.world_size, self.dist.rank, self.cfg.grad_accum
        if self.train_examples is not None:
            idx = self._next_global_batch()
            local = idx[rank * len(idx) // world : (rank + 1) * len(idx) // world]
            for j in range(k):
                part = local[j * len(local) // k : (j + 1) * len(local) // k]
                batch = to_device(self.objective.collate(self._take(part)), self.device)
                if self.prefix_cache is not None:  # the frozen prefix's output, cached
                    yield self.prefix_cache.fill(self.model, part, batch)  # (no augment)
                    continue
                yield self._augment(batch)
            return
        full = self.objective.as_batch(self._next_item())  # type: ignore[attr-defined]
        b = next(iter(full.values())).shape[0]
        lo, hi = rank * b // world, (rank + 1) * b // world
        for j in range(k):
            a, z = lo + j * (hi - lo) // k, lo + (j + 1) * (hi - lo) // k
            yield self._augment(to_device({key: t[a:z] for key, t in full.items()}, self.device))

    def _take(self, indices: list[int]) -> Sequence[Any]:
        """The training examples at ``indices``: ``data.select(indices)`` when the data set
        offers it (one indexing op for tensor-backed data), else one by one."""
        data = self.train_examples
        assert data is not None
        select = getattr(data, "select", None)
        return select(indices) if select is not None else [data[i] for i in indices]

    def _augment(self, batch: Batch) -> Batch:
        """The objective's training-time augmentation (``augment(batch) -> batch``, drawing
        from torch's RNG, whose state checkpoints keep), when it has one."""
        augment = getattr(self.objective, "augment", None)
        return augment(batch) if augment is not None else batch
