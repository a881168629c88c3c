"""Detection canvases: real item images (Fashion-MNIST clothes, digits) pasted at random
positions and scales on an empty canvas, with their boxes and classes known.

Each canvas is a pure function of ``(seed, index)``: the same canvas comes back whenever it is
asked for, without storing the data set, and two splits drawn from different item pools
never share an item. An item's box is the tight box of its visible pixels (above 10% of its
maximum) after scaling, so the empty margins of a Fashion-MNIST image are not part of it. A
new item is placed only where its box overlaps every earlier box by an IoU of at most
``max_iou`` (up to 20 tries, else it is left out); overlapping pixels take the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.data._draws import SeededDraws

Target = dict[str, Tensor]


@dataclass(frozen=True)
class CanvasSpec:
    """How canvases are drawn.

    Attributes:
        size: canvas side in pixels.
        min_items: fewest items per canvas (at least 1).
        max_items: most items per canvas.
        scale: ``(lo, hi)`` range of the item's side after scaling, as a multiple of its
            original side (uniform).
        max_iou: largest IoU a new item's box may have with an earlier one (0: no overlap).
    """

    size: int = 64
    min_items: int = 1
    max_items: int = 5
    scale: tuple[float, float] = (0.6, 1.2)
    max_iou: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.min_items <= self.max_items:
            raise ValueError(
                f"need 1 <= min_items ({self.min_items}) <= max_items ({self.max_items})"
            )
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {self.scale!r}")


def _tight_box(item: Tensor) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the pixels above 10% of the maximum."""
    if float(item.max()) <= 0:
        return None
    on = item > 0.1 * item.max()
    rows, cols = on.any(1).nonzero()[:, 0], on.any(0).nonzero()[:, 0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def draw_canvas(
    items: Tensor, labels: Tensor, spec: CanvasSpec, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """One canvas.

    Args:
        items: ``(n, H, W)`` grey item images (any real dtype, ``[0, 1]`` or ``[0, 255]``).
        labels: ``(n,)`` their classes.
        spec: the drawing rules.
        generator: the random source.

    Returns:
        ``(canvas (size, size) float in the items' scale, boxes (k, 4) xyxy in pixels,
        labels (k,))`` with ``1 <= k <= max_items``.
    """
    size = spec.size
    canvas = torch.zeros(size, size)
    want = int(torch.randint(spec.min_items, spec.max_items + 1, (1,), generator=generator))
    boxes: list[tuple[float, float, float, float]] = []
    classes: list[int] = []
    lo, hi = spec.scale
    for _ in range(want):
        for _try in range(20):
            i = int(torch.randint(len(items), (1,), generator=generator))
            item = items[i].float()
            f = lo + (hi - lo) * float(torch.rand((), generator=generator))
            side = max(4, min(size, round(item.shape[-1] * f)))
            scaled = F.interpolate(
                item[None, None], size=(side, side), mode="bilinear", antialias=True
            )[0, 0].clamp(min=0)
            tight = _tight_box(scaled)
            if tight is None:
                continue
            x = int(torch.randint(size - side + 1, (1,), generator=generator))
            y = int(torch.randint(size - side + 1, (1,), generator=generator))
            box = (x + tight[0], y + tight[1], x + tight[2], y + tight[3])
            if all(_iou(box, other) <= spec.max_iou for other in boxes):
                canvas[y : y + side, x : x + side] = torch.maximum(
                    canvas[y : y + side, x : x + side], scaled
                )
                boxes.append(tuple(float(v) for v in box))  # type: ignore[arg-type]
                classes.append(int(labels[i]))
                break
    return canvas, torch.tensor(boxes).view(-1, 4), torch.tensor(classes, dtype=torch.long)


class CanvasExamples(SeededDraws[tuple[Tensor, Target]]):
    """Canvases drawn on demand from an item pool, as ``(image, target)`` examples:
    ``image`` ``(1, size, size)`` float in ``[0, 1]``, ``target`` ``{"labels": (k,) long,
    "boxes": (k, 4) cxcywh in [0, 1]}``.

    Args:
        items: ``(n, H, W)`` item images.
        labels: ``(n,)`` classes.
        n: canvases.
        seed: canvas ``i`` is drawn from ``seed`` and ``i`` alone.
        spec: the drawing rules.
        scale: the pixel value that maps to 1.0 (255 for 8-bit images, 16 for sklearn digits).
    """

    kind = "canvas"

    def __init__(
        self,
        items: Tensor,
        labels: Tensor,
        n: int,
        seed: int,
        spec: CanvasSpec,
        scale: float = 255.0,
        start: int = 0,
    ) -> None:
        if items.ndim != 3 or labels.shape != items.shape[:1] or len(items) == 0:
            raise ValueError(
                f"items must be (n > 0, H, W) with (n,) labels, got {tuple(items.shape)} and "
                f"{tuple(labels.shape)}"
            )
        self._init_draws(n, seed, start)
        self.items, self.labels = items, labels.long()
        self.spec, self.scale = spec, scale

    def draw(self, generator: torch.Generator) -> tuple[Tensor, Target]:
        canvas, boxes, classes = draw_canvas(self.items, self.labels, self.spec, generator)
        size = float(self.spec.size)
        x0, y0, x1, y1 = (boxes / size).unbind(-1)
        cxcywh = torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)
        image = (canvas / self.scale).clamp(0, 1)[None]  # (1, size, size)
        return image, {"labels": classes, "boxes": cxcywh}


__all__ = ["CanvasExamples", "CanvasSpec", "draw_canvas"]
