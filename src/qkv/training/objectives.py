"""Objectives for your own data: language modelling, sequence to sequence and
classification, picked from the model by :func:`objective_for`.

Examples a :class:`~qkv.training.Trainer` accepts for each (a list, or any
``torch.utils.data.Dataset``):

============================  ===========================================================
model                         one example
============================  ===========================================================
``DecoderLM``                 token ids (a list or 1-d tensor); the model learns to predict
                              each next id. Or ``(input_ids, labels)`` of equal length.
``Seq2SeqTransformer``        ``(source_ids, target_ids)``; BOS/EOS are added here (the
                              ids of :mod:`qkv.data.tokenizers`: PAD 0, BOS 1, EOS 2).
``ViT``                       ``(image (c, H, W) float tensor, label int)``
``EncoderModel`` + classes    ``(token_ids, label int)``
============================  ===========================================================

A dict example with the batch's own keys (e.g. ``{"input_ids": ..., "labels": ...}``) works
too. An iterable without ``len`` (a ``DataLoader``, a generator) yields whole batches instead:
dicts with those keys, or ``(inputs, targets)`` tensor pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.data.batching import pad_ids
from qkv.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from qkv.models import family as registry
from qkv.training.objective import Batch, LossOutput, Objective, loss_metrics


def _ids(x: Any, what: str) -> list[int]:
    if isinstance(x, Tensor):
        if x.ndim != 1 or x.is_floating_point():
            raise ValueError(f"{what} must be a 1-d integer tensor, got {x.dtype} {tuple(x.shape)}")
        return [int(i) for i in x.tolist()]
    if isinstance(x, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in x
    ):
        return list(x)
    raise ValueError(f"{what} must be a list of token ids or a 1-d integer tensor, got {x!r:.80}")


def _check_keys(batch: Mapping[str, Any], keys: Sequence[str], what: str) -> Batch:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"{what} batch is missing {missing}; it has {sorted(batch)}")
    return {k: v for k, v in batch.items() if isinstance(v, Tensor)}


@torch.compiler.disable
def host_numbers(*values: Tensor) -> tuple[float, ...]:
    """Scalar tensors as Python numbers (a host sync). Never traced: inside a compiled loss
    (``--compile``) the graph ends here and the numbers are read eagerly, without the
    graph-break warning a ``float(tensor)`` in the graph would give."""
    return tuple(float(v) for v in values)


def _flat_cross_entropy(
    logits: Tensor, labels: Tensor, label_smoothing: float, pad_id: int, reduction: str
) -> Tensor:
    """``F.cross_entropy`` of ``(..., V)`` logits against ``(...)`` labels, ``pad_id``
    ignored."""
    return F.cross_entropy(
        logits.flatten(0, 1),
        labels.flatten(),
        ignore_index=pad_id,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def token_cross_entropy(
    logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.0, pad_id: int = PAD_ID
) -> tuple[Tensor, int, float]:
    """Cross entropy summed over the real label tokens (``pad_id`` ignored).

    Returns:
        ``(loss_sum, n_real, n_correct)``.
    """
    loss_sum = _flat_cross_entropy(logits, labels, label_smoothing, pad_id, "sum")
    real = labels != pad_id
    correct = ((logits.detach().argmax(-1) == labels) & real).sum()
    n_real, n_correct = host_numbers(real.sum(), correct)
    return loss_sum, int(n_real), n_correct


def example_cross_entropy(
    logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.0, pad_id: int = PAD_ID
) -> tuple[Tensor, int]:
    """Cross entropy averaged over each row's real label tokens (``pad_id`` ignored), summed
    over the rows that have any: every example counts once whatever its length, so a
    one-word target weighs as much as a paragraph (where :func:`token_cross_entropy` weighs
    each by its tokens).

    Returns:
        ``(loss_sum, n_rows)``: the trainer divides by the rows, as it divides a token sum
        by the tokens.
    """
    per_token = _flat_cross_entropy(logits, labels, label_smoothing, pad_id, "none")
    per_token = per_token.view(labels.shape)  # 0 at padding
    count = (labels != pad_id).sum(-1)
    loss_sum = (per_token.sum(-1) / count.clamp(min=1)).sum()
    (n_rows,) = host_numbers((count > 0).sum())
    return loss_sum, int(n_rows)


class LMObjective:
    """Next-token prediction: ``input_ids = x[:-1]``, ``labels = x[1:]``, padding ignored.

    Metrics: ``loss`` (nats per token, the headline), ``ppl``, ``token_acc`` (0-100).
    """

    keys = ("input_ids", "labels")

    def collate(self, examples: Sequence[Any]) -> Batch:
        if examples and isinstance(examples[0], Mapping):
            inputs = [_ids(e["input_ids"], "input_ids") for e in examples]
            labels = [_ids(e["labels"], "labels") for e in examples]
        elif examples and isinstance(examples[0], tuple) and len(examples[0]) == 2:
            inputs = [_ids(e[0], "input_ids") for e in examples]
            labels = [_ids(e[1], "labels") for e in examples]
        else:
            seqs = [_ids(e, "a language-model example") for e in examples]
            short = [len(s) for s in seqs if len(s) < 2]
            if short:
                raise ValueError(
                    f"a language-model example needs at least 2 tokens (one input, one label); "
                    f"got {len(short)} shorter ones"
                )
            inputs, labels = [s[:-1] for s in seqs], [s[1:] for s in seqs]
        if any(len(a) != len(b) for a, b in zip(inputs, labels)):
            raise ValueError("input_ids and labels must have the same length in every example")
        ids, mask = pad_ids(inputs)
        lab, _ = pad_ids(labels)
        return {"input_ids": ids, "padding_mask": mask, "labels": lab}

    def as_batch(self, item: Any) -> Batch:
        """A batch from an iterable's item: a dict or an ``(input_ids, labels)`` pair."""
        if isinstance(item, tuple) and len(item) == 2:
            item = {"input_ids": item[0], "labels": item[1]}
        batch = _check_keys(item, self.keys, "language-model")
        batch.setdefault("padding_mask", batch["labels"] != PAD_ID)
        return batch

    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        logits = model(batch["input_ids"], padding_mask=batch.get("padding_mask"))  # (b, s, V)
        loss_sum, n, correct = token_cross_entropy(
            logits, batch["labels"], label_smoothing=label_smoothing
        )
        return LossOutput(loss_sum, n, {"correct": correct})

    def n_tokens(self, batch: Batch) -> int:
        return int((batch["labels"] != PAD_ID).sum())

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        return {
            **loss_metrics(loss_sum, n),
            "token_acc": 100.0 * logs.get("correct", 0) / max(n, 1),
        }


class Seq2SeqObjective:
    """Teacher forcing (Vaswani et al. 2017): the decoder reads ``[BOS] + target`` and learns
    to emit ``target + [EOS]``.

    Metrics: ``loss`` (nats per target token, the headline), ``ppl``, ``token_acc``.
    """

    keys = ("src", "tgt_in", "tgt_out")

    def __init__(self, per_example: bool = False) -> None:
        #: train on :func:`example_cross_entropy` (each target's mean, summed over the
        #: examples) instead of the token sum; evaluation (``model.eval()``) stays per token
        self.per_example = per_example

    def collate(self, examples: Sequence[Any]) -> Batch:
        src, tgt = [], []
        for e in examples:
            if not (isinstance(e, (tuple, list)) and len(e) == 2):
                raise ValueError(
                    f"a sequence-to-sequence example is (source_ids, target_ids), got {e!r:.80}"
                )
            src.append(_ids(e[0], "source ids"))
            tgt.append(_ids(e[1], "target ids"))
        src_ids, src_mask = pad_ids(src)
        tgt_in, tgt_mask = pad_ids([[BOS_ID, *t] for t in tgt])
        tgt_out, _ = pad_ids([[*t, EOS_ID] for t in tgt])
        return {
            "src": src_ids,
            "src_padding_mask": src_mask,
            "tgt_in": tgt_in,
            "tgt_out": tgt_out,
            "tgt_padding_mask": tgt_mask,
        }

    def as_batch(self, item: Any) -> Batch:
        """A batch from an iterable's item: a dict with ``src``, ``tgt_in``, ``tgt_out``."""
        batch = _check_keys(item, self.keys, "sequence-to-sequence")
        batch.setdefault("src_padding_mask", batch["src"] != PAD_ID)
        return batch

    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        logits = model(
            batch["src"],
            batch["tgt_in"],
            src_padding_mask=batch.get("src_padding_mask"),
            tgt_padding_mask=batch.get("tgt_padding_mask"),
        )  # (b, s_tgt, V)
        if self.per_example and model.training:
            return LossOutput(
                *example_cross_entropy(logits, batch["tgt_out"], label_smoothing=label_smoothing)
            )
        loss_sum, n, correct = token_cross_entropy(
            logits, batch["tgt_out"], label_smoothing=label_smoothing
        )
        return LossOutput(loss_sum, n, {"correct": correct})

    def n_tokens(self, batch: Batch) -> int:
        src = batch.get("src_padding_mask")
        n_src = int(src.sum()) if src is not None else int(batch["src"].numel())
        return n_src + int((batch["tgt_out"] != PAD_ID).sum())

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        return {
            **loss_metrics(loss_sum, n),
            "token_acc": 100.0 * logs.get("correct", 0) / max(n, 1),
        }


class ClassificationObjective:
    """One label per example: images for a ``ViT``, token ids for an ``EncoderModel`` with a
    classification head (``n_classes``). Cross entropy summed over the batch.

    Metrics: ``accuracy`` (0-100, the headline) and ``loss`` (nats per example).
    """

    keys = ("inputs", "labels")
    unit = "ex"  # the throughput counts examples

    def collate(self, examples: Sequence[Any]) -> Batch:
        xs, ys = [], []
        for e in examples:
            if isinstance(e, Mapping):
                e = (e["inputs"], e["labels"])
            if not (isinstance(e, (tuple, list)) and len(e) == 2):
                raise ValueError(f"a classification example is (input, label), got {e!r:.80}")
            xs.append(e[0])
            ys.append(int(e[1]))
        labels = torch.tensor(ys, dtype=torch.long)
        if xs and isinstance(xs[0], Tensor) and xs[0].is_floating_point():
            return {"inputs": torch.stack(xs), "labels": labels}
        ids, mask = pad_ids([_ids(x, "token ids") for x in xs])
        return {"inputs": ids, "padding_mask": mask, "labels": labels}

    def as_batch(self, item: Any) -> Batch:
        """A batch from an iterable's item: a dict or an ``(inputs, labels)`` pair."""
        if isinstance(item, tuple) and len(item) == 2:
            item = {"inputs": item[0], "labels": item[1]}
        return _check_keys(item, self.keys, "classification")

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(b, n_classes)`` class logits of a batch."""
        x = batch["inputs"]
        if x.is_floating_point() and "padding_mask" not in batch:  # images, features
            return model(x)
        # token ids, or their states from a cached frozen prefix (qkv.training.prefix_cache)
        return model(x, padding_mask=batch.get("padding_mask")).logits

    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        logits = self.logits(model, batch)  # (b, n_classes)
        labels = batch["labels"]
        loss_sum = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=label_smoothing)
        (correct,) = host_numbers((logits.detach().argmax(-1) == labels).sum())
        return LossOutput(loss_sum, int(labels.numel()), {"correct": correct})

    def n_tokens(self, batch: Batch) -> int:
        return int(batch["labels"].numel())

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        return {
            "accuracy": 100.0 * logs.get("correct", 0) / max(n, 1),
            "loss": loss_sum / max(n, 1),
        }


#: The objectives a :class:`~qkv.models.family.Family` names as its ``objective``.
OBJECTIVES: dict[str, type[Objective]] = {}


def objective_for(model: nn.Module) -> Objective:
    """The default objective of a qkv model, as its family's record says
    (:attr:`qkv.models.Family.objective`): next-token prediction for a ``DecoderLM``
    (``"lm"``), teacher forcing for a ``Seq2SeqTransformer`` (``"seq2seq"``),
    classification for a ``ViT``, a ``Swin`` or an ``EncoderModel`` with ``n_classes``
    (``"classification"``).

    Raises:
        ValueError: a model without an obvious objective (say which one with
            ``Trainer(..., objective=...)``).
    """
    found = registry.family_of(model)
    choice = None if found is None else found.objective
    if callable(choice):
        choice = choice(model)
    if isinstance(choice, str):
        if choice not in OBJECTIVES:
            raise ValueError(
                f"family {found.name!r} names objective {choice!r}; known: {sorted(OBJECTIVES)}"  # type: ignore[union-attr]
            )
        return OBJECTIVES[choice]()
    if choice is not None:
        return choice  # type: ignore[no-any-return]
    raise ValueError(
        f"no default objective for a {type(model).__name__}; pass Trainer(..., objective=...) "
        f"(an object with collate, loss, n_tokens and metrics)"
    )


OBJECTIVES.update(lm=LMObjective, seq2seq=Seq2SeqObjective, classification=ClassificationObjective)


__all__ = [
    "OBJECTIVES",
    "ClassificationObjective",
    "LMObjective",
    "Seq2SeqObjective",
    "example_cross_entropy",
    "host_numbers",
    "objective_for",
    "token_cross_entropy",
]
