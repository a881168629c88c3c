"""The trainer's files: checkpoints (save, resume, prune, average) and ``metrics.jsonl``.

:class:`~qkv.training.Trainer` inherits :class:`CheckpointIO`; the crash-safe writing itself
is :mod:`qkv.training.rundir` and :mod:`qkv.training.checkpoint`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv._version import __version__
from qkv.training import _atomic, parallel, rundir
from qkv.training import checkpoint as ckpt
from qkv.training.config import TrainConfig
from qkv.training.distributed import DistInfo, barrier
from qkv.training.state import TrainerState, capture_rng


class CheckpointIO:
    """Mixin of :class:`~qkv.training.Trainer`: what it writes and reads back."""

    cfg: TrainConfig
    name: str
    out_dir: Path | None
    model_config: dict[str, Any] | None
    save_extra: Callable[[Path], None] | None
    device: torch.device
    dist: DistInfo
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int
    epoch: int
    batch_in_epoch: int
    best: float | None
    bad_evals: int
    elapsed: float
    history: list[dict[str, Any]]
    resumed_from: Path | None
    _critical: bool
    # the loop's (qkv.training.trainer.Trainer)
    evaluate: Callable[..., dict[str, float]]
    _skip_to_position: Callable[[], None]

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
