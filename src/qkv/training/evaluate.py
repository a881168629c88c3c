"""The evaluation loop, written once: summed loss and logs of an objective over examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from qkv.data.batching import batched
from qkv.layers.mode import evaluating
from qkv.training.objective import Batch, Objective


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of a batch on ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


def evaluate_sums(
    model: nn.Module,
    objective: Objective,
    examples: Sequence[Any],
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[float, int, dict[str, float]]:
    """Run ``objective.loss`` over ``examples`` in evaluation mode, without gradients.

    Args:
        model: the model (its train/eval modes are restored afterwards).
        objective: turns examples into batches and a summed loss.
        examples: the examples (all of them are used; slice to limit).
        batch_size: examples per forward pass.
        progress: show a progress bar (on standard error).

    Returns:
        ``(loss_sum, n, logs)``: the summed loss, what it was summed over, and the summed
        logs of every batch.

    Raises:
        ValueError: no examples.
    """
    if len(examples) == 0:
        raise ValueError("no examples to evaluate")
    device = model_device(model)
    total, n, logs = 0.0, 0, {}
    with evaluating(model):
        chunks = batched(examples, batch_size)
        n_chunks = -(-len(examples) // batch_size)
        for chunk in tqdm(
            chunks, total=n_chunks, desc="evaluate", leave=False, disable=not progress
        ):
            out = objective.loss(model, to_device(objective.collate(chunk), device))
            total, n = total + float(out.loss_sum), n + out.n
            for k, v in out.logs.items():
                logs[k] = logs.get(k, 0.0) + float(v)
    return total, n, logs


def evaluate_objective(
    model: nn.Module,
    objective: Objective,
    examples: Sequence[Any],
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, float]:
    """The objective's metrics over ``examples`` (see :func:`evaluate_sums`)."""
    total, n, logs = evaluate_sums(
        model, objective, examples, batch_size=batch_size, progress=progress
    )
    return objective.metrics(total, n, logs)


__all__ = ["evaluate_objective", "evaluate_sums", "model_device", "to_device"]
