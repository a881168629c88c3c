"""The caption task on digits scenes (no optional data needed): batches, the loss against
a hand computation, BLEU/CIDEr against the packages, decoding, the Show-Attend-Tell report
(also in headless Chromium) and every CLI verb end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import qkv.models as M
from _browser import Page
from qkv.cli import main
from qkv.data import metrics
from qkv.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from qkv.tasks import TaskError, TaskOptions, get_task
from qkv.tasks.multimodal.viz_caption import PNG_NAME, report_for_captioner, word_attention
from qkv.tasks.vision.fashion_mnist import FASHION_MNIST_DIR

pytest.importorskip("sklearn")

# captions cut at 12 tokens keep the untrained models' reports small
DIGITS = TaskOptions(extra={"items": "digits"}, n_train=64, n_valid=8, n_test=8, max_len=12)
SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 2}


def _task_and_model(**opts):
    task = get_task("caption", TaskOptions(**{**DIGITS.to_dict(), **opts}))
    model = M.build(task.model_config(**SMALL)).eval()
    return task, model


def test_batches_hold_the_scene_and_its_caption() -> None:
    task = get_task("caption", DIGITS)
    scenes = [task.examples("train")[i] for i in range(4)]
    batch = task.collate(scenes)
    assert batch["images"].shape == (4, 1, 16, 16) and task.image_size == 16
    assert (batch["tgt_in"][:, 0] == BOS_ID).all()
    for i, s in enumerate(scenes):
        real = batch["tgt_padding_mask"][i]
        ids = batch["tgt_out"][i][real].tolist()
        assert ids[-1] == EOS_ID and batch["tgt_in"][i][real].tolist()[1:] == ids[:-1]
        assert task.tokenizer.decode(ids[:-1]) == task.tokenizer.decode(
            task.tokenizer.encode(s.caption)[:11]
        )
    full = get_task("caption", TaskOptions(extra={"items": "digits"}, n_train=8))
    scene = full.examples("train")[0]
    assert full.tokenizer.decode(full.tokenizer.encode(scene.caption)) == scene.caption
    one = get_task(
        "caption",
        TaskOptions(**{**DIGITS.to_dict(), "extra": {"items": "digits", "template": "count"}}),
    )
    assert one.target(scenes[0]) == scenes[0].captions[2]
    assert re.fullmatch(r"(one|two|three) things?: .*", one.target(scenes[0]))


def test_loss_is_the_cross_entropy_of_the_caption_tokens() -> None:
    task, model = _task_and_model()
    batch = task.collate([task.examples("train")[i] for i in range(3)])
    out = task.loss(model, batch)
    logits = model(batch["images"], batch["tgt_in"], tgt_padding_mask=batch["tgt_padding_mask"])
    ref = F.cross_entropy(
        logits.flatten(0, 1), batch["tgt_out"].flatten(), ignore_index=PAD_ID, reduction="sum"
    )
    assert out.n == int((batch["tgt_out"] != PAD_ID).sum())
    torch.testing.assert_close(out.loss_sum, ref)


def test_evaluate_samples_predict_and_decoding() -> None:
    task, model = _task_and_model()
    scores = task.evaluate(model, "valid", batch_size=4)
    assert list(scores) == ["bleu", "cider", "exact_match", "loss", "ppl"]
    images = torch.stack([task.examples("valid")[i].image for i in range(3)])
    greedy = task.caption_images(model, images)
    assert task.predict(model, ["valid:0", "valid:1", "valid:2"]) == greedy
    refs = [list(task.examples("valid")[i].captions) for i in range(3)]
    assert len(task.caption_images(model, images, beam_size=3)) == 3
    assert metrics.bleu(greedy, refs) >= 0
    lines = task.samples(model, k=2)
    assert len(lines) == 2 and lines[0].startswith("valid scene 0: ")
    with pytest.raises(TaskError, match="grid must be one of"):
        get_task("caption", TaskOptions(extra={"items": "digits", "grid": 4}))
    with pytest.raises(TaskError, match="template must be one of"):
        get_task("caption", TaskOptions(extra={"items": "digits", "template": "poem"}))


def test_bleu_and_cider_equal_the_packages_on_known_strings() -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    hyps = ["a sneaker in the top left, and a bag in the bottom right", "a coat above a shirt"]
    refs = [
        ["a sneaker in the top left and a bag in the bottom right", "a sneaker above nothing"],
        ["a coat above a shirt", "a coat in the top left and a shirt in the bottom left"],
    ]
    want = sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs], [r[1] for r in refs]]).score
    assert metrics.bleu(hyps, refs) == pytest.approx(want)
    # CIDEr on hand-tokenized text (lowercase words, no punctuation), as PTBTokenizer would give
    assert (
        metrics.caption_tokens("A Sneaker, in the T-shirt's top left?")
        == "a sneaker in the t-shirt's top left"
    )
    gts = {0: [r.replace(",", "") for r in refs[0]], 1: refs[1]}
    res = {0: [hyps[0].replace(",", "")], 1: [hyps[1]]}
    want_cider, _ = cider_mod.Cider().compute_score(gts, res)
    assert metrics.cider(hyps, refs) == pytest.approx(want_cider)
    assert metrics.cider(["a b c d"] * 2, [["a b c d"], ["a b c d"]]) == pytest.approx(0.0)  # idf 0


def test_word_attention_is_the_recorded_cross_attention(tmp_path) -> None:
    task, model = _task_and_model()
    image = task.read_image("test:2")
    ids = task.tokenizer.encode(task.examples("test")[2].caption)
    words, rec = word_attention(model, image, ids)
    assert [t for t, _ in words] == ids
    last = rec.by_kind("cross")[-1].weights[0].float().mean(0)  # (1 + n, 1 + patches)
    g = model.config.grid
    for j, (_, m) in enumerate(words):
        assert m.shape == (g, g)
        # cls + patches: one softmax row, stored in bfloat16 (each weight within 2^-8)
        torch.testing.assert_close(m.sum() + last[j, 0], torch.tensor(1.0), atol=2**-8, rtol=0)
    # the PNGs of --png (25 figures, most of this test's time) are checked by the slow
    # command-line test below
    html = report_for_captioner(model, task, "test:2", tmp_path / "c.html")
    text = html.read_text(encoding="utf-8")
    assert (
        "for each generated word, its cross-attention" in text and "data:image/png;base64," in text
    )


def test_caption_report_in_chromium_words_pick_their_attention(browser, tmp_path) -> None:
    task, model = _task_and_model()
    p = Page(browser, report_for_captioner(model, task, "test:0", tmp_path / "c.html"))
    try:
        pg = p.page
        pg.wait_for_selector("body[data-image='1']", timeout=20_000)
        kinds = pg.eval_on_selector_all("#kind option", "os => os.map(o => o.textContent)")
        pg.select_option("#kind", str(next(i for i, k in enumerate(kinds) if "Cross" in k)))
        n_words = pg.locator("#img-query option").count()
        assert n_words >= 2  # <bos> and at least one generated word
        shot = "() => document.getElementById('imgview').toDataURL()"
        first = pg.evaluate(shot)
        pg.select_option("#img-query", str(n_words - 1))
        assert pg.get_attribute("#imgview", "data-query") == str(n_words - 1)
        assert pg.evaluate(shot) != first
        assert p.problems == []
    finally:
        p.close()


@pytest.mark.slow
def test_train_eval_generate_viz_from_the_command_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "caption", "--items", "digits", "--n-train", "32", "--steps", "2",
            "--max-len", "12",
            "--batch-size", "8", "--eval-limit", "4", "--no-progress", "--out", str(run),
            *(x for k, v in SMALL.items() for x in ("--model", f"{k}={v}"))]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert (
        main(["eval", "--checkpoint", str(run), "--json", "--limit", "4", "--beam-size", "2"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and {"bleu", "cider", "exact_match", "loss"} <= set(out)
    assert main(["generate", "--checkpoint", str(run), "test:0", "valid:1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # each caption after its input and a tab: several inputs can be told apart
    assert len(lines) == 2 and lines[0].startswith("test:0\t") and lines[1].startswith("valid:1\t")
    html = tmp_path / "viz.html"
    argv = [
        "viz",
        "--checkpoint",
        str(run),
        "test:0",
        "--out",
        str(html),
        "--png",
        str(tmp_path / "png"),
    ]
    assert main(argv) == 0
    assert (tmp_path / "png" / PNG_NAME).stat().st_size > 1000
    assert "for each generated word" in html.read_text(encoding="utf-8")
    assert main(["generate", "--checkpoint", str(run), "test:999"]) == 2
    assert "split 'test' has 200 scenes" in capsys.readouterr().err


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed",
)
def test_fashion_mnist_scenes() -> None:
    task = get_task("caption", TaskOptions(n_train=4, n_valid=2, n_test=2, extra={"grid": 3}))
    scene = task.examples("test")[0]
    assert scene.image.shape == (1, 84, 84) and task.image_size == 84
    cfg = task.model_config()
    assert (cfg.image_size, cfg.patch_size, cfg.grid) == (84, 7, 12)


def test_cached_and_uncached_decoding_of_images_agree() -> None:
    task, model = _task_and_model()
    images = torch.stack([task.examples("test")[i].image for i in range(3)])
    for kw in ({}, {"strategy": "beam", "beam_size": 3}):
        fast = model.generate(images, max_new_tokens=6, **kw)
        slow = model.generate(images, max_new_tokens=6, use_cache=False, **kw)
        assert fast.tokens == slow.tokens
    with pytest.raises(ValueError, match="has no padding"):
        model.generate(images, padding_mask=torch.ones(3, 1, dtype=torch.bool))
