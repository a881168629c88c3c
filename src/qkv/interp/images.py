"""Attention on images: where a Vision Transformer's class token (or any query) looks, as a
heat overlay on the input picture (Dosovitskiy et al. 2021, fig. 6; attention rollout of
Abnar & Zuidema 2020); Swin's window attention put back on its grid
(:func:`windows_to_grid`); DETR's object queries looking at the image next to their boxes
(Carion et al. 2020, fig. 6).

A ViT reads ``[CLS] + patches`` in row-major order; a row of attention weights over those
keys, without the class token, reshapes to the ``(rows, cols)`` patch grid.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from qkv.interp.capture import AttentionRecord
from qkv.interp.plots import _figure
from qkv.interp.rollout import rollout

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def patch_map(weights: Tensor, grid: tuple[int, int], *, prefix: int = 1) -> Tensor:
    """One query's weights over ``prefix`` special keys then the patches, as a patch grid.

    Args:
        weights: ``(s_k,)`` weights with ``s_k = prefix + rows * cols``.
        grid: ``(rows, cols)`` of patches.
        prefix: keys before the patches (1: the class token).

    Returns:
        ``(rows, cols)`` float, the patches' weights (not renormalized).

    Raises:
        ValueError: a length that is not ``prefix + rows * cols``.
    """
    rows, cols = grid
    if weights.ndim != 1 or weights.shape[0] != prefix + rows * cols:
        raise ValueError(
            f"weights must be ({prefix} + {rows} x {cols},) = ({prefix + rows * cols},), got "
            f"{tuple(weights.shape)}"
        )
    return weights[prefix:].float().reshape(rows, cols)


def cls_maps(
    record: AttentionRecord, grid: tuple[int, int], *, batch: int = 0
) -> list[tuple[str, Tensor]]:
    """Where the class token looks: the rollout over all layers, then each layer's
    head-averaged attention of query 0.

    Args:
        record: an encoder record of a ViT with every head and row recorded.
        grid: the patch grid.
        batch: which image of the batch.

    Returns:
        ``[(title, (rows, cols) map), ...]``: ``"rollout"`` first, then one per layer.
    """
    out = [("rollout (all layers)", patch_map(rollout(record)[batch, 0], grid))]
    for i, entry in enumerate(record.by_kind("encoder_self")):
        w = entry.weights[batch].float().mean(0)  # (s, s): heads averaged
        out.append((f"layer {i}, heads averaged", patch_map(w[0], grid)))
    return out


def windows_to_grid(
    weights: Tensor, grid: tuple[int, int], window: int, shift: int, *, batch: int = 0
) -> Tensor:
    """Swin's window attention of one image as attention over its whole grid.

    A Swin block attends inside windows of the grid padded to a multiple of the window and
    rolled by ``(-shift, -shift)`` (:func:`qkv.masks.window_partition`); each window's
    ``(M^2, M^2)`` weights go back to the tokens' places on the grid, zeros elsewhere (the
    same attention as :class:`qkv.masks.ShiftedWindow` over the grid). Padding tokens are
    dropped (their weights are left out, so a row near the border may sum to less than 1).

    Args:
        weights: ``(b * n_windows, h, M^2, M^2)``, as recorded from a Swin block.
        grid: the block's ``(H, W)`` token grid.
        window: ``M``.
        shift: the block's cyclic shift.
        batch: which image.

    Returns:
        ``(h, H W, H W)``, tokens row-major.
    """
    m = window
    h, w = grid
    hp, wp = -(-h // m) * m, -(-w // m) * m
    n_w = (hp // m) * (wp // m)
    win = weights[batch * n_w : (batch + 1) * n_w].float()  # (nW, heads, N, N)
    wi = torch.arange(n_w)[:, None]  # (nW, 1)
    pi = torch.arange(m * m)[None, :]  # (1, N)
    r = ((wi // (wp // m)) * m + pi // m + shift) % hp  # (nW, N), rows before the roll
    c = ((wi % (wp // m)) * m + pi % m + shift) % wp
    flat = (r * wp + c).reshape(-1)  # (nW N,)
    dense = torch.zeros(win.shape[1], hp * wp, hp * wp)
    blocks = win.permute(1, 0, 2, 3)  # (heads, nW, N, N)
    rows = flat.view(n_w, m * m)
    dense[:, rows[:, :, None], rows[:, None, :]] = blocks
    keep = ((torch.arange(hp)[:, None] < h) & (torch.arange(wp)[None, :] < w)).reshape(-1)
    return dense[:, keep][:, :, keep]  # (heads, H W, H W)


def plot_overlays(
    image: Tensor,
    maps: Sequence[tuple[str, Tensor]],
    *,
    columns: int = 4,
    alpha: float = 0.55,
    boxes: Sequence[tuple[float, float, float, float] | None] | None = None,
) -> Figure:
    """The image, then each map as a heat overlay on it (nearest-patch upsampling, each map
    scaled to its own maximum), optionally with a box drawn on each panel.

    Args:
        image: ``(c, H, W)`` in ``[0, 1]`` (1 or 3 channels).
        maps: ``[(title, (rows, cols) map), ...]``.
        columns: panels per row.
        alpha: opacity of the heat.
        boxes: one ``(x0, y0, x1, y1)`` box in pixels (or None) per map.

    Returns:
        A matplotlib ``Figure``.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be (1 or 3, H, W), got {tuple(image.shape)}")
    h, w = image.shape[1:]
    pic = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu()  # (H, W, c)
    pic = (pic.squeeze(-1) if pic.shape[-1] == 1 else pic).numpy()
    n = 1 + len(maps)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig = _figure((2.4 * cols, 2.5 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    axes.flat[0].imshow(pic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes.flat[0].set_title("input", fontsize=9)
    for ax, (title, m) in zip(list(axes.flat)[1:], maps):
        heat = m.float().cpu()
        heat = heat / heat.max().clamp_min(1e-12)
        up = torch.nn.functional.interpolate(heat[None, None], size=(h, w), mode="nearest")
        up = up[0, 0].numpy()  # (H, W)
        ax.imshow(pic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(up, cmap="inferno", alpha=alpha, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    for ax, box in zip(list(axes.flat)[1:], boxes or ()):
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(_rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0))
    return fig


def _rectangle(xy: tuple[float, float], width: float, height: float) -> object:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, fill=False, edgecolor="#38bdf8", linewidth=1.5)


def figure_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """A figure as PNG bytes (to embed in the HTML report)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


__all__ = ["cls_maps", "figure_png", "patch_map", "plot_overlays", "windows_to_grid"]
