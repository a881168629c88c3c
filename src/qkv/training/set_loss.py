"""DETR's set prediction loss (Carion et al. 2020, sec. 3.1, eq. 2): after the Hungarian
matching, cross entropy on every query's class (the unmatched ones are "no object", weighted
down by ``eos_coef``) plus, on the matched pairs, the L1 and generalized IoU box losses,
each normalized by the number of objects; with ``aux_loss`` the same for every decoder
layer's predictions (sec. 3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.data.boxes import cxcywh_to_xyxy, generalized_box_iou
from qkv.models import DETRConfig, DETROutput
from qkv.training.matcher import Target, hungarian_match


def _one_output(
    logits: Tensor, boxes: Tensor, targets: Sequence[Target], cfg: DETRConfig, n_boxes: float
) -> dict[str, Tensor]:
    """The three losses of one decoder layer's predictions."""
    pairs = hungarian_match(
        logits,
        boxes,
        targets,
        cost_class=cfg.cost_class,
        cost_bbox=cfg.cost_bbox,
        cost_giou=cfg.cost_giou,
    )
    b, n_q, n_cls = logits.shape
    no_object = n_cls - 1
    classes = torch.full((b, n_q), no_object, dtype=torch.long, device=logits.device)
    batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(pairs)])
    query_idx = torch.cat([q for q, _ in pairs])
    dev = logits.device
    batch_idx, query_idx = batch_idx.to(dev), query_idx.to(dev)
    matched_labels = torch.cat(
        [t["labels"][o.to(t["labels"].device)] for t, (_, o) in zip(targets, pairs)]
    )
    classes[batch_idx, query_idx] = matched_labels.to(dev)
    weight = torch.ones(n_cls, device=dev, dtype=torch.float32)
    weight[no_object] = cfg.eos_coef
    ce = F.cross_entropy(logits.float().transpose(1, 2), classes, weight=weight)
    src = boxes[batch_idx, query_idx].float()  # (n, 4)
    tgt = (
        torch.cat([t["boxes"][o.to(t["boxes"].device)] for t, (_, o) in zip(targets, pairs)])
        .to(dev)
        .float()
    )
    l1 = F.l1_loss(src, tgt, reduction="sum") / n_boxes
    if src.numel():
        giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt)))
        giou_loss = (1 - giou).sum() / n_boxes
    else:
        giou_loss = src.sum()
    return {"ce": ce, "bbox": l1, "giou": giou_loss}


def set_loss(
    output: DETROutput, targets: Sequence[Target], cfg: DETRConfig
) -> tuple[Tensor, dict[str, float]]:
    """DETR's loss of a batch.

    ``L = sum over decoder outputs of CE + loss_bbox * L1 + loss_giou * (1 - GIoU)``, with
    the cross entropy a weighted mean over all queries (as in the reference) and the box
    losses summed over the matched pairs and divided by the number of objects in the batch
    (at least 1).

    Args:
        output: the model's :class:`~qkv.models.DETROutput`.
        targets: per image, ``{"labels": (n_i,), "boxes": (n_i, 4) cxcywh in [0, 1]}``.
        cfg: the model's config (matcher costs, loss weights, ``eos_coef``).

    Returns:
        ``(loss, logs)``: the scalar loss, and the last layer's ``loss_ce``, ``loss_bbox``
        and ``loss_giou`` as floats.
    """
    n_boxes = max(float(sum(int(t["labels"].numel()) for t in targets)), 1.0)
    outputs = [(output.logits, output.boxes), *output.aux]
    total = output.logits.new_zeros((), dtype=torch.float32)
    last: dict[str, Tensor] = {}
    for logits, boxes in outputs:
        parts = _one_output(logits, boxes, targets, cfg, n_boxes)
        total = total + parts["ce"] + cfg.loss_bbox * parts["bbox"] + cfg.loss_giou * parts["giou"]
        if not last:
            last = parts
    logs = {f"loss_{k}": float(v.detach()) for k, v in last.items()}
    return total, logs


__all__ = ["set_loss"]
