"""``summarize-extractive``: pick the description's sentence that best summarizes it.

A BERTSum-style encoder (Liu & Lapata 2019, "Text Summarization with Pretrained Encoders",
sec. 3): the whole description is one input, each sentence opened by a marker token (BOS plays
[CLS]) and given alternating interval segment ids (0, 1, 0, ...), so every sentence is read in
the context of the others and of its position. Each marker's final hidden state, through the
model's pooler and a one-unit classifier, scores its sentence; the output is the top sentence.
This beats scoring one sentence at a time: the model sees what the other sentences say (a
"This package contains..." line is a poor summary only when a better one exists), in one pass.

The label is BERTSum's oracle restricted to one sentence (:func:`oracle_index`): the sentence
with the best mean of ROUGE-1 and ROUGE-2 F against the synopsis. Since exactly one sentence is
output, the loss is cross entropy over a description's sentences (a softmax over its markers)
rather than BERTSum's independent sigmoids.

Data and splits are :class:`~qkv.tasks.text.summarize.SummarizeTask`'s (Debian descriptions by
source package, or ``--data text<TAB>summary``); sentences are
:attr:`qkv.data.debian.PackageDescription.sentences` (list items and verbatim lines are
sentences) or :func:`qkv.data.debian.split_sentences` of a TSV text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.data import debian, metrics
from qkv.data.batching import batched
from qkv.data.tokenizers import BOS_ID, PAD_ID, Tokenizer, TokenizerFileError, train_tokenizer
from qkv.layers.mode import evaluating
from qkv.models import TransformerConfig
from qkv.tasks._common import check_choice, check_positive, sized_config, write_task_file
from qkv.tasks.base import SPLITS, Split, Task, TaskError
from qkv.tasks.options import (
    DataOption,
    OptionsLike,
    SeedOption,
    SizeOptions,
    TextOptions,
    option,
)
from qkv.tasks.text.summarize import DATA_HELP, SummarizeTask, read_debian_splits
from qkv.training.evaluate import model_device, to_device
from qkv.training.objective import Batch, LossOutput
from qkv.training.objectives import host_numbers


class Document(NamedTuple):
    """One example: a text's sentences, its reference summary and the oracle sentence."""

    sentences: tuple[str, ...]
    summary: str
    label: int


def oracle_index(sentences: Sequence[str], summary: str) -> int:
    """BERTSum's oracle for a one-sentence summary: the sentence with the highest mean of
    ROUGE-1 and ROUGE-2 F-measures (rouge-score, stemmed) against ``summary``; the first one
    on ties.

    Raises:
        ValueError: no sentences.
    """
    if not sentences:
        raise ValueError("the oracle needs at least one sentence")
    each = metrics.rouge_each(list(sentences), [summary] * len(sentences), ("rouge1", "rouge2"))
    gains = [(e["rouge1"] + e["rouge2"]) / 2 for e in each]
    return max(range(len(gains)), key=lambda i: (gains[i], -i))


class ExtractiveSummarizeTask(Task):
    """Extractive summarization: an :class:`~qkv.models.EncoderModel` scores the sentences.

    Options: as :class:`~qkv.tasks.text.summarize.SummarizeTask` (``data``, ``seed``,
    ``n_train``/``n_valid``/``n_test``), ``max_len`` (default 128 tokens, markers included;
    sentences starting beyond it cannot be picked), ``tokenizer`` (default ``"bpe"``),
    ``vocab_size`` (default 8,000).

    Metrics: ``rougeL`` (the headline), ``rouge1``, ``rouge2`` and ``bleu`` of the picked
    sentences, ``oracle_acc`` (how often the pick is the oracle's, 0-100), ``oracle_rougeL``
    (the ceiling of any one-sentence pick) and ``loss``.
    """

    @dataclass
    class Options(TextOptions, SizeOptions, SeedOption, DataOption):
        """summarize-extractive's options."""

        data: str | None = option(None, DATA_HELP, shown="Debian's package descriptions")

    options: Options
    name = "summarize-extractive"
    kind = "classify"
    prediction = "the sentence of each input the model picks as its summary"
    unit = "ex"
    default_max_len: ClassVar[int] = 128
    default_vocab_size: ClassVar[int] = 8000
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 256,
        "n_heads": 4,
        "d_ff": 1024,
        "n_layers": 3,
        "dropout": 0.1,
        "mlm_head": False,
    }
    recipe: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 5e-4,
        "schedule": "cosine",
        "warmup": 200,
        "weight_decay": 0.01,
        "batch_size": 32,
        "label_smoothing": 0.0,
        "eval_every": 1000,
        "eval_limit": 500,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        self.tokenizer_kind = o.tokenizer or "bpe"
        check_choice(self.name, "tokenizer", self.tokenizer_kind, ("char", "word", "bpe"))
        self.max_len = o.max_len if o.max_len is not None else self.default_max_len
        check_positive(self.name, "max_len", self.max_len, minimum=2)
        self._splits: dict[str, list[Document]] | None = None
        self._tok: Tokenizer | None = None

    # -- data ----------------------------------------------------------------------------
    def _sentences(self) -> dict[str, list[tuple[tuple[str, ...], str]]]:
        o = self.options
        if o.data is not None:
            pairs = SummarizeTask(o.to_dict())
            return {
                s: [(tuple(debian.split_sentences(p.src)), p.tgt) for p in pairs.examples(s)]
                for s in SPLITS
            }
        records = read_debian_splits(o.seed, self.name)
        caps = {"train": o.n_train, "valid": o.n_valid, "test": o.n_test}
        caps = {s: caps[s] if caps[s] is not None else {"valid": 500}.get(s) for s in SPLITS}
        return {s: [(r.sentences, r.synopsis) for r in records[s][: caps[s]]] for s in SPLITS}

    def examples(self, split: Split) -> list[Document]:
        """The documents of a split, sentences cut to those whose marker fits ``max_len``
        and labelled by :func:`oracle_index`; training keeps documents of two or more
        sentences (a single sentence teaches nothing).

        Raises:
            TaskError: an unknown split, or data that cannot be read.
        """
        check_choice(self.name, "split", split, SPLITS)
        if self._splits is None:
            raw = self._sentences()
            self._tok = self._tok or self._train_tokenizer([s for d in raw["train"] for s in d[0]])
            self._splits = {}
            for name, docs in raw.items():
                out = []
                for sentences, summary in docs:
                    kept = sentences[: len(self._markers(sentences))]
                    if kept and (name != "train" or len(kept) > 1):
                        out.append(Document(kept, summary, oracle_index(kept, summary)))
                self._splits[name] = out
        return self._splits[split]

    def _train_tokenizer(self, texts: list[str]) -> Tokenizer:
        if not texts:
            raise TaskError(f"task {self.name!r}: no training sentences to build a vocabulary")
        vocab = self.options.vocab_size
        if self.tokenizer_kind == "bpe" and vocab is None:
            vocab = self.default_vocab_size
        try:
            return train_tokenizer(self.tokenizer_kind, texts, vocab_size=vocab)
        except ValueError as e:
            raise TaskError(f"task {self.name!r}: {e}") from e

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer (trained on the training sentences on first use, or loaded)."""
        if self._tok is None:
            self.examples("train")
        assert self._tok is not None
        return self._tok

    # -- tensors -------------------------------------------------------------------------
    def _ids(self, sentences: Sequence[str]) -> tuple[list[int], list[int], list[int]]:
        """``[BOS] s_1 [BOS] s_2 ...`` cut to ``max_len``: ids, segment ids, marker positions."""
        ids: list[int] = []
        segments: list[int] = []
        markers: list[int] = []
        for i, sentence in enumerate(sentences):
            if len(ids) >= self.max_len:
                break
            markers.append(len(ids))
            piece = [BOS_ID, *self.tokenizer.encode(sentence)]
            ids += piece
            segments += [i % 2] * len(piece)  # BERTSum's interval segments
        return ids[: self.max_len], segments[: self.max_len], markers

    def _markers(self, sentences: Sequence[str]) -> list[int]:
        return self._ids(sentences)[2]

    def encode_text(self, text: str) -> list[int]:
        """A raw text's model input (``qkv viz`` records attention on it)."""
        return self._ids(debian.split_sentences(text))[0]

    def collate(self, examples: Sequence[Document]) -> Batch:
        """``input_ids``, ``token_type_ids`` and ``padding_mask`` ``(b, s)``; ``markers``
        ``(b, n)`` positions of each sentence's marker and ``marker_mask`` (True = a
        sentence); ``labels`` ``(b,)`` the oracle sentence."""
        rows = [self._ids(d.sentences) for d in examples]
        s = max(len(r[0]) for r in rows)
        n = max(len(r[2]) for r in rows)
        b = len(rows)
        input_ids = torch.full((b, s), PAD_ID, dtype=torch.long)
        segments = torch.zeros(b, s, dtype=torch.long)
        markers = torch.zeros(b, n, dtype=torch.long)
        marker_mask = torch.zeros(b, n, dtype=torch.bool)
        for i, (ids, seg, mk) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            segments[i, : len(seg)] = torch.tensor(seg)
            markers[i, : len(mk)] = torch.tensor(mk)
            marker_mask[i, : len(mk)] = True
        labels = torch.tensor([min(d.label, len(r[2]) - 1) for d, r in zip(examples, rows)])
        return {
            "input_ids": input_ids,
            "token_type_ids": segments,
            "padding_mask": input_ids != PAD_ID,
            "markers": markers,
            "marker_mask": marker_mask,
            "labels": labels,
        }

    def n_tokens(self, batch: Batch) -> int:
        """Documents in the batch."""
        return int(batch["labels"].numel())

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """An :class:`~qkv.models.EncoderConfig` with a pooler, two segment types and a
        one-unit classifier (the sentence scorer)."""
        sizes = {
            "vocab_size": self.tokenizer.vocab_size,
            "max_len": self.max_len,
            "pad_token_id": PAD_ID,
            "n_classes": 1,
            "type_vocab_size": 2,
            "pooler": True,
        }
        return sized_config(self, "encoder", preset, self.default_model, sizes, overrides, base)

    def scores(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(b, n)`` sentence scores; ``-inf`` where ``marker_mask`` is False.

        The marker states go through the model's own pooler and classifier, the head a
        sequence classifier applies to its [CLS] state.
        """
        out = model(
            batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            padding_mask=batch["padding_mask"],
        )
        h = out.last_hidden_state  # (b, s, d)
        idx = batch["markers"][:, :, None].expand(-1, -1, h.shape[-1])  # (b, n, d)
        states = h.gather(1, idx)  # (b, n, d)
        pooled = model.pooler.dense(states).tanh()  # (b, n, d)
        s = model.classifier(pooled).squeeze(-1)  # (b, n)
        return s.masked_fill(~batch["marker_mask"], float("-inf"))

    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Cross entropy of the oracle sentence over each document's sentences, summed;
        ``n`` = documents, ``logs["correct"]`` = top sentence is the oracle's."""
        s = self.scores(model, batch)  # (b, n)
        labels = batch["labels"]
        loss_sum = F.cross_entropy(s, labels, reduction="sum")
        (correct,) = host_numbers((s.detach().argmax(-1) == labels).sum())
        return LossOutput(loss_sum, int(labels.numel()), {"correct": correct})

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        """``oracle_acc`` (0-100) and ``loss`` (nats per document)."""
        return {
            "oracle_acc": 100.0 * logs.get("correct", 0.0) / max(n, 1),
            "loss": loss_sum / max(n, 1),
        }

    # -- evaluation and prediction -------------------------------------------------------
    @torch.no_grad()
    def pick(self, model: nn.Module, docs: Sequence[Document], batch_size: int = 64) -> list[int]:
        """The index of each document's top-scored sentence."""
        out: list[int] = []
        with evaluating(model):
            for chunk in batched(list(docs), batch_size):
                batch = to_device(self.collate(chunk), model_device(model))
                out += self.scores(model, batch).argmax(-1).tolist()
        return out

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
        """ROUGE and BLEU of the picked sentences against the summaries (see the class).

        Raises:
            TaskError: the split is empty.
        """
        docs = self.examples(split)[:limit]
        if not docs:
            raise TaskError(f"task {self.name!r}: split {split!r} has no examples to evaluate")
        picks = self.pick(model, docs, batch_size)
        hyps = [d.sentences[i] for d, i in zip(docs, picks)]
        refs = [d.summary for d in docs]
        oracle = metrics.rouge([d.sentences[d.label] for d in docs], refs, ("rougeL",))
        loss_sum = 0.0
        with evaluating(model), torch.no_grad():
            for chunk in batched(list(docs), batch_size):
                batch = to_device(self.collate(chunk), model_device(model))
                loss_sum += float(self.loss(model, batch).loss_sum)
        scores = metrics.rouge(hyps, refs)
        return {
            "rougeL": scores["rougeL"],
            **scores,
            "bleu": metrics.bleu(hyps, refs),
            "oracle_acc": 100.0 * sum(p == d.label for p, d in zip(picks, docs)) / len(docs),
            "oracle_rougeL": oracle["rougeL"],
            "loss": loss_sum / len(docs),
        }

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """``k`` validation documents: the picked sentence beside the synopsis."""
        docs = self.examples("valid")[:k]
        return [
            f"sentence {i + 1} of {len(d.sentences)}: {d.sentences[i]!r}  (reference: "
            f"{d.summary!r})"
            for d, i in zip(docs, self.pick(model, docs))
        ]

    def predict(self, model: nn.Module, inputs: Sequence[str], **generate_kwargs: Any) -> list[str]:
        """The top-scored sentence of each raw text (``generate_kwargs`` are ignored).

        Raises:
            TaskError: a text with no sentence.
        """
        docs = []
        for text in inputs:
            sentences = tuple(debian.split_sentences(text))
            if not sentences:
                raise TaskError(f"task {self.name!r}: input {text[:60]!r} has no sentence")
            docs.append(Document(sentences[: len(self._markers(sentences))], "", 0))
        return [d.sentences[i] for d, i in zip(docs, self.pick(model, docs))]

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json`` and ``tokenizer.json``."""
        write_task_file(
            self, directory, {"tokenizer": self.tokenizer_kind, "max_len": self.max_len}
        )
        self.tokenizer.save(directory)

    def load(self, directory: Path) -> None:
        """Read the tokenizer written by :meth:`save` (no training data is read).

        Raises:
            TaskError: a missing or damaged tokenizer (named).
        """
        try:
            self._tok = Tokenizer.load(directory)
        except (FileNotFoundError, TokenizerFileError) as e:
            raise TaskError(f"task {self.name!r}: {e}") from e


def compare(
    abstractive: nn.Module,
    abstractive_task: SummarizeTask,
    extractive: nn.Module,
    extractive_task: ExtractiveSummarizeTask,
    split: Split = "test",
    *,
    limit: int | None = None,
    beam_size: int = 4,
) -> dict[str, dict[str, float]]:
    """Lead-1, the extractive model and the abstractive model on the same documents.

    The documents are the extractive task's (``limit`` first of ``split``); each system's text
    is scored against the same synopses with :func:`qkv.data.metrics.rouge` and BLEU.

    Returns:
        ``{"lead-1": {...}, "extractive": {...}, "abstractive": {...}}``, each with
        ``rougeL``, ``rouge1``, ``rouge2`` and ``bleu``.

    Raises:
        TaskError: the split is empty.
    """
    docs = extractive_task.examples(split)[:limit]
    if not docs:
        raise TaskError(f"split {split!r} has no documents to compare on")
    refs = [d.summary for d in docs]
    picks = extractive_task.pick(extractive, docs)
    with evaluating(abstractive):
        written = abstractive_task.generate_texts(
            abstractive, [" ".join(d.sentences) for d in docs], beam_size=beam_size
        )
    systems = {
        "lead-1": [d.sentences[0] for d in docs],
        "extractive": [d.sentences[i] for d, i in zip(docs, picks)],
        "abstractive": written,
    }
    out = {}
    for name, hyps in systems.items():
        r = metrics.rouge(hyps, refs)
        out[name] = {"rougeL": r["rougeL"], **r, "bleu": metrics.bleu(hyps, refs)}
    return out


__all__ = ["Document", "ExtractiveSummarizeTask", "compare", "oracle_index"]
