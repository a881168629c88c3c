"""What the trainer needs to know about the data: how examples become batches, what the loss
is, and what the evaluation metrics are.

An :class:`Objective` turns a list of examples into a batch of tensors
(:meth:`~Objective.collate`), computes the *summed* loss of a batch with the count it was
summed over (:meth:`~Objective.loss`), so that gradient accumulation and data parallelism
normalize exactly, and names the metrics of summed evaluation results
(:meth:`~Objective.metrics`). An objective may also have ``augment(batch) -> batch``, which
the trainer applies to training batches only (random crops and flips of images). The registered tasks (``qkv.tasks``) are objectives; for your
own data, :func:`qkv.training.objective_for` picks one from the model
(:mod:`qkv.training.objectives`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

#: A batch: named tensors (``input_ids``, ``labels``, ``src``, ...).
Batch = dict[str, Tensor]


@dataclass
class LossOutput:
    """A summed loss and what it was summed over.

    Attributes:
        loss_sum: sum of per-token (or per-example) losses, a scalar tensor with grad.
        n: number of tokens/examples in the sum (the trainer divides by the global count).
        logs: extra sums (``correct``, ``chars``, ...), each already summed over the batch;
            :meth:`Objective.metrics` turns them into metrics.
    """

    loss_sum: Tensor
    n: int
    logs: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """How a trainer turns examples into a loss (a structural type: any object with these
    methods is one)."""

    def collate(self, examples: Sequence[Any]) -> Batch:
        """Pad and stack examples into the tensors :meth:`loss` needs."""
        ...

    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Summed training loss of a batch (teacher forcing for sequence outputs)."""
        ...

    def n_tokens(self, batch: Batch) -> int:
        """Tokens (or examples) processed in a batch, for the throughput log (an objective
        counting something else than tokens says what in a ``unit`` attribute, e.g.
        ``"img"``; the log then reads ``img/s``)."""
        ...

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        """Metrics from sums over a whole split; the first key is the headline (higher is
        better unless its name ends in ``loss``, ``ppl`` or ``bpc``)."""
        ...


def loss_metrics(loss_sum: float, n: int) -> dict[str, float]:
    """``loss`` (mean nats per token or example) and ``ppl`` (its exponential)."""
    loss = loss_sum / max(n, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}


__all__ = ["Batch", "LossOutput", "Objective", "loss_metrics"]
