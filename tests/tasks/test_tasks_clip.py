"""The clip task on digits scenes (no optional data): captions only, zero-shot pipeline
against a hand computation, retrieval recall, and the command line end to end."""

from __future__ import annotations

import json

import pytest
import torch

import qkv.models as M
from qkv.cli import main
from qkv.data.scenes import SceneExamples, SceneSpec
from qkv.tasks import TaskError, TaskOptions, get_task
from qkv.tasks.multimodal.clip import recall_at, single_item_scenes
from qkv.tasks.vision.fashion_mnist import FASHION_MNIST_DIR

pytest.importorskip("sklearn")

DIGITS = TaskOptions(extra={"items": "digits"}, n_train=64, n_valid=8, n_test=12)
SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 1, "vision_d_model": 32,
         "vision_n_heads": 4, "vision_d_ff": 64, "vision_n_layers": 1, "embed_dim": 16}  # fmt: skip


def _task_and_model():
    task = get_task("clip", DIGITS)
    return task, M.build(task.model_config(**SMALL)).eval()


def test_single_item_scenes_place_items_as_the_scenes_do() -> None:
    items = torch.rand(5, 8, 8)
    spec = SceneSpec(grid=2, min_items=1, max_items=1)
    scenes = SceneExamples(items, torch.arange(5), 40, seed=1, spec=spec, scale=1.0)
    top_left = [s for s in scenes if (s.items[0].row, s.items[0].col) == (0, 0)]
    assert top_left  # some one-item scenes use the top-left cell
    for s in top_left:
        placed = single_item_scenes(items[s.items[0].source][None], 2)[0]
        assert torch.equal(placed, s.image)
        assert s.caption  # and the caption names the item there
    assert single_item_scenes(items, 3, (2, 1)).shape == (5, 1, 24, 24)


def test_recall_at_by_hand() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.5, 0.7, 0.2]])
    same = torch.eye(3, dtype=torch.bool)
    assert recall_at(sim, same, 1) == pytest.approx(100 / 3)  # only row 0 ranks its own first
    assert recall_at(sim, same, 2) == pytest.approx(200 / 3)  # row 1 second, row 2 last
    same[1, 2] = True  # a duplicate caption counts too
    assert recall_at(sim, same, 1) == pytest.approx(200 / 3)


def test_collate_marks_duplicate_captions_and_ends_every_text() -> None:
    task, _ = _task_and_model()
    scenes = task.examples("train")
    batch = task.collate([scenes[0], scenes[1], scenes[0]])
    assert batch["positives"].tolist() == [
        [True, scenes[0].caption == scenes[1].caption, True],
        [scenes[0].caption == scenes[1].caption, True, scenes[0].caption == scenes[1].caption],
        [True, scenes[0].caption == scenes[1].caption, True],
    ]
    ends = batch["padding_mask"].sum(1) - 1
    assert (batch["input_ids"][torch.arange(3), ends] == 2).all()  # EOS after each caption


def test_zero_shot_equals_the_hand_computation() -> None:
    task, model = _task_and_model()
    items, labels, scale = task.data.pools()["test"]
    got = task.zero_shot(model, limit=20)  # the test items
    images = single_item_scenes(items[:20].float() / scale, 2)
    for key in ("photo", "short", "placed"):
        prompts = task.prompts(key)
        assert len(prompts) == 10 and all(task.class_names[c] in p for c, p in enumerate(prompts))
        ids, mask = task.encode_texts(prompts)
        with torch.no_grad():
            img = model.image_features(images)
            txt = model.text_features(ids, padding_mask=mask)
            cos = (
                torch.nn.functional.normalize(img, dim=-1)
                @ torch.nn.functional.normalize(txt, dim=-1).T
            )
        acc = 100.0 * float((cos.argmax(1) == labels[:20]).float().mean())
        assert got[f"zero_shot_{key}"] == pytest.approx(acc)
    assert task.prompts("placed")[7] == "a seven in the top left"


def test_evaluate_loss_samples_predict() -> None:
    task, model = _task_and_model()
    out = task.evaluate(model, "valid")
    assert next(iter(out)) == "zero_shot" and out["zero_shot"] == out["zero_shot_placed"]
    assert out["zero_shot_short"] == task.zero_shot(model, "valid")["zero_shot_short"]
    assert {"i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "loss"} <= set(out)
    assert out["i2t_r1"] <= out["i2t_r5"] and out["t2i_r1"] <= out["t2i_r5"]
    batch = task.collate([task.examples("train")[i] for i in range(4)])
    loss = task.loss(model, batch)
    assert loss.n == 4 and loss.loss_sum.requires_grad
    top = task.predict(model, ["item:0", "test:1", "a five in the top left"])
    assert top[0].count(",") == 2 and top[2].startswith("test:")
    # the samples a run logs while training are valid items, never the held-out test items
    samples, labels = task.samples(model, k=2), task.data.pools()["valid"][1]
    assert [s.split(": ")[0] for s in samples] == [
        f"valid item {i} ({task.class_names[int(labels[i])]})" for i in range(2)
    ]
    assert all(s.split(": ")[1].count(",") == 2 for s in samples)  # the 3 top classes
    with pytest.raises(TaskError, match="prompt must be one of"):
        get_task("clip", TaskOptions(extra={"items": "digits", "prompt": "nope"}))
    with pytest.raises(TaskError, match="test items"):
        task.read_image("item:999")


@pytest.mark.slow
def test_train_eval_generate_viz_from_the_command_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "clip", "--items", "digits", "--n-train", "16", "--steps", "2",
            "--batch-size", "8", "--no-progress", "--out", str(run),
            *(x for k, v in SMALL.items() for x in ("--model", f"{k}={v}"))]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--json", "--limit", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["zero_shot"] <= 100 and "t2i_r1" in out and out["split"] == "test"
    assert main(["generate", "--checkpoint", str(run), "item:3", "a five in the top left"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # each output after its input and a tab: an item's classes, a text's best scenes
    assert len(lines) == 2 and lines[0].startswith("item:3\t")
    assert lines[1].startswith("a five in the top left\ttest:")
    html = tmp_path / "clip.html"
    assert main(["viz", "--checkpoint", str(run), "test:0", "--out", str(html)]) == 0
    assert "class token attends: rollout over all layers" in html.read_text(encoding="utf-8")


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed",
)
def test_fashion_mnist_zero_shot_reads_the_real_test_set() -> None:
    task = get_task("clip", TaskOptions(n_train=4, n_valid=2, n_test=2))
    assert len(task.data.pools()["test"][0]) == 10_000
    assert task.read_image("item:0").shape == (1, 56, 56)
    assert task.prompts("photo")[7] == "a photo of a sneaker"
