"""What the CLI writes: no progress bars when standard error is not a terminal (their
redraws interleaved the header in a log file), unless ``--progress`` asks; an output with
no text is ``<empty>``, not a blank line, and standard error says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _surface import TINY_RUN, run_cli, train_tiny

import qkv.cli.train as train_cli
from qkv.tasks.synthetic.copy import CopyTask

NO_BAR = [a for a in TINY_RUN if a != "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("output") / "run")


def _progress(argv: list[str], capsys: pytest.CaptureFixture[str]) -> bool:
    code, out, err = run_cli(["train", *argv, "--show-recipe"], capsys)
    assert code == 0, err
    return json.loads(out)["train"]["progress"]


def test_bars_only_on_a_terminal(capsys, monkeypatch):
    assert _progress(NO_BAR, capsys) is False  # capsys: not a terminal
    assert _progress([*NO_BAR, "--progress"], capsys) is True  # asked for
    monkeypatch.setattr(train_cli, "stderr_is_terminal", lambda: True)
    assert _progress(NO_BAR, capsys) is True
    assert _progress([*NO_BAR, "--no-progress"], capsys) is False


def test_a_redirected_run_log_has_no_redraws(tmp_path, capsys):
    code, _, err = run_cli(["train", *NO_BAR, "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert "\r" not in err and "step/s" not in err
    lines = err.splitlines()
    assert lines[0] == "qkv train: copy" and lines[1].startswith("  data:")


def test_an_empty_output_is_marked(run, capsys, monkeypatch):
    outputs = {"a": "", "b": "bb", "c": "  "}
    monkeypatch.setattr(
        CopyTask, "predict", lambda self, model, inputs, **kw: [outputs[x] for x in inputs]
    )
    code, out, err = run_cli(["generate", "--checkpoint", str(run), "a", "b", "c"], capsys)
    assert code == 0, err
    assert out.splitlines() == ["<empty>", "bb", "<empty>"]
    assert "2 of 3 output(s) <empty>: the model produced no text" in err


def test_an_empty_sample_is_marked(monkeypatch):
    """The samples a run logs after each evaluation: an empty output is ``<empty>`` too."""
    from qkv.tasks import get_task

    task = get_task("copy", {"n_train": 32, "max_len": 4})
    pairs = task.examples("valid")[:2]
    monkeypatch.setattr(type(task), "generate_texts", lambda self, model, srcs, **kw: ["", "ab"])
    assert task.samples(None, k=2) == [  # type: ignore[arg-type]
        f"{pairs[0][0]}  ->  <empty>  (reference: {pairs[0][1]})",
        f"{pairs[1][0]}  ->  ab  (reference: {pairs[1][1]})",
    ]


def test_an_output_names_its_input(run, capsys, monkeypatch):
    """An input that names an image or sound (a file, ``SPLIT:N``) is printed before its
    output and a tab: with several inputs the lines can be told apart; the task's heading
    says what the outputs are."""
    outputs = {"test:1": "one", "pic.png": "", "valid:0": "zero"}
    monkeypatch.setattr(
        CopyTask, "predict", lambda self, model, inputs, **kw: [outputs[x] for x in inputs]
    )
    monkeypatch.setattr(CopyTask, "names_inputs", True)
    monkeypatch.setattr(CopyTask, "prediction", "a word for each input")
    argv = ["generate", "--checkpoint", str(run), "test:1", "pic.png", "valid:0"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert out.splitlines() == ["test:1\tone", "pic.png\t<empty>", "valid:0\tzero"]
    assert "copy: a word for each input" in err.splitlines()
    # a text task's outputs stay one per line, in the inputs' order (a pipe of texts)
    monkeypatch.setattr(CopyTask, "names_inputs", False)
    code, out, err = run_cli(argv, capsys)
    assert out.splitlines() == ["one", "<empty>", "zero"]
