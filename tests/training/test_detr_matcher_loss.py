"""DETR's Hungarian matcher against brute force, its cost against the formula, and the set
loss against a hand computation."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import qkv.models as M
from qkv.data.boxes import cxcywh_to_xyxy, generalized_box_iou
from qkv.models import DETROutput
from qkv.training.matcher import hungarian_match, linear_assignment, match_cost
from qkv.training.set_loss import set_loss

pytest.importorskip("scipy")


def _brute_force(cost: torch.Tensor) -> float:
    n, m = cost.shape
    if n >= m:
        return min(
            sum(cost[r, c] for c, r in enumerate(p)) for p in itertools.permutations(range(n), m)
        )
    return min(
        sum(cost[r, c] for r, c in enumerate(p)) for p in itertools.permutations(range(m), n)
    )


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 2), (2, 5), (6, 6), (7, 3)])
@pytest.mark.parametrize("seed", range(5))
def test_linear_assignment_is_optimal(shape, seed) -> None:
    cost = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 10 - 3
    rows, cols = linear_assignment(cost)
    assert len(rows) == min(shape) and len(set(rows.tolist())) == len(rows)
    assert len(set(cols.tolist())) == len(cols)
    assert float(cost[rows, cols].sum()) == pytest.approx(float(_brute_force(cost)), abs=1e-5)


def test_linear_assignment_errors() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        linear_assignment(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match=r"\(n, m\) matrix"):
        linear_assignment(torch.zeros(3))


def test_match_cost_is_detrs_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits, boxes = torch.randn(4, 3, generator=g), torch.rand(4, 4, generator=g) * 0.5 + 0.2
    labels, tgt = torch.tensor([1, 0]), torch.rand(2, 4, generator=g) * 0.5 + 0.2
    cost = match_cost(logits, boxes, labels, tgt, cost_class=1.5, cost_bbox=5, cost_giou=2)
    for i in range(4):
        for j in range(2):
            p = logits[i].softmax(-1)[labels[j]]
            l1 = (boxes[i] - tgt[j]).abs().sum()
            giou = generalized_box_iou(
                cxcywh_to_xyxy(boxes[i : i + 1]), cxcywh_to_xyxy(tgt[j : j + 1])
            )
            assert float(cost[i, j]) == pytest.approx(
                float(-1.5 * p + 5 * l1 - 2 * giou[0, 0]), abs=1e-5
            )


def test_hungarian_match_finds_the_objects_and_handles_empty_images() -> None:
    tgt = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.2, 0.3]])
    boxes = torch.tensor([[[0.5, 0.5, 0.3, 0.3], [0.7, 0.6, 0.2, 0.3], [0.2, 0.2, 0.1, 0.1]]] * 2)
    logits = torch.zeros(2, 3, 4)
    targets = [
        {"labels": torch.tensor([1, 2]), "boxes": tgt},
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    (q, o), (q2, o2) = hungarian_match(logits, boxes, targets)
    assert dict(zip(o.tolist(), q.tolist())) == {0: 2, 1: 1}
    assert q2.numel() == o2.numel() == 0
    with pytest.raises(ValueError, match="3 queries"):
        hungarian_match(
            logits[:1],
            boxes[:1],
            [{"labels": torch.zeros(4, dtype=torch.long), "boxes": torch.rand(4, 4)}],
        )


def test_set_loss_by_hand() -> None:
    cfg = M.preset_config("detr-tiny", n_classes=3, aux_loss=False)
    logits = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[[0.5, 0.5, 0.3, 0.3], [0.7, 0.6, 0.2, 0.3], [0.25, 0.2, 0.1, 0.1]]])
    tgt = {
        "labels": torch.tensor([1, 2]),
        "boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.2, 0.2]]),
    }
    loss, logs = set_loss(DETROutput(logits, boxes), [tgt], cfg)
    # the matching is query 2 <-> object 0, query 1 <-> object 1 (the boxes make it obvious)
    classes = torch.tensor([[3, 2, 1]])  # query 0 is "no object" (class 3)
    weight = torch.tensor([1.0, 1.0, 1.0, cfg.eos_coef])
    ce = F.cross_entropy(logits.transpose(1, 2), classes, weight=weight)
    src, dst = boxes[0, [2, 1]], tgt["boxes"]
    l1 = (src - dst).abs().sum() / 2
    giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(dst)))
    expect = ce + 5 * l1 + 2 * (1 - giou).sum() / 2
    assert float(loss) == pytest.approx(float(expect), rel=1e-5)
    assert logs["loss_ce"] == pytest.approx(float(ce), rel=1e-5)
    # auxiliary outputs add their own matched losses
    aux = DETROutput(logits, boxes, [(logits, boxes)])
    assert float(set_loss(aux, [tgt], cfg)[0]) == pytest.approx(2 * float(expect), rel=1e-5)


def test_set_loss_trains_every_parameter() -> None:
    model = M.from_preset("detr-tiny")
    images = torch.rand(2, 1, 32, 32)
    targets = [
        {"labels": torch.tensor([3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2]])},
        {
            "labels": torch.tensor([1, 5]),
            "boxes": torch.tensor([[0.6, 0.6, 0.3, 0.2], [0.2, 0.7, 0.1, 0.2]]),
        },
    ]
    loss, _ = set_loss(model(images), targets, model.config)
    loss.backward()
    missing = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()}
    # DETR's first decoder layer attends among queries whose states are still zero: its
    # values are the (zero-initialized) bias, the same for every query, so the weights of that
    # self-attention (and the norm after it, which sees a constant row) get no gradient yet,
    # exactly as in the reference implementation
    first = "decoder.layers.0."
    assert missing <= {
        first + "self_attn.qkv_proj.weight",
        first + "self_attn.out_proj.weight",
        first + "self_attn_norm.weight",
    }
    assert not {n for n in missing if not n.startswith(first)}
