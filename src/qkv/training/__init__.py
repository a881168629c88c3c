"""Training: one trainer for every task, schedules, crash-safe checkpoints, run locks, DDP."""

from qkv.training.checkpoint import (
    CheckpointError,
    average_checkpoints,
    check_checkpoint,
    load_weights,
    read_model_config,
    save_checkpoint,
)
from qkv.training.config import TrainConfig
from qkv.training.objective import Batch, LossOutput, Objective
from qkv.training.rundir import (
    clean_run_dir,
    list_checkpoints,
    open_run_dir,
    save_averaged,
    save_run_checkpoint,
)
from qkv.training.runlock import RunLock, RunLockedError
from qkv.training.schedules import cosine, lr_at, noam
from qkv.training.state import TrainerState
from qkv.training.trainer import Trainer, build_optimizer

__all__ = [
    "Batch",
    "CheckpointError",
    "LossOutput",
    "Objective",
    "RunLock",
    "RunLockedError",
    "TrainConfig",
    "Trainer",
    "TrainerState",
    "average_checkpoints",
    "build_optimizer",
    "check_checkpoint",
    "clean_run_dir",
    "cosine",
    "list_checkpoints",
    "load_weights",
    "lr_at",
    "noam",
    "open_run_dir",
    "read_model_config",
    "save_averaged",
    "save_checkpoint",
    "save_run_checkpoint",
]
