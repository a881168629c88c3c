"""DETR's predictions as scored boxes: what ``detect`` evaluates and what its pictures show."""

from __future__ import annotations

from torch import Tensor

from qkv.data.boxes import cxcywh_to_xyxy

#: detections at least this confident are shown by ``samples`` and ``predict``
SHOW_SCORE = 0.5


def detections(logits: Tensor, boxes: Tensor, size: int) -> list[dict[str, Tensor]]:
    """DETR's predictions as detections: each query's most probable real class (the
    "no object" class left out) with its probability as the score, boxes in ``xyxy`` pixels.

    Args:
        logits: ``(b, N, n_classes + 1)``.
        boxes: ``(b, N, 4)`` ``cxcywh`` in ``[0, 1]``.
        size: the canvas side in pixels.

    Returns:
        Per image ``{"boxes": (N, 4), "scores": (N,), "labels": (N,)}``.
    """
    probs = logits.float().softmax(-1)[..., :-1]  # (b, N, n_classes)
    scores, labels = probs.max(-1)
    xyxy = (cxcywh_to_xyxy(boxes.float()) * size).clamp(0, size)
    return [{"boxes": x, "scores": s, "labels": c} for x, s, c in zip(xyxy, scores, labels)]


__all__ = ["SHOW_SCORE", "detections"]
