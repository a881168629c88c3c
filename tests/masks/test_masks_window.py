"""Swin's 2-D windows: partition/reverse, and the shifted-window mask against the paper's
hand-built mask (cyclic shift + the region labels of the wrapped windows)."""

from __future__ import annotations

import pytest
import torch

from qkv import masks
from qkv.masks import ShiftedWindow, window_partition, window_reverse


def _paper_window_masks(h: int, w: int, m: int, s: int) -> torch.Tensor:
    """The reference code's ``attn_mask`` (SwinTransformerBlock.__init__), as bool:
    label the rolled grid's regions with slices, partition, compare labels."""
    img = torch.zeros(1, h, w, 1)
    slices = (slice(0, -m), slice(-m, -s), slice(-s, None))
    cnt = 0
    for hs in slices:
        for ws in slices:
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, m)[..., 0]  # (nW, N)
    return win[:, None, :] == win[:, :, None]  # (nW, N, N)


def _paper_dense(h: int, w: int, m: int, s: int) -> torch.Tensor:
    """The same attention over the un-rolled grid, pair by pair: two tokens attend iff,
    after the roll, they share a window and a region label."""
    slices_r = [0 if r < h - m else (1 if r < h - s else 2) for r in range(h)]
    slices_c = [0 if c < w - m else (1 if c < w - s else 2) for c in range(w)]
    out = torch.zeros(h * w, h * w, dtype=torch.bool)
    for i in range(h * w):
        for j in range(h * w):
            (ri, ci), (rj, cj) = divmod(i, w), divmod(j, w)
            ri, ci, rj, cj = (ri - s) % h, (ci - s) % w, (rj - s) % h, (cj - s) % w
            same_window = ri // m == rj // m and ci // m == cj // m
            same_region = (slices_r[ri], slices_c[ci]) == (slices_r[rj], slices_c[cj])
            out[i, j] = same_window and same_region
    return out


def test_partition_then_reverse_is_identity_and_windows_are_blocks() -> None:
    x = torch.arange(2 * 6 * 9 * 3, dtype=torch.float32).view(2, 6, 9, 3)
    win = window_partition(x, 3)
    assert win.shape == (2 * 2 * 3, 9, 3)
    assert torch.equal(window_reverse(win, 3, 6, 9), x)
    # window 4 of image 0 is rows 3..5, columns 3..5, row-major
    assert torch.equal(win[4].view(3, 3, 3), x[0, 3:6, 3:6])
    assert torch.equal(win[6].view(3, 3, 3), x[1, 0:3, 0:3])
    with pytest.raises(ValueError, match=r"window \(4\) must divide the grid \(6, 9\)"):
        window_partition(x, 4)


@pytest.mark.parametrize(("h", "w", "m", "s"), [(8, 8, 4, 2), (6, 9, 3, 1), (14, 14, 7, 3)])
def test_windows_equal_the_papers_hand_built_mask(h: int, w: int, m: int, s: int) -> None:
    got = ShiftedWindow((h, w), m, s).windows()
    assert got is not None and torch.equal(got, _paper_window_masks(h, w, m, s))


@pytest.mark.parametrize(("h", "w", "m", "s"), [(8, 8, 4, 2), (6, 9, 3, 1), (4, 6, 2, 1)])
def test_dense_mask_is_the_rolled_attention_in_grid_coordinates(h, w, m, s) -> None:
    dense = masks.shifted_window((h, w), m, s).to_dense(h * w, h * w)
    assert torch.equal(dense, _paper_dense(h, w, m, s))


def test_no_shift_is_plain_windows() -> None:
    mask = ShiftedWindow((4, 4), 2)
    assert mask.windows() is None
    dense = mask.to_dense(16, 16)
    r, c = torch.arange(16) // 4, torch.arange(16) % 4
    block = ((r[:, None] // 2) == (r[None] // 2)) & ((c[:, None] // 2) == (c[None] // 2))
    assert torch.equal(dense, block)
    assert dense.sum() == 16 * 4  # every token sees its window of 4


def test_block_layout_and_algebra() -> None:
    mask = ShiftedWindow((8, 8), 4, 2)
    dense = mask.to_dense(64, 64)
    layout = mask.to_block_layout(64, 64, block=16)
    tiles = dense.view(4, 16, 4, 16).any(-1).any(1)
    assert torch.equal(layout, tiles)
    both = mask & masks.causal()
    assert torch.equal(both.to_dense(64, 64), dense & torch.ones(64, 64, dtype=torch.bool).tril())


def test_errors_name_the_values() -> None:
    with pytest.raises(ValueError, match=r"shift \(4\) must be < window \(4\)"):
        ShiftedWindow((8, 8), 4, 4)
    with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
        ShiftedWindow((8, 8), 0)
    with pytest.raises(ValueError, match=r"grid must be \(H, W\)"):
        ShiftedWindow(8, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs s_q = s_k = 64, got s_q=63"):
        ShiftedWindow((8, 8), 4).to_dense(63, 64)
