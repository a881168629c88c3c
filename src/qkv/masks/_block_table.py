"""Masks that are constant on ``block x block`` tiles, stored as a small table.

Random block attention and BigBird decide per (query tile, key tile). The table has one row
per *absolute* query tile (query ``i`` sits at ``p = i + s_k - s_q``, as for
:class:`~qkv.masks.Causal`) and one column per key tile; rows start at ``row0 <= 0`` so
that queries before the first key (``s_q > s_k``) have rows too.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import torch
from torch import Tensor

from qkv.masks._base import MaskMod
from qkv.masks._tiles import BlockBounds, DeviceLocal, block_spans, n_blocks


def table_extent(s_q: int, s_k: int, block: int) -> tuple[int, int]:
    """``(row0, n_cols)``: the first absolute query tile and the number of key tiles."""
    return min(0, s_k - s_q) // block, n_blocks(s_k, block)


def sample_row(seed: int, row: int, n_cols: int, n: int, excluded: Iterable[int] = ()) -> list[int]:
    """``min(n, available)`` distinct columns drawn uniformly from ``range(n_cols)`` minus
    ``excluded``, from a generator seeded by ``(seed, row)`` alone, so a row's draw does not
    depend on how many other rows are drawn."""
    rng = random.Random(f"qkv.masks.random_blocks:{seed}:{row}")
    ex = sorted({e for e in excluded if 0 <= e < n_cols})
    pool = n_cols - len(ex)
    out = []
    for c in rng.sample(range(pool), min(n, pool)):
        for e in ex:  # the c-th column that is not excluded
            if e <= c:
                c += 1
            else:
                break
        out.append(c)
    return out


def table_mod(table: Tensor, row0: int, block: int, off: int) -> MaskMod:
    """``mask_mod`` looking up the table of absolute tile ``((q + off) // block, k // block)``."""

    local = DeviceLocal(table)

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
        t = local.on(q.device)
        return t[torch.div(q + off, block, rounding_mode="floor") - row0, k // block]

    return mask_mod


def table_bounds(
    table: Tensor, row0: int, table_block: int, s_q: int, s_k: int, block: int
) -> BlockBounds:
    """Exact bounds of a tile-constant mask for any tiling ``block`` (equal to the table's
    own ``table_block`` or not), from an integral image of the table."""
    dev = table.device
    n_qb, n_kb = n_blocks(s_q, block), n_blocks(s_k, block)
    if n_qb == 0 or n_kb == 0:
        z = torch.zeros(1, n_qb, n_kb, dtype=torch.bool, device=dev)
        return BlockBounds(z, z)
    integral = torch.zeros(table.shape[0] + 1, table.shape[1] + 1, dtype=torch.long, device=dev)
    integral[1:, 1:] = table.long().cumsum(0).cumsum(1)
    off = s_k - s_q
    q_lo, q_hi = block_spans(s_q, block, dev)
    k_lo, k_hi = block_spans(s_k, block, dev)
    r0 = (torch.div(q_lo + off, table_block, rounding_mode="floor") - row0)[:, None]
    r1 = (torch.div(q_hi + off, table_block, rounding_mode="floor") - row0 + 1)[:, None]
    c0 = (k_lo // table_block)[None, :]
    c1 = (k_hi // table_block + 1)[None, :]
    count = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return BlockBounds((count > 0)[None], (count == (r1 - r0) * (c1 - c0))[None])
