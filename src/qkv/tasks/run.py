"""High-level entry points: train a task from scratch or resume a run, and load a trained
checkpoint for inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv import models
from qkv.tasks.base import Task, TaskOptions
from qkv.tasks.registry import get_task, load_task
from qkv.training import checkpoint as ckpt
from qkv.training import rundir
from qkv.training.config import TrainConfig
from qkv.training.trainer import StepCallback, Trainer


def build_trainer(
    task: str | Task,
    config: TrainConfig,
    out_dir: str | Path | None,
    *,
    options: TaskOptions | None = None,
    preset: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    resume: bool = False,
    on_step: StepCallback | None = None,
) -> Trainer:
    """Build (or, with ``resume``, restore) a :class:`Trainer`.

    With ``resume=True`` the model config, task and tokenizers come from the run's latest
    checkpoint; ``config`` may extend ``steps``. The data position and RNG states are
    restored, so the run continues exactly as if it had never stopped.

    Raises:
        qkv.training.checkpoint.CheckpointError: ``resume`` without a usable checkpoint, or a
            damaged file in it (named).
        qkv.tasks.TaskError: a damaged ``task.json`` or tokenizer file (named).
        qkv.training.runlock.RunLockedError: another live process writes into ``out_dir``.
    """
    if resume:
        if out_dir is None:
            raise ckpt.CheckpointError("--resume needs the run directory (--out)")
        d = ckpt.check_checkpoint(out_dir)
        model_cfg = ckpt.read_model_config(d)
        task_obj = load_task(d, rebuild_data=True)
        model = models.build(model_cfg)
        trainer = Trainer(task_obj, model, model_cfg.to_dict(), config, out_dir, on_step=on_step)
        trainer.load_state(d)
        return trainer
    task_obj = get_task(task, options) if isinstance(task, str) else task
    torch.manual_seed(config.seed)
    model_cfg = task_obj.model_config(preset, **(model_overrides or {}))
    model = models.build(model_cfg)
    trainer = Trainer(task_obj, model, model_cfg.to_dict(), config, out_dir, on_step=on_step)
    if out_dir is not None and trainer.dist.is_main:
        rundir.hold_run_dir(trainer, out_dir)  # one writer per run directory, from the start
    return trainer


def load_trained(
    directory: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Task]:
    """Load a checkpoint (or a run directory's latest) for inference: ``(model, task)``.

    Raises:
        qkv.training.checkpoint.CheckpointError: missing or damaged files (named), or tensors
            that do not fit.
        qkv.tasks.TaskError: a damaged ``task.json`` or tokenizer file (named).
    """
    d = ckpt.check_checkpoint(directory)
    cfg = ckpt.read_model_config(d)
    model = models.build(cfg)
    ckpt.load_weights(model, d)
    task = load_task(d)
    return model.to(device).eval(), task
