"""High-level entry points: train a task from scratch, from pretrained weights, or resume a
run; load a trained checkpoint for inference."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv import models
from qkv.interop import from_hf
from qkv.tasks._activations import check_activations
from qkv.tasks.base import Task, TaskError
from qkv.tasks.options import Options, OptionsLike, TaskOptions
from qkv.tasks.registry import get_task, load_task
from qkv.training import checkpoint as ckpt
from qkv.training.budget import STAGE_SHARE
from qkv.training.config import TrainConfig, resume_config
from qkv.training.finetune import InitReport, init_from_state
from qkv.training.state import TrainerState
from qkv.training.trainer import StepCallback, Trainer, resolve_device


def task_trainer(
    task: Task,
    model: nn.Module,
    config: TrainConfig,
    out_dir: str | Path | None,
    *,
    on_step: StepCallback | None = None,
    started: float | None = None,
) -> Trainer:
    """A :class:`~qkv.training.Trainer` for ``model`` on ``task``: the task's training split,
    its loss, its own evaluation on the valid split (bounded by ``limit=`` where a command's
    time budget asks), and its files in every checkpoint. ``started``: see
    :class:`~qkv.training.Trainer`."""

    def evaluate(m: nn.Module, limit: int | None = None) -> dict[str, float]:
        caps = [n for n in (config.eval_limit, limit) if n is not None]
        return task.evaluate(
            m,
            "valid",
            limit=min(caps) if caps else None,
            beam_size=config.eval_beam,
            progress=config.progress,
        )

    train = task.examples("train")
    return Trainer(
        model,
        train,
        task.examples("valid"),  # its length: the header's, and the final evaluation's size
        config=config,
        objective=task,
        evaluate=evaluate,
        out_dir=out_dir,
        save_extra=task.save,
        name=task.name,
        samples=task.samples,
        on_step=on_step,
        started=started,
    )


def build_trainer(
    task: str | Task | None,
    config: TrainConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    *,
    options: OptionsLike = None,
    preset: str | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    init_from_hf: str | Path | None = None,
    on_step: StepCallback | None = None,
    started: float | None = None,
) -> Trainer:
    """Build a :class:`~qkv.training.Trainer` for a task, or restore one with ``resume``.

    A new run builds the task's model (its default, ``preset``, or the architecture of the
    pretrained weights of ``init_from``/``init_from_hf``, sized to the task), seeds it with
    ``config.seed`` and, when given pretrained weights, copies them in (strict by name; a new
    head is initialised and listed in ``trainer.init_report``). A Hugging Face directory
    also goes to :meth:`Task.use_pretrained` (text classification takes its tokenizer).

    With ``resume=True`` the run in ``out_dir`` continues exactly: the model config, task,
    tokenizers and training settings come from its latest checkpoint, as do the data
    position and RNG states. ``config`` is then a mapping of the settings to change; only
    those that do not change the training trajectory may (steps, evaluation/save/log
    cadence, device, threads: see :func:`qkv.training.resume_config`).

    Args:
        task: a task name or object (None when resuming: the run's own task).
        config: the training settings: a :class:`TrainConfig` (used as it is), or a mapping
            of the fields to set over the task's recipe (:meth:`Task.train_config`; None: the
            recipe).
        out_dir: the run directory (None: no files).
        options: the task's options (new runs: its ``Options``, a mapping of them or a
            :class:`~qkv.tasks.options.TaskOptions`; resumed runs: those given anew, which
            must equal the run's own: a mapping is compared by the names it holds).
        preset: a model preset sized to the task (new runs).
        model_overrides: model config fields (new runs).
        resume: continue the run in ``out_dir``.
        init_from: a qkv checkpoint or run directory whose weights start the new run.
        init_from_hf: a Hugging Face model directory whose weights start the new run.
        on_step: a callback ``(step, logs)`` after each step.
        started: ``time.monotonic()`` when the command started: with ``max_time``, the
            budget covers the whole command (:mod:`qkv.training.budget`): preparing the
            data counts (the task's own training stage may take at most
            :data:`~qkv.training.budget.STAGE_SHARE` of it) and the final evaluation is
            bounded. None: the budget covers the training loop.

    Raises:
        qkv.training.CheckpointError: ``resume`` without a usable checkpoint, or a damaged
            file in it (named).
        TaskError: unknown task, bad options, resume settings that contradict the run, or a
            damaged ``task.json`` or tokenizer file (named).
        qkv.training.runlock.RunLockedError: another live process writes into ``out_dir``.
        ValueError: bad settings, or pretrained weights that do not fit.
    """
    if resume:
        return _resume(task, config, out_dir, options, preset, model_overrides, on_step, started)
    if init_from is not None and init_from_hf is not None:
        raise TaskError("give --init-from or --init-from-hf, not both")
    if task is None:
        raise TaskError("a new run needs a task")
    task_obj = get_task(task, options) if isinstance(task, str) else task
    cfg = config if isinstance(config, TrainConfig) else task_obj.train_config(config)
    if cfg.threads:  # before the task prepares its data (text2image trains its VQ-VAE)
        torch.set_num_threads(cfg.threads)
    if started is not None and cfg.max_time is not None:
        task_obj.stage_time = STAGE_SHARE * cfg.max_time  # its own training stage's share
    source: dict[str, torch.Tensor] | None = None
    base: models.TransformerConfig | None = None
    if init_from is not None:
        d = ckpt.check_checkpoint(init_from)
        base = ckpt.read_model_config(d)
        source = ckpt.read_tensors(d / ckpt.MODEL_FILE)
    elif init_from_hf is not None:
        pretrained = from_hf(init_from_hf)
        base, source = pretrained.config, pretrained.state_dict()
        task_obj.use_pretrained(init_from_hf)  # e.g. its tokenizer
    torch.manual_seed(cfg.seed)
    model_cfg = task_obj.model_config(preset, base=base, **dict(model_overrides or {}))
    model = models.build(model_cfg)
    check_activations(task_obj, model_cfg, cfg, resolve_device(cfg.device), _world())
    note = task_obj.init_model(model)
    report: InitReport | None = init_from_state(model, source) if source is not None else None
    trainer = task_trainer(task_obj, model, cfg, out_dir, on_step=on_step, started=started)
    trainer.init_report = report  # type: ignore[attr-defined]
    trainer.init_note = note  # type: ignore[attr-defined]
    return trainer


def _resume(
    task: str | Task | None,
    config: TrainConfig | Mapping[str, Any] | None,
    out_dir: str | Path | None,
    options: OptionsLike,
    preset: str | None,
    model_overrides: Mapping[str, Any] | None,
    on_step: StepCallback | None,
    started: float | None,
) -> Trainer:
    if out_dir is None:
        raise ckpt.CheckpointError("resuming needs the run directory (--out)")
    d = ckpt.check_checkpoint(out_dir)
    state = TrainerState.from_json(d / ckpt.STATE_FILE)
    try:
        saved = TrainConfig.from_dict(state.train_config)
    except ValueError as e:
        raise ckpt.CheckpointError(f"{d / ckpt.STATE_FILE}: train_config: {e}") from None
    given = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
    cfg = resume_config(saved, given)
    task_obj = load_task(d, rebuild_data=True)
    name = task if isinstance(task, str) or task is None else task.name
    if name is not None and name != task_obj.name:
        raise TaskError(f"--task {name}: the run in {out_dir} trains task {task_obj.name!r}")
    if options is not None:
        theirs = task_obj.options.to_dict()
        if isinstance(options, (Options, TaskOptions)):  # a whole set: every option counts
            given = type(task_obj.options).of(options, task=task_obj.name).to_dict()
        else:  # only the options named (e.g. the flags given on the command line)
            given = dict(options)
            type(task_obj.options).from_dict(given, task=task_obj.name)  # names it takes
        differ = [
            f"{k}={v!r} (the run has {theirs[k]!r})" for k, v in given.items() if v != theirs[k]
        ]
        if differ:
            raise TaskError(
                "a resumed run keeps its data; these data options differ: " + "; ".join(differ)
            )
    if preset is not None or model_overrides:
        raise TaskError(
            "a resumed run keeps its model (from its checkpoint): drop --preset and --model"
        )
    model_cfg = ckpt.read_model_config(d)
    model = models.build(model_cfg)
    check_activations(task_obj, model_cfg, cfg, resolve_device(cfg.device), _world())
    trainer = task_trainer(task_obj, model, cfg, out_dir, on_step=on_step, started=started)
    trainer.load_state(d)
    return trainer


def _world() -> int:
    """The processes of a ``torchrun`` launch (each takes a share of the batch)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


def load_trained(
    directory: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Task]:
    """Load a checkpoint (or a run directory's latest) for inference: ``(model, task)``.

    Raises:
        qkv.training.CheckpointError: missing or damaged files (named), or tensors that do
            not fit.
        TaskError: a damaged ``task.json`` or tokenizer file (named).
    """
    d = ckpt.check_checkpoint(directory)
    model = models.build(ckpt.read_model_config(d))
    ckpt.load_weights(model, d)
    task = load_task(d)
    return model.to(device).eval(), task


__all__ = ["build_trainer", "load_trained", "task_trainer"]
