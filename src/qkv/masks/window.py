r"""Two-dimensional window attention: Swin's (shifted) windows (Liu et al. 2021, sec. 3.2).

The tokens are a ``(H, W)`` grid flattened row-major (token ``r * W + c`` is the patch at
row ``r``, column ``c``). Swin attends inside non-overlapping ``w x w`` windows, and every
other block shifts the windows by ``s = w // 2``: it rolls the grid by ``(-s, -s)``
(the cyclic shift), partitions it into windows, and masks, inside the windows that the
roll wrapped around the border, the pairs that came from different sides of the grid.

The same attention, seen in the grid's own coordinates, is simply *attention inside the
windows of a partition offset by* ``s``: key ``j`` is visible from query ``i`` iff

.. math::

    \lfloor (r_i - s) / w \rfloor = \lfloor (r_j - s) / w \rfloor \quad\text{and}\quad
    \lfloor (c_i - s) / w \rfloor = \lfloor (c_j - s) / w \rfloor,

with partial windows at the borders (``[0, s)`` and ``[H - w + s, H)`` are separate
windows; the roll joins them into one window, and the paper's mask splits them again).
:class:`ShiftedWindow` is that rule as a lazy mask over the flattened grid (dense
materialization, block layouts, FlexAttention), and :meth:`ShiftedWindow.windows` is the
same rule in the rolled, window-partitioned layout that Swin computes in: one
``(w^2, w^2)`` mask per window, for the existing :func:`qkv.attention` backends. The two
agree when ``w`` divides ``H`` and ``W`` (the Swin model pads the grid to make it so).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv._checks import check_int
from qkv.masks._base import Mask, MaskMod


def window_partition(x: Tensor, window: int) -> Tensor:
    """Cut a grid into non-overlapping ``window x window`` windows.

    Args:
        x: ``(b, H, W, d)`` with ``window`` dividing ``H`` and ``W``.
        window: the window side ``w``.

    Returns:
        ``(b * n_windows, w * w, d)``: windows in row-major order of the window grid (image
        0's windows first), tokens row-major inside each window.

    Raises:
        ValueError: a grid that ``window`` does not divide.
    """
    b, h, w_, d = x.shape
    if h % window or w_ % window:
        raise ValueError(f"window ({window}) must divide the grid ({h}, {w_})")
    x = x.view(b, h // window, window, w_ // window, window, d)  # (b, nH, w, nW, w, d)
    x = x.transpose(2, 3)  # (b, nH, nW, w, w, d)
    return x.reshape(-1, window * window, d)  # (b * nH * nW, w * w, d)


def window_reverse(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Put windows back into the grid: the inverse of :func:`window_partition`.

    Args:
        windows: ``(b * n_windows, w * w, d)``.
        window: the window side ``w``.
        height: grid rows ``H``.
        width: grid columns ``W``.

    Returns:
        ``(b, H, W, d)``.
    """
    d = windows.shape[-1]
    nh, nw = height // window, width // window
    x = windows.view(-1, nh, nw, window, window, d)  # (b, nH, nW, w, w, d)
    x = x.transpose(2, 3)  # (b, nH, w, nW, w, d)
    return x.reshape(-1, height, width, d)  # (b, H, W, d)


def window_ids(
    height: int, width: int, window: int, shift: int, device: torch.device | str | None = None
) -> Tensor:
    """The window of every grid position in the partition offset by ``shift``.

    Returns:
        ``(H, W)`` long: equal ids = the same (shifted) window.
    """
    rows = torch.div(torch.arange(height, device=device) - shift, window, rounding_mode="floor")
    cols = torch.div(torch.arange(width, device=device) - shift, window, rounding_mode="floor")
    n_cols = width // window + 2  # ids of a row of windows never reach the next row's
    return (rows[:, None] + 1) * n_cols + (cols[None, :] + 1)  # (H, W)


class ShiftedWindow(Mask):
    """Swin's window attention over a flattened ``(H, W)`` grid: see the module docstring.

    ``shift=0`` is plain (W-MSA) window attention, ``shift=w // 2`` the shifted windows
    (SW-MSA) of every other Swin block.

    Args:
        grid: ``(H, W)``, the token grid (``s_q = s_k = H * W``).
        window: window side ``w``.
        shift: the cyclic shift ``s``, ``0 <= s < w``.

    Raises:
        ValueError: sizes that are not positive ints, or a shift outside ``[0, w)``.
    """

    def __init__(self, grid: tuple[int, int], window: int, shift: int = 0) -> None:
        if not isinstance(grid, (tuple, list)) or len(grid) != 2:
            raise ValueError(f"grid must be (H, W), got {grid!r}")
        self.height = check_int("grid[0]", grid[0], 1, positive=False)
        self.width = check_int("grid[1]", grid[1], 1, positive=False)
        self.window = check_int("window", window, 1, positive=False)
        self.shift = check_int("shift", shift, 0)
        if shift >= window:
            raise ValueError(f"shift ({shift}) must be < window ({window})")

    @property
    def n_tokens(self) -> int:
        """``H * W``."""
        return self.height * self.width

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        n = self.n_tokens
        if s_q != n or s_k != n:
            raise ValueError(
                f"ShiftedWindow over a {self.height}x{self.width} grid needs s_q = s_k = {n}, "
                f"got s_q={s_q}, s_k={s_k}"
            )
        width, window, shift = self.width, self.window, self.shift

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            def cell(t: Tensor) -> tuple[Tensor, Tensor]:
                r = torch.div(t // width - shift, window, rounding_mode="floor")
                c = torch.div(t % width - shift, window, rounding_mode="floor")
                return r, c

            (rq, cq), (rk, ck) = cell(q), cell(k)
            return (rq == rk) & (cq == ck)

        return mask_mod

    def windows(self, device: torch.device | str | None = None) -> Tensor | None:
        """The mask in Swin's own layout: the grid rolled by ``(-s, -s)`` and partitioned
        by :func:`window_partition`, one ``(w^2, w^2)`` mask per window.

        Returns:
            ``(n_windows, w^2, w^2)`` bool (True = may attend), or None when nothing is
            masked (``shift = 0``: every window sees all of itself).

        Raises:
            ValueError: a grid that ``window`` does not divide.
        """
        if self.shift == 0:
            return None
        ids = window_ids(self.height, self.width, self.window, self.shift, device)  # (H, W)
        ids = torch.roll(ids, shifts=(-self.shift, -self.shift), dims=(0, 1))
        per_window = window_partition(ids[None, :, :, None], self.window)[..., 0]  # (nW, N)
        return per_window[:, :, None] == per_window[:, None, :]  # (nW, N, N)

    def __repr__(self) -> str:
        return f"shifted_window(({self.height}, {self.width}), {self.window}, shift={self.shift})"


def shifted_window(grid: tuple[int, int], window: int, shift: int = 0) -> ShiftedWindow:
    """A (shifted) 2-D window mask; see :class:`ShiftedWindow`."""
    return ShiftedWindow(grid, window, shift)


__all__ = ["ShiftedWindow", "shifted_window", "window_ids", "window_partition", "window_reverse"]
