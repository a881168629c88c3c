"""The classification base shared by the image tasks (``digits``, ``fashion-mnist``) and
``listops``: one label per example, cross entropy over the batch, accuracy, and the top
classes as a prediction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from qkv.layers.mode import evaluating
from qkv.tasks.base import Task
from qkv.training.evaluate import model_device, to_device
from qkv.training.objective import Batch, LossOutput
from qkv.training.objectives import ClassificationObjective, host_numbers


class ClassifyTask(Task):
    """Base of the classification tasks.

    Subclasses set ``name`` and ``class_names``, implement ``examples`` and ``collate``
    (returning ``inputs`` and ``labels``, and ``padding_mask`` for token inputs), and may
    override :meth:`logits` to call the model differently (``listops`` passes its attention
    pattern).

    Metrics: ``accuracy`` (0-100, the headline) and ``loss`` (nats per example).
    """

    unit = "ex"  # the throughput counts examples

    kind = "classify"
    prediction = "the top 3 classes of each input, with their probabilities"
    class_names: ClassVar[tuple[str, ...]]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(b, n_classes)`` class logits of a batch."""
        return ClassificationObjective.logits(ClassificationObjective(), model, batch)

    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Cross entropy summed over the batch; ``n`` = batch size, ``logs["correct"]``."""
        logits = self.logits(model, batch)  # (b, n_classes)
        labels = batch["labels"]
        loss_sum = torch.nn.functional.cross_entropy(
            logits, labels, reduction="sum", label_smoothing=label_smoothing
        )
        (correct,) = host_numbers((logits.detach().argmax(-1) == labels).sum())
        return LossOutput(loss_sum, int(labels.numel()), {"correct": correct})

    def n_tokens(self, batch: Batch) -> int:
        """Examples in the batch."""
        return int(batch["labels"].numel())

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        return ClassificationObjective().metrics(loss_sum, n, logs)

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """Up to ``k`` misclassified held-out examples: what the model said and what they
        are."""
        data = self.examples("valid")[:256]
        with evaluating(model):
            batch = to_device(self.collate(data), model_device(model))
            pred = self.logits(model, batch).argmax(-1).tolist()
        labels = batch["labels"].tolist()
        wrong = [i for i, (p, y) in enumerate(zip(pred, labels)) if p != y][:k]
        out = [
            f"valid example {i}: predicted {self.class_names[pred[i]]!r}, is "
            f"{self.class_names[labels[i]]!r}"
            for i in wrong
        ]
        return out or [f"the first {len(labels)} valid examples are all classified right"]

    def top_classes(
        self, model: nn.Module, examples: Sequence[Any], k: int = 3
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes of each example with their probabilities.

        Args:
            model: the classifier.
            examples: examples as :meth:`examples` gives them (labels are ignored).
            k: classes per example (at most the number of classes).

        Returns:
            Per example, ``[(class name, probability), ...]``, most probable first.
        """
        k = max(1, min(k, self.n_classes))
        out: list[list[tuple[str, float]]] = []
        with evaluating(model):
            batch = to_device(self.collate(list(examples)), model_device(model))
            probs = self.logits(model, batch).float().softmax(-1)  # (b, n_classes)
            p, idx = probs.topk(k, dim=-1)
            for prow, irow in zip(p.tolist(), idx.tolist()):
                out.append([(self.class_names[i], pr) for pr, i in zip(prow, irow)])
        return out


__all__ = ["ClassifyTask"]
