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
from qkv.data.files import read_json
from qkv.data.tokenizers import Tokenizer
from qkv.tasks.base import Task, TaskError

TASK_FILE = "task.json"
T = TypeVar("T")


def check_choice(task: str, option: str, value: Any, choices: Sequence[Any]) -> None:
    """Raises TaskError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise TaskError(f"task {task!r}: {option} must be one of {list(choices)}, got {value!r}")


def check_positive(
    task: str, option: str, value: Any, minimum: int = 1, maximum: int | None = None
) -> None:
    """Raises TaskError unless ``value`` is an int >= ``minimum`` (and <= ``maximum``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskError(f"task {task!r}: {option} must be an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise TaskError(f"task {task!r}: {option} must be at most {maximum:,}, got {value!r}")


def write_task_file(task: Task, directory: Path, state: dict[str, Any] | None = None) -> None:
    """Write ``directory/task.json``: the task name, its options and derived state."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    obj = {"name": task.name, "options": task.options.to_dict(), "state": state or {}}
    (directory / TASK_FILE).write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")


#: The shared options' types in ``task.json``: name -> (allowed types, minimum for ints, may
#: be null). A task's own options are checked by the task; ``extra`` is the format saved
#: before typed options (the task's own options under one key).
_OPTION_TYPES: dict[str, tuple[tuple[type, ...], int | None, bool]] = {
    "data": ((str,), None, True),
    "seed": ((int,), None, False),
    "n_train": ((int,), 0, True),
    "n_valid": ((int,), 0, True),
    "n_test": ((int,), 0, True),
    "max_len": ((int,), 1, True),
    "tokenizer": ((str,), None, True),
    "vocab_size": ((int,), 1, True),
    "extra": ((dict,), None, False),
}


def _check_options(path: Path, options: Any) -> None:
    if not isinstance(options, dict):
        raise TaskError(
            f"{path}: bad options: 'options' must be an object, got {type(options).__name__}"
        )
    for name, value in options.items():
        if name not in _OPTION_TYPES:
            continue  # the task's own: its Options reads them (and refuses unknown ones)
        types, minimum, nullable = _OPTION_TYPES[name]
        if value is None and nullable:
            continue
        ok = isinstance(value, types) and not isinstance(value, bool)
        if ok and minimum is not None and value < minimum:
            ok = False
        if not ok:
            want = "/".join(t.__name__ for t in types)
            want += f" >= {minimum}" if minimum is not None else ""
            want += " or null" if nullable else ""
            raise TaskError(f"{path}: bad options: {name!r} must be {want}, got {value!r}")


def read_task_file(directory: Path) -> dict[str, Any]:
    """Read and check ``directory/task.json``.

    Raises:
        TaskError: naming the file: missing, not UTF-8 or JSON (or nested too deeply), not
            an object with a string ``name`` and ``options`` (and an object ``state``), or
            shared options of the wrong type or range (``max_len: -1``, ``seed: "0"``).

    Returns:
        The object, its ``state`` ``{}`` when the file has none.
    """
    path = Path(directory) / TASK_FILE
    if not path.is_file():
        raise TaskError(f"no task file {path} (is {directory} a qkv checkpoint?)")
    obj = read_json(path, TaskError)
    if not isinstance(obj, dict) or "name" not in obj or "options" not in obj:
        raise TaskError(f"{path} must hold an object with 'name' and 'options'")
    if not isinstance(obj["name"], str):
        raise TaskError(f"{path}: 'name' must be a string, got {obj['name']!r}")
    if not isinstance(obj.setdefault("state", {}), dict):  # absent: {} (the tasks read it)
        raise TaskError(f"{path}: 'state' must be an object, got {obj['state']!r}")
    _check_options(path, obj["options"])
    return obj


#: ``sizes`` fields a task only suggests (the user may choose another).
SUGGESTED = ("patch_size",)


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
        family: the config family the task needs (``"seq2seq"``, ``"lm"``, ``"encoder"``, ``"vit"``,
            ``"swin"``).
        preset: a :data:`qkv.models.PRESETS` name, or None for ``default``.
        default: the task's own small architecture (without the sizes).
        sizes: fields fixed by the data: vocabulary, lengths, image geometry.
        overrides: user fields; they win over everything.
        base: a pretrained model's config (fine-tuning): its architecture is kept, the
            task's sizes are applied, except a longer ``max_len`` (learned positions keep
            their table).

    Raises:
        TaskError: a preset or base of another family than the task needs, both given, or
            an override of a size the data fixes (a smaller vocabulary than the tokenizer's
            ids, a shorter context than the task's sequences).
    """
    for key, need in sizes.items():
        if key in SUGGESTED or key not in overrides or overrides[key] == need:
            continue
        room = key in ("vocab_size", "max_len", "tgt_vocab_size")  # more room fits too
        if not (room and isinstance(overrides[key], int) and overrides[key] > need):
            raise TaskError(
                f"task {task.name!r} sets {key}={need!r} from its data; --model "
                f"{key}={overrides[key]!r} would not fit it"
                + (" (use --max-len for the sequence length)" if key == "max_len" else "")
            )
    cls = models.family.get(family).config_class
    try:
        return _family_config(task, cls, family, preset, default, sizes, overrides, base)
    except TaskError:
        raise
    except ValueError as e:  # the config's own check, about the fields --model sets
        raise TaskError(f"model config: {e}") from None


def _family_config(
    task: Task,
    cls: type[models.TransformerConfig],
    family: str,
    preset: str | None,
    default: dict[str, Any],
    sizes: dict[str, Any],
    overrides: dict[str, Any],
    base: models.TransformerConfig | None,
) -> models.TransformerConfig:
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


def load_tokenizer(task: str, directory: Path) -> Tokenizer:
    """The tokenizer a task saved in ``directory``.

    Raises:
        TaskError: the tokenizer file is missing or damaged (the message names it).
    """
    try:
        return Tokenizer.load(directory)
    except (FileNotFoundError, ValueError) as e:
        raise TaskError(f"task {task!r}: {e}") from e


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
    "check_positive",
    "model_device",
    "pad_ids",
    "read_task_file",
    "read_text_file",
    "sized_config",
    "write_task_file",
]
