"""The task interface: a task supplies data, a loss and metrics; the trainer does the rest.

One trainer serves every task (STYLE habit 12). A task is built from its typed ``Options``
(:mod:`qkv.tasks.options`),
owns its tokenizer(s), knows the default model for its data, turns examples into tensors,
computes a summed loss with a token count (so gradient accumulation and data parallelism
normalize exactly), and evaluates a model with the task's own metrics.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import nn

from qkv.generation import GenerationConfig
from qkv.models import TransformerConfig
from qkv.tasks._errors import TaskError
from qkv.tasks._viz_text import report_for_text
from qkv.tasks.options import Options, OptionsLike, SizeOptions, TaskOptions
from qkv.training.config import TrainConfig
from qkv.training.evaluate import evaluate_objective
from qkv.training.objective import Batch, LossOutput, loss_metrics

#: The three splits of every task's data, and their names in that order.
Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")

#: The decoding settings (:class:`~qkv.generation.GenerationConfig` fields) a task's
#: ``predict`` may take through its keyword arguments.
DECODING: frozenset[str] = frozenset(f.name for f in dataclasses.fields(GenerationConfig))
#: The decoding settings a task must name in :attr:`Task.decoding` to take them: they need
#: more than a model that generates text (a CTC head; an external language model).
SPECIAL_DECODING: frozenset[str] = frozenset({"ctc_prefix_weight", "lm_weight"})

TaskKind = Literal["seq2seq", "lm", "classify", "detect", "caption", "image", "contrastive", "vqa"]


def split_item(source: str) -> tuple[Split, int] | None:
    """The split and index an input ``SPLIT:N`` names (``"test:3"`` -> ``("test", 3)``);
    None for any other input (a file, a text)."""
    split, _, index = source.partition(":")
    if split in SPLITS and index.isdigit():
        return split, int(index)  # type: ignore[return-value]
    return None


def with_truth(output: str, truth: str) -> str:
    """A prediction followed by what it should have been, as :meth:`Task.predict` shows it
    where the truth is known (an input ``SPLIT:N``): ``"Sneaker 0.91 (true: Sandal)"``."""
    return f"{output} (true: {truth})"


def split_sizes(
    n_unique: int, options: SizeOptions, *, valid: int, test: int, what: str
) -> dict[str, int]:
    """Split sizes for ``n_unique`` distinct sources: ``n_valid``/``n_test`` from the options
    (defaults ``valid``/``test``, shrunk to 5% each for small data), the rest (or
    ``n_train``) for training.

    Raises:
        TaskError: fewer than 3 distinct sources, or requested sizes that do not fit.
    """
    if n_unique < 3:
        raise TaskError(f"{what} has {n_unique} distinct source sentences; need at least 3")
    small = max(1, n_unique // 20)
    n_test = options.n_test if options.n_test is not None else min(test, small)
    n_valid = options.n_valid if options.n_valid is not None else min(valid, small)
    rest = n_unique - n_test - n_valid
    n_train = options.n_train if options.n_train is not None else rest
    if min(n_test, n_valid, n_train) < 0 or n_train > rest or n_train < 1:
        raise TaskError(
            f"{what}: cannot split {n_unique} distinct sources into n_train={n_train}, "
            f"n_valid={n_valid}, n_test={n_test}"
        )
    return {"test": n_test, "valid": n_valid, "train": n_train}


class Task(abc.ABC):
    """Base class of every task: an :class:`~qkv.training.Objective` (``collate``, ``loss``,
    ``n_tokens``, ``metrics``) plus its data, model config, evaluation, prediction and
    persistence. Subclasses set ``name`` and ``kind``."""

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    #: The task's options: a dataclass of exactly the options it takes (each field's
    #: metadata holds its help and choices; ``qkv train --task T`` generates its flags).
    Options: ClassVar[type[Options]] = Options
    #: The task's training recipe: :class:`~qkv.training.TrainConfig` fields chosen by
    #: measurement (optimizer, schedule, batch, regularisation, budget); settings a user
    #: gives win. The model's shape is :attr:`default_model`.
    recipe: ClassVar[dict[str, Any]] = {}
    #: The task's own model shape (sizes that follow from the data are added to it).
    default_model: ClassVar[dict[str, Any]] = {}
    #: Whether an input of :meth:`predict` names what it reads (an image or sound file, or
    #: ``SPLIT:N``) rather than being the text itself: ``qkv generate`` then prints each
    #: output after its input, so that a user who gave several can tell them apart.
    names_inputs: ClassVar[bool] = False
    #: What :meth:`predict` returns for each input, in a few words, for the heading ``qkv
    #: generate`` writes on standard error above the outputs; None: no heading (a
    #: translation, a transcript).
    prediction: ClassVar[str | None] = None
    #: What the headline metric means and what a timed run of the default recipe reached,
    #: with three sample outputs of its test split (paragraphs separated by blank lines);
    #: ``qkv train --task T --help`` prints it below the task's flags. None: not measured.
    measured: ClassVar[str | None] = None
    #: The decoding settings (:data:`DECODING`) :meth:`predict` uses: ``"all"`` (a model
    #: that generates text; all but :data:`SPECIAL_DECODING`: ``ctc_prefix_weight`` needs a
    #: CTC head, ``lm_weight`` a task's language model), a few
    #: (text2image samples with ``temperature`` and ``top_k``), or none (a classifier);
    #: ``qkv generate`` refuses the flags of the others.
    decoding: ClassVar[Literal["all"] | tuple[str, ...]] = ()
    #: Whether :meth:`evaluate` decodes with its ``beam_size`` (``qkv eval --beam-size``).
    eval_beam: ClassVar[bool] = False
    #: The beam ``qkv eval`` decodes with when not given ``--beam-size`` (the decoding the
    #: task's documented numbers use).
    default_beam: ClassVar[int] = 1
    #: Whether :meth:`pictures` reads a ``target`` (an encoder-decoder's; ``qkv viz --target``).
    viz_target: ClassVar[bool] = False
    #: Seconds the task's own training stage (text2image's VQ-VAE) may take while it
    #: prepares its data (None: the steps its options give). A command's time budget sets
    #: it (:func:`qkv.tasks.build_trainer`, :data:`qkv.training.budget.STAGE_SHARE`).
    stage_time: float | None = None

    def __init__(self, options: OptionsLike = None) -> None:
        """Build the task from its options (an instance of its :attr:`Options`, or anything
        :meth:`~qkv.tasks.options.Options.of` reads: a mapping, a :class:`TaskOptions`).

        Raises:
            TaskError: an option the task does not take, or a value it refuses (named).
        """
        self.options = self.Options.of(options, task=self.name)

    # -- data ----------------------------------------------------------------------------
    @abc.abstractmethod
    def examples(self, split: Split) -> Sequence[Any]:
        """The examples of a split (deterministic given the options)."""

    @abc.abstractmethod
    def collate(self, examples: Sequence[Any]) -> Batch:
        """Pad and stack examples into the tensors ``loss`` needs."""

    def n_tokens(self, batch: Batch) -> int:
        """Tokens processed in a batch, for tokens/s (default: all target tokens)."""
        return int(next(iter(batch.values())).numel())

    def data_note(self) -> str | None:
        """One line about what the task did to its data that a user should know (examples
        dropped, classes chosen), printed when a run starts; None: nothing to say."""
        return None

    # -- model ---------------------------------------------------------------------------
    def use_pretrained(self, directory: str | Path) -> None:
        """Adopt what a pretrained model directory brings besides its weights
        (``--init-from-hf``), before :meth:`model_config`. Default: nothing; the task keeps
        its own tokenizer, and the weights must fit its vocabulary. Text classification
        reads texts with the directory's ``tokenizer.json``.

        Raises:
            TaskError: files the task needs are missing or unreadable.
        """
        return None

    def init_model(self, model: nn.Module) -> str | None:
        """Start parts of a new run's freshly built model from weights the task's options
        name (before ``--init-from`` weights, which win). Default: nothing.

        Returns:
            one line for the run's header saying what was loaded, or None.

        Raises:
            TaskError: the named weights are missing or do not fit.
        """
        return None

    @abc.abstractmethod
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """The model config for this task: the task's own small default, a preset, or
        ``base`` (a pretrained model's config), sized to the task's vocabulary, lengths or
        classes, with ``overrides`` applied last."""

    # -- objective and metrics -----------------------------------------------------------
    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Summed training loss of a batch (teacher forcing for sequence outputs)."""

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        """Metrics of summed losses and logs (default: ``loss`` and ``ppl``)."""
        return loss_metrics(loss_sum, n)

    def evaluate(
        self,
        model: nn.Module,
        split: Split = "valid",
        *,
        batch_size: int = 64,
        limit: int | None = None,
        beam_size: int = 1,
        progress: bool = False,
    ) -> dict[str, float]:
        """The task's metrics on (the first ``limit`` examples of) a split: by default
        :meth:`metrics` of the summed loss (:func:`qkv.training.evaluate_objective`);
        generative tasks add BLEU and the like. ``beam_size`` is for those; ``progress``
        shows a bar on standard error.

        The first key is the task's headline metric (higher is better unless its name
        ends in ``loss``, ``ppl`` or ``bpc``).

        Raises:
            TaskError: the split is empty.
        """
        data = self.examples(split)[:limit]
        if len(data) == 0:
            raise TaskError(f"task {self.name!r}: split {split!r} has no examples to evaluate")
        return evaluate_objective(model, self, data, batch_size=batch_size, progress=progress)

    def train_config(self, given: Mapping[str, Any] | None = None) -> TrainConfig:
        """The training settings of a run of this task: :class:`TrainConfig`'s defaults,
        then the task's :attr:`recipe`, then ``given``.

        Raises:
            ValueError: an unknown field or an invalid value (named).
        """
        return TrainConfig.from_dict(
            {**TrainConfig().to_dict(), **self.recipe, **dict(given or {})}
        )

    def split_options(self) -> dict[str, Any]:
        """The options that decide the held-out examples, with defaults filled in: two
        checkpoints with equal ones are scored on the same examples (``qkv eval`` compares
        only such). By default every option but the model's view of the text (``max_len``,
        ``tokenizer``, ``vocab_size``)."""
        skip = ("max_len", "tokenizer", "vocab_size")
        return {k: v for k, v in self.options.to_dict().items() if k not in skip}

    def baseline(self, split: Split = "test", *, limit: int | None = None) -> dict[str, float]:
        """The metrics of the task's reference method without a Transformer (trained on the
        training split, scored on the first ``limit`` examples of ``split``, as
        :meth:`evaluate` scores a model), with the same keys as :meth:`evaluate`: the row a
        comparison table puts under the models' rows (``qkv eval --baseline``).

        Raises:
            TaskError: the task has no baseline.
        """
        raise TaskError(f"task {self.name!r} has no baseline")

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """A few outputs of the model on held-out examples, one line each, for a person to
        read after an evaluation (translations beside their references, continuations,
        misclassified examples). Default: none."""
        return []

    # -- pictures (qkv viz) ----------------------------------------------------------------
    def pictures(
        self,
        model: nn.Module,
        source: str,
        out: str | Path,
        *,
        target: str | None = None,
        question: str | None = None,
        png_dir: str | Path | None = None,
        title: str | None = None,
    ) -> Path:
        """Run ``model`` on one input and write its attention report (HTML; with ``png_dir``
        also PNG figures): what ``qkv viz --checkpoint`` draws. Each task draws its own
        pictures; by default a text model's (:func:`qkv.tasks._viz_text.report_for_text`).

        Args:
            model: the task's trained model.
            source: the input: text, or for a task of images or sound an image (sound) file
                or ``SPLIT:N`` (the ``N``-th example of a split).
            out: the HTML file to write.
            target: the decoder's target for encoder-decoders (default: the model's output).
            question: ``vqa``: the question about the image (default: the scene's first).
            png_dir: also save figures there.
            title: page title (default: the input and the model's output).

        Returns:
            The report's path.

        Raises:
            ValueError: a model of another kind than the task's, or an input it cannot read.
        """
        return report_for_text(
            model, self, source, out, target=target, png_dir=png_dir, title=title
        )

    # -- inference on raw text (qkv generate) --------------------------------------------
    def predict(self, model: nn.Module, inputs: Sequence[str], **generate_kwargs: Any) -> list[str]:
        """Turn raw inputs into outputs (translations, continuations, labels).

        Raises:
            TaskError: a task whose inputs are not text.
        """
        raise TaskError(f"task {self.name!r} does not take text inputs")

    @classmethod
    def predict_takes(cls, name: str) -> bool:
        """Whether :meth:`predict` uses the keyword argument ``name``: one it names
        (``question``, ``out_dir``), or a decoding setting of :attr:`decoding`."""
        if name in inspect.signature(cls.predict).parameters:
            return True
        if cls.decoding == "all":
            return name in DECODING and name not in SPECIAL_DECODING
        return name in DECODING and name in cls.decoding

    # -- persistence (saved inside a checkpoint) -----------------------------------------
    def save(self, directory: Path) -> None:
        """Write tokenizer(s) and anything else needed to rebuild the task for inference."""
        return None

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote (instead of rebuilding tokenizers from data)."""
        return None


__all__ = [
    "DECODING",
    "SPECIAL_DECODING",
    "SPLITS",
    "Split",
    "Task",
    "TaskError",
    "TaskKind",
    "TaskOptions",
    "split_item",
    "split_sizes",
    "with_truth",
]
