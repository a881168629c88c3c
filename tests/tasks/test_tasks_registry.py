"""The task registry: names, construction without data, errors, checkpoints."""

from __future__ import annotations

import dataclasses
import json
from typing import get_args

import pytest

from qkv.tasks import TASKS, CopyTask, Task, TaskError, TaskOptions, get_task, load_task
from qkv.tasks._common import read_task_file
from qkv.tasks.base import TaskKind

BUILTIN = {"copy", "reverse", "synthetic", "translate", "lm", "digits", "fashion-mnist"}


def test_registry_names_and_kinds() -> None:
    assert BUILTIN <= set(TASKS)
    for name, cls in TASKS.items():
        assert issubclass(cls, Task) and cls.name == name
        assert cls.kind in get_args(TaskKind)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_building_a_task_reads_no_data(name: str, tmp_path) -> None:
    missing = str(tmp_path / "does-not-exist")
    takes_data = "data" in {f.name for f in dataclasses.fields(TASKS[name].Options)}
    if not takes_data:  # a task that makes its own data refuses --data
        with pytest.raises(TaskError, match=f"task '{name}' takes no --data"):
            get_task(name, TaskOptions(data=missing))
        return
    task = get_task(name, TaskOptions(data=missing))
    assert task.name == name and task.options.data is not None  # errors come on first use


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(TaskError, match=r"unknown task 'copyy'; known tasks: .*copy.*synthetic"):
        get_task("copyy")


def test_bad_options_are_task_errors() -> None:
    with pytest.raises(TaskError, match=r"task 'synthetic': tokenizer must be one of"):
        get_task("synthetic", TaskOptions(tokenizer="sentencepiece"))
    with pytest.raises(TaskError, match=r"n_valid must be an int >= 0, got -1"):
        get_task("synthetic", TaskOptions(n_valid=-1))
    with pytest.raises(TaskError, match=r"task 'digits' takes no --attention"):
        get_task("digits", TaskOptions(extra={"attention": "full"}))
    with pytest.raises(
        TaskError, match=r"split must be one of \['train', 'valid', 'test'\], got 'dev'"
    ):
        get_task("copy").examples("dev")  # type: ignore[arg-type]


def test_load_task_round_trip_and_errors(tmp_path) -> None:
    task = CopyTask(TaskOptions(n_train=10, n_valid=2, n_test=2, seed=5, max_len=6))
    task.save(tmp_path)
    obj = read_task_file(tmp_path)
    assert obj["name"] == "copy" and obj["options"]["seed"] == 5 and obj["state"]["max_len"] == 6
    back = load_task(tmp_path, rebuild_data=True)
    assert isinstance(back, CopyTask) and back.examples("train") == task.examples("train")
    with pytest.raises(TaskError, match=rf"no task file {tmp_path / 'empty'}/task.json"):
        load_task(tmp_path / "empty")
    (tmp_path / "task.json").write_text(json.dumps({"name": "copy", "options": {"colour": 1}}))
    with pytest.raises(TaskError, match=r"task.json: bad options"):
        load_task(tmp_path)
    (tmp_path / "task.json").write_text("[1, 2]")
    with pytest.raises(TaskError, match=r"task.json must hold an object with 'name' and 'options'"):
        load_task(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "task.json").write_text(json.dumps({"name": "copy", "options": {}}))
    with pytest.raises(TaskError, match=r"task 'copy': no tokenizer.json or tokenizer_src/ in"):
        load_task(tmp_path)
