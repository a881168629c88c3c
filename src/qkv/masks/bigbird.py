"""BigBird block-sparse attention (Zaheer et al. 2020, "Big Bird: Transformers for Longer
Sequences"), the ITC variant: existing tokens are made global.

Three parts, all on tiles of ``block`` positions:

* window: query tile ``t`` sees key tiles ``t - window_blocks//2 .. t + window_blocks//2``;
* global: the first ``global_blocks`` tiles attend to everything and are attended by all
  (the paper's ITC; the HF implementation makes the first and the last tile global);
* random: every other query tile sees ``random_blocks`` key tiles drawn among the tiles
  not already covered by its window and the globals.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._block_table import sample_row, table_bounds, table_extent, table_mod
from qkv.masks._tiles import BlockBounds, check_block, register_bounds
from qkv.masks.random_blocks import _check_count


class BigBird(Mask):
    """BigBird-ITC: window + global + random tiles (see the module docstring).

    Query ``i`` is in the absolute tile ``(i + s_k - s_q) // block`` (bottom-right aligned
    like :class:`~qkv.masks.Causal`). Combine with ``causal()`` for a decoder or with
    ``padding(...)`` for padded batches.

    Args:
        block: tile size (positive; the paper uses 64).
        window_blocks: width of the tile band, odd (3 in the paper) or 0 for none.
        global_blocks: leading global tiles (``>= 0``).
        random_blocks: random key tiles per non-global query tile (``>= 0``).
        seed: random seed; the same seed gives the same mask.

    Raises:
        ValueError: a non-positive block, an even window, negative counts.
    """

    def __init__(
        self,
        block: int = 64,
        window_blocks: int = 3,
        global_blocks: int = 1,
        random_blocks: int = 3,
        seed: int = 0,
    ) -> None:
        self.block = check_block(block)
        self.window_blocks = _check_count(window_blocks, "window_blocks")
        if window_blocks % 2 == 0 and window_blocks != 0:
            raise ValueError(
                f"window_blocks must be odd (a band centred on the query tile) or 0, got "
                f"{window_blocks}"
            )
        self.global_blocks = _check_count(global_blocks, "global_blocks")
        self.random_blocks = _check_count(random_blocks, "random_blocks")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self._tables: dict[tuple[int, int], Tensor] = {}

    def table(self, s_q: int, s_k: int) -> tuple[Tensor, int]:
        """``(table, row0)``: bool ``(rows, n_kb)`` over absolute query tiles ``row0..``."""
        row0, n_cols = table_extent(s_q, s_k, self.block)
        key = (row0, n_cols)
        if key not in self._tables:
            half, g = self.window_blocks // 2, self.global_blocks
            rows = torch.arange(row0, n_cols)[:, None]
            cols = torch.arange(n_cols)[None, :]
            band = ((rows - cols).abs() <= half) & (self.window_blocks > 0)
            t = band | ((rows >= 0) & (rows < g)) | (cols < g)
            for r in range(row0, n_cols):
                if 0 <= r < g:
                    continue  # a global row already sees everything
                taken = [*range(r - half, r + half + 1)] if self.window_blocks else []
                picks = sample_row(self.seed, r, n_cols, self.random_blocks, [*taken, *range(g)])
                t[r - row0, picks] = True
            self._tables[key] = t
        return self._tables[key], row0

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        t, row0 = self.table(s_q, s_k)
        return table_mod(t, row0, self.block, s_k - s_q)

    def __repr__(self) -> str:
        return (
            f"bigbird(block={self.block}, window_blocks={self.window_blocks}, "
            f"global_blocks={self.global_blocks}, random_blocks={self.random_blocks}, "
            f"seed={self.seed})"
        )


@register_bounds(BigBird)
def _bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, BigBird)
    t, row0 = mask.table(s_q, s_k)
    return table_bounds(t.to(device), row0, mask.block, s_q, s_k, block)


def bigbird(
    block: int = 64,
    window_blocks: int = 3,
    global_blocks: int = 1,
    random_blocks: int = 3,
    seed: int = 0,
) -> BigBird:
    """A BigBird-ITC mask; see :class:`BigBird`."""
    return BigBird(block, window_blocks, global_blocks, random_blocks, seed)
