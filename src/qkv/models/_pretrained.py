"""The on-disk format of a model: ``model.safetensors`` + ``config.json``, the same files
the trainer's checkpoints hold (:mod:`qkv.training.checkpoint`), written and read here.

* ``model.safetensors``: ``safetensors.torch.save_model(model)``, tied tensors stored once
  (the copies' names are in the file's metadata); every tensor keeps its dtype.
* ``config.json``: ``config.to_dict()`` (with its ``family``), indented, keys sorted.

No pickle is ever read. :func:`qkv.models.load` (in :mod:`qkv.models.io`) builds the model
a directory describes; this module only needs a model, so the model classes can use it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_model
from torch import Tensor, nn

from qkv.models.config import TransformerConfig, config_from_dict

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: A run directory's pointer to its newest checkpoint: ``checkpoints/<name in latest>``.
LATEST_FILE = "latest"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE)


class SavesToDirectory(Protocol):
    """Anything that writes itself into a directory (``qkv.data.Tokenizer``)."""

    def save(self, directory: str | Path) -> object:
        """Write into ``directory`` (e.g. ``tokenizer.json``)."""
        ...


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_model_files(
    directory: str | Path, model: nn.Module, *, tokenizer: SavesToDirectory | None = None
) -> None:
    """Write ``model.safetensors``, ``config.json`` (and the tokenizer's files) into an
    existing ``directory``, flushed to disk, with no atomicity of their own: what a writer
    that stages a whole directory itself (the trainer's checkpoints) calls.

    Args:
        directory: an existing directory.
        model: a model with a ``config`` that has ``to_dict()`` (every qkv model).
        tokenizer: anything with ``save(directory)``, or None.

    Raises:
        TypeError: a model without a qkv ``config``.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, TransformerConfig):
        raise TypeError(
            f"save_pretrained needs a qkv model with a TransformerConfig, got "
            f"{type(model).__name__} with config {type(config).__name__}"
        )
    d = Path(directory)
    save_model(model, str(d / MODEL_FILE))
    with open(d / CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    if tokenizer is not None:
        tokenizer.save(d)
    for p in d.iterdir():
        if p.is_file():
            _fsync(p)


def save_pretrained(
    model: nn.Module, directory: str | Path, *, tokenizer: SavesToDirectory | None = None
) -> Path:
    """Save a model (and optionally its tokenizer) so that :func:`qkv.load` rebuilds it.

    The files are written into a hidden staging directory inside ``directory``, flushed,
    then moved into place one by one with ``os.replace`` (``config.json`` last): a crash
    never leaves a truncated file, and other files already in ``directory`` (a trainer's
    ``trainer_state.json``, a task's files) are kept.

    Args:
        model: a qkv model (any family).
        directory: created if missing; existing model files are replaced.
        tokenizer: anything with ``save(directory)`` (``qkv.data.Tokenizer`` writes
            ``tokenizer.json``), or None.

    Returns:
        ``directory`` as a ``Path``.

    Raises:
        TypeError: a model without a qkv ``config``.
    """
    final = Path(directory)
    final.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".tmp-save-", dir=final))
    try:
        write_model_files(stage, model, tokenizer=tokenizer)
        entries = sorted(stage.iterdir(), key=lambda p: p.name == CONFIG_FILE)  # config last
        for entry in entries:
            target = final / entry.name
            if entry.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(entry, target)
        _fsync(final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final


def resolve_checkpoint(directory: str | Path) -> Path:
    """The model directory ``directory`` names: itself, or, for a training run directory
    with a ``latest`` file, ``checkpoints/<the name in latest>``.

    Raises:
        FileNotFoundError: no such directory, or ``model.safetensors``/``config.json``
            missing (named).
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"model directory {d} does not exist")
    if not (d / MODEL_FILE).exists() and (d / LATEST_FILE).is_file():
        name = (d / LATEST_FILE).read_text(encoding="utf-8").strip()
        d = d / "checkpoints" / name
        if not d.is_dir():
            raise FileNotFoundError(f"{directory}/{LATEST_FILE} names {name!r}, but {d} is missing")
    missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{d} is not a saved model: missing {', '.join(missing)}")
    return d


def read_config(directory: str | Path) -> TransformerConfig:
    """The config in ``directory/config.json`` (``directory`` resolved as in
    :func:`resolve_checkpoint`).

    Raises:
        FileNotFoundError: see :func:`resolve_checkpoint`.
        ValueError: invalid JSON or an invalid config (with the file's path).
    """
    path = resolve_checkpoint(directory) / CONFIG_FILE
    try:
        return config_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None


def _alias_groups(state: dict[str, Tensor]) -> dict[str, list[str]]:
    """Name -> every name of the same tensor (tied weights share their storage)."""
    by_storage: dict[tuple[Any, ...], list[str]] = {}
    for name, t in state.items():
        if t.numel() == 0 or t.device.type == "meta":
            by_storage[("own", name)] = [name]
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, t.shape, t.stride())
        by_storage.setdefault(key, []).append(name)
    return {name: names for names in by_storage.values() for name in names}


def load_weights(model: nn.Module, directory: str | Path) -> None:
    """Load ``model.safetensors`` into ``model`` strictly, each tensor in its saved dtype.

    Tied tensors (stored once) count as present when any of their names is in the file.

    Args:
        model: a model of the directory's config.
        directory: a model directory or run directory (see :func:`resolve_checkpoint`).

    Raises:
        FileNotFoundError: see :func:`resolve_checkpoint`.
        ValueError: missing, unexpected or shape-mismatched tensors, all listed in one
            message.
    """
    path = resolve_checkpoint(directory) / MODEL_FILE
    tensors = load_file(str(path))
    own = model.state_dict()
    aliases = _alias_groups(own)
    missing = sorted(k for k in own if not any(a in tensors for a in aliases[k]))
    unexpected = sorted(k for k in tensors if k not in own)
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sorted(tensors.items())
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        problems = [
            f"missing {missing}" if missing else "",
            f"unexpected {unexpected}" if unexpected else "",
            f"shape mismatches [{'; '.join(shapes)}]" if shapes else "",
        ]
        raise ValueError(
            f"{path} does not fit {type(model).__name__}: " + ", ".join(p for p in problems if p)
        )
    # Give each parameter/buffer its saved dtype first, so the copy below is bit-exact
    # (setting .data keeps tied parameters tied: they are one Parameter object).
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
    with torch.no_grad():
        for name, t in named:
            if name in tensors and t.dtype != tensors[name].dtype:
                t.data = t.data.to(tensors[name].dtype)
    model.load_state_dict(tensors, strict=False)
