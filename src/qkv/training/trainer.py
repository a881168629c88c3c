"""One trainer for every task (STYLE habit 12): the loop is written once.

Per step: set the learning rate from the schedule, run ``grad_accum`` micro-batches of this
rank's share of the global batch (teacher forcing and the loss come from the task), scale
the summed gradients by the global token count (so 1 process and N DDP processes, with or
without accumulation, take the same step), clip, and update. Evaluation, early stopping,
atomic checkpoints, exact resume (data position and RNG states) and checkpoint averaging
are handled here; a task only supplies data, a loss and metrics.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from qkv._version import __version__
from qkv.training import checkpoint as ckpt
from qkv.training import rundir
from qkv.training.config import TrainConfig
from qkv.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from qkv.training.objective import LossOutput
from qkv.training.schedules import lr_at
from qkv.training.state import TrainerState, capture_rng

StepCallback = Callable[[int, dict[str, float]], None]


class Task(Protocol):
    """What :class:`Trainer` uses of a task (``qkv.tasks.Task`` is one)."""

    name: str

    def examples(self, split: str) -> Sequence[Any]: ...

    def collate(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]: ...

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, label_smoothing: float = 0.0
    ) -> LossOutput: ...

    def n_tokens(self, batch: dict[str, torch.Tensor]) -> int: ...

    def evaluate(
        self,
        model: nn.Module,
        split: str = "valid",
        *,
        limit: int | None = None,
        beam_size: int = 1,
    ) -> dict[str, float]: ...

    def save(self, directory: Path) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def _headline(metrics: dict[str, float]) -> tuple[str, float, bool]:
    """The first metric, its value, and whether higher is better."""
    name, value = next(iter(metrics.items()))
    lower = name.endswith(("loss", "ppl", "bpc"))
    return name, float(value), not lower


class Trainer:
    """Train a model on a task.

    Args:
        task: the task (data, loss, metrics, tokenizers).
        model: the model, already initialized (on CPU; moved to the device here).
        model_config: the model's config as a dict (saved as ``config.json``).
        config: training settings.
        out_dir: run directory (checkpoints, ``metrics.jsonl``); None = no files.
        on_step: optional callback ``(step, logs)`` after every optimizer step.
    """

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        model_config: dict[str, Any],
        config: TrainConfig,
        out_dir: str | Path | None = None,
        *,
        on_step: StepCallback | None = None,
    ) -> None:
        self.task, self.cfg, self.model_config = task, config, model_config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.on_step = on_step
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        self.dist: DistInfo = init_distributed(self.device)
        self.model = model.to(self.device)
        self.ddp: nn.Module = self.model
        if self.dist.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None,
            )
        self.optimizer = build_optimizer(self.model, config)
        self.train_examples = task.examples("train")
        n = len(self.train_examples)
        if n < config.batch_size:
            raise ValueError(
                f"batch_size ({config.batch_size}) is larger than the training split ({n} examples)"
            )
        if config.batch_size % (config.grad_accum * self.dist.world_size):
            raise ValueError(
                f"batch_size ({config.batch_size}) must be divisible by grad_accum "
                f"({config.grad_accum}) x world size ({self.dist.world_size})"
            )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.bad_evals = 0
        self.history: list[dict[str, Any]] = []
        d_model = int(model_config.get("d_model", 512))
        self._lr = lambda s: lr_at(
            s,
            config.schedule,
            lr=config.lr,
            warmup=config.warmup,
            total=config.steps,
            d_model=d_model,
        )

    # -----------------------------------------------------------------------------------
    # data order: a permutation per epoch that depends only on (seed, epoch)
    # -----------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_examples), generator=g).tolist()

    def _next_global_batch(self) -> list[int]:
        per_epoch = len(self.train_examples) // self.cfg.batch_size
        if self.batch_in_epoch >= per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        order = self._epoch_order(self.epoch)
        b = self.cfg.batch_size
        idx = order[self.batch_in_epoch * b : (self.batch_in_epoch + 1) * b]
        self.batch_in_epoch += 1
        return idx

    def _micro_batches(self, idx: list[int]) -> Iterator[dict[str, torch.Tensor]]:
        world, rank = self.dist.world_size, self.dist.rank
        local = idx[rank * len(idx) // world : (rank + 1) * len(idx) // world]
        k = self.cfg.grad_accum
        for j in range(k):
            part = local[j * len(local) // k : (j + 1) * len(local) // k]
            batch = self.task.collate([self.train_examples[i] for i in part])
            yield {key: t.to(self.device) for key, t in batch.items()}

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        amp = self.cfg.amp
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # -----------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimizer step on the next global batch; returns its logs."""
        self.model.train()
        lr = self._lr(self.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = self._next_global_batch()
        loss_sum, n_local, tokens = 0.0, 0, 0
        micro = list(self._micro_batches(idx))
        for j, batch in enumerate(micro):
            sync = j == len(micro) - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()  # type: ignore[operator]
            with ctx, self._autocast():
                out = self.task.loss(self.ddp, batch, label_smoothing=self.cfg.label_smoothing)
                out.loss_sum.float().backward()
            loss_sum += float(out.loss_sum.detach())
            n_local += out.n
            tokens += self.task.n_tokens(batch)
        n_global = all_reduce_sum(n_local, self.dist, self.device)
        if n_global <= 0:
            raise RuntimeError("a training batch had no tokens to learn from")
        # DDP averaged the summed gradients over ranks; turn that into the global mean
        scale = self.dist.world_size / n_global
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        grad_norm = (
            float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm))
            if self.cfg.clip_norm > 0
            else float("nan")
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss = all_reduce_sum(loss_sum, self.dist, self.device) / n_global
        tokens_all = all_reduce_sum(tokens, self.dist, self.device)
        return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": tokens_all}

    def evaluate(self, split: str = "valid", model: nn.Module | None = None) -> dict[str, float]:
        """Task metrics on a split; leaves every RNG exactly as it was."""
        m = model if model is not None else self.model
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self.task.evaluate(
                m,
                split,
                limit=self.cfg.eval_limit,
                beam_size=self.cfg.eval_beam,  # type: ignore[arg-type]
            )

    # -----------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train for ``config.steps`` steps (from the current step) and return a summary."""
        cfg, main = self.cfg, self.dist.is_main
        bar = None
        if cfg.progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.steps, initial=self.step, desc=f"train {self.task.name}", unit="step"
            )
        t_last, tok_acc, stopped_early = time.perf_counter(), 0.0, False
        last: dict[str, float] = {}
        while self.step < cfg.steps:
            logs = self.train_step()
            last = logs
            tok_acc += logs["tokens"]
            if self.on_step is not None:
                self.on_step(self.step, logs)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                now = time.perf_counter()
                rate = tok_acc / max(now - t_last, 1e-9)
                t_last, tok_acc = now, 0.0
                rec = {
                    "step": self.step,
                    "loss": logs["loss"],
                    "lr": logs["lr"],
                    "grad_norm": logs["grad_norm"],
                    "tokens_per_s": rate,
                }
                self._log(rec)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{logs['loss']:.3f}", lr=f"{logs['lr']:.2e}", tok_s=f"{rate:,.0f}"
                    )
            if bar is not None:
                bar.update(1)
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                stopped_early = self._eval_and_maybe_stop()
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save()
            if stopped_early:
                break
        if bar is not None:
            bar.close()
        summary: dict[str, Any] = {
            "step": self.step,
            "train_loss": last.get("loss"),
            "stopped_early": stopped_early,
        }
        if main:
            metrics = self.evaluate("valid")
            self._log({"step": self.step, "eval": metrics})
            summary["valid"] = metrics
        if self.out_dir is not None:
            self.save()
            if main and cfg.average_last > 1:
                summary["averaged"] = self._average()
        barrier(self.dist)
        return summary

    def _eval_and_maybe_stop(self) -> bool:
        stop = 0.0
        if self.dist.is_main:
            metrics = self.evaluate("valid")
            self._log({"step": self.step, "eval": metrics})
            _, value, higher = _headline(metrics)
            better = self.best is None or (value > self.best if higher else value < self.best)
            if better:
                self.best, self.bad_evals = value, 0
            else:
                self.bad_evals += 1
            stop = float(self.cfg.patience > 0 and self.bad_evals >= self.cfg.patience)
        return all_reduce_sum(stop, self.dist, self.device) > 0

    def _log(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.out_dir is None or not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    # -----------------------------------------------------------------------------------
    # checkpoints
    # -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The trainer's position as JSON (see :class:`qkv.training.state.TrainerState`)."""
        return TrainerState(
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            rng=capture_rng(),
            best=self.best,
            bad_evals=self.bad_evals,
            task=self.task.name,
            qkv_version=__version__,
            train_config=self.cfg.to_dict(),
        ).to_dict()

    def load_state(self, directory: Path) -> None:
        """Restore model, optimizer, data position and RNG from a checkpoint directory.

        Raises:
            qkv.training.checkpoint.CheckpointError: a damaged file, named.
            qkv.training.runlock.RunLockedError: another process writes into ``out_dir``.
        """
        if self.out_dir is not None and self.dist.is_main:
            rundir.hold_run_dir(self, self.out_dir)
        d = ckpt.check_checkpoint(directory)
        st = TrainerState.from_json(d / ckpt.STATE_FILE)
        ckpt.load_weights(self.model, d)
        ckpt.load_optimizer(self.optimizer, d, st.optimizer, device=self.device)
        self.step, self.epoch, self.batch_in_epoch = st.step, st.epoch, st.batch_in_epoch
        self.best, self.bad_evals = st.best, st.bad_evals
        st.restore_rng()

    def save(self) -> Path | None:
        """Write ``checkpoints/step-N`` crash-safely, point ``latest`` at it, prune old ones."""
        if self.out_dir is None or not self.dist.is_main:
            barrier(self.dist)
            return None
        rundir.hold_run_dir(self, self.out_dir)
        path = rundir.save_run_checkpoint(
            self.out_dir,
            f"step-{self.step:08d}",
            self.model,
            self.model_config,
            optimizer=self.optimizer,
            trainer_state=self.state(),
            extra_writer=self.task.save,
            keep=max(self.cfg.keep_last, self.cfg.average_last),
        )
        barrier(self.dist)
        return path

    def _average(self) -> dict[str, Any]:
        assert self.out_dir is not None
        dirs = rundir.list_checkpoints(self.out_dir)[-self.cfg.average_last :]
        avg = ckpt.average_checkpoints(dirs)
        own = self.model.state_dict()
        saved = {k: v.clone() for k, v in own.items()}
        self.model.load_state_dict({**own, **{k: v.to(self.device) for k, v in avg.items()}})
        metrics = self.evaluate("valid")
        rundir.save_averaged(
            self.out_dir, self.model, self.model_config, extra_writer=self.task.save
        )
        self.model.load_state_dict(saved)
        rec = {"step": self.step, "averaged_over": [d.name for d in dirs], "eval": metrics}
        self._log(rec)
        return rec
