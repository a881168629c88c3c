"""One trainer for every task and for your own data (STYLE habit 12): the loop is written once.

Per step: set the learning rate from the schedule, run ``grad_accum`` micro-batches of this
rank's share of the global batch (batches and the loss come from an
:class:`~qkv.training.Objective`), scale the summed gradients by the global token count (so 1
process and N DDP processes, with or without accumulation, take the same step), clip, and
update. Evaluation, early stopping, atomic checkpoints (on a step schedule, on a timer, on
Ctrl-C/SIGTERM and at the end), exact resume (data position and RNG states) and checkpoint
averaging are handled here.

>>> trainer = Trainer(model, train_examples, valid_examples,
...                   config=TrainConfig(steps=200, lr=1e-3, schedule="cosine"))  # doctest: +SKIP
>>> summary = trainer.fit()                                                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv._version import __version__
from qkv.training import _atomic, parallel, rundir
from qkv.training import checkpoint as ckpt
from qkv.training.config import UNBOUNDED_STEPS, TrainConfig
from qkv.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from qkv.training.evaluate import evaluate_objective, to_device
from qkv.training.finetune import freeze_modules
from qkv.training.objective import Batch, Objective
from qkv.training.objectives import objective_for
from qkv.training.progress import Progress, format_duration
from qkv.training.sampler import EpochBatches
from qkv.training.schedules import lr_at
from qkv.training.state import TrainerState, capture_rng

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


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; other names as given.

    Raises:
        ValueError: an unknown device name, or a device this build of torch cannot use.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N, mps...; got {name!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch build or machine has no CUDA GPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be cpu, cuda or mps, got {name!r}")
    return dev


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (Vaswani et al. 2017: betas (0.9, 0.98), eps 1e-9) or AdamW with decoupled
    weight decay on matrices only (not biases, norms or embeddings' 1-D params)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def headline(metrics: dict[str, float]) -> tuple[str, float, bool]:
    """The first metric, its value, and whether higher is better."""
    name, value = next(iter(metrics.items()))
    lower = name.endswith(("loss", "ppl", "bpc", "wer", "cer"))
    return name, float(value), not lower


def _is_sequence(data: object) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


class Trainer:
    """Train a model on a list of examples (or an iterable of batches).

    Args:
        model: the model, initialized (moved to the device here). To save checkpoints it
            must be a qkv model (its ``config.to_dict()`` is saved as ``config.json``).
        train_data: a sequence of examples (a list, a ``torch.utils.data.Dataset``: anything
            with ``len`` and indexing), shuffled per epoch from ``config.seed``; or an
            iterable of whole batches (a ``DataLoader``, a generator function's result),
            read in order and restarted when exhausted. What an example or batch is depends
            on the objective (see :mod:`qkv.training.objectives`).
        valid_data: examples to evaluate on (at most ``config.eval_limit``), or None.
        config: training settings (default :class:`TrainConfig()`).
        objective: batches, loss and metrics; default from the model
            (:func:`~qkv.training.objectives.objective_for`).
        evaluate: ``evaluate(model) -> metrics`` to use instead of the objective's metrics on
            ``valid_data`` (the tasks pass their BLEU/accuracy evaluation here).
        out_dir: run directory (``checkpoints/``, ``latest``, ``metrics.jsonl``); None = no
            files.
        save_extra: writes extra files into each checkpoint (tokenizers, ``task.json``).
        name: what is trained, for the progress bar and the saved state.
        samples: ``samples(model) -> lines`` shown after each evaluation (a few
            translations, continuations or misclassified examples).
        on_step: optional callback ``(step, logs)`` after every optimizer step.

    Raises:
        ValueError: bad data (fewer examples than one batch, an iterable of batches whose
            objective cannot read batches) or settings.
    """

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
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device)
        self.model = model.to(self.device)
        self.frozen = freeze_modules(self.model, cfg.freeze)  # before DDP and the optimizer
        # what the loop calls: DDP or FSDP (which shards self.model in place), compiled
        self.ddp: nn.Module = parallel.wrap(self.model, cfg, self.dist, self.device)
        # --compile: the model's forward and the objective's loss in one compiled graph
        self._loss = (
            parallel.compile_loss(self.objective.loss) if cfg.compile else self.objective.loss
        )
        self.optimizer = build_optimizer(self.model, cfg)
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
        self.valid_data = valid_data
        self._evaluate = evaluate
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.bad_evals = 0
        self.elapsed = 0.0  # seconds spent in fit() so far, across resumes
        self.history: list[dict[str, Any]] = []
        self.resumed_from: Path | None = None
        if self.out_dir is not None and self.dist.is_main:
            rundir.hold_run_dir(self, self.out_dir)  # one writer per run directory
        self._critical = False  # inside a step or a save: Ctrl-C waits for its end
        self._stop: int | None = None  # the signal that asked to stop
        self._d_model = int((self.model_config or {}).get("d_model", 512))
        self._planned = cfg.steps  # the schedule's total: re-estimated under a time budget

    # -----------------------------------------------------------------------------------
    # data order: the batches of each epoch depend only on (seed, epoch) (training/sampler.py)
    # -----------------------------------------------------------------------------------
    def _make_sampler(self, n: int) -> EpochBatches:
        cfg = self.cfg
        length = getattr(self.objective, "length", None)
        if cfg.batch_tokens and length is None:
            raise ValueError(
                "batch_tokens needs an objective with length(example) (the tasks with text "
                "have one)"
            )
        examples = self.train_examples
        assert examples is not None
        return EpochBatches(
            n,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            batch_tokens=cfg.batch_tokens,
            length=(lambda i: length(examples[i])) if length is not None else None,
            multiple=cfg.grad_accum * self.dist.world_size,
        )

    def _next_global_batch(self) -> list[int]:
        assert self._sampler is not None
        if self.batch_in_epoch >= self._sampler.per_epoch(self.epoch):
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        idx = self._sampler.batches(self.epoch)[self.batch_in_epoch]
        self.batch_in_epoch += 1
        return idx

    def _next_item(self) -> Any:
        """The next batch of an iterable, restarting it (a new epoch) when exhausted."""
        assert self._batches is not None
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self._batches)
            try:
                item = next(self._iter)
            except StopIteration:
                self._iter, self.epoch, self.batch_in_epoch = None, self.epoch + 1, 0
                continue
            self.batch_in_epoch += 1
            return item
        raise ValueError("the training data yielded no batches")

    def _skip_to_position(self) -> None:
        """After a resume, advance an iterable to the saved position (the batches before it
        are read again and dropped: an iterable cannot seek)."""
        if self._batches is None:
            return
        epoch, pos = self.epoch, self.batch_in_epoch
        self.epoch, self.batch_in_epoch, self._iter = 0, 0, None
        while (self.epoch, self.batch_in_epoch) < (epoch, pos):
            self._next_item()

    def _micro_batches(self) -> Iterator[Batch]:
        world, rank, k = self.dist.world_size, self.dist.rank, self.cfg.grad_accum
        if self.train_examples is not None:
            idx = self._next_global_batch()
            local = idx[rank * len(idx) // world : (rank + 1) * len(idx) // world]
            for j in range(k):
                part = local[j * len(local) // k : (j + 1) * len(local) // k]
                batch = self.objective.collate(self._take(part))
                yield self._augment(to_device(batch, self.device))
            return
        full = self.objective.as_batch(self._next_item())  # type: ignore[attr-defined]
        b = next(iter(full.values())).shape[0]
        lo, hi = rank * b // world, (rank + 1) * b // world
        for j in range(k):
            a, z = lo + j * (hi - lo) // k, lo + (j + 1) * (hi - lo) // k
            yield self._augment(to_device({key: t[a:z] for key, t in full.items()}, self.device))

    def _take(self, indices: list[int]) -> Sequence[Any]:
        """The training examples at ``indices``: ``data.select(indices)`` when the data set
        offers it (one indexing op for tensor-backed data), else one by one."""
        data = self.train_examples
        assert data is not None
        select = getattr(data, "select", None)
        return select(indices) if select is not None else [data[i] for i in indices]

    def _augment(self, batch: Batch) -> Batch:
        """The objective's training-time augmentation (``augment(batch) -> batch``, drawing
        from torch's RNG, whose state checkpoints keep), when it has one."""
        augment = getattr(self.objective, "augment", None)
        return augment(batch) if augment is not None else batch

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
            group["lr"] = lr
        loss_sum, n_local, tokens = 0.0, 0, 0
        micro = list(self._micro_batches())
        for j, batch in enumerate(micro):
            sync = j == len(micro) - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else parallel.no_sync(self.ddp)
            with ctx, self._autocast():
                out = self._loss(self.ddp, batch, label_smoothing=self.cfg.label_smoothing)
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

    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Metrics on the validation data (``evaluate`` given to the constructor, or the
        objective's metrics on ``valid_data``); leaves every RNG exactly as it was.

        Returns:
            The metrics, or ``{}`` when there is nothing to evaluate on.
        """
        m = model if model is not None else self.model
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if self._evaluate is not None:
                return self._evaluate(m)
            if not self.valid_data:
                return {}
            data = self.valid_data[: self.cfg.eval_limit]
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
        self._open_log()
        show = Progress(
            self.name,
            total_steps=cfg.steps,
            max_time=cfg.max_time,
            start_step=self.step,
            start_elapsed=self.elapsed,
            bar=cfg.progress,
            log_every=cfg.log_every,
            enabled=main,
            unit=getattr(self.objective, "unit", "tok"),
        )
        show.header(self.describe())
        t_start = t_last = time.perf_counter()
        elapsed0, last_save = self.elapsed, time.monotonic()
        tok_acc, stopped_early = 0.0, False
        last: dict[str, float] = {}
        try:
            while self.step < cfg.steps and not self._time_up():
                self._critical = True
                logs = self.train_step()
                self.elapsed = elapsed0 + time.perf_counter() - t_start
                self._replan()
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
            if self.out_dir is not None:
                # saved before the final evaluation: an evaluation that fails (a bug, a
                # device error, Ctrl-C) must not cost the run its last steps
                self.save()
            with parallel.full_parameters(self.model):  # FSDP: rank 0 evaluates alone
                if main:
                    show.print(f"final evaluation at step {self.step} ...")
                    metrics = self.evaluate()
                    if metrics:
                        self._log(
                            {"step": self.step, "elapsed": round(self.elapsed, 2), "eval": metrics}
                        )
                        show.evaluation(self.step, metrics, self._samples())
                        summary["valid"] = metrics
        finally:
            show.close()
        if self.out_dir is not None:
            if main and cfg.average_last > 1:
                summary["averaged"] = self._average()
        barrier(self.dist)
        return summary

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
        threads = torch.get_num_threads()
        budget = (
            f"{cfg.steps:,} steps"
            if cfg.max_time is None
            else format_duration(cfg.max_time)
            + ("" if cfg.steps >= UNBOUNDED_STEPS else f" (at most {cfg.steps:,} steps)")
        )
        if self.step:
            budget += f", resuming at step {self.step:,} ({format_duration(self.elapsed)} done)"
        model = f"{type(self.model).__name__}, {n_params:,} parameters"
        if self.frozen:
            n_frozen = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
            model += f" ({n_frozen:,} frozen: {self.cfg.freeze})"
        return [
            ("data", data),
            ("model", model),
            (
                "device",
                f"{self.device} ({threads} thread{'s' if threads != 1 else ''}), {parallel.world_note(self.model, self.dist)}",
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

    def _time_up(self) -> bool:
        """Whether the time budget is spent (decided by rank 0, agreed by all)."""
        if self.cfg.max_time is None:
            return False
        up = float(self.dist.is_main and self.elapsed >= self.cfg.max_time)
        if self.dist.enabled:
            up = all_reduce_sum(up, self.dist, self.device)
        return up > 0

    def _replan(self) -> None:
        """Under a time budget, stretch the schedule to the steps that fit: its total is the
        step count the pace so far reaches by ``max_time`` (at most ``steps``)."""
        if self.cfg.max_time is None or self.elapsed <= 0:
            return
        pace = self.step / self.elapsed
        self._planned = max(self.step + 1, min(self.cfg.steps, round(pace * self.cfg.max_time)))

    def _samples(self) -> list[str]:
        if self.samples is None:
            return []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self.samples(self.model)

    def _eval_and_maybe_stop(self, show: Progress) -> bool:
        stop = 0.0
        with parallel.full_parameters(self.model):  # FSDP: rank 0 evaluates alone
            if self.dist.is_main:
                metrics = self.evaluate()
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
        return all_reduce_sum(stop, self.dist, self.device) > 0

    # -----------------------------------------------------------------------------------
    # Ctrl-C and SIGTERM
    # -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Inside a step or a save, the first Ctrl-C/SIGTERM only asks to stop at its end;
        elsewhere (evaluation, logging) it interrupts at once, which leaves the state at a
        step boundary."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._critical and self._stop is None:
                self._stop = signum
                if self.dist.is_main:
                    print(
                        "\nqkv: stopping after this step and saving a checkpoint "
                        "(press Ctrl-C again to abort without saving)",
                        flush=True,
                    )
                return
            raise KeyboardInterrupt

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop (all ranks stop at the same step)."""
        asked = float(self._stop is not None)
        if self.dist.enabled:
            asked = all_reduce_sum(asked, self.dist, self.device)
        return asked > 0

    # -----------------------------------------------------------------------------------
    # metrics.jsonl
    # -----------------------------------------------------------------------------------
    def _open_log(self) -> None:
        """Start ``metrics.jsonl`` afresh for a new run; on resume, drop the records a
        killed run wrote after its last checkpoint (they are about to be repeated)."""
        if self.out_dir is None or not self.dist.is_main:
            return
        path = self.out_dir / "metrics.jsonl"
        _atomic.check_run_file(path)  # never read or rewrite a file through a link
        if not path.exists():
            return
        if self.resumed_from is None:
            path.unlink()
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if (
                isinstance(rec, dict)
                and isinstance(rec.get("step"), int)
                and rec["step"] <= self.step
            ):
                kept.append(line)
        _atomic.replace_text_file(path, "".join(line + "\n" for line in kept))

    def _log(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.out_dir is None or not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _atomic.append_run_file(self.out_dir / "metrics.jsonl", json.dumps(rec) + "\n")

    # -----------------------------------------------------------------------------------
    # checkpoints
    # -----------------------------------------------------------------------------------
    def state(self, *, scheduled: bool = True) -> dict[str, Any]:
        """The trainer's position as JSON (see :class:`qkv.training.state.TrainerState`)."""
        return TrainerState(
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            rng=capture_rng(),
            best=self.best,
            bad_evals=self.bad_evals,
            task=self.name,
            qkv_version=__version__,
            train_config=self.cfg.to_dict(),
            elapsed=self.elapsed,
            scheduled=scheduled,
        ).to_dict()

    def load_state(self, directory: Path) -> None:
        """Restore model, optimizer, data position and RNG from a checkpoint directory.

        Raises:
            qkv.training.checkpoint.CheckpointError: a damaged file, named.
            qkv.training.runlock.RunLockedError: another process writes into ``out_dir``.
        """
        if self.out_dir is not None and self.dist.is_main:
            rundir.hold_run_dir(self, self.out_dir)  # a run opened by another: clean it first
        d = ckpt.check_checkpoint(directory)
        st = TrainerState.from_json(d / ckpt.STATE_FILE)
        parallel.load_checkpoint(self.model, self.optimizer, d, st.optimizer, self.device)
        self.step, self.epoch, self.batch_in_epoch = st.step, st.epoch, st.batch_in_epoch
        self.best, self.bad_evals, self.elapsed = st.best, st.bad_evals, float(st.elapsed)
        st.restore_rng()
        self.resumed_from = d
        self._skip_to_position()

    def save(self, *, scheduled: bool = True) -> Path | None:
        """Write ``checkpoints/step-N`` crash-safely, point ``latest`` at it, prune old ones.

        Args:
            scheduled: a save of the step schedule or the end of the run (averaged and kept
                by ``keep_last``), or a timed/interrupt save (kept only while newest).
        """
        if self.out_dir is None:
            barrier(self.dist)
            return None
        # FSDP: every rank sends its shards, rank 0 gets the full state
        model, optimizer = parallel.gather_for_save(self.model, self.optimizer, self.dist)
        if not self.dist.is_main:
            barrier(self.dist)
            return None
        assert self.model_config is not None
        self._critical = True
        try:
            rundir.hold_run_dir(self, self.out_dir)
            path = rundir.save_run_checkpoint(
                self.out_dir,
                f"step-{self.step:08d}",
                model,
                self.model_config,
                optimizer=optimizer,
                trainer_state=self.state(scheduled=scheduled),
                extra_writer=self.save_extra,
            )
            self._prune(path)
        finally:
            self._critical = False
        barrier(self.dist)
        return path

    def _scheduled_checkpoints(self) -> list[Path]:
        """The run's committed step checkpoints saved on schedule, oldest first."""
        assert self.out_dir is not None
        out = []
        for p in rundir.list_checkpoints(self.out_dir):
            try:
                scheduled = TrainerState.from_json(p / ckpt.STATE_FILE).scheduled
            except ckpt.CheckpointError:
                continue
            if scheduled:
                out.append(p)
        return out

    def _prune(self, newest: Path) -> None:
        """Keep the last ``keep_last`` (or ``average_last``) scheduled checkpoints and the
        newest one; remove the rest."""
        assert self.out_dir is not None
        keep_n = max(self.cfg.keep_last, self.cfg.average_last)
        keep = {p.name for p in self._scheduled_checkpoints()[-keep_n:]} | {newest.name}
        rundir.remove_checkpoints(
            self.out_dir, [p for p in rundir.list_checkpoints(self.out_dir) if p.name not in keep]
        )

    def _average(self) -> dict[str, Any]:
        assert self.out_dir is not None and self.model_config is not None
        dirs = self._scheduled_checkpoints()[-self.cfg.average_last :]
        avg = ckpt.average_checkpoints(dirs)
        own = self.model.state_dict()
        saved = {k: v.clone() for k, v in own.items()}
        self.model.load_state_dict({**own, **{k: v.to(self.device) for k, v in avg.items()}})
        metrics = self.evaluate()
        rundir.save_averaged(
            self.out_dir, self.model, self.model_config, extra_writer=self.save_extra
        )
        self.model.load_state_dict(saved)
        rec = {"step": self.step, "averaged_over": [d.name for d in dirs], "eval": metrics}
        self._log(rec)
        return rec
