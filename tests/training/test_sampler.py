"""The training order: batches of each epoch are a pure function of (seed, epoch); batching
by tokens keeps every batch within the budget (padding counted) and wastes little."""

from __future__ import annotations

import random

import torch

from qkv.training.sampler import EpochBatches


def test_batches_by_examples_are_slices_of_a_seeded_permutation():
    s = EpochBatches(10, seed=3, batch_size=4)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2)).tolist()
    assert s.batches(2) == [order[0:4], order[4:8]]  # the partial batch is dropped
    assert s.batches(2) == EpochBatches(10, seed=3, batch_size=4).batches(2)
    assert s.batches(1) != s.batches(2)


def test_batches_by_tokens_respect_the_budget_and_the_multiple():
    rng = random.Random(0)
    lengths = [
        rng.choice([2, 3, 4]) if rng.random() < 0.7 else rng.randint(20, 60) for _ in range(3000)
    ]
    s = EpochBatches(3000, seed=1, batch_size=8, batch_tokens=512, length=lengths.__getitem__,
                     multiple=2)  # fmt: skip
    batches = s.batches(0)
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used)) and len(used) > 0.97 * 3000  # few leftovers
    padded = real = 0
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) % 2 == 0 and (len(b) * longest <= 512 or len(b) == 2)
        padded += len(b) * longest
        real += sum(lengths[i] for i in b)
    assert real / padded > 0.85  # sorting by length within pools: little padding
    assert (
        max(len(b) for b in batches) > 100 > min(len(b) for b in batches)
    )  # short travel together
    assert s.batches(0) == EpochBatches(3000, seed=1, batch_size=8, batch_tokens=512,
                                        length=lengths.__getitem__, multiple=2).batches(0)  # fmt: skip
