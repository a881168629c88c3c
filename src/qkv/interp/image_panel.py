"""The input picture of a report and where each patch token sits on it, for the report's
interactive image panel (:func:`qkv.interp.build_report` with ``image=``): hover a patch to
see where it attends, as heat over the picture.

The picture travels as a PNG data URL inside the report's JSON data (the page's policy
allows ``img-src data:`` only); the weights are the report's own, never a second copy.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def png_bytes(image: Tensor) -> bytes:
    """An image as an 8-bit PNG (grey for one channel, RGB for three), no dependencies.

    Args:
        image: ``(1 or 3, H, W)`` in ``[0, 1]`` (values outside are clipped).

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: another shape.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3) or min(image.shape[1:]) < 1:
        raise ValueError(f"image must be (1 or 3, H, W), got {tuple(image.shape)}")
    c, h, w = image.shape
    pix = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    rows = pix.permute(1, 2, 0).reshape(h, w * c)  # (H, W c), channels interleaved
    raw = torch.cat([torch.zeros(h, 1, dtype=torch.uint8), rows], dim=1)  # filter 0 per row
    body = zlib.compress(raw.numpy().tobytes(), 9)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class ImagePanel:
    """The input image and its patch grid, for the report's image panel.

    Attributes:
        image: ``(1 or 3, H, W)`` in ``[0, 1]``.
        grid: ``(rows, cols)`` of patch tokens over the image.
        patches: the input token index of each patch, row-major (``rows * cols`` of them;
            a ViT's are ``1 .. rows * cols``, after its class token). Input tokens not listed
            (a class token) are offered as buttons when they are queries.

    Raises:
        ValueError: a bad image shape or grid, or patches that are not ``rows * cols``
            distinct non-negative token indices.
    """

    image: Tensor
    grid: tuple[int, int]
    patches: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[0] not in (1, 3):
            raise ValueError(f"image must be (1 or 3, H, W), got {tuple(self.image.shape)}")
        rows, cols = self.grid
        if not all(isinstance(n, int) and n >= 1 for n in (rows, cols)):
            raise ValueError(f"grid must be two positive ints, got {self.grid!r}")
        if len(self.patches) != rows * cols:
            raise ValueError(
                f"patches ({len(self.patches)}) must number rows x cols = {rows} x {cols} "
                f"= {rows * cols}"
            )
        if len(set(self.patches)) != len(self.patches) or min(self.patches) < 0:
            raise ValueError("patches must be distinct non-negative token indices")

    @classmethod
    def row_major(cls, image: Tensor, grid: tuple[int, int], *, first: int = 0) -> ImagePanel:
        """Patches as tokens ``first .. first + rows * cols - 1`` in row-major order (a ViT:
        ``first=1``, after the class token; a Swin's grid or DETR's feature map: 0)."""
        n = grid[0] * grid[1]
        return cls(image, (int(grid[0]), int(grid[1])), tuple(range(first, first + n)))

    def data(self, n_tokens: int) -> dict[str, Any]:
        """The panel's JSON data, checked against the ``n_tokens`` input tokens.

        Raises:
            ValueError: a patch index past the input tokens.
        """
        if max(self.patches) >= n_tokens:
            raise ValueError(
                f"image patches reach token {max(self.patches)} but input tokens number {n_tokens}"
            )
        png = base64.b64encode(png_bytes(self.image)).decode("ascii")
        return {
            "src": "data:image/png;base64," + png,
            "width": int(self.image.shape[2]),
            "height": int(self.image.shape[1]),
            "rows": self.grid[0],
            "cols": self.grid[1],
            "patches": [int(p) for p in self.patches],
        }


__all__ = ["ImagePanel", "png_bytes"]
