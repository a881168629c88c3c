"""One trainer for every task and for your own data (STYLE habit 12): the loop is written once.

Per step: set the learning rate from the schedule, run ``grad_accum`` micro-batches of this
rank's share of the global batch (batches and the loss come from an
:class:`~qkv.training.Objective`), scale the summed gradients by the global token count (so 1
process and N DDP processes, with or without accumulation, take the same step), clip, and
update. Evaluation, early stopping, atomic checkpoints (on a step schedule, on a timer, on
Ctrl-C/SIGTERM and at the end), exact resume (data position and RNG states) and checkpoint
averaging are handled here; the process set-up (device, DDP, signals) is in
:mod:`qkv.training._trainer_setup`, the data order in :mod:`qkv.training._trainer_data`, and
the checkpoint and log files in :mod:`qkv.training._trainer_checkpoints`.

>>> trainer = Trainer(model, train_examples, valid_examples,
...                   config=TrainConfig(steps=200, lr=1e-3, schedule="cosine"))  # doctest: +SKIP
>>> summary = trainer.fit()                                                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.training import parallel, rundir
from qkv.training._trainer_budget import TimeBudget
from qkv.training._trainer_checkpoints import CheckpointIO
from qkv.training._trainer_data import DataOrder
from qkv.training._trainer_setup import ProcessSetup, build_optimizer, resolve_device
from qkv.training.budget import format_seconds
from qkv.training.config import UNBOUNDED_STEPS, TrainConfig
from qkv.training.distributed import all_reduce_sum, barrier
from qkv.training.evaluate import evaluate_objective
from qkv.training.objective import Objective
from qkv.training.objectives import objective_for
from qkv.training.progress import Progress, format_duration
from qkv.training.sampler import EpochBatches
from qkv.training.schedules import lr_at

# resolve_device and build_optimizer live with the process set-up; imported from here too
__all__ = [
    "Evaluator",
    "StepCallback",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizer",
    "headline",
    "resolve_device",
]

StepCallback = Callable[[int, dict[str, float]], None]
Evaluator = Callable[[nn.Module], dict[str, float]]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint at a step boundary.

    Attributes:
        step: the last completed step.
        checkpoint: the checkpoint written, or None (no run directory, or aborted mid-step).
    """

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else "; nothing saved"
        super().__init__(f"training interrupted at step {step}{where}")
        self.step, self.checkpoint = step, checkpoint


def headline(metrics: dict[str, float]) -> tuple[str, float, bool]:
    """The first metric, its value, and whether higher is better."""
    name, value = next(iter(metrics.items()))
    lower = name.endswith(("loss", "ppl", "bpc", "wer", "cer"))
    return name, float(value), not lower


def _is_sequence(data: object) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


class Trainer(ProcessSetup, DataOrder, CheckpointIO, TimeBudget):
    """Train a model on a list of examples (or an iterable of batches).

    Args:
        model: the model, initialized (moved to the device here). To save checkpoints it
            must be a qkv model (its ``config.to_dict()`` is saved as ``config.json``).
        train_data: a sequence of examples (a list, a ``torch.utils.data.Dataset``: anything
            with ``len`` and indexing), shuffled per epoch from ``config.seed``; or an
            iterable of whole batches (a ``DataLoader``, a generator function's result),
            read in order and restarted when exhausted. What an example or batch is depends
            on the objective (see :mod:`qkv.training.objectives`).
        valid_data: examples to evaluate on (at most ``config.eval_limit``), or None. With
            ``evaluate``, only its length is read (the header shows it; a command's budget
            sizes the final evaluation by it).
        config: training settings (default :class:`TrainConfig()`).
        objective: batches, loss and metrics; default from the model
            (:func:`~qkv.training.objectives.objective_for`).
        evaluate: ``evaluate(model) -> metrics`` to use instead of the objective's metrics on
            ``valid_data`` (the tasks pass their BLEU/accuracy evaluation here). One that
            also takes ``limit=`` (the first N examples) lets a command's budget bound the
            final evaluation.
        out_dir: run directory (``checkpoints/``, ``latest``, ``metrics.jsonl``); None = no
            files.
        save_extra: writes extra files into each checkpoint (tokenizers, ``task.json``).
        name: what is trained, for the progress bar and the saved state.
        samples: ``samples(model) -> lines`` shown after each evaluation (a few
            translations, continuations or misclassified examples).
        on_step: optional callback ``(step, logs)`` after every optimizer step.
        started: ``time.monotonic()`` when the command this run belongs to started. With
            ``config.max_time``, the budget then covers the whole command
            (:mod:`qkv.training.budget`): the time before :meth:`fit` counts, and the final
            evaluation is bounded to what is left. None: the budget covers the loop, and the
            final evaluation comes after it.

    Raises:
        ValueError: bad data (fewer examples than one batch, an iterable of batches whose
            objective cannot read batches) or settings.
    """

    #: What the header says after the device about the threads (``1 thread: 2 cores, 1.9
    #: busy now; ...`` when ``qkv train`` chose them); None: the count alone.
    threads_note: str | None = None

    def __init__(
        self,
        model: nn.Module,
        train_data: Sequence[Any] | Iterable[Any],
        valid_data: Sequence[Any] | None = None,
        *,
        config: TrainConfig | None = None,
        objective: Objective | None = None,
        evaluate: Evaluator | None = None,
        out_dir: str | Path | None = None,
        save_extra: Callable[[Path], None] | None = None,
        name: str | None = None,
        samples: Callable[[nn.Module], list[str]] | None = None,
        on_step: StepCallback | None = None,
        started: float | None = None,
    ) -> None:
        self.cfg = cfg = config if config is not None else TrainConfig()
        self.objective: Objective = objective if objective is not None else objective_for(model)
        self.name = name or type(model).__name__
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.save_extra, self.on_step, self.samples = save_extra, on_step, samples
        config_obj = getattr(model, "config", None)
        self.model_config: dict[str, Any] | None = (
            config_obj.to_dict() if hasattr(config_obj, "to_dict") else None
        )
        if self.out_dir is not None and self.model_config is None:
            raise ValueError(
                f"saving checkpoints needs a qkv model (with a config); got a "
                f"{type(model).__name__}: pass out_dir=None or use a qkv.models model"
            )
        self._set_up_process(model)
        if cfg.batch_size % (cfg.grad_accum * self.dist.world_size):
            raise ValueError(
                f"batch_size ({cfg.batch_size}) must be divisible by grad_accum "
                f"({cfg.grad_accum}) x world size ({self.dist.world_size})"
            )
        self.train_examples: Sequence[Any] | None = None
        self._batches: Iterable[Any] | None = None
        self._sampler: EpochBatches | None = None
        if _is_sequence(train_data):
            self.train_examples = train_data  # type: ignore[assignment]
            n = len(self.train_examples)  # type: ignore[arg-type]
            if n < cfg.batch_size and not cfg.batch_tokens:
                raise ValueError(
                    f"batch_size ({cfg.batch_size}) is larger than the training data ({n} examples)"
                )
            self._sampler = self._make_sampler(n)
        else:
            if not hasattr(self.objective, "as_batch"):
                raise ValueError(
                    "an iterable of batches needs an objective with as_batch(item); pass a "
                    "sequence of examples instead"
                )
            self._batches = train_data
        self._iter: Iterator[Any] | None = None
        self._step_model = self._set_up_prefix_cache()  # the model, or its unfrozen part
        self.valid_data = valid_data
        self._evaluate = evaluate
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.bad_evals = 0
        # seconds of the time budget spent so far, across resumes: fit()'s loops and, when
        # the budget is a command's (started given), each command's preparation
        self.elapsed = 0.0
        self.started = started
        self._reset_budget()
        self.history: list[dict[str, Any]] = []
        self.resumed_from: Path | None = None
        if self.out_dir is not None and self.dist.is_main:
            rundir.hold_run_dir(self, self.out_dir)  # one writer per run directory
        self._critical = False  # inside a step or a save: Ctrl-C waits for its end
        self._stop: int | None = None  # the signal that asked to stop
        self._d_model = int((self.model_config or {}).get("d_model", 512))
        self._planned = cfg.steps  # the schedule's total: re-estimated under a time budget

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        amp = self.cfg.amp
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # -----------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimizer step on the next global batch; returns its logs."""
        self.model.train()
        cfg = self.cfg
        lr = lr_at(
            self.step + 1,
            cfg.schedule,
            lr=cfg.lr,
            warmup=cfg.warmup,
            total=self._planned,
            d_model=self._d_model,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # the head's may differ
        loss_sum, n_local, tokens = 0.0, 0, 0
        micro = list(self._micro_batches())
        for j, batch in enumerate(micro):
            sync = j == len(micro) - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else parallel.no_sync(self.ddp)
            with ctx, self._autocast():
                out = self._loss(self._step_model, batch, label_smoothing=cfg.label_smoothing)
                out.loss_sum.float().backward()
            loss_sum += float(out.loss_sum.detach())
            n_local += out.n
            tokens += self.objective.n_tokens(batch)
        n_global = all_reduce_sum(n_local, self.dist, self.device)
        if n_global <= 0:
            raise RuntimeError("a training batch had no tokens to learn from")
        # DDP averaged the summed gradients over ranks; turn that into the global mean
        scale = self.dist.world_size / n_global
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        grad_norm = (
            parallel.grad_norm_value(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
            )
            if self.cfg.clip_norm > 0
            else float("nan")
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss = all_reduce_sum(loss_sum, self.dist, self.device) / n_global
        tokens_all = all_reduce_sum(tokens, self.dist, self.device)
        return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": tokens_all}

    def evaluate(
        self, model: nn.Module | None = None, *, limit: int | None = None
    ) -> dict[str, float]:
        """Metrics on the validation data (``evaluate`` given to the constructor, or the
        objective's metrics on ``valid_data``); leaves every RNG exactly as it was.

        Args:
            model: the model to evaluate (default: the one training).
            limit: at most this many examples (and at most ``config.eval_limit``); passed
                to an ``evaluate`` given to the constructor only when not None.

        Returns:
            The metrics, or ``{}`` when there is nothing to evaluate on.
        """
        m = model if model is not None else self.model
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if self._evaluate is not None:
                return self._evaluate(m) if limit is None else self._evaluate(m, limit=limit)
            if not self.valid_data:
                return {}
            cap = [n for n in (self.cfg.eval_limit, limit) if n is not None]
            data = self.valid_data[: min(cap)] if cap else self.valid_data
            return evaluate_objective(m, self.objective, data)

    # -----------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until ``config.steps`` (from the current step) and return a summary.

        Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and raises
        :class:`TrainingInterrupted` (a ``KeyboardInterrupt``); a second Ctrl-C aborts at
        once without saving.

        Returns:
            ``step``, ``train_loss``, ``stopped_early``, ``valid`` (metrics) and, when
            averaging, ``averaged``.
        """
        with self._signals():
            try:
                return self._fit()
            except KeyboardInterrupt as e:
                if isinstance(e, TrainingInterrupted):
                    raise
                if self._critical:  # aborted inside a step or a save: nothing consistent
                    raise TrainingInterrupted(self.step, None) from None
                path = self.save() if self.out_dir is not None else None
                raise TrainingInterrupted(self.step, path) from None

    def _fit(self) -> dict[str, Any]:
        cfg, main = self.cfg, self.dist.is_main
        self._start_budget()  # a command's budget: count the preparation, keep eval time
        self._open_log()
        elapsed0 = self.elapsed + self.prepared  # a command's preparation counts
        show = Progress(
            self.name,
            total_steps=cfg.steps,
            max_time=cfg.max_time,
            start_step=self.step,
            start_elapsed=elapsed0,
            bar=cfg.progress,
            log_every=cfg.log_every,
            enabled=main,
            unit=getattr(self.objective, "unit", "tok"),
        )
        show.header(self.describe())
        self.elapsed = elapsed0
        t_start = t_last = time.perf_counter()
        step0, last_save = self.step, time.monotonic()
        tok_acc, stopped_early = 0.0, False
        last: dict[str, float] = {}
        try:
            # a command trains at least one step: its preparation left time (else refused)
            while self.step < cfg.steps and (
                not self._time_up() or (self.counts_command and self.step == step0)
            ):
                self._critical = True
                logs = self.train_step()
                loop_seconds = time.perf_counter() - t_start
                self.elapsed = elapsed0 + loop_seconds
                self._replan(self.step - step0, loop_seconds)
                last = logs
                tok_acc += logs["tokens"]
                if self.on_step is not None:
                    self.on_step(self.step, logs)
                shown: dict[str, float] | None = None
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    rate = tok_acc / max(now - t_last, 1e-9)
                    t_last, tok_acc, shown = now, 0.0, logs
                    self._log(
                        {
                            "step": self.step,
                            "loss": logs["loss"],
                            "lr": logs["lr"],
                            "grad_norm": logs["grad_norm"],
                            "tokens_per_s": rate,
                            "elapsed": round(self.elapsed, 2),
                        }
                    )
                show.step(self.step, self.elapsed, shown, rate if shown else 0.0)
                if self.step < cfg.steps:
                    if cfg.save_every and self.step % cfg.save_every == 0:
                        self.save()
                        last_save = time.monotonic()
                    elif cfg.save_minutes and time.monotonic() - last_save >= 60 * cfg.save_minutes:
                        self.save(scheduled=False)
                        last_save = time.monotonic()
                self._critical = False
                if self._stop_agreed():
                    raise KeyboardInterrupt
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    stopped_early = self._eval_and_maybe_stop(show)
                    if stopped_early:
                        break
            summary: dict[str, Any] = {
                "step": self.step,
                "train_loss": last.get("loss"),
                "stopped_early": stopped_early,
                "train_seconds": round(self.elapsed, 3),
            }
            if self.counts_command:
                summary["prepare_seconds"] = round(self.prepared, 3)
            if self.out_dir is not None:
                # saved before the final evaluation: an evaluation that fails (a bug, a
                # device error, Ctrl-C) must not cost the run its last steps
                self.save()
            self._final_evaluation(show, summary, elapsed0 + time.perf_counter() - t_start)
        finally:
            show.close()
        if self.out_dir is not None:
            if main and cfg.average_last > 1:
                summary["averaged"] = self._average()
        barrier(self.dist)
        return summary

    def _final_evaluation(self, show: Progress, summary: dict[str, Any], spent: float) -> None:
        """The evaluation after the loop, into ``summary`` (``valid``; in a command,
        ``eval_seconds``): bounded to the time a command's budget has left after ``spent``
        seconds."""
        limit = self.final_eval_limit(spent)
        with parallel.full_parameters(self.model):  # FSDP: rank 0 evaluates alone
            if not self.dist.is_main:
                return
            n = self.eval_size()
            part = (
                ""
                if limit is None
                else f" on {limit:,} of {n or '?'} examples (what fits in max_time)"
            )
            show.print(f"final evaluation at step {self.step}{part} ...")
            start = time.perf_counter()
            metrics = self.evaluate(limit=limit)
            seconds = time.perf_counter() - start
            if metrics:
                self._log({"step": self.step, "elapsed": round(self.elapsed, 2), "eval": metrics})
                show.evaluation(self.step, metrics, self._samples())
                summary["valid"] = metrics
            if self.counts_command:
                show.print(f"final evaluation: {format_seconds(seconds)}")
                summary["eval_seconds"] = round(seconds, 3)

    def describe(self) -> list[tuple[str, str]]:
        """What the run header says: the data, the model, where and how long."""
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        data = (
            f"{len(self.train_examples):,} training examples"
            if self.train_examples is not None
            else "an iterable of batches"
        )
        if self.valid_data is not None and hasattr(self.valid_data, "__len__"):
            data += f", {len(self.valid_data):,} for validation"
        threads = self.threads_note or (
            f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"
        )
        budget = (
            f"{cfg.steps:,} steps"
            if cfg.max_time is None
            else format_duration(cfg.max_time)
            + ("" if cfg.steps >= UNBOUNDED_STEPS else f" (at most {cfg.steps:,} steps)")
            + self.budget_note()
        )
        if self.step:
            budget += f", resuming at step {self.step:,} ({format_duration(self.elapsed)} done)"
        model = f"{type(self.model).__name__}, {n_params:,} parameters"
        if self.frozen:
            n_frozen = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
            model += f" ({n_frozen:,} frozen: {self.cfg.freeze})"
        if self.prefix_cache is not None:
            model += f"; {self.prefix_cache.note()}"
        return [
            ("data", data),
            ("model", model),
            (
                "device",
                f"{self.device} ({threads}), {parallel.world_note(self.model, self.dist)}",
            ),
            ("budget", budget),
            (
                "batch",
                (
                    f"<= {cfg.batch_tokens:,} tokens"
                    if cfg.batch_tokens
                    else f"{cfg.batch_size} examples"
                )
                + f", {cfg.optimizer} lr {cfg.lr:g} {cfg.schedule}",
            ),
            ("run dir", str(self.out_dir) if self.out_dir is not None else "none (no checkpoints)"),
        ]

    def _samples(self) -> list[str]:
        if self.samples is None:
            return []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self.samples(self.model)

    def _eval_and_maybe_stop(self, show: Progress) -> bool:
        stop = 0.0
        with parallel.full_parameters(self.model):  # FSDP: rank 0 evaluates alone
            if self.dist.is_main:
                metrics = self.measured_eval()  # its time per example bounds the last one
                if metrics:
                    self._log(
                        {"step": self.step, "elapsed": round(self.elapsed, 2), "eval": metrics}
                    )
                    show.evaluation(self.step, metrics, self._samples())
                    _, value, higher = headline(metrics)
                    better = self.best is None or (
                        value > self.best if higher else value < self.best
                    )
                    if better:
                        self.best, self.bad_evals = value, 0
                    else:
                        self.bad_evals += 1
                    stop = float(self.cfg.patience > 0 and self.bad_evals >= self.cfg.patience)
        self._refit_reserve()  # the final evaluation's time, from this whole one's
        return all_reduce_sum(stop, self.dist, self.device) > 0
