"""DETR's Hungarian matcher (Carion et al. 2020, sec. 3.1, eq. 1): the one-to-one assignment
of predictions to ground-truth objects of least total cost, solved by
``scipy.optimize.linear_sum_assignment`` (the Hungarian algorithm, Kuhn 1955)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from qkv.data.boxes import cxcywh_to_xyxy, generalized_box_iou

Target = Mapping[str, Tensor]


def linear_assignment(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The assignment of least total cost on a ``(n, m)`` cost matrix: ``min(n, m)`` pairs,
    each row and column used at most once.

    Args:
        cost: ``(n, m)`` float (any device; solved on the CPU in float64).

    Returns:
        ``(rows, cols)``, two long tensors of ``min(n, m)`` entries, rows ascending.

    Raises:
        ImportError: scipy is missing (``pip install scipy``; scikit-learn depends on it).
        ValueError: a cost matrix that is not 2-D or holds NaN or infinities.
    """
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as e:  # pragma: no cover - scipy comes with scikit-learn
        raise ImportError("the Hungarian matcher needs scipy: `pip install scipy`") from e
    if cost.ndim != 2:
        raise ValueError(f"cost must be a (n, m) matrix, got shape {tuple(cost.shape)}")
    c = cost.detach().to("cpu", torch.float64)
    if not torch.isfinite(c).all():
        raise ValueError("cost holds NaN or infinite values")
    rows, cols = linear_sum_assignment(c.numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def match_cost(
    logits: Tensor,
    boxes: Tensor,
    labels: Tensor,
    target_boxes: Tensor,
    *,
    cost_class: float = 1.0,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
) -> Tensor:
    """DETR's matching cost of every (prediction, object) pair of one image:
    ``-cost_class p(c_j) + cost_bbox |b - b_j|_1 - cost_giou GIoU(b, b_j)``.

    Args:
        logits: ``(N, n_classes + 1)`` class logits of the predictions.
        boxes: ``(N, 4)`` predicted ``cxcywh``.
        labels: ``(n,)`` the objects' classes.
        target_boxes: ``(n, 4)`` the objects' ``cxcywh``.
        cost_class, cost_bbox, cost_giou: the weights.

    Returns:
        ``(N, n)``.
    """
    prob = logits.float().softmax(-1)[:, labels]  # (N, n)
    l1 = torch.cdist(boxes.float(), target_boxes.float(), p=1)  # (N, n)
    giou = generalized_box_iou(cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(target_boxes.float()))
    return cost_bbox * l1 - cost_class * prob - cost_giou * giou


@torch.no_grad()
def hungarian_match(
    logits: Tensor,
    boxes: Tensor,
    targets: Sequence[Target],
    *,
    cost_class: float = 1.0,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
) -> list[tuple[Tensor, Tensor]]:
    """Match every image's predictions to its objects (:func:`match_cost`, then
    :func:`linear_assignment`).

    Args:
        logits: ``(b, N, n_classes + 1)``.
        boxes: ``(b, N, 4)`` ``cxcywh``.
        targets: per image, ``{"labels": (n_i,) long, "boxes": (n_i, 4) cxcywh}``.
        cost_class, cost_bbox, cost_giou: the matching weights.

    Returns:
        Per image, ``(query indices, object indices)`` of the ``n_i`` matched pairs (on the
        CPU).

    Raises:
        ValueError: a batch size that differs from the targets', or more objects than queries.
    """
    if logits.shape[0] != len(targets):
        raise ValueError(f"{logits.shape[0]} predictions for {len(targets)} targets")
    out = []
    for lg, bx, t in zip(logits, boxes, targets):
        n = int(t["labels"].numel())
        if n > lg.shape[0]:
            raise ValueError(f"an image has {n} objects but the model makes {lg.shape[0]} queries")
        if n == 0:
            empty = torch.zeros(0, dtype=torch.long)
            out.append((empty, empty))
            continue
        cost = match_cost(
            lg,
            bx,
            t["labels"],
            t["boxes"],
            cost_class=cost_class,
            cost_bbox=cost_bbox,
            cost_giou=cost_giou,
        )
        out.append(linear_assignment(cost))
    return out


__all__ = ["Target", "hungarian_match", "linear_assignment", "match_cost"]
