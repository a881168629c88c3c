"""Checkpoints: a directory of safetensors and JSON, written atomically.

Layout of one checkpoint directory::

    model.safetensors        weights (tied tensors stored once)
    config.json              the model config (with its ``family``)
    task.json, tokenizer*    written by the task (how to rebuild inputs/outputs)
    trainer_state.json       step, epoch, data position, RNG states, history, settings
    optimizer.safetensors    optimizer tensors (the hyper-parameters are in trainer_state)

A run directory holds ``checkpoints/step-00000100/...`` and a ``latest`` file naming the
newest complete one. A checkpoint is written into a temporary sibling directory, flushed to
disk, then renamed into place; ``latest`` is replaced atomically last. A crash at any point
leaves the previous checkpoint (and ``latest``) untouched. No pickle is ever read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.safetensors"
REQUIRED = (MODEL_FILE, CONFIG_FILE)


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or does not fit the model."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


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


def optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = val
    for key, val in meta.get("scalars", {}).items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ---------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------
def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    model_config: dict[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra_writer: Callable[[Path], None] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (temporary sibling + rename).

    Args:
        directory: final checkpoint path; an existing one is replaced only after the new one
            is complete.
        model: the (unwrapped) model.
        model_config: the model config as a dict (``config.to_dict()``).
        optimizer: saved to ``optimizer.safetensors`` (+ hyper-parameters in the state).
        trainer_state: JSON-serializable trainer state.
        extra_writer: called with the temporary directory to add files (task, tokenizers).

    Returns:
        The final path.
    """
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
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
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
            os.rename(final, trash / final.name)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def check_checkpoint(directory: str | Path) -> Path:
    """Resolve a checkpoint or run directory to a complete checkpoint directory.

    Raises:
        CheckpointError: the directory does not exist or lacks required files.
    """
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist")
    if not (d / MODEL_FILE).exists() and (d / "latest").exists():
        name = (d / "latest").read_text().strip()
        d = d / "checkpoints" / name
    missing = [f for f in REQUIRED if not (d / f).exists()]
    if missing:
        raise CheckpointError(f"checkpoint {d} is incomplete: missing {', '.join(missing)}")
    return d


def load_weights(model: nn.Module, directory: str | Path) -> None:
    """Load ``model.safetensors`` into ``model`` strictly.

    Raises:
        CheckpointError: missing/unexpected tensors or shape mismatches, listed.
    """
    d = check_checkpoint(directory)
    path = d / MODEL_FILE
    tensors = load_file(str(path))
    own = model.state_dict()
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and own[k].shape != v.shape
    ]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch: " + "; ".join(bad))
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except RuntimeError as e:  # pragma: no cover - safetensors' own messages
        raise CheckpointError(f"{path}: {e}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )


def average_checkpoints(directories: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the weights of several checkpoints (Vaswani et al. 2017 §6.1)."""
    if not directories:
        raise CheckpointError("average_checkpoints needs at least one checkpoint")
    total: dict[str, torch.Tensor] = {}
    for d in directories:
        for k, v in load_file(str(Path(d) / MODEL_FILE)).items():
            total[k] = total[k] + v.double() if k in total else v.double()
    ref = load_file(str(Path(directories[0]) / MODEL_FILE))
    return {k: (v / len(directories)).to(ref[k].dtype) for k, v in total.items()}


def update_latest(run_dir: Path, name: str) -> None:
    """Point ``run_dir/latest`` at ``checkpoints/name`` atomically."""
    tmp = run_dir / f".latest-{os.getpid()}"
    tmp.write_text(name + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / "latest")
    _fsync_dir(run_dir)


def read_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's ``model.safetensors`` (tied tensors under every name).

    Raises:
        CheckpointError: a missing or unreadable file.
    """
    d = check_checkpoint(directory)
    path = d / MODEL_FILE
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def read_trainer_state(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's ``trainer_state.json``.

    Raises:
        CheckpointError: a missing, unreadable or ill-formed state.
    """
    d = check_checkpoint(directory)
    state = read_json(d / STATE_FILE)
    if not isinstance(state, dict) or not isinstance(state.get("train_config"), dict):
        raise CheckpointError(f"{d / STATE_FILE} must be an object with a 'train_config'")
    return state


def remove_tree(path: Path) -> None:
    """Remove a checkpoint directory (best effort: a failure leaves it for the next prune)."""
    shutil.rmtree(path, ignore_errors=True)
