"""The task interface: a task supplies data, a loss and metrics; the trainer does the rest.

One trainer serves every task (STYLE habit 12). A task is built from :class:`TaskOptions`,
owns its tokenizer(s), knows the default model for its data, turns examples into tensors,
computes a summed loss with a token count (so gradient accumulation and data parallelism
normalize exactly), and evaluates a model with the task's own metrics.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from qkv.training.objective import LossOutput

TaskKind = Literal["seq2seq", "lm", "classify"]


@dataclass
class TaskOptions:
    """What the command line (or Python) says about a task's data.

    Attributes:
        data: a data file for tasks that read one (``translate``, ``lm``), else None.
        seed: seed of generated data and of the train/valid/test split.
        n_train / n_valid / n_test: example counts for generated tasks (None = task default).
        max_len: maximum sequence length in tokens (None = task default).
        tokenizer: ``"char"``, ``"word"`` or ``"bpe"`` (None = task default).
        vocab_size: BPE vocabulary size.
        extra: task-specific options (e.g. ListOps ``attention``), JSON-serializable.
    """

    data: str | None = None
    seed: int = 0
    n_train: int | None = None
    n_valid: int | None = None
    n_test: int | None = None
    max_len: int | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskOptions:
        return cls(**d)


class TaskError(ValueError):
    """Bad task input (missing/empty/ill-formed data): the CLI prints it and exits 2."""


class Task(abc.ABC):
    """Base class of every task. Subclasses set ``name`` and ``kind``."""

    name: ClassVar[str]
    kind: ClassVar[TaskKind]

    def __init__(self, options: TaskOptions | None = None) -> None:
        self.options = options or TaskOptions()

    # -- data ----------------------------------------------------------------------------
    @abc.abstractmethod
    def examples(self, split: Literal["train", "valid", "test"]) -> Sequence[Any]:
        """The examples of a split (deterministic given the options)."""

    @abc.abstractmethod
    def collate(self, examples: Sequence[Any]) -> dict[str, Tensor]:
        """Pad and stack examples into the tensors ``loss`` needs."""

    def n_tokens(self, batch: dict[str, Tensor]) -> int:
        """Tokens processed in a batch, for tokens/s (default: all target tokens)."""
        return int(next(iter(batch.values())).numel())

    # -- model ---------------------------------------------------------------------------
    @abc.abstractmethod
    def model_config(self, preset: str | None = None, **overrides: Any) -> Any:
        """The model config for this task: a preset (sized to the task's vocabulary and
        lengths) or the task's own small default."""

    # -- objective and metrics -----------------------------------------------------------
    @abc.abstractmethod
    def loss(
        self, model: nn.Module, batch: dict[str, Tensor], *, label_smoothing: float = 0.0
    ) -> LossOutput:
        """Summed training loss of a batch (teacher forcing for sequence outputs)."""

    @abc.abstractmethod
    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: Literal["train", "valid", "test"] = "valid",
        *,
        batch_size: int = 64,
        limit: int | None = None,
        beam_size: int = 1,
    ) -> dict[str, float]:
        """The task's metrics on a split (e.g. BLEU, exact match, perplexity, accuracy).

        The first key is the task's headline metric (higher is better unless its name
        ends in ``loss``, ``ppl`` or ``bpc``).
        """

    # -- inference on raw text (qkv generate) --------------------------------------------
    def predict(self, model: nn.Module, inputs: Sequence[str], **generate_kwargs: Any) -> list[str]:
        """Turn raw inputs into outputs (translations, continuations, labels)."""
        raise NotImplementedError(f"task {self.name!r} does not support text prediction")

    # -- persistence (saved inside a checkpoint) -----------------------------------------
    def save(self, directory: Path) -> None:
        """Write tokenizer(s) and anything else needed to rebuild the task for inference."""
        return None

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote (instead of rebuilding tokenizers from data)."""
        return None
