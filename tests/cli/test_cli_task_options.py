"""Typed task options on the command line: each task's flags come from its ``Options``
dataclass, another task's flag is refused in one line, and a run directory saved in the
format before typed options (``extra``) still loads."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from qkv.cli import main
from qkv.tasks import TASKS, get_task, load_task, load_trained
from qkv.tasks.options import flag_of
from qkv.tasks.speech.asr import ASRTask
from qkv.tasks.synthetic.copy import CopyTask
from qkv.tasks.synthetic.listops import ListOpsTask

#: every flag qkv train has whatever the task (training, model, run)
_TASK_GROUP = re.compile(r"^(\S.*) options \(--task (\S+)\):$")


def _task_flags(help_text: str, task: str) -> list[str]:
    """The flags listed in the help's group of ``task``'s options."""
    lines = help_text.splitlines()
    start = lines.index(f"{task} options (--task {task}):")
    flags = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break  # the next group
        m = re.match(r"^  (--[a-z0-9-]+)", line)
        if m:
            flags.append(m.group(1))
    return flags


@pytest.mark.parametrize("task", sorted(TASKS))
def test_help_lists_exactly_the_tasks_options(task: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--task", task, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    want = [flag_of(f) for f in dataclasses.fields(TASKS[task].Options)]
    assert _task_flags(out, task) == want
    # no other task's group, and no flag of another task outside its group
    groups = [m.group(2) for m in map(_TASK_GROUP.match, out.splitlines()) if m]
    assert groups == [task]


def test_ctc_weight_help_shows_the_dataclass_default(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--task", "asr", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    field = next(f for f in dataclasses.fields(ASRTask.Options) if f.name == "ctc_weight")
    assert field.default == 0.5 and field.type == "float"
    entry = out.split("--ctc-weight CTC_WEIGHT ", 1)[1].split(" --ctc-prefix-weight", 1)[0]
    assert entry.startswith(field.metadata["help"]) and entry.endswith(
        f"(default: {field.default})"
    )


def test_help_without_a_task_points_at_the_tasks_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "`qkv train --task T --help` lists them" in out
    assert "--ctc-weight" not in out and "options (--task" not in out
    for name in TASKS:
        assert name in out  # --task lists them


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--task", "digits", "--ctc-weight", "0.3"],
        ["train", "--task=digits", "--ctc-weight=0.3"],
    ],
)
def test_another_tasks_flag_is_refused_in_one_line(argv: list[str], capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qkv: error: train: ")
    assert "task 'digits' takes no --ctc-weight" in err
    assert not (tmp_path / "run").exists()


def test_a_flag_without_task_is_checked_against_the_default_task(capsys, tmp_path) -> None:
    # no --task: the default task (synthetic) takes no --ctc-weight
    assert main(["train", "--ctc-weight", "0.3", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task 'synthetic' takes no --ctc-weight" in err


def test_a_bad_value_names_the_flag(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--task", "listops", "--attention", "dilated"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --attention: invalid choice: 'dilated'" in err


def test_show_recipe_takes_the_tasks_flags(capsys) -> None:
    argv = ["train", "--task", "listops", "--attention", "bigbird", "--show-recipe"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "listops"


def test_python_options_refuse_another_tasks_option() -> None:
    with pytest.raises(ValueError, match=r"task 'digits' takes no --ctc-weight"):
        get_task("digits", {"ctc_weight": 0.3})
    assert get_task("asr", ASRTask.Options(ctc_weight=0.3)).ctc_weight == 0.3
    assert get_task("asr", {"ctc_weight": 0.25}).ctc_weight == 0.25


# -- the format saved before typed options --------------------------------------------------
#: ``task.json`` of a listops checkpoint as qkv wrote it before typed options: every shared
#: option (null where not given) and the task's own under ``extra``.
OLD_LISTOPS = {
    "name": "listops",
    "options": {
        "data": None,
        "seed": 3,
        "n_train": 4,
        "n_valid": 2,
        "n_test": 2,
        "max_len": 32,
        "tokenizer": None,
        "vocab_size": None,
        "extra": {"attention": "local", "window": 8},
    },
    "state": {},
}


def test_an_old_format_task_file_still_loads(tmp_path) -> None:
    (tmp_path / "task.json").write_text(json.dumps(OLD_LISTOPS), encoding="utf-8")
    task = load_task(tmp_path)
    assert isinstance(task, ListOpsTask)
    assert (task.attention, task.window, task.block, task.max_len) == ("local", 8, 16, 32)
    assert task.options.seed == 3 and task.options.n_train == 4
    fresh = ListOpsTask(
        ListOpsTask.Options(
            seed=3, n_train=4, n_valid=2, n_test=2, max_len=32, attention="local", window=8
        )
    )
    assert task.examples("test") == fresh.examples("test")  # the same data
    assert task.split_options() == fresh.split_options()  # scored as comparable


def test_an_old_format_run_resumes_evaluates_and_generates(tmp_path, capsys) -> None:
    """A run trained for two steps, its task.json rewritten in the old format, resumes to
    step 4, evaluates and generates; a changed flag on resume is refused as before."""
    run = tmp_path / "run"
    argv = ["train", "--task", "copy", "--out", str(run), "--n-train", "32", "--n-valid", "4"]
    argv += ["--n-test", "4", "--max-len", "4", "--symbols", "abc", "--batch-size", "8"]
    argv += ["--steps", "2", "--eval-every", "0", "--no-progress"]
    assert main(argv) == 0
    task_files = list(run.glob("**/task.json"))
    assert task_files
    for path in task_files:  # rewrite every checkpoint's task file in the old format
        obj = json.loads(path.read_text(encoding="utf-8"))
        o = obj["options"]
        assert o["symbols"] == "abc" and "extra" not in o  # the new format is flat
        old = {k: o.get(k) for k in ("data", "seed", "n_train", "n_valid", "n_test", "max_len")}
        old |= {"tokenizer": o["tokenizer"], "vocab_size": None, "extra": {"symbols": "abc"}}
        path.write_text(json.dumps({**obj, "options": old}), encoding="utf-8")
    capsys.readouterr()
    assert load_trained(run)[1].options == CopyTask.Options(
        seed=0, n_train=32, n_valid=4, n_test=4, max_len=4, symbols="abc"
    )
    assert main(["train", "--resume", "--out", str(run), "--symbols", "abcd"]) == 2
    assert "symbols='abcd' (the run has 'abc')" in capsys.readouterr().err
    resume = ["train", "--resume", "--out", str(run), "--steps", "4", "--no-progress"]
    assert main([*resume, "--symbols", "abc"]) == 0
    summary = capsys.readouterr().out
    assert '"step": 4' in summary
    assert main(["eval", "--checkpoint", str(run), "--split", "test"]) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(run), "abc"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # one output line for the one input


@pytest.mark.parametrize("task", sorted(TASKS))
def test_help_ends_with_what_the_task_measured(task: str, capsys) -> None:
    """A task's ``measured`` text closes its help, each paragraph (the metric, each sample)
    wrapped on its own; a task without one has no such section."""
    with pytest.raises(SystemExit):
        main(["train", "--task", task, "--help"])
    out = capsys.readouterr().out
    measured = TASKS[task].measured
    if not measured:
        assert "Measured (" not in out
        return
    section = out.split(f"Measured ({task}):\n\n", 1)[1]
    # compared without whitespace: argparse may also break a line after a hyphen
    paragraphs = ["".join(p.split()) for p in section.strip().split("\n\n")]
    assert paragraphs == ["".join(p.split()) for p in measured.split("\n\n")]
    assert all(max(map(len, p.splitlines())) <= 80 for p in section.split("\n\n"))


def test_translate_help_shows_three_samples(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--task", "translate", "--help"])
    section = capsys.readouterr().out.split("Measured (translate):", 1)[1]
    samples = [p for p in section.strip().split("\n\n")[1:] if p.strip()]
    assert len(samples) == 3
    assert all(" ".join(p.split()).count(" | ") == 2 for p in samples)  # source | ref | output
