"""A run a person can follow: the header, plain log lines with --no-progress, samples after
each evaluation, a time budget (--max-time) with the schedule stretched to fit, qkv eval
--json, and attention on the image for a ViT."""

from __future__ import annotations

import json

import pytest
import torch

from qkv.cli import main
from qkv.tasks import get_task
from qkv.training.progress import format_duration, parse_duration

DIGITS = ["--task", "digits", "--model", "d_model=16", "--model", "n_heads=2",
          "--model", "d_ff=32", "--model", "n_layers=1", "--model", "patch_size=2",
          "--batch-size", "32",
          "--lr", "3e-3", "--schedule", "cosine", "--warmup", "2", "--threads", "1"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800.0), ("600s", 600.0), ("1h30m", 5400.0), ("90", 90.0), ("1.5m", 90.0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "10x", "m", "1h-3m", "inf"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def test_format_duration():
    assert format_duration(5) == "0:05" and format_duration(3725) == "1:02:05"


def test_header_plain_lines_samples_and_summary(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", *DIGITS, "--steps", "6", "--log-every", "3", "--eval-every", "3",
            "--no-progress", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    cap = capsys.readouterr()
    err = cap.err
    assert "qkv train: digits" in err and "1,257 training examples" in err
    assert "ViT" in err and "parameters" in err and "cpu (1 thread)" in err and str(run) in err
    assert "step 3/6  loss" in err and " ex/s " in err and "left" in err  # plain lines
    assert "eval at step 3: accuracy" in err and "valid example" in err  # samples
    assert "final evaluation at step 6" in err
    summary = json.loads(cap.out)  # stdout holds only the summary
    assert summary["step"] == 6 and summary["train_seconds"] > 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("elapsed" in r for r in records if "loss" in r)


def test_max_time_trains_until_the_time_is_up(tmp_path, capsys):
    get_task("digits").examples("train")  # scikit-learn's import: not this test's subject
    run = tmp_path / "run"
    assert main(["train", *DIGITS, "--max-time", "4s", "--no-progress", "--out", str(run)]) == 0
    cap = capsys.readouterr()
    # no step limit was given: none is shown; the budget is the whole command's
    assert "budget:  0:04 for the whole command: data ready in " in cap.err
    summary = json.loads(cap.out)
    # training stops at the budget less the time kept for the final evaluation (at most a
    # fifth of it), one step over at most
    assert 4.0 * 0.8 <= summary["train_seconds"] < 12.0
    assert summary["train_seconds"] + summary["eval_seconds"] >= 4.0 * 0.8
    steps = summary["step"]
    assert steps > 1
    lrs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in lrs if "lr" in r]
    # the cosine schedule was stretched to the steps that fit: it ends near zero
    assert lrs[-1] < 0.35 * max(lrs), lrs


def test_eval_json_and_generate_and_viz_on_a_vit(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *DIGITS, "--steps", "3", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    before = torch.get_num_threads()
    try:
        assert main(["eval", "--checkpoint", str(run), "--json", "--limit", "20",
                     "--threads", "1"]) == 0  # fmt: skip
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"accuracy", "loss", "split", "seconds"} and out["split"] == "test"
    assert main(["generate", "--checkpoint", str(run), "test:0", "valid:1"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert len(lines) == 2 and all(line.count(",") == 2 for line in lines)  # 3 top classes
    assert "top 3 classes" in cap.err
    # each line names its input, and a SPLIT:N image's true class follows its top classes
    task = get_task("digits")
    for line, (split, i) in zip(lines, [("test", 0), ("valid", 1)]):
        truth = task.class_names[task.examples(split)[i][1]]
        assert line.startswith(f"{split}:{i}\t") and line.endswith(f" (true: {truth})"), line
    html = tmp_path / "vit.html"
    assert main(["viz", "--checkpoint", str(run), "test:0", "--out", str(html),
                 "--png", str(tmp_path / "png")]) == 0  # fmt: skip
    text = html.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "where the class token attends" in text
    assert "r3c3" in text  # the patch tokens
    panel = json.loads(text.split('type="application/json">')[1].split("</script>")[0])["image"]
    side = panel["rows"]
    assert panel["cols"] == side and panel["patches"] == list(range(1, 1 + side * side))
    assert (tmp_path / "png" / "attention_on_image.png").stat().st_size > 1000
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(run), "--threads", "0"])
    assert exc.value.code == 2
    assert "--threads: must be a positive int, got '0'" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(run), "no-such-image.png"]) == 2
    assert "neither an image file nor SPLIT:N" in capsys.readouterr().err
