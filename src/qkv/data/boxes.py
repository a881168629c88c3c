"""Bounding boxes: conversions, areas, IoU and generalized IoU (Rezatofighi et al. 2019,
"Generalized Intersection over Union"), as DETR uses them (Carion et al. 2020, sec. 3.1).

Boxes are ``(..., 4)`` float tensors: ``xyxy`` = ``(x0, y0, x1, y1)`` corners with
``x0 <= x1``, ``y0 <= y1``; ``cxcywh`` = ``(centre x, centre y, width, height)``. DETR
predicts ``cxcywh`` in ``[0, 1]`` relative to the image.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h) -> (cx - w/2, cy - h/2, cx + w/2, cy + h/2)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(x0, y0, x1, y1) -> ((x0 + x1)/2, (y0 + y1)/2, x1 - x0, y1 - y0)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Areas of ``xyxy`` boxes ``(..., 4) -> (...)``."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of ``xyxy`` boxes, and the union areas.

    Args:
        a: ``(n, 4)``.
        b: ``(m, 4)``.

    Returns:
        ``(iou, union)``, each ``(n, m)``.
    """
    area_a, area_b = box_area(a), box_area(b)
    top_left = torch.max(a[:, None, :2], b[None, :, :2])  # (n, m, 2)
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # (n, m)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union, union


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalized IoU ``IoU - (|C| - |A u B|) / |C|`` of ``xyxy`` boxes, with
    ``C`` the smallest box enclosing both; in ``[-1, 1]``.

    Args:
        a: ``(n, 4)``.
        b: ``(m, 4)``.

    Returns:
        ``(n, m)``.

    Raises:
        ValueError: degenerate boxes (``x1 < x0`` or ``y1 < y0``), which would give
            meaningless values.
    """
    for name, t in (("a", a), ("b", b)):
        if t.numel() and not (t[:, 2:] >= t[:, :2]).all():
            raise ValueError(f"boxes {name} must be xyxy with x1 >= x0 and y1 >= y0")
    iou, union = box_iou(a, b)
    top_left = torch.min(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.max(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]  # (n, m)
    return iou - (enclosing - union) / enclosing


__all__ = ["box_area", "box_iou", "cxcywh_to_xyxy", "generalized_box_iou", "xyxy_to_cxcywh"]
