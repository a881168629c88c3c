"""The task registry: every task by name, and rebuilding a task from a checkpoint."""

from __future__ import annotations

from pathlib import Path

from qkv.tasks._common import TASK_FILE, read_task_file
from qkv.tasks.base import Task, TaskError
from qkv.tasks.multimodal.caption import CaptionTask
from qkv.tasks.multimodal.clip import CLIPTask
from qkv.tasks.multimodal.text2image import Text2ImageTask
from qkv.tasks.multimodal.vqa import VQATask
from qkv.tasks.options import OptionsLike
from qkv.tasks.speech.asr import ASRTask
from qkv.tasks.synthetic.copy import CopyTask
from qkv.tasks.synthetic.kalo import SyntheticTask
from qkv.tasks.synthetic.listops import ListOpsTask
from qkv.tasks.synthetic.reverse import ReverseTask
from qkv.tasks.text.classify import TextClassifyTask
from qkv.tasks.text.lm import LMTask
from qkv.tasks.text.summarize import SummarizeTask
from qkv.tasks.text.summarize_extractive import ExtractiveSummarizeTask
from qkv.tasks.text.text2text import Text2TextTask
from qkv.tasks.text.translate import TranslateTask
from qkv.tasks.vision.detect import DetectTask
from qkv.tasks.vision.digits import DigitsTask
from qkv.tasks.vision.fashion_mnist import FashionMNISTTask
from qkv.training import checkpoint as ckpt

#: Every task by name (a new task is one more class here).
TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        CopyTask,
        ReverseTask,
        SyntheticTask,
        TranslateTask,
        Text2TextTask,
        SummarizeTask,
        ExtractiveSummarizeTask,
        LMTask,
        DigitsTask,
        FashionMNISTTask,
        ListOpsTask,
        DetectTask,
        CaptionTask,
        Text2ImageTask,
        CLIPTask,
        VQATask,
        ASRTask,
        TextClassifyTask,
    )
}


def task_class(name: str) -> type[Task]:
    """The class of the task called ``name``.

    Raises:
        TaskError: an unknown name (the known ones are listed).
    """
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def get_task(name: str, options: OptionsLike = None) -> Task:
    """Build a task by name (its data is read lazily, on first use) from its options (its
    ``Options``, a mapping of them, or a :class:`~qkv.tasks.options.TaskOptions`).

    Raises:
        TaskError: an unknown name (the known ones are listed), an option the task does not
            take, or an invalid value.
    """
    return task_class(name)(options)


def load_task(directory: str | Path, *, rebuild_data: bool = False) -> Task:
    """Rebuild a task from a checkpoint directory (``task.json`` + tokenizer files).

    Tokenizers come from the files, so no training data is read unless ``rebuild_data``:
    then the training split is built (with the loaded tokenizers) to resume training.

    Raises:
        TaskError: a missing/invalid ``task.json``, an unknown task, or missing or damaged
            tokenizers (the message names the file).
    """
    directory = Path(directory)
    obj = read_task_file(directory)  # checks the shared options' types and ranges
    path = directory / TASK_FILE
    try:
        cls = task_class(obj["name"])
    except TaskError as e:
        raise TaskError(f"{path}: {e}") from e
    try:  # the saved format before typed options (``extra``) still loads
        options = cls.Options.from_dict(obj["options"], task=cls.name, saved=True)
    except TaskError as e:
        raise TaskError(f"{path}: bad options: {e}") from e
    try:
        task = cls(options)
    except TaskError as e:  # options the task rejects
        raise TaskError(f"{path}: {e}") from e
    task.load(directory)
    if rebuild_data:
        task.examples("train")
    return task


def saved_task_name(directory: str | Path) -> str:
    """The name of the task a checkpoint (or a run directory's latest) trains, read from
    its ``task.json`` without building the task.

    Raises:
        qkv.training.CheckpointError: no checkpoint there.
        TaskError: a missing or damaged ``task.json`` (named).
    """
    return str(read_task_file(ckpt.check_checkpoint(directory))["name"])


__all__ = ["TASKS", "get_task", "load_task", "saved_task_name", "task_class"]
