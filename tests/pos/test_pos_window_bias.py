"""Swin's relative position bias: the index against the paper's formula, the lookup, and
the whole-grid form used by the dense reference."""

from __future__ import annotations

import pytest
import torch

from qkv.pos import WindowRelativeBias, relative_position_index


@pytest.mark.parametrize("m", [1, 2, 3, 7])
def test_index_is_the_papers_formula(m: int) -> None:
    idx = relative_position_index(m)
    assert idx.shape == (m * m, m * m)
    for i in range(m * m):
        for j in range(m * m):
            (ri, ci), (rj, cj) = divmod(i, m), divmod(j, m)
            # B[i, j] = B_hat[ri - rj + M - 1, ci - cj + M - 1], B_hat flattened row-major
            assert idx[i, j] == (ri - rj + m - 1) * (2 * m - 1) + (ci - cj + m - 1)
    assert idx.min() == 0 and idx.max() == (2 * m - 1) ** 2 - 1
    # the table's centre (zero offset) is on the diagonal
    assert (idx.diagonal() == (m - 1) * (2 * m - 1) + m - 1).all()


def test_bias_looks_up_the_table_per_head() -> None:
    bias = WindowRelativeBias(3, 2)
    with torch.no_grad():
        bias.relative_position_bias_table.copy_(torch.randn(9, 3))
    out = bias()
    assert out.shape == (1, 3, 4, 4)
    table = bias.relative_position_bias_table.view(3, 3, 3)  # (dr, dc, head)
    # token 3 = (1, 1), token 0 = (0, 0): offset (+1, +1)
    assert torch.equal(out[0, :, 3, 0], table[2, 2])
    assert torch.equal(out[0, :, 0, 3], table[0, 0])


def test_grid_bias_equals_the_window_bias_inside_a_window() -> None:
    bias = WindowRelativeBias(2, 3)
    with torch.no_grad():
        bias.relative_position_bias_table.normal_()
    grid = bias.grid(6, 6)  # (1, h, 36, 36)
    win = bias()  # (1, h, 9, 9)
    rows = torch.tensor([r * 6 + c for r in range(3, 6) for c in range(0, 3)])  # a window
    assert torch.equal(grid[0][:, rows][:, :, rows], win[0])
    assert (grid[0][:, 0, 35] == 0).all()  # 5 rows and columns apart: no entry


def test_errors() -> None:
    with pytest.raises(ValueError, match="window must be a positive int, got 0"):
        relative_position_index(0)
    with pytest.raises(ValueError, match="n_heads must be a positive int, got 0"):
        WindowRelativeBias(0, 3)
