"""``summarize``: abstractive summarization, long description -> one-line synopsis.

* no data: Debian's package descriptions (:mod:`qkv.data.debian`; ``apt-get update -o
  Acquire::Languages=en`` fetches them): the long description is the source, the synopsis
  written by the packager is the target. The splits are the corpus's own, by a seeded hash of
  the *source package*, so the ``-dev``/``-data``/``-doc`` siblings of one program never sit
  on both sides of the train/test line.
* ``--data pairs.tsv``: one ``text<TAB>summary`` pair per line, split as ``translate`` does.

The model is the encoder-decoder :class:`~qkv.models.Seq2SeqTransformer` trained from scratch
with a shared byte-level BPE vocabulary; sources longer than ``max_len`` tokens are truncated
(the synopsis rarely needs more than the first sentences). :meth:`SummarizeTask.evaluate`
reports ROUGE-1/2/L F-measures (the ``rouge-score`` package, Porter stemming on) first, then
sacreBLEU's BLEU and chrF; ``qkv eval --beam-size 4`` decodes with beam search and the GNMT
length penalty of :mod:`qkv.generation.beam`. :func:`lead_sentences` is the lead-1 baseline
of :func:`baselines`, which puts it beside an abstractive and an extractive checkpoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from qkv.data import debian, metrics
from qkv.tasks.base import SPLITS, TaskError, split_sizes
from qkv.tasks.options import DataOption, SeedOption, SizeOptions, TextOptions, option
from qkv.tasks.text._seq2seq import Pair, Seq2SeqTask, SharedVocabOption
from qkv.tasks.text.translate import read_tsv

#: Characters of a description shown in a sample line.
SAMPLE_CHARS = 120
#: What ``data`` means for summarize and summarize-extractive.
DATA_HELP = "a TSV file of text<TAB>summary pairs"


def read_debian_splits(seed: int, task: str) -> dict[str, list[debian.PackageDescription]]:
    """The Debian corpus by split (:func:`qkv.data.debian.split_of` of each source package),
    each split shuffled with ``seed`` (so that ``n_valid`` caps take a random sample).

    Raises:
        TaskError: the apt lists hold no English descriptions (the message names the fix).
    """
    try:
        records = debian.read_corpus()
    except debian.DebianCorpusError as e:
        raise TaskError(f"task {task!r} without --data reads Debian's descriptions: {e}") from e
    out: dict[str, list[debian.PackageDescription]] = {s: [] for s in SPLITS}
    for r in records:
        out[debian.split_of(r.source, seed)].append(r)
    for split, part in out.items():
        random.Random(f"{seed}:{split}").shuffle(part)
    return out


class SummarizeTask(Seq2SeqTask):
    """Long description -> synopsis, from Debian's package descriptions or a TSV file.

    Options: ``data`` (TSV of ``text<TAB>summary``), ``seed`` (the split), ``n_train`` /
    ``n_valid`` / ``n_test`` (caps; defaults: all / 500 / all of the Debian test split, 5%
    each for a small TSV), ``max_len`` (default 64 BPE tokens: the median description has
    65 of an 8,000-id BPE, 44 words; the synopsis mostly restates the first sentence),
    ``tokenizer`` (default ``"bpe"``), ``vocab_size`` (default 4,000),
    ``shared_vocab`` (default True: synopses reuse the description's words).
    """

    @dataclass
    class Options(SharedVocabOption, TextOptions, SizeOptions, SeedOption, DataOption):
        """summarize's options."""

        data: str | None = option(None, DATA_HELP, shown="Debian's package descriptions")

    options: Options
    name = "summarize"
    headline = "rougeL"
    default_max_len = 64
    default_tokenizer = "bpe"
    default_vocab_size = 4000
    default_eval_sizes: ClassVar[dict[str, int | None]] = {"valid": 500, "test": None}
    # Sized for the 30-minute 2-core CPU budget: at 128 tokens and d_model 256 (7.6M
    # parameters) a step of 64 descriptions cost ~10x this one, too few steps to learn.
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 192,
        "n_heads": 4,
        "d_ff": 768,
        "n_encoder_layers": 2,
        "n_decoder_layers": 2,
        "dropout": 0.1,
        "norm_placement": "pre",
    }
    # Recipe (docs/text.md): batches of at most 4,096 tokens (descriptions of similar length
    # together) and lr 2e-3 instead of 64 descriptions and 1e-3: in 30 min on one thread,
    # 1,723 steps instead of 1,449 and test ROUGE-L 29.8 instead of 24.5 (beam 4).
    recipe: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 2e-3,
        "schedule": "cosine",
        "warmup": 200,
        "weight_decay": 0.01,
        "batch_size": 64,
        "batch_tokens": 4096,
        "label_smoothing": 0.1,
        "eval_every": 1000,
        "eval_limit": 300,
    }

    def _make_splits(self) -> dict[str, list[Pair]]:
        o = self.options
        if o.data is not None:
            pairs = read_tsv(o.data)
            random.Random(o.seed).shuffle(pairs)
            sizes = split_sizes(
                len(pairs), o, valid=500, test=500, what=f"summarization data {o.data}"
            )
            start, out = 0, {}
            for split in ("test", "valid", "train"):
                out[split] = [Pair(s, t) for s, t in pairs[start : start + sizes[split]]]
                start += sizes[split]
            return out
        records = read_debian_splits(o.seed, self.name)
        caps = {"train": o.n_train, "valid": o.n_valid, "test": o.n_test}
        out = {}
        for split in SPLITS:
            cap = caps[split] if caps[split] is not None else self.default_eval_sizes.get(split)
            out[split] = [Pair(r.text, r.synopsis) for r in records[split][:cap]]
        return out

    def _text_scores(self, hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
        """ROUGE-1/2/L F (0-100; rouge-score, stemmed)."""
        return metrics.rouge(hyps, refs)

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """``k`` validation descriptions (shortened), the model's synopsis and the packager's."""
        pairs = self.examples("valid")[:k]
        hyps = self.generate_texts(model, [p.src for p in pairs])
        return [
            f"{_shorten(p.src)}  ->  {h!r}  (reference: {p.tgt!r})" for p, h in zip(pairs, hyps)
        ]


def _shorten(text: str, n: int = SAMPLE_CHARS) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def lead_sentences(text: str, k: int = 1) -> str:
    """The first ``k`` sentences of a text (:func:`qkv.data.debian.split_sentences`): the
    lead-k baseline of summarization."""
    return " ".join(debian.split_sentences(text)[:k])


def lead_scores(pairs: list[Pair]) -> dict[str, float]:
    """ROUGE-1/2/L and BLEU of lead-1 (each text's first sentence) against the summaries.

    Raises:
        TaskError: no pairs.
    """
    if not pairs:
        raise TaskError("lead-1 needs at least one text to score")
    hyps = [lead_sentences(p.src) for p in pairs]
    refs = [p.tgt for p in pairs]
    return {**metrics.rouge(hyps, refs), "bleu": metrics.bleu(hyps, refs)}


__all__ = ["SummarizeTask", "lead_scores", "lead_sentences", "read_debian_splits"]
