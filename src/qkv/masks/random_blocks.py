"""Random block attention (the random part of BigBird, Zaheer et al. 2020).

Every query tile of ``block`` positions attends to ``n`` key tiles drawn at random. Random
edges keep the attention graph's diameter small (Zaheer et al. section 2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._block_table import sample_row, table_bounds, table_extent, table_mod
from qkv.masks._tiles import BlockBounds, check_block, register_bounds


def _check_count(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


class RandomBlocks(Mask):
    """Query tile ``t`` (absolute: query ``i`` is in tile ``(i + s_k - s_q) // block``) may
    attend to ``min(n, n_kb)`` distinct key tiles drawn uniformly, ``n_kb = ceil(s_k/block)``.

    The draw of a row depends only on ``(seed, t, n_kb)``: the same seed gives the same mask,
    and a query tile keeps its keys whatever ``s_q``.

    Args:
        n: random key tiles per query tile (``>= 0``).
        block: tile size (positive).
        seed: random seed.

    Raises:
        ValueError: a negative ``n``, a non-positive ``block``, a non-int ``seed``.
    """

    def __init__(self, n: int, block: int, seed: int = 0) -> None:
        self.n = _check_count(n, "n")
        self.block = check_block(block)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self._tables: dict[tuple[int, int], Tensor] = {}

    def table(self, s_q: int, s_k: int) -> tuple[Tensor, int]:
        """``(table, row0)``: bool ``(rows, n_kb)`` over absolute query tiles ``row0..``."""
        row0, n_cols = table_extent(s_q, s_k, self.block)
        key = (row0, n_cols)
        if key not in self._tables:
            t = torch.zeros(n_cols - row0, n_cols, dtype=torch.bool)
            for r in range(row0, n_cols):
                t[r - row0, sample_row(self.seed, r, n_cols, self.n)] = True
            self._tables[key] = t
        return self._tables[key], row0

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        t, row0 = self.table(s_q, s_k)
        return table_mod(t, row0, self.block, s_k - s_q)

    def __repr__(self) -> str:
        return f"random_blocks({self.n}, block={self.block}, seed={self.seed})"


@register_bounds(RandomBlocks)
def _bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, RandomBlocks)
    t, row0 = mask.table(s_q, s_k)
    return table_bounds(t.to(device), row0, mask.block, s_q, s_k, block)


def random_blocks(n: int, block: int, seed: int = 0) -> RandomBlocks:
    """A random block mask; see :class:`RandomBlocks`."""
    return RandomBlocks(n, block, seed)
