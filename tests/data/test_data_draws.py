"""SeededDraws: example i depends on (seed, start + i) alone; slices are views."""

from __future__ import annotations

import pytest
import torch

from qkv.data._draws import SeededDraws


class Numbers(SeededDraws[float]):
    kind = "number"

    def __init__(self, n: int, seed: int) -> None:
        self._init_draws(n, seed, 0)

    def draw(self, generator: torch.Generator) -> float:
        return float(torch.rand(1, generator=generator))


def test_examples_depend_on_seed_and_index_alone_and_slices_keep_them():
    a = Numbers(10, seed=3)
    assert len(a) == 10
    assert [a[i] for i in range(10)] == [Numbers(10, seed=3)[i] for i in range(10)]
    assert a[0] != Numbers(10, seed=4)[0]
    view = a[4:8]
    assert isinstance(view, Numbers) and len(view) == 4
    assert [view[i] for i in range(4)] == [a[i] for i in range(4, 8)]
    assert view[1:3][0] == a[5] and a[-1] == a[9] and len(a[8:20]) == 2
    expected = float(torch.rand(1, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2)))
    assert a[2] == expected


def test_bad_indices_and_sizes_are_refused():
    a = Numbers(3, seed=0)
    with pytest.raises(IndexError, match=r"number 3 out of range \[0, 3\)"):
        a[3]
    with pytest.raises(ValueError, match="step 1 only"):
        a[::2]
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        Numbers(-1, seed=0)
