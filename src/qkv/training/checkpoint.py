"""Checkpoints: a directory of safetensors and JSON, written crash-safely, read strictly.

Layout of one checkpoint directory::

    model.safetensors        weights (tied tensors stored once)
    config.json              the model config (with its ``family``)
    task.json, tokenizer*    written by the task (how to rebuild inputs/outputs)
    trainer_state.json       step, epoch, data position, RNG states, history, settings
    optimizer.safetensors    optimizer tensors (the hyper-parameters are in trainer_state)

A checkpoint is written into a temporary ``.tmp-*`` sibling, every file and directory in it
is fsync'ed, and only then is it renamed to its final name; it is never modified after that.
How a run directory names its newest checkpoint (the ``latest`` file), re-saves a step and
prunes old ones without a moment in which ``latest`` names an incomplete checkpoint is in
:mod:`qkv.training.rundir`.

Reading is strict: a missing, truncated or lying file raises :class:`CheckpointError` naming
the file, never a raw ``SafetensorError``, ``KeyError`` or ``RecursionError``. No pickle is
ever read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file, save_model
from torch import nn

from qkv import models
from qkv._checks import is_int
from qkv.data import files
from qkv.models import io as model_io
from qkv.training import _atomic

# the model's files and the run directory's names are the models layer's (qkv.load reads them)
MODEL_FILE = model_io.MODEL_FILE
CONFIG_FILE = model_io.CONFIG_FILE
REQUIRED = model_io.REQUIRED_FILES
#: In a run directory: the file holding the name of the newest complete checkpoint.
LATEST_FILE = model_io.LATEST_FILE
#: In a run directory: where the checkpoints live.
CHECKPOINTS_DIR = model_io.CHECKPOINTS_DIR
STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory or file that is missing, damaged or does not fit the model."""


# ---------------------------------------------------------------------------------------
# JSON and safetensors, with one error naming the file
# ---------------------------------------------------------------------------------------
def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (the caller fsyncs the directory tree)."""
    text = json.dumps(obj, indent=2, sort_keys=True)  # one write: json.dump writes per token
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def read_json(path: Path) -> Any:
    """Parse a JSON file (:func:`qkv.data.files.read_json`).

    Raises:
        CheckpointError: naming ``path`` when it is missing, unreadable, not UTF-8, not JSON,
            or nested too deeply to parse.
    """
    return files.read_json(path, CheckpointError)


def read_json_object(path: Path) -> dict[str, Any]:
    """:func:`read_json` for files that must hold a JSON object.

    Raises:
        CheckpointError: as :func:`read_json`, or a list/null/number instead of an object.
    """
    return files.read_json_object(path, CheckpointError)


def read_tensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file.

    Raises:
        CheckpointError: naming ``path`` when it is missing, truncated, empty, random bytes
            or has a header whose offsets, dtypes or shapes do not match its data.
    """
    return files.read_tensors(path, CheckpointError, device)


# ---------------------------------------------------------------------------------------
# optimizer state <-> safetensors + JSON
# ---------------------------------------------------------------------------------------
def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors (for safetensors) and JSON-able metadata."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            key = f"state.{pid}.{name}"
            if isinstance(val, torch.Tensor):
                tensors[key] = val.detach().cpu().contiguous()
            else:
                scalars[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _param_ids(opt: torch.optim.Optimizer, meta: Any, where: str) -> dict[int, nn.Parameter]:
    """Map the saved parameter ids to the optimizer's parameters, checking the groups."""
    groups = meta.get("param_groups") if isinstance(meta, dict) else None
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise CheckpointError(f"{where}: 'optimizer.param_groups' must be a list of groups")
    saved = [len(g["params"]) for g in groups]
    own = [len(g["params"]) for g in opt.param_groups]
    if saved != own:
        raise CheckpointError(
            f"{where}: the optimizer has parameter groups of sizes {own}, the checkpoint {saved}"
        )
    ids = [pid for g in groups for pid in g["params"]]
    if not all(is_int(pid) for pid in ids) or len(set(ids)) != len(ids):
        raise CheckpointError(f"{where}: parameter ids must be distinct ints, got {ids}")
    params = [p for g in opt.param_groups for p in g["params"]]
    return dict(zip(ids, params, strict=True))


def optimizer_state_from_flat(
    opt: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    tensor_file: str | Path = OPTIM_FILE,
    state_file: str | Path = STATE_FILE,
) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_flat`: check the saved state fits ``opt`` and return
    it as an ``opt.state_dict()`` (state keyed by parameter index).

    Args:
        opt: the optimizer the state is for.
        tensors: the tensors of ``optimizer.safetensors``.
        meta: the ``optimizer`` entry of ``trainer_state.json``.
        tensor_file, state_file: the files they came from, for error messages.

    Raises:
        CheckpointError: groups of other sizes, unknown keys or parameter ids, tensors of
            other shapes than their parameters, or state missing for some parameters.
    """
    by_id = _param_ids(opt, meta, str(state_file))
    scalars = meta.get("scalars", {})
    if not isinstance(scalars, dict):
        raise CheckpointError(f"{state_file}: 'optimizer.scalars' must be an object")
    state: dict[int, dict[str, Any]] = {}
    for where, items in ((tensor_file, tensors), (state_file, scalars)):
        for key, val in items.items():
            parts = key.split(".", 2)
            if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
                raise CheckpointError(f"{where}: unexpected optimizer entry {key!r}")
            pid = int(parts[1])
            if pid not in by_id:
                raise CheckpointError(f"{where}: {key!r} names no parameter of the optimizer")
            if isinstance(val, torch.Tensor) and val.ndim and val.shape != by_id[pid].shape:
                raise CheckpointError(
                    f"{where}: {key} has shape {tuple(val.shape)}, its parameter "
                    f"{tuple(by_id[pid].shape)}"
                )
            state.setdefault(pid, {})[parts[2]] = val
    names = {pid: sorted(st) for pid, st in state.items()}
    if len({tuple(n) for n in names.values()}) > 1:
        first = next(iter(names.items()))
        odd = next((pid, n) for pid, n in names.items() if n != first[1])
        raise CheckpointError(
            f"{tensor_file}: incomplete optimizer state: parameter {odd[0]} has {odd[1]}, "
            f"parameter {first[0]} has {first[1]}"
        )
    return {"state": state, "param_groups": meta["param_groups"]}


def optimizer_from_flat(
    opt: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    tensor_file: str | Path = OPTIM_FILE,
    state_file: str | Path = STATE_FILE,
) -> None:
    """Check the saved state fits ``opt`` (:func:`optimizer_state_from_flat`), then load it.

    Raises:
        CheckpointError: see :func:`optimizer_state_from_flat`, or a state the optimizer
            refuses.
    """
    sd = optimizer_state_from_flat(
        opt, tensors, meta, tensor_file=tensor_file, state_file=state_file
    )
    try:
        opt.load_state_dict(sd)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{state_file}: the optimizer state does not load: {e}") from None


def load_optimizer(
    opt: torch.optim.Optimizer,
    directory: str | Path,
    meta: dict[str, Any] | None,
    *,
    device: str | torch.device = "cpu",
) -> None:
    """Restore ``opt`` from ``optimizer.safetensors`` and the ``optimizer`` entry ``meta`` of
    ``trainer_state.json`` (see :class:`qkv.training.state.TrainerState`).

    Raises:
        CheckpointError: no saved optimizer, a damaged file, or a state that does not fit.
    """
    d = Path(directory)
    if meta is None:
        raise CheckpointError(f"{d / STATE_FILE} has no 'optimizer' entry to resume from")
    tensors = read_tensors(d / OPTIM_FILE, device=str(device))
    optimizer_from_flat(opt, tensors, meta, tensor_file=d / OPTIM_FILE, state_file=d / STATE_FILE)


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def write_checkpoint(
    parent: str | Path,
    name: str,
    model: nn.Module,
    model_config: dict[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra_writer: Callable[[Path], None] | None = None,
) -> Path:
    """Write a complete checkpoint into a new ``parent/.tmp-<name>-*`` directory and fsync
    every file and directory in it. Nothing outside that directory is touched; on failure it
    is removed.

    Args:
        parent: where the temporary directory is made (the final one's parent).
        name: the checkpoint's future name (part of the temporary name).
        model: the (unwrapped) model, or anything whose ``state_dict()`` gives its
            tensors (a sharded model's state gathered on one rank:
            :class:`qkv.training.parallel.StateSnapshot`).
        model_config: the model config as a dict (``config.to_dict()``).
        optimizer: saved to ``optimizer.safetensors`` (+ hyper-parameters in the state);
            likewise an optimizer or a snapshot of its ``state_dict()``.
        trainer_state: JSON-serializable trainer state.
        extra_writer: called with the temporary directory to add files (task, tokenizers).

    Returns:
        The temporary directory, ready for :func:`qkv.training._atomic.publish_dir`.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic.make_temp_dir(parent, name)
    try:
        save_model(model, str(tmp / MODEL_FILE))
        write_json(tmp / CONFIG_FILE, model_config)
        state = dict(trainer_state or {})
        if optimizer is not None:
            tensors, meta = optimizer_to_flat(optimizer)
            save_file(tensors, str(tmp / OPTIM_FILE))
            state["optimizer"] = meta
        if trainer_state is not None or optimizer is not None:
            write_json(tmp / STATE_FILE, state)
        if extra_writer is not None:
            extra_writer(tmp)
        _atomic.fsync_tree(tmp)
    except BaseException:
        _atomic.discard_dir(tmp)
        raise
    return tmp


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    model_config: dict[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra_writer: Callable[[Path], None] | None = None,
) -> Path:
    """Write a stand-alone checkpoint directory (temporary sibling, fsync, rename).

    A new ``directory`` appears complete or not at all. Replacing an existing one takes two
    renames (old one away to ``.old-*``, new one in): a crash between them leaves no
    ``directory`` (both versions survive as ``.old-*``/``.tmp-*`` siblings). Runs never
    replace a directory: :func:`qkv.training.rundir.save_run_checkpoint` publishes under a
    fresh name and switches the ``latest`` pointer atomically.

    Args:
        directory: final checkpoint path.
        model, model_config, optimizer, trainer_state, extra_writer: see
            :func:`write_checkpoint`.

    Returns:
        The final path.
    """
    final = Path(directory)
    tmp = write_checkpoint(
        final.parent,
        final.name,
        model,
        model_config,
        optimizer=optimizer,
        trainer_state=trainer_state,
        extra_writer=extra_writer,
    )
    trash: Path | None = None
    try:
        if os.path.lexists(final):
            trash = _atomic.trash_path(final)
            os.rename(final, trash)
        os.rename(tmp, final)
    except BaseException:
        try:
            if trash is not None:
                os.rename(trash, final)  # put the old one back
            _atomic.discard_dir(tmp)
        except Exception:  # best effort: both versions survive as .old-*/.tmp-* siblings
            pass
        raise
    _atomic.fsync_path(final.parent)
    if trash is not None:
        _atomic.discard_dir(trash)
    return final


def update_latest(run_dir: Path, name: str) -> None:
    """Point ``run_dir/latest`` at ``checkpoints/name`` atomically (``os.replace`` + fsync)."""
    _atomic.replace_text_file(Path(run_dir) / LATEST_FILE, name + "\n")


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def read_latest(run_dir: str | Path) -> str | None:
    """The checkpoint name in ``run_dir/latest``, or None when there is no such file
    (:func:`qkv.models.io.read_latest`).

    Raises:
        CheckpointError: naming the file when it is unreadable, not UTF-8, empty, too long,
            or not a plain directory name (no slashes, no leading dot).
    """
    try:
        return model_io.read_latest(run_dir)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def check_checkpoint(directory: str | Path) -> Path:
    """Resolve a checkpoint directory, or a run directory (through its ``latest`` file), to a
    complete checkpoint directory (:func:`qkv.models.io.resolve_checkpoint`).

    Raises:
        CheckpointError: the directory does not exist, ``latest`` is damaged or names a missing
            checkpoint, or required files are missing.
    """
    try:
        return model_io.resolve_checkpoint(directory)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e)) from None


def read_model_config(directory: str | Path) -> models.TransformerConfig:
    """The model config of a checkpoint (its ``config.json``).

    Raises:
        CheckpointError: a damaged file, a missing or unknown ``family``, or field values the
            config rejects (its own message, prefixed with the file name).
    """
    try:
        return model_io.read_config(directory)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e)) from None


def load_weights(model: nn.Module, directory: str | Path) -> None:
    """Load ``model.safetensors`` into ``model`` strictly (:func:`qkv.models.load_weights`:
    each tensor in its saved dtype, tied tensors stored once).

    Raises:
        CheckpointError: a damaged file, or missing/unexpected tensors or shape mismatches,
            listed.
    """
    try:
        model_io.load_weights(model, directory)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e)) from None


def average_checkpoints(directories: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the weights of several checkpoints (Vaswani et al. 2017 §6.1).

    Raises:
        CheckpointError: no directories, a damaged file, or checkpoints whose tensor names or
            shapes differ (naming the file).
    """
    if not directories:
        raise CheckpointError("average_checkpoints needs at least one checkpoint")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for d in directories:
        path = Path(d) / MODEL_FILE
        tensors = read_tensors(path)
        if total and (tensors.keys() != total.keys()):
            raise CheckpointError(f"{path} holds other tensors than {directories[0]}")
        for k, v in tensors.items():
            if k in total:
                if v.shape != total[k].shape:
                    raise CheckpointError(
                        f"{path}: {k} has shape {tuple(v.shape)}, not "
                        f"{tuple(total[k].shape)} as in {directories[0]}"
                    )
                total[k] = total[k] + v.double()
            else:
                total[k], dtypes[k] = v.double(), v.dtype
    return {k: (v / len(directories)).to(dtypes[k]) for k, v in total.items()}


__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "LATEST_FILE",
    "MODEL_FILE",
    "OPTIM_FILE",
    "REQUIRED",
    "STATE_FILE",
    "CheckpointError",
    "average_checkpoints",
    "check_checkpoint",
    "load_optimizer",
    "load_weights",
    "optimizer_from_flat",
    "optimizer_to_flat",
    "read_json",
    "read_json_object",
    "read_latest",
    "read_model_config",
    "read_tensors",
    "save_checkpoint",
    "update_latest",
    "write_checkpoint",
    "write_json",
]
