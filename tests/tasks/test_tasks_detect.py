"""The detect task: seeded canvases of real items with known boxes, collate/targets, the
set loss, evaluation (mAP when a maintained implementation is installed), samples,
predictions and the command line; digits canvases, so no optional data is needed."""

from __future__ import annotations

import json

import pytest
import torch

import qkv.models as M
from qkv.cli import main
from qkv.data.boxes import cxcywh_to_xyxy
from qkv.data.canvases import CanvasExamples, CanvasSpec, draw_canvas
from qkv.data.metrics import map_backend
from qkv.tasks import TaskError, TaskOptions, get_task
from qkv.tasks.vision.detect import detections
from qkv.tasks.vision.fashion_mnist import FASHION_MNIST_DIR

pytest.importorskip("scipy")
pytest.importorskip("sklearn")

DIGITS = TaskOptions(extra={"items": "digits"}, n_train=32, n_valid=8, n_test=8)
SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 2}


def test_canvases_are_seeded_and_their_boxes_hold_the_items() -> None:
    items = torch.zeros(3, 8, 8)
    items[:, 2:6, 3:5] = 1.0  # a 2 wide, 4 tall bar in each item
    spec = CanvasSpec(size=32, min_items=2, max_items=4, scale=(1.0, 1.0), max_iou=0.0)
    data = CanvasExamples(items, torch.tensor([0, 1, 2]), 5, seed=3, spec=spec, scale=1.0)
    image, target = data[2]
    again, target2 = data[2]
    assert torch.equal(image, again) and torch.equal(target["boxes"], target2["boxes"])
    assert not torch.equal(image, data[3][0])
    assert 2 <= len(target["labels"]) <= 4
    boxes = cxcywh_to_xyxy(target["boxes"]) * 32
    for x0, y0, x1, y1 in boxes.round().long().tolist():
        assert (x1 - x0, y1 - y0) == (2, 4)  # the tight box of the bar, not the 8x8 item
        assert image[0, y0:y1, x0:x1].min() > 0.99
    assert float(image.sum()) == pytest.approx(8.0 * len(target["labels"]), abs=1e-3)
    assert len(data[1:4]) == 3 and torch.equal(data[1:4][1][0], image)


def test_draw_canvas_respects_the_overlap_limit() -> None:
    items = torch.ones(1, 8, 8)
    spec = CanvasSpec(size=16, min_items=5, max_items=5, scale=(1.0, 1.0), max_iou=0.0)
    _, boxes, labels = draw_canvas(items, torch.tensor([4]), spec, torch.Generator().manual_seed(0))
    assert 1 <= len(boxes) <= 4 and (labels == 4).all()  # 8x8 items, no overlap: at most 4
    with pytest.raises(ValueError, match="min_items"):
        CanvasSpec(min_items=0)


def test_splits_collate_and_targets() -> None:
    task = get_task("detect", DIGITS)
    assert task.image_size == 32 and len(task.class_names) == 10
    assert [len(task.examples(s)) for s in ("train", "valid", "test")] == [32, 8, 8]
    assert not torch.equal(task.examples("train")[0][0], task.examples("test")[0][0])
    batch = task.collate([task.examples("train")[i] for i in range(4)])
    m = batch["labels"].shape[1]
    assert batch["inputs"].shape == (4, 1, 32, 32) and batch["boxes"].shape == (4, m, 4)
    for i, t in enumerate(task.targets(batch)):
        want = task.examples("train")[i][1]
        assert torch.equal(t["labels"], want["labels"]) and torch.equal(t["boxes"], want["boxes"])


def test_the_default_backbone_leaves_a_4x4_map_of_either_canvas() -> None:
    for options, stages in ((DIGITS, [32, 64, 128]), (TaskOptions(), [32, 64, 128, 256])):
        cfg = get_task("detect", options).model_config()
        assert cfg.backbone_channels == stages and cfg.backbone_norm
        assert cfg.image_size // cfg.stride == 4


def test_model_config_loss_evaluate_samples_predict(capsys) -> None:
    task = get_task("detect", DIGITS)
    cfg = task.model_config(**SMALL, backbone_channels=[8, 16])
    assert isinstance(cfg, M.DETRConfig) and (cfg.image_size, cfg.in_channels, cfg.n_classes) == (
        32,
        1,
        10,
    )
    model = M.build(cfg)
    batch = task.collate([task.examples("train")[i] for i in range(4)])
    out = task.loss(model, batch)
    assert (
        out.n == 4
        and out.loss_sum.requires_grad
        and set(out.logs) == {"loss_ce", "loss_bbox", "loss_giou"}
    )
    metrics = task.evaluate(model, "valid", batch_size=4)
    first = next(iter(metrics))
    assert first == ("map_50" if map_backend() else "loss")
    lines = task.samples(model, k=2)
    assert len(lines) == 2 and lines[0].startswith("valid canvas 0: holds ")
    assert len(task.predict(model, ["test:0", "valid:1"])) == 2
    with pytest.raises(TaskError, match=r"n_queries \(3\) must be at least the 5 items"):
        task.model_config(n_queries=3)
    with pytest.raises(TaskError, match="items must be one of"):
        get_task("detect", TaskOptions(extra={"items": "cifar"}))


def test_detections_pick_the_best_real_class() -> None:
    logits = torch.tensor([[[0.0, 3.0, 5.0], [2.0, 0.0, -1.0]]])  # class 2 is "no object"
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]]])
    (d,) = detections(logits, boxes, 8)
    assert d["labels"].tolist() == [1, 0]
    torch.testing.assert_close(d["scores"][0], logits[0, 0].softmax(-1)[1])
    torch.testing.assert_close(
        d["boxes"], torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 4.0, 4.0]])
    )


def test_map_from_a_maintained_implementation() -> None:
    if map_backend() is None:
        pytest.skip("neither torchmetrics (with pycocotools) nor pycocotools is installed")
    from qkv.data.metrics import detection_map

    truth = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    perfect = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]
    assert detection_map(perfect, truth) == {
        "map": pytest.approx(100.0),
        "map_50": pytest.approx(100.0),
    }
    half = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 5.0]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]
    got = detection_map(half, truth)  # IoU 0.5: a hit at .5 only
    assert got["map_50"] == pytest.approx(100.0) and got["map"] == pytest.approx(10.0)


@pytest.mark.slow
def test_train_eval_generate_from_the_command_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "detect", "--items", "digits", "--n-train", "16",
            "--steps", "2", "--batch-size", "4", "--no-progress", "--out", str(run),
            *(x for k, v in SMALL.items() for x in ("--model", f"{k}={v}")),
            "--model", "backbone_channels=[8,16]"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--json", "--limit", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "loss" in out and out["split"] == "test"
    assert main(["generate", "--checkpoint", str(run), "test:0"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed",
)
def test_fashion_mnist_canvases() -> None:
    task = get_task("detect", TaskOptions(n_train=10, n_valid=2, n_test=2))
    image, target = task.examples("test")[0]
    assert image.shape == (1, 64, 64) and 1 <= len(target["labels"]) <= 5
    assert ((target["boxes"] > 0) & (target["boxes"] <= 1)).all()
