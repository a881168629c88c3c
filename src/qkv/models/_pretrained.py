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
from safetensors.torch import save_model
from torch import Tensor, nn

from qkv.data._saves import PENDING_DIR, finish_pending_save
from qkv.data.files import read_json_object, read_tensors
from qkv.models.config import TransformerConfig, config_from_dict

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: A run directory's pointer to its newest checkpoint: ``checkpoints/<name in latest>``.
LATEST_FILE = "latest"
CHECKPOINTS_DIR = "checkpoints"
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

    Weights, config and tokenizer are published as one unit: they are written into a hidden
    staging directory inside ``directory`` and flushed; one rename to ``.save-pending``
    commits them; then they are moved into place (``config.json`` last). A crash before
    the commit leaves the old model; after it, the next :func:`resolve_checkpoint` (every
    reader) or save finishes the move, so the new model is read. Other files already in
    ``directory`` (a trainer's ``trainer_state.json``, a task's files) are kept.

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
    finish_pending_save(final)  # an earlier interrupted save, before this one commits
    stage = Path(tempfile.mkdtemp(prefix=".tmp-save-", dir=final))
    try:
        write_model_files(stage, model, tokenizer=tokenizer)
        _fsync(stage)
        os.rename(stage, final / PENDING_DIR)  # the commit point
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _fsync(final)
    finish_pending_save(final)
    return final


#: The most bytes a ``latest`` file may hold (it names one directory).
_MAX_LATEST_BYTES = 4096


def read_latest(run_dir: str | Path) -> str | None:
    """The checkpoint name in a run directory's ``latest`` file, or None without one.

    Raises:
        ValueError: naming the file when it is unreadable, not UTF-8, empty, too long, or
            not a plain directory name (no slashes, no leading dot).
    """
    path = Path(run_dir) / LATEST_FILE
    if not os.path.lexists(path):
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_LATEST_BYTES + 1)
        name = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read: {e}") from None
    plain = bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name
    if len(raw) > _MAX_LATEST_BYTES or not plain:
        raise ValueError(
            f"{path} must hold the name of a directory in {CHECKPOINTS_DIR}/, got {name[:80]!r}"
        )
    return name


def resolve_checkpoint(directory: str | Path) -> Path:
    """The model directory ``directory`` names: itself, or, for a training run directory
    with a ``latest`` file, ``checkpoints/<the name in latest>``.

    A save that was interrupted after its commit point is finished first (see
    :func:`save_pretrained`), so that the files read are all of one save.

    Raises:
        FileNotFoundError: no such directory, ``latest`` naming a missing one, or
            ``model.safetensors``/``config.json`` missing (named).
        ValueError: a damaged ``latest`` file, or an interrupted save that cannot be
            finished.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"checkpoint directory {d} does not exist")
    finish_pending_save(d)
    if not (d / MODEL_FILE).exists():
        name = read_latest(d)
        if name is not None:
            target = d / CHECKPOINTS_DIR / name
            if not target.is_dir():
                raise FileNotFoundError(
                    f"{d / LATEST_FILE} names {name!r}, but {target} does not exist"
                )
            d = target
    missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {d} is incomplete: missing {', '.join(missing)} (no "
            f"{', '.join(str(d / f) for f in missing)})"
        )
    return d


def read_config(directory: str | Path) -> TransformerConfig:
    """The config in ``directory/config.json`` (``directory`` resolved as in
    :func:`resolve_checkpoint`).

    Raises:
        FileNotFoundError: see :func:`resolve_checkpoint`.
        ValueError: a damaged file, a missing or unknown ``family``, or field values the
            config rejects (its own message, prefixed with the file's path).
    """
    path = resolve_checkpoint(directory) / CONFIG_FILE
    obj = read_json_object(path)
    try:
        return config_from_dict(obj)
    except (ValueError, TypeError) as e:
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
        ValueError: a damaged file, or missing, unexpected or shape-mismatched tensors, all
            listed in one message.
    """
    path = resolve_checkpoint(directory) / MODEL_FILE
    tensors = read_tensors(path)
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
