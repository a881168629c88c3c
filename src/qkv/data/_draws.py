"""A sequence of examples drawn on demand: example ``i`` depends on ``(seed, start + i)``
alone, so a data set of any size costs no memory, any example can be redrawn, and a slice
is a view that keeps its examples (the base of the item canvases and scenes)."""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence
from typing import ClassVar, TypeVar, overload

import torch

T = TypeVar("T")


class SeededDraws(Sequence[T], abc.ABC):
    """Examples drawn from a seed and their index.

    Subclasses set ``kind`` (the noun of error messages) and implement :meth:`draw`; the
    constructor of a subclass sets ``n``, ``seed`` and ``start`` through
    :meth:`_init_draws`.
    """

    kind: ClassVar[str] = "example"
    n: int
    seed: int
    start: int

    def _init_draws(self, n: int, seed: int, start: int) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n, self.seed, self.start = n, seed, start

    @abc.abstractmethod
    def draw(self, generator: torch.Generator) -> T:
        """One example from its own generator."""

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> SeededDraws[T]: ...
    def __getitem__(self, i: int | slice) -> T | SeededDraws[T]:
        if isinstance(i, slice):
            lo, hi, step = i.indices(self.n)
            if step != 1:
                raise ValueError(f"{self.kind} examples slice with step 1 only")
            view = copy.copy(self)  # shares the item pool; only the range differs
            view.n, view.start = max(hi - lo, 0), self.start + lo
            return view
        if not -self.n <= i < self.n:
            raise IndexError(f"{self.kind} {i} out of range [0, {self.n})")
        index = self.start + (i % self.n)
        return self.draw(torch.Generator().manual_seed(self.seed * 1_000_003 + index))


__all__ = ["SeededDraws"]
