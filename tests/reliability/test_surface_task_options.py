"""A task's own options and inputs: bounded where a large value only reaches the allocator
(vqa's turns, text2image's VQ-VAE steps), generate options of one task refused by the others
(``--question`` reached a seq2seq model as a decoding setting: TypeError), an empty question
(IndexError), and a data file that gained a label after the model was trained (KeyError)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _surface import TINY_DIGITS, assert_refused, run_cli, train_tiny

from qkv.tasks import TaskError, get_task


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("options") / "run")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier's run: it decodes nothing and has no decoder target."""
    out = tmp_path_factory.mktemp("options") / "digits"
    from qkv.cli import main

    assert main([*TINY_DIGITS, "--out", str(out)]) == 0
    return out


def _classify_run(base: Path) -> tuple[Path, Path]:
    data = base / "labels.tsv"
    lines = [f"{'ab'[i % 2]}\t{'xy'[i % 2]} word {i}" for i in range(40)]
    data.write_text("\n".join(lines) + "\n")
    out = base / "classify"
    argv = ["train", "--task", "classify", "--data", str(data), "--tokenizer", "char",
            "--n-valid", "4", "--n-test", "4", "--max-len", "16", "--steps", "1",
            "--batch-size", "8", "--model", "d_model=16", "--model", "n_heads=2",
            "--model", "d_ff=32", "--model", "n_layers=1", "--eval-limit", "4",
            "--no-progress", "--out", str(out)]  # fmt: skip
    from qkv.cli import main

    assert main(argv) == 0
    return out, data


def _cases(run: Path, new: Path, digits: Path) -> list[tuple[str, list[str], tuple[str, ...]]]:
    ck, out, dg, html = str(run), str(new), str(digits), str(new.parent / "r.html")
    return [
        ("vqa --turns 1000000", ["train", "--task", "vqa", "--turns", "1000000", "--out", out],
         ("turns", "at most 64")),
        ("text2image --vq-steps 1e12", ["train", "--task", "text2image", "--vq-steps", "1e12",
         "--out", out], ("vq_steps", "at most 1,000,000")),
        ("generate --question to a copy model", ["generate", "--checkpoint", ck, "--question",
         "what is it", "a"], ("--question", "'copy'", "vqa")),
        ("generate --question ''", ["generate", "--checkpoint", ck, "--question", "", "a"],
         ("--question", "empty")),
        ("generate --question '  '", ["generate", "--checkpoint", ck, "--question", "  ",
         "test:0"], ("--question", "empty")),
        ("viz --question to a copy model", ["viz", "--checkpoint", ck, "a", "--question",
         "what", "--out", str(new.parent / "r.html")], ("--question", "'copy'", "vqa")),
        ("viz --question ''", ["viz", "--checkpoint", ck, "a", "--question", "",
         "--out", str(new.parent / "r.html")], ("--question", "empty")),
        ("generate --hf --question", ["generate", "--hf", ck, "--question", "what", "a"],
         ("--question", "--hf")),
        ("digits --vocab-size", ["train", "--task", "digits", "--vocab-size", "100",
         "--out", out], ("--vocab-size", "digits")),
        ("text2text --corpus wmt", ["train", "--task", "text2text", "--corpus", "wmt",
         "--out", out], ("text2text", "corpus", "debian, ding", "'wmt'")),
        # flags a task would ignore: refused, naming the tasks that take them
        ("generate --out-dir to a copy model", ["generate", "--checkpoint", ck, "--out-dir",
         out, "a"], ("--out-dir", "'copy'", "only text2image takes it")),
        ("generate --hf --out-dir", ["generate", "--hf", ck, "--out-dir", out, "a"],
         ("--out-dir", "--hf", "text2image")),
        ("generate --hf --oov-penalty", ["generate", "--hf", ck, "--oov-penalty", "1", "a"],
         ("--oov-penalty", "--hf", "asr", "no lexicon")),
        ("generate --voice without --say", ["generate", "--checkpoint", ck, "--voice", "en-gb",
         "a"], ("--voice", "--say")),
        ("generate --say with --prompt", ["generate", "--checkpoint", ck, "--say", "hello",
         "--prompt", "a"], ("--say", "--prompt")),
        ("generate --beam-size to a classifier", ["generate", "--checkpoint", dg, "--beam-size",
         "4", "test:0"], ("--beam-size", "'digits'", "translate", "asr")),
        ("generate --seed to a classifier", ["generate", "--checkpoint", dg, "--seed", "1",
         "test:0"], ("--seed", "'digits'", "text2image")),
        ("generate --strategy to a classifier", ["generate", "--checkpoint", dg, "--strategy",
         "beam", "test:0"], ("--strategy", "'digits'")),
        ("eval --beam-size to a classifier", ["eval", "--checkpoint", dg, "--beam-size", "2"],
         ("--beam-size", "'digits'", "does not decode", "caption")),
        ("eval two checkpoints --beam-size", ["eval", "--checkpoint", dg, "--checkpoint", dg,
         "--beam-size", "2"], ("--beam-size", "'digits'")),
        ("generate --ctc-prefix-weight to a copy model", ["generate", "--checkpoint", ck,
         "--ctc-prefix-weight", "0.3", "a"], ("--ctc-prefix-weight", "'copy'", "only asr")),
        ("eval --ctc-prefix-weight to a copy model", ["eval", "--checkpoint", ck,
         "--ctc-prefix-weight", "0.3"], ("--ctc-prefix-weight", "'copy'", "only asr")),
        ("eval --ctc-prefix-weight 2", ["eval", "--checkpoint", ck, "--ctc-prefix-weight", "2"],
         ("--ctc-prefix-weight", "[0, 1]", "'2'")),
        ("asr --ctc-prefix-weight -1", ["train", "--task", "asr", "--ctc-prefix-weight", "-1",
         "--out", out], ("ctc_prefix_weight", "[0, 1]", "-1")),
        ("generate --lm-weight to a copy model", ["generate", "--checkpoint", ck,
         "--lm-weight", "0.3", "a"], ("--lm-weight", "'copy'", "only asr")),
        ("eval --lm-weight to a copy model", ["eval", "--checkpoint", ck, "--lm-weight", "0.3"],
         ("--lm-weight", "'copy'", "only asr")),
        ("eval --lm-weight 2", ["eval", "--checkpoint", ck, "--lm-weight", "2"],
         ("--lm-weight", "[0, 1]", "'2'")),
        ("asr --lm-weight 1.5", ["train", "--task", "asr", "--lm-weight", "1.5", "--out", out],
         ("lm_weight", "[0, 1]", "1.5")),
        ("generate --lm-weight -1", ["generate", "--checkpoint", ck, "--lm-weight", "-1", "a"],
         ("--lm-weight", ">= 0", "-1")),
        ("eval --oov-penalty to a copy model", ["eval", "--checkpoint", ck, "--oov-penalty", "2"],
         ("--oov-penalty", "'copy'", "has no lexicon", "only asr")),
        ("eval --oov-penalty -1", ["eval", "--checkpoint", ck, "--oov-penalty", "-1"],
         ("--oov-penalty", ">= 0", "'-1'")),
        ("eval --oov-penalty inf", ["eval", "--checkpoint", ck, "--oov-penalty", "inf"],
         ("--oov-penalty", ">= 0", "'inf'")),
        ("generate --oov-penalty to a copy model", ["generate", "--checkpoint", ck,
         "--oov-penalty", "2", "a"], ("--oov-penalty", "'copy'", "has no lexicon", "only asr")),
        ("generate --oov-penalty nan", ["generate", "--checkpoint", ck, "--oov-penalty", "nan",
         "a"], ("--oov-penalty", ">= 0", "'nan'")),
        ("asr --oov-penalty with bpe", ["train", "--task", "asr", "--tokenizer", "bpe",
         "--oov-penalty", "2", "--out", out], ("oov_penalty 2.0", "char tokenizer")),
        ("viz --target to a classifier", ["viz", "--checkpoint", dg, "test:0", "--target", "x",
         "--out", html], ("--target", "'digits'", "translate")),
    ]  # fmt: skip


def test_every_bad_task_option_is_one_line(run, digits, tmp_path, capsys):
    new = tmp_path / "new"
    cases = _cases(run, new, digits)
    failures = []
    for name, argv, fragments in cases:
        try:
            assert_refused(argv, capsys, *fragments)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)
    assert not new.exists()
    assert len(cases) == 36
    assert not (new.parent / "r.html").exists()


def test_the_bounds_hold_in_python():
    with pytest.raises(TaskError, match="turns must be at most 64"):
        get_task("vqa", {"turns": 65})
    assert get_task("vqa", {"turns": 64}).turns == 64
    with pytest.raises(TaskError, match="vq_steps must be at most"):
        get_task("text2image", {"vq_steps": 10**6 + 1})


def test_an_empty_question_is_refused_by_vqa_itself():
    task = get_task("vqa")
    for question in ("", "   "):
        with pytest.raises(TaskError, match="empty"):
            task.predict(None, ["test:0"], question=question)  # type: ignore[arg-type]
        with pytest.raises(TaskError, match="empty"):
            task.examples_for("test:0", question)


def test_a_label_the_model_never_saw_is_named_with_the_file(tmp_path, capsys):
    out, data = _classify_run(tmp_path)
    capsys.readouterr()  # the training's own output
    data.write_text(data.read_text().replace("b\t", "NEWLABEL\t"))
    assert_refused(["eval", "--checkpoint", str(out)], capsys, "NEWLABEL", str(data), "a, b")
    # the same data with its old labels still evaluates
    data.write_text(data.read_text().replace("NEWLABEL\t", "b\t"))
    code, _, err = run_cli(["eval", "--checkpoint", str(out)], capsys)
    assert code == 0, err


def _translate(data: Path, out: Path) -> list[str]:
    return ["train", "--task", "translate", "--data", str(data), "--n-valid", "2", "--n-test",
            "2", "--steps", "1", "--batch-size", "8", "--model", "d_model=16", "--model",
            "n_heads=2", "--model", "d_ff=32", "--model", "n_encoder_layers=1", "--model",
            "n_decoder_layers=1", "--eval-limit", "2", "--no-progress", "--out", str(out)]  # fmt: skip


def test_translation_lines_longer_than_the_limit_are_skipped_and_counted(tmp_path, capsys):
    """A line pair of 2 x 120,000 characters took 38 s (the tokenizer's training grows with
    the square of a line's length): lines over MAX_LINE_CHARS are skipped, and said."""
    from qkv.tasks.text.translate import MAX_LINE_CHARS

    data = tmp_path / "pairs.tsv"
    normal = [f"quelle {i}\tziel {i}" for i in range(30)]
    long = "w " * 60_000
    data.write_text("\n".join([f"{long}\t{long}", *normal, f"kurz\t{'x' * (MAX_LINE_CHARS + 1)}"]))
    code, out, err = run_cli(_translate(data, tmp_path / "run"), capsys)
    assert code == 0, err
    assert f"skipped 2 line pair(s) of {data} with a side longer than 2,000 characters" in out
    from qkv.tasks import load_task

    task = load_task(
        tmp_path / "run" / "checkpoints" / (tmp_path / "run" / "latest").read_text().strip(),
        rebuild_data=True,
    )
    pairs = [p for split in ("train", "valid", "test") for p in task.examples(split)]
    assert len(pairs) == 30 and max(len(p.src) for p in pairs) < 20
    # a file of nothing but documents is refused in one line
    data.write_text(f"{long}\t{long}\n")
    assert_refused(_translate(data, tmp_path / "run2"), capsys, str(data), "2,000 characters")


def test_what_each_task_takes():
    """The flags each task uses, as `qkv generate`, `eval` and `viz` check them: text2image
    samples with --temperature, --top-k and --seed only; the text generators with every
    decoding flag; a classifier with none."""
    from qkv.tasks import TASKS

    t2i = TASKS["text2image"]
    assert [t2i.predict_takes(n) for n in ("temperature", "top_k", "seed")] == [True] * 3
    assert not t2i.predict_takes("beam_size") and t2i.predict_takes("out_dir")
    assert [n for n, cls in TASKS.items() if cls.predict_takes("out_dir")] == ["text2image"]
    assert [n for n, cls in TASKS.items() if cls.predict_takes("question")] == ["vqa"]
    for name in ("translate", "lm", "caption", "asr", "text2text"):
        assert TASKS[name].predict_takes("beam_size") and not TASKS[name].predict_takes("out_dir")
    for name in ("digits", "clip", "vqa", "detect", "classify", "summarize-extractive"):
        assert not TASKS[name].predict_takes("temperature"), name
    assert not TASKS["lm"].eval_beam and TASKS["summarize"].eval_beam
    assert [n for n, cls in TASKS.items() if cls.viz_target] == [
        "copy", "reverse", "synthetic", "translate", "text2text", "summarize", "asr"
    ]  # fmt: skip
