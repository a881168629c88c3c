"""Training: one trainer for every task, schedules, atomic checkpoints, DDP."""

from qkv.training.checkpoint import (
    CheckpointError,
    average_checkpoints,
    check_checkpoint,
    load_weights,
    save_checkpoint,
)
from qkv.training.config import TrainConfig
from qkv.training.objective import Batch, LossOutput, Objective
from qkv.training.schedules import cosine, lr_at, noam
from qkv.training.trainer import Trainer, build_optimizer

__all__ = [
    "Batch",
    "CheckpointError",
    "LossOutput",
    "Objective",
    "TrainConfig",
    "Trainer",
    "average_checkpoints",
    "build_optimizer",
    "check_checkpoint",
    "cosine",
    "load_weights",
    "lr_at",
    "noam",
    "save_checkpoint",
]
