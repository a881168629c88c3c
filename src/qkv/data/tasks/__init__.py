"""Tasks: what to learn, from which data, with which loss and metrics (one file per task).

=================  ========  ==========================================================
name               kind      data
=================  ========  ==========================================================
``copy``           seq2seq   random symbol strings, target = source (char tokens)
``reverse``        seq2seq   random symbol strings, target = reversed source
``synthetic``      seq2seq   English -> Kalo from :mod:`qkv.data.grammar` (word tokens)
``translate``      seq2seq   ``--data pairs.tsv`` or German -> English (``trans-de-en``)
``lm``             lm        ``--data file.txt``, Python's help topics, or the KJV Bible
``digits``         classify  scikit-learn's 8x8 digits (ViT)
``fashion-mnist``  classify  Fashion-MNIST 28x28 (ViT, ``dataset-fashion-mnist``)
``listops``        classify  Long Range Arena ListOps, dense/local/BigBird attention
=================  ========  ==========================================================

>>> task = get_task("copy", TaskOptions(n_train=8, n_valid=2, n_test=2))
>>> batch = task.collate(task.examples("train")[:2])
>>> sorted(batch)
['src', 'src_mask', 'tgt_in', 'tgt_mask', 'tgt_out']
"""

from __future__ import annotations

from pathlib import Path

from qkv.data.tasks._common import read_task_file
from qkv.data.tasks.base import LossOutput, Task, TaskError, TaskOptions
from qkv.data.tasks.copy import CopyTask
from qkv.data.tasks.digits import DigitsTask
from qkv.data.tasks.fashion_mnist import FashionMNISTTask
from qkv.data.tasks.listops import ListOpsTask
from qkv.data.tasks.lm import LMTask
from qkv.data.tasks.reverse import ReverseTask
from qkv.data.tasks.synthetic import SyntheticTask
from qkv.data.tasks.translate import TranslateTask

#: Every task by name (a new task is one more class here).
TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        CopyTask,
        ReverseTask,
        SyntheticTask,
        TranslateTask,
        LMTask,
        DigitsTask,
        FashionMNISTTask,
        ListOpsTask,
    )
}


def get_task(name: str, options: TaskOptions | None = None) -> Task:
    """Build a task by name (its data is read lazily, on first use).

    Raises:
        TaskError: an unknown name (the known ones are listed) or invalid options.
    """
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](options)


def load_task(directory: str | Path, *, rebuild_data: bool = False) -> Task:
    """Rebuild a task from a checkpoint directory (``task.json`` + tokenizer files).

    Tokenizers come from the files, so no training data is read unless ``rebuild_data``:
    then the training split is built (with the loaded tokenizers) to resume training.

    Raises:
        TaskError: a missing/invalid ``task.json``, an unknown task, or missing tokenizers.
    """
    directory = Path(directory)
    obj = read_task_file(directory)
    try:
        options = TaskOptions.from_dict(obj["options"])
    except TypeError as e:
        raise TaskError(f"{directory / 'task.json'}: bad options {obj['options']!r}: {e}") from e
    task = get_task(obj["name"], options)
    task.load(directory)
    if rebuild_data:
        task.examples("train")
    return task


__all__ = [
    "TASKS",
    "CopyTask",
    "DigitsTask",
    "FashionMNISTTask",
    "LMTask",
    "ListOpsTask",
    "LossOutput",
    "ReverseTask",
    "SyntheticTask",
    "Task",
    "TaskError",
    "TaskOptions",
    "TranslateTask",
    "get_task",
    "load_task",
]
