"""The checks ``qkv train`` makes against the processes ``torchrun`` starts, before any of
them joins the process group: each rank sees the same flags, so each refuses in the same
one line, instead of one rank's error surfacing among the others' collective calls."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from qkv.cli import CLIError
from qkv.training import TrainConfig


def world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``; 1 without torchrun).

    Raises:
        CLIError: a ``WORLD_SIZE`` that is not a positive int.
    """
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise CLIError(f"WORLD_SIZE={raw!r} in the environment is not a process count")
    return n


def check_world_batch(settings: Mapping[str, Any], world: int) -> None:
    """Refuse a global batch that does not split evenly over ``world`` processes, each
    taking ``grad_accum`` micro-batches.

    Args:
        settings: the run's training settings (TrainConfig fields; missing ones default).
        world: the number of processes.

    Raises:
        CLIError: ``batch_size`` is not a multiple of ``grad_accum x world``, naming the
            flags, the values and the nearest batch sizes that split.
    """
    default = TrainConfig()
    batch = settings.get("batch_size", default.batch_size)
    accum = settings.get("grad_accum", default.grad_accum)
    unit = accum * world
    if world > 1 and batch % unit:
        lower, upper = batch // unit * unit, (batch // unit + 1) * unit
        near = f"{lower} or {upper}" if lower else str(upper)
        raise CLIError(
            f"--batch-size {batch} must divide by the world size {world} (processes) x "
            f"--grad-accum {accum} = {unit}: each process takes an equal share of the global "
            f"batch; give e.g. {near}"
        )


__all__ = ["check_world_batch", "world_size"]
