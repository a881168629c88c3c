"""Writing grey images as pictures: one PNG per image, or a titled grid of them (the
``text2image`` task's samples)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from qkv.data.outfiles import write_output_file
from qkv.interp.plots import _figure, save_figure


def write_image_grid(
    images: Tensor,
    titles: Sequence[str],
    path: str | Path,
    *,
    columns: int,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Save ``(n, 1, H, W)`` grey images on a grid of ``columns``, each with its title
    (and each row with its label) as a PNG or SVG."""
    n = len(images)
    cols = max(1, min(columns, n))
    rows = (n + cols - 1) // cols
    fig = _figure((1.1 * cols + (1.4 if row_labels else 0), 1.25 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        ax.imshow(images[k, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(titles[k], fontsize=7)
        if row_labels and k % cols == 0:
            ax.set_ylabel(row_labels[k // cols], fontsize=8, rotation=0, ha="right", va="center")
    return save_figure(fig, path)


def write_png(image: Tensor, path: str | Path, *, scale: int = 1) -> Path:
    """Write a ``(1, H, W)`` grey image in ``[0, 1]`` as a PNG, ``scale`` times larger
    (nearest neighbour)."""
    from PIL import Image

    grey = (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    im = Image.fromarray(grey, mode="L")
    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    write_output_file(path, buf.getvalue())  # never through a planted link
    return Path(path)


__all__ = ["write_image_grid", "write_png"]
