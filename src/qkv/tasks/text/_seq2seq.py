"""Shared machinery of the sequence-to-sequence tasks (copy, reverse, synthetic, translate).

A subclass only says where its ``(source, target)`` text pairs come from
(:meth:`Seq2SeqTask._make_splits`); this class owns the tokenizers, teacher-forcing batches,
the label-smoothed loss, BLEU/chrF/exact-match evaluation with
:func:`qkv.generation.generate`, text prediction, and checkpoint persistence.

Teacher forcing (Vaswani et al. 2017, sec. 3): for a target ``y_1 .. y_m`` the decoder reads
``tgt_in = [BOS, y_1, .., y_m]`` and is trained to emit ``tgt_out = [y_1, .., y_m, EOS]``,
so position ``t`` predicts ``y_{t+1}`` from ``y_{<=t}`` (the causal mask lives in the model).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from qkv.data import metrics
from qkv.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    TOKENIZER_FILE,
    Tokenizer,
    TokenizerFileError,
    train_tokenizer,
)
from qkv.generation import generate
from qkv.layers.mode import evaluating
from qkv.models import TransformerConfig
from qkv.tasks._common import (
    batched,
    check_choice,
    check_positive,
    model_device,
    pad_ids,
    sized_config,
    write_task_file,
)
from qkv.tasks.base import SPLITS, Split, Task, TaskError
from qkv.tasks.options import (
    TOKENIZERS,
    Options,
    OptionsLike,
    SeedOption,
    SizeOptions,
    TextOptions,
    VocabOption,
    option,
)
from qkv.training.evaluate import evaluate_sums
from qkv.training.objective import Batch, LossOutput
from qkv.training.objectives import Seq2SeqObjective

SRC_TOKENIZER_DIR, TGT_TOKENIZER_DIR = "tokenizer_src", "tokenizer_tgt"


@dataclass
class SharedVocabOption(Options):
    """``shared_vocab``: one tokenizer for both sides of the pairs."""

    shared_vocab: bool = option(True, "one tokenizer (and vocabulary) for source and target")


class Pair(NamedTuple):
    """One example: source text and target text."""

    src: str
    tgt: str


class Seq2SeqTask(Task):
    """Base of the text-to-text tasks.

    Options used: ``max_len`` (most tokens of a source or target, specials excluded; longer
    ones are truncated), ``tokenizer``, ``vocab_size`` (BPE, or a cap for word vocabularies),
    ``shared_vocab`` (one tokenizer for both sides, default True).

    Subclasses set ``name`` and the class defaults below and implement
    :meth:`_make_splits`.
    """

    @dataclass
    class Options(SharedVocabOption, TextOptions, SizeOptions, SeedOption):
        """The options of a sequence-to-sequence task."""

    options: Options
    kind = "seq2seq"
    decoding = "all"
    eval_beam = True
    viz_target = True
    headline: ClassVar[str] = "bleu"
    default_max_len: ClassVar[int] = 64
    default_tokenizer: ClassVar[str] = "word"
    tokenizer_choices: ClassVar[tuple[str, ...]] = TOKENIZERS
    default_vocab_size: ClassVar[int] = 4000
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 256,
        "n_encoder_layers": 3,
        "n_decoder_layers": 3,
        "dropout": 0.1,
        "norm_placement": "pre",
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        self.tokenizer_kind = o.tokenizer or self.default_tokenizer
        check_choice(self.name, "tokenizer", self.tokenizer_kind, self.tokenizer_choices)
        self.max_len = o.max_len if o.max_len is not None else self.default_max_len
        check_positive(self.name, "max_len", self.max_len)
        # copy's characters need no vocabulary size: it takes none
        self.vocab_size = o.vocab_size if isinstance(o, VocabOption) else None
        if self.vocab_size is not None:
            check_positive(self.name, "vocab_size", self.vocab_size)
        for opt in ("n_train", "n_valid", "n_test"):
            if getattr(o, opt) is not None:
                check_positive(self.name, opt, getattr(o, opt), minimum=0)
        # copy and text2text always share one tokenizer: they take no shared_vocab
        self.shared_vocab = bool(o.shared_vocab) if isinstance(o, SharedVocabOption) else True
        self._splits: dict[str, list[Pair]] | None = None
        self._src_tok: Tokenizer | None = None
        self._tgt_tok: Tokenizer | None = None
        self._cache: dict[tuple[bool, str], list[int]] = {}
        self._objective = Seq2SeqObjective()

    # -- data ----------------------------------------------------------------------------
    @abc.abstractmethod
    def _make_splits(self) -> dict[str, list[Pair]]:
        """The ``train``/``valid``/``test`` pairs (deterministic given the options)."""

    def examples(self, split: Split) -> list[Pair]:
        """The ``(src, tgt)`` text pairs of a split.

        Raises:
            TaskError: an unknown split, or data that cannot be read.
        """
        check_choice(self.name, "split", split, SPLITS)
        if self._splits is None:
            self._splits = self._make_splits()
        return self._splits[split]

    # -- tokenizers ----------------------------------------------------------------------
    def _train_tokenizers(self, train: Sequence[Pair]) -> tuple[Tokenizer, Tokenizer]:
        kind = self.tokenizer_kind
        vocab = self.vocab_size
        if kind == "bpe" and vocab is None:
            vocab = self.default_vocab_size
        try:
            if self.shared_vocab:
                tok = train_tokenizer(kind, [t for p in train for t in p], vocab_size=vocab)
                return tok, tok
            src = train_tokenizer(kind, [p[0] for p in train], vocab_size=vocab)
            return src, train_tokenizer(kind, [p[1] for p in train], vocab_size=vocab)
        except ValueError as e:
            raise TaskError(f"task {self.name!r}: {e}") from e

    def _ensure_tokenizers(self) -> None:
        if self._src_tok is None or self._tgt_tok is None:
            train = self.examples("train")
            if not train:
                raise TaskError(f"task {self.name!r}: no training pairs to build a vocabulary")
            self._src_tok, self._tgt_tok = self._train_tokenizers(train)
            self._cache.clear()

    @property
    def src_tokenizer(self) -> Tokenizer:
        """Source tokenizer (trained on the training split on first use, or loaded)."""
        self._ensure_tokenizers()
        assert self._src_tok is not None
        return self._src_tok

    @property
    def tgt_tokenizer(self) -> Tokenizer:
        """Target tokenizer (the source one when ``shared_vocab``)."""
        self._ensure_tokenizers()
        assert self._tgt_tok is not None
        return self._tgt_tok

    def _encode(self, text: str, target: bool) -> list[int]:
        key = (target, text)
        ids = self._cache.get(key)
        if ids is None:
            tok = self.tgt_tokenizer if target else self.src_tokenizer
            ids = self._cache[key] = tok.encode(text)[: self.max_len]
        return ids

    def collate(self, examples: Sequence[Pair]) -> Batch:
        """Teacher-forcing batch of ``(src, tgt)`` text pairs (see
        :class:`~qkv.training.objectives.Seq2SeqObjective`).

        Returns:
            ``src`` ``(b, s_src)`` ids and ``src_padding_mask`` (True = real token);
            ``tgt_in`` ``(b, s_tgt)`` = ``[BOS] + tgt``; ``tgt_out`` = ``tgt + [EOS]``;
            ``tgt_padding_mask`` True where ``tgt_in`` (equally ``tgt_out``) is real.
            Padding is ``PAD_ID`` (0), right-aligned.
        """
        return self._objective.collate(
            [(self._encode(p[0], False), self._encode(p[1], True)) for p in examples]
        )

    def length(self, example: Pair) -> int:
        """Tokens of a pair, source plus target with BOS/EOS (for batching by tokens)."""
        return len(self._encode(example[0], False)) + len(self._encode(example[1], True)) + 1

    def n_tokens(self, batch: Batch) -> int:
        """Real source plus target tokens."""
        return self._objective.n_tokens(batch)

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """A :class:`~qkv.models.Seq2SeqConfig` sized to the vocabularies and ``max_len``
        (``max_len + 1`` positions: BOS/EOS included), from :attr:`default_model`, a
        ``transformer-*`` preset or a pretrained ``base``.

        Raises:
            TaskError: a preset of another model family.
        """
        sizes: dict[str, Any] = {
            "vocab_size": self.src_tokenizer.vocab_size,
            "max_len": self.max_len + 1,
            "pad_token_id": PAD_ID,
        }
        if not self.shared_vocab:
            sizes |= {"tgt_vocab_size": self.tgt_tokenizer.vocab_size, "share_embeddings": False}
        return sized_config(self, "seq2seq", preset, self.default_model, sizes, overrides, base)

    # -- objective and metrics -----------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Cross entropy summed over the real target tokens (padding ignored), with label
        smoothing (Szegedy et al. 2016): the target distribution is
        ``(1 - eps) * onehot + eps / V``.

        Returns:
            ``LossOutput(loss_sum, n=real target tokens, logs={"correct": ...})``.
        """
        return self._objective.loss(model, batch, label_smoothing=label_smoothing)

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        """Teacher-forced ``loss``, ``ppl`` and ``token_acc`` (what the trainer logs when it
        is not given the task's own :meth:`evaluate`)."""
        return self._objective.metrics(loss_sum, n, logs)

    def _metric_text(self, text: str) -> str:
        """How a hypothesis/reference is shown to BLEU and chrF (subclasses may space out
        characters)."""
        return text

    @torch.no_grad()
    def generate_texts(
        self,
        model: nn.Module,
        sources: Sequence[str],
        *,
        batch_size: int = 64,
        progress: bool = False,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Translate source texts with :func:`qkv.generation.generate` (greedy unless
        ``strategy``/``beam_size`` say otherwise); batches are sorted by length.

        ``max_new_tokens`` defaults to ``min(max_len, 2 * longest source + 10) + 1``.
        """
        kw = dict(generate_kwargs)
        if kw.get("beam_size", 1) > 1:
            kw.setdefault("strategy", "beam")
        kw.setdefault("bos_id", BOS_ID)
        kw.setdefault("eos_id", EOS_ID)
        kw.setdefault("pad_id", PAD_ID)
        device = model_device(model)
        ids = [self._encode(s, False) for s in sources]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [""] * len(ids)
        n_chunks = -(-len(order) // batch_size)
        chunks = tqdm(
            batched(order, batch_size), total=n_chunks, desc="translate", leave=False,
            disable=not progress,
        )  # fmt: skip
        for chunk in chunks:
            src, mask = pad_ids([ids[i] for i in chunk])
            step_kw = dict(kw)
            step_kw.setdefault("max_new_tokens", min(self.max_len, 2 * src.shape[1] + 10) + 1)
            gen = generate(model, src.to(device), padding_mask=mask.to(device), **step_kw)
            for i, toks in zip(chunk, gen.tokens):
                out[i] = self.tgt_tokenizer.decode(toks)
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
        """Teacher-forced loss and generated-output metrics on (the first ``limit`` pairs
        of) a split.

        Pairs with the same source are scored once, against all their targets as
        references.

        Returns:
            The headline metric first (``bleu``, or ``exact_match`` for copy/reverse), then
            :meth:`_text_scores`, ``bleu``, ``chrf``, ``exact_match`` (0-100), ``loss`` (nats per target token)
            and ``ppl``.

        Raises:
            TaskError: the split is empty.
        """
        pairs = self.examples(split)[:limit]
        if not pairs:
            raise TaskError(f"task {self.name!r}: split {split!r} has no examples to evaluate")
        total, n, _ = evaluate_sums(model, self, pairs, batch_size=batch_size, progress=progress)
        refs: dict[str, list[str]] = {}
        for p in pairs:
            refs.setdefault(p[0], []).append(p[1])
        sources = list(refs)
        with evaluating(model):
            hyps = self.generate_texts(
                model, sources, batch_size=batch_size, beam_size=beam_size, progress=progress
            )
        h = [self._metric_text(x) for x in hyps]
        r = [[self._metric_text(x) for x in refs[s]] for s in sources]
        scores = {
            **self._text_scores(hyps, [refs[s] for s in sources]),
            **self._group_scores(sources, hyps, [refs[s] for s in sources]),
            "bleu": metrics.bleu(h, r),
            "chrf": metrics.chrf(h, r),
            "exact_match": metrics.exact_match(hyps, [refs[s] for s in sources]),
            "loss": total / max(n, 1),
        }
        scores["ppl"] = metrics.perplexity(scores["loss"])
        return {self.headline: scores[self.headline], **scores}

    def _text_scores(self, hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
        """Scores of the generated texts beyond BLEU, chrF and exact match (``rouge1``... for
        summarization); listed first in :meth:`evaluate`'s result. Default: none."""
        return {}

    def _group_scores(
        self, sources: list[str], hyps: list[str], refs: list[list[str]]
    ) -> dict[str, float]:
        """Scores of parts of the split on their own (``bleu_de``, ``bleu_fr`` for a
        many-to-English model); listed after :meth:`_text_scores`. Default: none."""
        return {}

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """``k`` validation sources, their greedy output and their reference."""
        pairs = self.examples("valid")[:k]
        hyps = self.generate_texts(model, [p[0] for p in pairs])
        # an empty output is marked, not a blank between the arrows
        return [
            f"{p[0]}  ->  {h if h.strip() else '<empty>'}  (reference: {p[1]})"
            for p, h in zip(pairs, hyps)
        ]

    def predict(self, model: nn.Module, inputs: Sequence[str], **generate_kwargs: Any) -> list[str]:
        """Translate raw source texts (see :meth:`generate_texts` for the keywords)."""
        return self.generate_texts(model, list(inputs), **generate_kwargs)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json`` and the tokenizer(s): ``tokenizer.json`` when shared, else
        ``tokenizer_src/`` and ``tokenizer_tgt/``."""
        directory = Path(directory)
        state = {"tokenizer": self.tokenizer_kind, "max_len": self.max_len}
        write_task_file(self, directory, state | {"shared_vocab": self.shared_vocab})
        if self.shared_vocab:
            self.src_tokenizer.save(directory)
        else:
            self.src_tokenizer.save(directory / SRC_TOKENIZER_DIR)
            self.tgt_tokenizer.save(directory / TGT_TOKENIZER_DIR)

    def load(self, directory: Path) -> None:
        """Read the tokenizer(s) written by :meth:`save` (no training data is read).

        Raises:
            TaskError: no tokenizer files in ``directory``, or a damaged one (named).
        """
        directory = Path(directory)
        try:
            if (directory / TOKENIZER_FILE).is_file():
                self._src_tok = self._tgt_tok = Tokenizer.load(directory)
                self.shared_vocab = True
            elif (directory / SRC_TOKENIZER_DIR / TOKENIZER_FILE).is_file():
                self._src_tok = Tokenizer.load(directory / SRC_TOKENIZER_DIR)
                self._tgt_tok = Tokenizer.load(directory / TGT_TOKENIZER_DIR)
                self.shared_vocab = False
            else:
                raise TaskError(
                    f"task {self.name!r}: no {TOKENIZER_FILE} or {SRC_TOKENIZER_DIR}/ in "
                    f"{directory}"
                )
        except (FileNotFoundError, TokenizerFileError) as e:  # the message names the file
            raise TaskError(f"task {self.name!r}: {e}") from e
        self._cache.clear()


__all__ = ["Pair", "Seq2SeqTask", "SharedVocabOption"]
