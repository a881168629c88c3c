"""Swin's learned relative position bias inside a window (Liu et al. 2021, sec. 3.2, eq. 4).

``Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V`` with ``B in R^{M^2 x M^2}`` taken from
a smaller table ``B_hat in R^{(2M-1) x (2M-1)}`` (per head): tokens ``i`` and ``j`` of an
``M x M`` window at rows ``r_i, r_j`` and columns ``c_i, c_j`` get
``B[i, j] = B_hat[r_i - r_j + M - 1, c_i - c_j + M - 1]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def relative_position_index(window: int, device: torch.device | str | None = None) -> Tensor:
    """Row of the flattened ``B_hat`` table for every pair of tokens of a window.

    ``index[i, j] = (r_i - r_j + M - 1) * (2M - 1) + (c_i - c_j + M - 1)`` with tokens
    numbered row-major (``i = r_i * M + c_i``), as in the reference implementation.

    Args:
        window: the window side ``M``.
        device: where to build it.

    Returns:
        ``(M^2, M^2)`` long, values in ``[0, (2M - 1)^2)``.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValueError(f"window must be a positive int, got {window!r}")
    pos = torch.arange(window * window, device=device)
    r, c = pos // window, pos % window  # (N,) each
    dr = r[:, None] - r[None, :] + window - 1  # (N, N), in [0, 2M - 2]
    dc = c[:, None] - c[None, :] + window - 1
    return dr * (2 * window - 1) + dc  # (N, N)


class WindowRelativeBias(nn.Module):
    """Learned per-head bias of the relative position of two tokens of one window.

    The table is ``relative_position_bias_table`` of shape ``((2M-1)^2, h)``, named and
    laid out as in the reference code and in ``transformers``' ``SwinAttention``; its
    initial values are zero (``transformers``) or ``N(0, 0.02^2)`` truncated (the
    reference); :func:`qkv.models.init_weights` leaves it to the model.

    Args:
        n_heads: heads ``h``.
        window: window side ``M``.

    Raises:
        ValueError: sizes that are not positive ints.
    """

    index: Tensor

    def __init__(self, n_heads: int, window: int) -> None:
        super().__init__()
        if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads <= 0:
            raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
        self.n_heads, self.window = n_heads, window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, n_heads)
        )
        # fixed by the window: not saved, rebuilt with the module
        self.register_buffer("index", relative_position_index(window), persistent=False)

    def forward(self) -> Tensor:
        """The bias of one window, ``(1, h, M^2, M^2)``, for every window alike."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.index.view(-1)]  # (N * N, h)
        return bias.view(n, n, self.n_heads).permute(2, 0, 1).unsqueeze(0)  # (1, h, N, N)

    def grid(self, height: int, width: int) -> Tensor:
        """The same bias over a whole ``(H, W)`` grid flattened row-major, for the dense
        reference (:class:`qkv.masks.ShiftedWindow` over the grid): pairs closer than a
        window in both directions get their table entry, others 0 (they never share a
        window, so the mask removes them).

        Returns:
            ``(1, h, H W, H W)``.
        """
        m = self.window
        pos = torch.arange(height * width, device=self.index.device)
        r, c = pos // width, pos % width
        dr = r[:, None] - r[None, :]  # (HW, HW)
        dc = c[:, None] - c[None, :]
        near = (dr.abs() < m) & (dc.abs() < m)
        idx = ((dr + m - 1) * (2 * m - 1) + (dc + m - 1)).clamp(0, (2 * m - 1) ** 2 - 1)
        bias = self.relative_position_bias_table[idx]  # (HW, HW, h)
        bias = bias * near[..., None].to(bias.dtype)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, h, HW, HW)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, window={self.window}"


__all__ = ["WindowRelativeBias", "relative_position_index"]
