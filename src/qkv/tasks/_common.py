"""Helpers shared by the tasks: option checks, ``task.json``, model-config sizing, batching."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from qkv import models
from qkv.data.batching import batched, pad_ids
from qkv.tasks.base import Task, TaskError, TaskOptions

TASK_FILE = "task.json"
T = TypeVar("T")


def check_extra(task: str, options: TaskOptions, known: Sequence[str]) -> None:
    """Reject unknown ``options.extra`` keys (typos would otherwise be silently ignored).

    Raises:
        TaskError: naming the unknown keys and the known ones.
    """
    unknown = sorted(set(options.extra) - set(known))
    if unknown:
        raise TaskError(
            f"task {task!r}: unknown extra option(s) {unknown}; known: {sorted(known) or 'none'}"
        )


def check_choice(task: str, option: str, value: Any, choices: Sequence[Any]) -> None:
    """Raises TaskError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise TaskError(f"task {task!r}: {option} must be one of {list(choices)}, got {value!r}")


def check_positive(task: str, option: str, value: Any, minimum: int = 1) -> None:
    """Raises TaskError unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskError(f"task {task!r}: {option} must be an int >= {minimum}, got {value!r}")


def write_task_file(task: Task, directory: Path, state: dict[str, Any] | None = None) -> None:
    """Write ``directory/task.json``: the task name, its options and derived state."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    obj = {"name": task.name, "options": task.options.to_dict(), "state": state or {}}
    (directory / TASK_FILE).write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")


def read_task_file(directory: Path) -> dict[str, Any]:
    """Read ``directory/task.json``.

    Raises:
        TaskError: the file is missing, not JSON, or lacks ``name``/``options``.
    """
    path = Path(directory) / TASK_FILE
    if not path.is_file():
        raise TaskError(f"no task file {path} (is {directory} a qkv checkpoint?)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(obj, dict) or "name" not in obj or "options" not in obj:
        raise TaskError(f"{path} must hold an object with 'name' and 'options'")
    return obj


def sized_config(
    task: Task,
    family: str,
    preset: str | None,
    default: dict[str, Any],
    sizes: dict[str, Any],
    overrides: dict[str, Any],
    base: models.TransformerConfig | None = None,
) -> models.TransformerConfig:
    """The task's model config: its small default, a named preset, or a pretrained model's
    config, sized to the task.

    Args:
        task: the task (for error messages).
        family: the config family the task needs (``"seq2seq"``, ``"lm"``, ``"encoder"``, ``"vit"``).
        preset: a :data:`qkv.models.PRESETS` name, or None for ``default``.
        default: the task's own small architecture (without the sizes).
        sizes: fields fixed by the data: vocabulary, lengths, image geometry.
        overrides: user fields; they win over everything.
        base: a pretrained model's config (fine-tuning): its architecture is kept, the
            task's sizes are applied, except a longer ``max_len`` (learned positions keep
            their table).

    Raises:
        TaskError: a preset or base of another family than the task needs, or both given.
    """
    cls = {
        "seq2seq": models.Seq2SeqConfig,
        "lm": models.LMConfig,
        "encoder": models.EncoderConfig,
        "vit": models.ViTConfig,
    }[family]
    if base is not None:
        if preset is not None:
            raise TaskError(f"task {task.name!r}: give a preset or a pretrained model, not both")
        if base.family != family:
            raise TaskError(
                f"task {task.name!r} needs a {family!r} model, but the pretrained model is a "
                f"{base.family!r} model"
            )
        fitted = dict(sizes)
        if "max_len" in fitted and getattr(base, "max_len", 0) >= fitted["max_len"]:
            del fitted["max_len"]
        return cls.from_dict({**base.to_dict(), **fitted, **overrides})
    if preset is None:
        return cls.from_dict({**default, **sizes, **overrides})
    found = models.preset_config(preset)
    if found.family != family:
        raise TaskError(
            f"task {task.name!r} needs a {family!r} model, but preset {preset!r} is a "
            f"{found.family!r} model"
        )
    return models.preset_config(preset, **{**sizes, **overrides})


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def read_text_file(path: str | Path, what: str) -> str:
    """Read a UTF-8 text file given by the user.

    Raises:
        TaskError: naming the path when it is missing, not a file, not UTF-8, or empty.
    """
    p = Path(path)
    if not p.exists():
        raise TaskError(f"{what} file {p} does not exist")
    if not p.is_file():
        raise TaskError(f"{what} path {p} is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TaskError(f"{what} file {p} is not UTF-8 text: {e}") from e
    if not text.strip():
        raise TaskError(f"{what} file {p} is empty")
    return text


__all__ = [
    "TASK_FILE",
    "batched",
    "check_choice",
    "check_extra",
    "check_positive",
    "model_device",
    "pad_ids",
    "read_task_file",
    "read_text_file",
    "sized_config",
    "write_task_file",
]
