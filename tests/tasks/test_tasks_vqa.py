"""The vqa task on digits scenes (no optional data): the loss covers the answer tokens only,
batched greedy answers equal one-at-a-time ones, exact match per question kind, and the
command line end to end with the attention overlay checked in headless Chromium."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import qkv.models as M
from _browser import Page
from qkv.cli import main
from qkv.data.scenes import QUESTION_KINDS
from qkv.data.tokenizers import EOS_ID
from qkv.tasks import TaskError, TaskOptions, get_task
from qkv.tasks.multimodal.viz_multimodal import report_for_vqa
from qkv.tasks.multimodal.vqa import IGNORE, VQAExample
from qkv.training import checkpoint as ckpt

pytest.importorskip("sklearn")

DIGITS = TaskOptions(extra={"items": "digits"}, n_train=64, n_valid=2, n_test=3)
SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2, "vision_d_model": 32,
         "vision_n_heads": 4, "vision_d_ff": 64, "vision_n_layers": 1}  # fmt: skip


def _task_and_model():
    task = get_task("vqa", DIGITS)
    return task, M.build(task.model_config(**SMALL)).eval()


def test_training_questions_are_seeded_and_cover_every_kind() -> None:
    task, _ = _task_and_model()
    train = task.examples("train")
    assert len(train) == 64 and train[5].question == train[5].question
    assert train[1:4][1].question == train[2].question
    assert {train[i].question.kind for i in range(64)} == set(QUESTION_KINDS)
    test = task.examples("test")
    assert len(test) == sum(len(task.data.scenes("test")[i].questions) for i in range(3))


def test_training_questions_do_not_follow_the_scene_layout() -> None:
    """The question drawn is independent of how the scene was laid out: `what` questions
    ask about empty cells as often as the scenes have them (the draw once reused the scene's
    seed and never asked about an empty cell)."""
    task = get_task("vqa", TaskOptions(extra={"items": "digits"}, n_train=2000))
    train, scenes = task.examples("train"), task.data.scenes("train")
    drawn = [train[i].question for i in range(2000)]
    asked = [q.answer == "nothing" for q in drawn if q.kind == "what"]
    held = [q.answer == "nothing" for i in range(2000) for q in scenes[i].questions
            if q.kind == "what"]  # fmt: skip
    rate, base = sum(asked) / len(asked), sum(held) / len(held)
    assert len(asked) > 300 and abs(rate - base) < 0.08, (rate, base)


def test_labels_and_loss_cover_the_answer_tokens_only() -> None:
    task, model = _task_and_model()
    ex = task.examples("train")[:3]
    batch = task.collate([ex[i] for i in range(3)])
    for i in range(3):
        q = task.tokenizer.encode(ex[i].question.text)
        a = task.answer_ids(ex[i].question.answer)
        row, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert row[: len(q) + len(a) + 1] == [*q, *a, EOS_ID]
        # position t predicts t + 1: only the answer and the end token are targets
        assert labels[: len(q) - 1] == [IGNORE] * (len(q) - 1)
        assert labels[len(q) - 1 : len(q) + len(a)] == [*a, EOS_ID]
        assert set(labels[len(q) + len(a) :]) <= {IGNORE}
    out = task.loss(model, batch)
    assert out.n == int((batch["labels"] != IGNORE).sum()) == task.n_tokens(batch)
    with torch.no_grad():
        logits = model(batch["inputs"], batch["input_ids"], padding_mask=batch["padding_mask"])
    keep = batch["labels"] != IGNORE
    by_hand = F.cross_entropy(logits[keep], batch["labels"][keep], reduction="sum")
    assert float(out.loss_sum.detach()) == pytest.approx(float(by_hand), rel=1e-5)
    # padding after the end token is neither a target nor attended: changing it changes nothing
    other = dict(batch)
    other["input_ids"] = batch["input_ids"].clone()
    other["input_ids"][~batch["padding_mask"]] = 7
    assert float(task.loss(model, other).loss_sum.detach()) == pytest.approx(
        float(out.loss_sum.detach()), rel=1e-5
    )


def test_every_image_token_reaches_the_answer_positions() -> None:
    """Issue 29 (exists stuck at 50%): the image is not lost on its way to the answer. Moving
    any one image token moves the logits at every answer position, in training's
    right-padded batches and in greedy decoding's left-padded ones; the question's padding
    moves nothing (the test above)."""
    task, model = _task_and_model()
    ex = task.examples("train")
    batch = task.collate([ex[i] for i in range(4)])
    at = batch["labels"] != IGNORE  # (b, s): the positions that predict answer tokens
    left = torch.zeros_like(batch["input_ids"])
    left_mask = torch.zeros_like(batch["padding_mask"])
    for i in range(4):  # the same rows left-padded, as `answer` pads them
        n = int(batch["padding_mask"][i].sum())
        left[i, -n:], left_mask[i, -n:] = batch["input_ids"][i, :n], True
    left_at = torch.zeros_like(at)
    for i in range(4):
        shift = int((~batch["padding_mask"][i]).sum())
        left_at[i, shift:] = at[i, : at.shape[1] - shift]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tokens = model.image_tokens(batch["inputs"])  # (b, n_patches, d)
        assert tokens.shape[1] == task.n_patches
        for ids, mask, where in ((batch["input_ids"], batch["padding_mask"], at),
                                 (left, left_mask, left_at)):  # fmt: skip
            base = model(None, ids, padding_mask=mask, image_tokens=tokens)
            for j in range(tokens.shape[1]):
                moved = tokens.clone()
                moved[:, j] += torch.randn(moved[:, j].shape, generator=g)
                out = model(None, ids, padding_mask=mask, image_tokens=moved)
                change = (out - base).abs().amax(-1)  # (b, s)
                assert bool((change[where] > 1e-4).all()), (j, change[where])


def test_multi_turn_training_asks_distinct_questions_one_after_another() -> None:
    """`turns` questions of a scene go in one sequence (LLaVA's multi-turn examples): drawn
    without replacement, the first as with one turn, every answer and end token a target,
    and causal attention leaves the first turn's logits as they are alone."""
    one = get_task("vqa", DIGITS)
    task = get_task("vqa", TaskOptions(extra={"items": "digits", "turns": 4}, n_train=64))
    model = M.build(task.model_config(**SMALL)).eval()
    train, single, scenes = task.examples("train"), one.examples("train"), task.data.scenes("train")
    for i in range(64):
        turns = train[i].turns
        assert len(turns) == 4 and len(set(turns)) == 4 and set(turns) <= set(scenes[i].questions)
        assert turns[0] == single[i].question
    batch = task.collate([train[i] for i in range(3)])
    for i in range(3):
        row, labels, at = batch["input_ids"][i].tolist(), batch["labels"][i].tolist(), 0
        targets = []
        for q in train[i].turns:
            ids, a = task.tokenizer.encode(q.text), [*task.answer_ids(q.answer), EOS_ID]
            assert row[at : at + len(ids) + len(a)] == [*ids, *a]
            targets += list(range(at + len(ids) - 1, at + len(ids) + len(a) - 1))
            assert [labels[t] for t in targets[-len(a) :]] == a
            at += len(ids) + len(a)
        assert [t for t, v in enumerate(labels) if v != IGNORE] == targets
    alone = task.collate([VQAExample(train[0].image, train[0].question)])
    n = alone["input_ids"].shape[1]
    with torch.no_grad():
        full = model(batch["inputs"][:1], batch["input_ids"][:1, :n])
        first = model(alone["inputs"], alone["input_ids"])
    torch.testing.assert_close(full, first, rtol=1e-5, atol=1e-5)
    with pytest.raises(TaskError, match="turns must be an int >= 1, got 0"):
        get_task("vqa", TaskOptions(extra={"items": "digits", "turns": 0}))


def test_batched_greedy_answers_equal_single_ones() -> None:
    task, model = _task_and_model()
    scene = task.data.scenes("test")[0]
    qs = [q.text for q in scene.questions[:4]]
    images = torch.stack([scene.image] * len(qs))
    batched = task.answer(model, images, qs)
    alone = [task.answer(model, scene.image[None], [q])[0] for q in qs]
    assert batched == alone
    # and a greedy answer is the argmax continuation, step by step
    q = task.tokenizer.encode(qs[0])
    with torch.no_grad():
        first = model(scene.image[None], torch.tensor([q]))[0, -1].argmax()
    assert (batched[0][:1] or [EOS_ID]) == [int(first)]


def test_evaluate_reports_exact_match_per_kind() -> None:
    task, model = _task_and_model()
    out = task.evaluate(model, "valid")
    assert next(iter(out)) == "exact_match" and "loss" in out
    kinds = [k for k in out if k.startswith("em_")]
    assert kinds and all(k[3:] in QUESTION_KINDS for k in kinds)
    assert all(0 <= out[k] <= 100 for k in ("exact_match", *kinds))
    lines = task.samples(model, k=2)
    assert len(lines) == 2 and "(true:" in lines[0]


def test_vqa_overlay_in_chromium(browser, tmp_path) -> None:
    task, model = _task_and_model()
    path = report_for_vqa(model, task, "test:0", tmp_path / "vqa.html")
    p = Page(browser, path)
    try:
        pg = p.page
        pg.wait_for_selector("body[data-image='1']", timeout=20_000)
        assert "attention over the image tokens" in pg.inner_text("body")
        assert pg.locator("img").count() >= 1  # the overlay figure
        assert p.problems == []
    finally:
        p.close()


@pytest.mark.slow
def test_train_eval_generate_viz_from_the_command_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "vqa", "--items", "digits", "--n-train", "16", "--steps", "2",
            "--batch-size", "8", "--turns", "3", "--no-progress", "--out", str(run),
            *(x for k, v in SMALL.items() for x in ("--model", f"{k}={v}"))]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--json", "--limit", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["exact_match"] <= 100 and out["split"] == "test"
    q = "how many fives are there?"
    assert main(["generate", "--checkpoint", str(run), "test:0", "--question", q]) == 0
    assert main(["generate", "--checkpoint", str(run), "test:1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "(true:" in lines[1]
    assert lines[0].startswith("test:0\t") and lines[1].startswith("test:1\t")
    html = tmp_path / "vqa.html"
    png = tmp_path / "png"
    argv = ["viz", "--checkpoint", str(run), "test:0", "--question", q, "--out", str(html),
            "--png", str(png)]  # fmt: skip
    assert main(argv) == 0
    assert q in html.read_text(encoding="utf-8")
    assert (png / "attention_on_image.png").stat().st_size > 1000


def test_vision_from_starts_the_image_tower_from_a_clip_run(tmp_path, capsys) -> None:
    """``--vision-from`` copies a CLIP run's image tower (LLaVA's start) and adopts its
    shape and activation; other checkpoints and other scene sizes are one-line errors."""
    clip_run = tmp_path / "clip"
    argv = ["train", "--task", "clip", "--items", "digits", "--n-train", "16", "--steps", "1",
            "--batch-size", "8", "--no-progress", "--out", str(clip_run),
            *(x for k, v in SMALL.items() for x in ("--model", f"{k}={v}"))]  # fmt: skip
    assert main(argv) == 0
    clip_model = M.load(ckpt.check_checkpoint(clip_run))
    lm_only = {k: v for k, v in SMALL.items() if not k.startswith("vision_")}
    task = get_task("vqa", TaskOptions(extra={"items": "digits", "vision_from": str(clip_run)},
                                       n_train=16, n_valid=2, n_test=2))  # fmt: skip
    cfg = task.model_config(**lm_only)
    assert cfg.vision_n_layers == 1 and cfg.vision_d_model == 32  # the CLIP's, not the default
    assert cfg.activation == clip_model.config.activation
    model = M.build(cfg)
    assert "image tower from the CLIP checkpoint" in task.init_model(model)
    theirs = clip_model.vision.state_dict()
    for name, t in model.vision.state_dict().items():
        assert torch.equal(t, theirs[name]), name
    capsys.readouterr()

    vqa_run = tmp_path / "vqa"
    argv = ["train", "--task", "vqa", "--items", "digits", "--n-train", "16", "--steps", "1",
            "--batch-size", "8", "--no-progress", "--out", str(vqa_run), "--vision-from",
            str(clip_run), *(x for k, v in lm_only.items() for x in ("--model", f"{k}={v}"))]  # fmt: skip
    assert main(argv) == 0
    assert "qkv train: image tower from the CLIP checkpoint" in capsys.readouterr().out
    # a checkpoint of another family, and a CLIP of other scenes
    for options, match in [
        ({"vision_from": str(vqa_run)}, "holds a LlavaConfig, not a CLIP checkpoint"),
        ({"vision_from": str(clip_run), "grid": 3}, "the CLIP of vision_from reads other images"),
        ({"vision_from": str(tmp_path / "none")}, "vision_from"),
    ]:  # fmt: skip
        bad = get_task("vqa", TaskOptions(extra={"items": "digits", **options}, n_train=16))
        with pytest.raises(TaskError, match=match):
            bad.model_config(**lm_only)
