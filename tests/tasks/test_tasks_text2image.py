"""The ``text2image`` task on digits items: example layout, the intensity baseline by hand,
cached vs uncached sampling, the classifier metric on known images, persistence, errors,
and train/eval/generate from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import qkv.models as M
from qkv.cli import main
from qkv.data.tokenizers import EOS_ID, PAD_ID
from qkv.tasks import TaskError, TaskOptions, build_trainer, get_task, load_trained
from qkv.tasks.multimodal._image_draw import sample_image_tokens
from qkv.tasks.multimodal._image_tokens import IntensityTokenizer

pytest.importorskip("sklearn")

TINY_LM = {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_layers": 2, "dropout": 0.0}


def _task(**extra: object):
    opts = TaskOptions(n_train=64, n_valid=20, n_test=30, extra={"items": "digits", **extra})
    return get_task("text2image", opts)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A digits ViT trained for a few steps (its accuracy is measured, not assumed)."""
    out = tmp_path_factory.mktemp("clf")
    cfg = {"steps": 40, "batch_size": 32, "log_every": 40, "progress": False}
    trainer = build_trainer("digits", cfg, out)
    trainer.fit()
    return out


def test_examples_put_the_image_codes_after_the_caption_and_the_marker() -> None:
    task = _task(vq_steps=2)
    lo, hi = task.code_range
    assert hi - lo == task.codec.config.n_codes == 128 and task.n_image_tokens == 16
    images, labels = task.pools()["train"]
    inputs, targets = task.examples("train")[0]
    prompt = task.words.encode(task.caption(int(labels[0])))
    assert task.caption(int(labels[0])).startswith(("a ", "an "))
    # inputs: caption, marker, all image tokens but the last; labels: PAD under the caption
    assert inputs[: len(prompt) + 1] == [*prompt, EOS_ID]
    assert targets[: len(prompt)] == [PAD_ID] * len(prompt)
    codes = task.codec.encode(images[:1])[0] + lo
    assert targets[len(prompt) :] == codes.tolist()
    assert inputs[len(prompt) + 1 :] == codes.tolist()[:-1]
    batch = task.collate(task.examples("train")[:4])
    assert batch["input_ids"].shape == batch["labels"].shape
    assert int((batch["labels"] != PAD_ID).sum()) == 4 * 16 == task.n_tokens(batch)


def test_the_model_config_needs_no_trained_tokenizer() -> None:
    task = _task(codes=32)
    cfg = task.model_config()
    assert task._codec is None  # sizes come from the options: nothing was trained
    assert cfg.vocab_size == task.words.vocab_size + 32
    assert cfg.max_len == task.max_caption + 1 + 16


def test_intensity_tokens_by_hand() -> None:
    tok = IntensityTokenizer(image_size=4, cell=2, levels=4)
    image = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0],
                          [0.3, 0.3, 0.5, 0.7], [0.3, 0.3, 0.5, 0.7]])[None, None]  # fmt: skip
    # block means 0, 1, 0.3, 0.6 -> levels floor(4 m) clamped: 0, 3, 1, 2
    assert tok.encode(image).tolist() == [[0, 3, 1, 2]]
    back = tok.decode(torch.tensor([[0, 3, 1, 2]]))
    assert back[0, 0, 0].tolist() == [0.125, 0.125, 0.875, 0.875]
    assert back[0, 0, 3].tolist() == [0.375, 0.375, 0.625, 0.625]


def test_cached_and_uncached_sampling_draw_the_same_tokens() -> None:
    torch.manual_seed(0)
    lm = M.build(M.LMConfig(vocab_size=40, max_len=32, **TINY_LM)).eval()
    prompt = torch.tensor([[5, 6, EOS_ID], [7, 8, EOS_ID]])
    draws = [
        sample_image_tokens(
            lm,
            prompt,
            12,
            (20, 40),
            temperature=1.3,
            top_k=7,
            generator=torch.Generator().manual_seed(1),
            use_cache=cached,
        )
        for cached in (True, False)
    ]
    assert torch.equal(draws[0], draws[1])
    assert draws[0].shape == (2, 12) and ((draws[0] >= 20) & (draws[0] < 40)).all()


def test_the_metric_on_known_images(classifier: Path, monkeypatch) -> None:
    from sklearn.metrics import accuracy_score

    task = _task(vq_steps=2, classifier=str(classifier))
    trainer = build_trainer(task, {"steps": 1, "batch_size": 8, "progress": False}, None,
                            model_overrides=TINY_LM)  # fmt: skip
    images, labels = task.pools()["test"]
    clf = task.classifier()
    assert clf is not None
    with torch.no_grad():
        truth = clf(images).argmax(-1)  # the classifier's own answers, independently
    # a "generator" that returns the real images: class_acc is the classifier's accuracy
    monkeypatch.setattr(task, "generate_images", lambda model, captions, **kw: images)
    got = task.evaluate(trainer.model, "test")
    want = 100 * accuracy_score(labels.numpy(), truth.numpy())
    assert got["class_acc"] == pytest.approx(want) == pytest.approx(got["classifier_acc"])
    assert want > 50  # the classifier learned something: the test is not vacuous
    # images shifted by one against their captions: scored against the wrong classes
    monkeypatch.setattr(task, "generate_images", lambda model, captions, **kw: images.roll(1, 0))
    got = task.evaluate(trainer.model, "test")
    assert got["class_acc"] == pytest.approx(
        100 * accuracy_score(labels.numpy(), truth.roll(1, 0).numpy())
    )
    assert next(iter(got)) == "class_acc" and {"loss", "ppl"} <= set(got)


def test_wrong_classifier_and_options_are_user_errors(tmp_path: Path, classifier: Path) -> None:
    with pytest.raises(TaskError, match="takes no"):
        get_task("text2image", TaskOptions(extra={"colour": True}))
    with pytest.raises(TaskError, match=r"image_tokens must be one of \['vq', 'intensity'\]"):
        get_task("text2image", TaskOptions(extra={"image_tokens": "rgb"}))
    task = get_task("text2image", TaskOptions(extra={"classifier": str(classifier)}))
    with pytest.raises(TaskError, match="trained on task 'digits'.*'fashion-mnist' classifier"):
        task.classifier()
    with pytest.raises(TaskError, match="at most 8"):
        _task().prompt_ids("a " * 9)


def test_save_and_load_keep_the_codebook(tmp_path: Path) -> None:
    task = _task(vq_steps=3, image_tokens="vq")
    trainer = build_trainer(task, {"steps": 2, "batch_size": 8, "progress": False}, tmp_path,
                            model_overrides=TINY_LM)  # fmt: skip
    trainer.fit()
    model, loaded = load_trained(tmp_path)
    images = task.pools()["test"][0][:5]
    assert torch.equal(loaded.codec.encode(images), task.codec.encode(images))
    assert loaded.words.vocab == task.words.vocab
    got = loaded.generate_images(model, ["a three", "an eight"], generator=torch.Generator())
    assert got.shape == (2, 1, 8, 8) and 0 <= float(got.min()) and float(got.max()) <= 1


def test_intensity_tokens_train_too() -> None:
    task = _task(image_tokens="intensity")
    assert task.code_range[1] - task.code_range[0] == 8 and task.n_image_tokens == 64
    trainer = build_trainer(task, {"steps": 2, "batch_size": 8, "progress": False}, None,
                            model_overrides=TINY_LM)  # fmt: skip
    assert trainer.fit()["step"] == 2


def test_train_eval_generate_from_the_command_line(
    tmp_path: Path, classifier: Path, capsys
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "text2image", "--items", "digits", "--n-train", "64",
            "--vq-steps", "3", "--classifier", str(classifier), "--steps", "3",
            "--batch-size", "8", "--eval-limit", "10", "--no-progress", "--out", str(run),
            *(x for k, v in TINY_LM.items() for x in ("--model", f"{k}={v}"))]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--json", "--limit", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and 0 <= out["class_acc"] <= 100 and out["classifier_acc"] > 0
    pics = tmp_path / "pics"
    argv = ["generate", "--checkpoint", str(run), "--prompt", "a seven", "--prompt", "a one",
            "--out-dir", str(pics), "--seed", "0", "--temperature", "0.8"]  # fmt: skip
    assert main(argv) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(pics / "text2image-000.png"), str(pics / "text2image-001.png")]
    from PIL import Image

    with Image.open(written[0]) as im:
        assert im.size == (64, 64) and im.mode == "L"
    with Image.open(pics / "text2image-grid.png") as im:
        assert im.format == "PNG"


def test_sample_grid_scores_what_it_shows(tmp_path: Path, classifier: Path) -> None:
    task = _task(vq_steps=2, classifier=str(classifier))
    trainer = build_trainer(task, {"steps": 1, "batch_size": 8, "progress": False}, None,
                            model_overrides=TINY_LM)  # fmt: skip
    path, acc = task.sample_grid(trainer.model, tmp_path / "grid.png", per_caption=2,
                                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    # the same draws, classified directly
    captions = [task.caption(c) for c in range(10) for _ in range(2)]
    images = task.generate_images(
        trainer.model, captions, generator=torch.Generator().manual_seed(0)
    )
    truth = torch.arange(10).repeat_interleave(2)
    assert acc == pytest.approx(100 * float((task.classify(images) == truth).float().mean()))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
