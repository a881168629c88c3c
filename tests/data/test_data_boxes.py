"""Box conversions, IoU and generalized IoU against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from qkv.data.boxes import (
    box_area,
    box_iou,
    cxcywh_to_xyxy,
    generalized_box_iou,
    xyxy_to_cxcywh,
)


def test_conversions_by_hand_and_round_trip() -> None:
    c = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.3, 0.2, 0.2]])
    x = cxcywh_to_xyxy(c)
    torch.testing.assert_close(x, torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.0, 0.2, 0.2, 0.4]]))
    torch.testing.assert_close(xyxy_to_cxcywh(x), c)
    torch.testing.assert_close(box_area(x), torch.tensor([0.08, 0.04]))


def test_iou_and_giou_by_hand() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 4.0, 1.0]])
    iou, union = box_iou(a, b)
    # overlap 1, union 4 + 4 - 1 = 7; identical: 1; disjoint: 0
    torch.testing.assert_close(iou, torch.tensor([[1 / 7, 1.0, 0.0]]))
    torch.testing.assert_close(union, torch.tensor([[7.0, 4.0, 5.0]]))
    giou = generalized_box_iou(a, b)
    # enclosing boxes: 3x3 = 9, 2x2 = 4, 4x2 = 8
    expect = torch.tensor([[1 / 7 - (9 - 7) / 9, 1.0, 0.0 - (8 - 5) / 8]])
    torch.testing.assert_close(giou, expect)
    assert (giou >= -1).all() and (giou <= 1).all()


def test_giou_refuses_degenerate_boxes() -> None:
    with pytest.raises(ValueError, match="boxes b must be xyxy"):
        generalized_box_iou(torch.zeros(1, 4), torch.tensor([[1.0, 1.0, 0.0, 2.0]]))
