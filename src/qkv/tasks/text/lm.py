"""``lm``: character-level (or BPE) language modelling on a text.

Texts, in order of preference:

* ``--data file.txt`` (UTF-8);
* ``corpus == "kjv"``: the King James Bible printed by ``bible -l0
  'Gen1:1-Rev22:21'`` (Debian package ``bible-kjv``, 4.3 MB);
* default: Python's own help topics, ``pydoc_data.topics.topics`` joined in sorted key
  order (465k characters, always installed).

The text is cut into train/valid/test at 90% and 95% of its characters (moved to the next
line break), each part is tokenized, and each token stream is cut into chunks of
``max_len + 1`` tokens (default 128 + 1) that overlap by one token, so every token but the
first of a split is predicted exactly once. Metrics: bits per character (headline), the
mean loss in nats per token, and perplexity.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from qkv.data import metrics
from qkv.data.tokenizers import PAD_ID, BPETokenizer, CharTokenizer, Tokenizer
from qkv.generation import generate
from qkv.models import TransformerConfig
from qkv.tasks._common import (
    check_choice,
    check_positive,
    load_tokenizer,
    model_device,
    read_text_file,
    sized_config,
    write_task_file,
)
from qkv.tasks.base import SPLITS, Split, Task, TaskError
from qkv.tasks.options import DataOption, OptionsLike, TextOptions, option
from qkv.training.evaluate import evaluate_sums
from qkv.training.objective import Batch, LossOutput
from qkv.training.objectives import LMObjective

CORPORA = ("pydoc", "kjv")
KJV_COMMAND = ("bible", "-l0", "Gen1:1-Rev22:21")
SPLIT_FRACTIONS = (0.90, 0.95)


def pydoc_text() -> str:
    """Python's help topics, joined in sorted key order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def kjv_text() -> str:
    """The King James Bible as printed by ``bible -l0 'Gen1:1-Rev22:21'``.

    Raises:
        TaskError: the ``bible`` program (package ``bible-kjv``) is missing or fails.
    """
    if shutil.which(KJV_COMMAND[0]) is None:
        raise TaskError(
            "corpus 'kjv' needs the `bible` program: `apt-get install bible-kjv` "
            "(or pass --data FILE.txt)"
        )
    try:
        run = subprocess.run(KJV_COMMAND, capture_output=True, text=True, check=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as e:
        raise TaskError(f"`{' '.join(KJV_COMMAND)}` failed: {e}") from e
    if not run.stdout.strip():
        raise TaskError(f"`{' '.join(KJV_COMMAND)}` printed nothing")
    return run.stdout


def split_text(text: str) -> dict[str, str]:
    """Contiguous train/valid/test parts at 90%/95% of the characters, each cut moved
    forward to just after the next newline (when there is one)."""
    cuts = []
    for frac in SPLIT_FRACTIONS:
        pos = int(len(text) * frac)
        nl = text.find("\n", pos)
        cuts.append(nl + 1 if nl != -1 else pos)
    a, b = cuts[0], max(cuts)
    return {"train": text[:a], "valid": text[a:b], "test": text[b:]}


def chunk_ids(ids: Sequence[int], max_len: int) -> list[list[int]]:
    """Chunks of ``max_len + 1`` tokens with stride ``max_len`` (the last may be shorter;
    chunks of fewer than 2 tokens are dropped): chunk ``k`` predicts tokens
    ``k * max_len + 1 .. (k + 1) * max_len``."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = []
    for i in range(0, max(len(ids) - 1, 0), max_len):
        chunk = list(ids[i : i + max_len + 1])
        if len(chunk) >= 2:
            out.append(chunk)
    return out


class LMTask(Task):
    """Next-token prediction on a text.

    Options: ``data`` (a text file), ``corpus`` (``"pydoc"`` default or
    ``"kjv"``), ``tokenizer`` (``"bpe"`` default or ``"char"``), ``vocab_size`` (BPE,
    default 8,192), ``max_len`` (context, default 128 tokens).
    """

    @dataclass
    class Options(TextOptions, DataOption):
        """lm's options (its split is by position: no seed or sizes)."""

        data: str | None = option(None, "a UTF-8 text file", shown="the named corpus")
        tokenizer: str | None = option(None, "tokenizer kind", choices=("char", "bpe"), shown="bpe")
        corpus: str | None = option(
            None,
            "a named corpus: pydoc (Python's help topics) or kjv (the King James Bible, "
            "Debian's bible-kjv); not with --data",
            choices=CORPORA,
            shown="pydoc",
        )

    options: Options
    name = "lm"
    kind = "lm"
    decoding = "all"
    default_max_len: ClassVar[int] = 128
    default_tokenizer: ClassVar[str] = "bpe"
    default_vocab_size: ClassVar[int] = 8192
    # Recipe, chosen by measurement on the KJV (docs/recipes.md): at equal time a BPE of
    # 8,192 ids beats characters by a wide margin (1.91 against 2.94 bpc after 5 min on one
    # thread; 1,024 ids 2.15, 4,096 ids 1.95): each step reads ~4 characters per token.
    # AdamW with a short warmup and cosine decay, no label smoothing (it moves probability
    # to every token, which the bpc then pays for), no dropout (an LM trained for minutes
    # sees most text once: 1.89 against 1.91 bpc), batch 32. Width 192 instead of 128 lost
    # at equal time (1.97 vs 1.95).
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 512,
        "n_layers": 4,
        "dropout": 0.0,
        "attn_dropout": 0.0,
    }
    recipe: ClassVar[dict[str, Any]] = {
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup": 50,
        "weight_decay": 0.1,
        "label_smoothing": 0.0,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        self.tokenizer_kind = o.tokenizer or self.default_tokenizer
        check_choice(self.name, "tokenizer", self.tokenizer_kind, ("char", "bpe"))
        self.corpus = o.corpus if o.corpus is not None else "pydoc"
        check_choice(self.name, "corpus", self.corpus, CORPORA)
        if o.data is not None and o.corpus is not None:
            raise TaskError(f"task 'lm': pass either data ({o.data}) or corpus, not both")
        self.max_len = o.max_len if o.max_len is not None else self.default_max_len
        check_positive(self.name, "max_len", self.max_len)
        self.vocab_size = o.vocab_size if o.vocab_size is not None else self.default_vocab_size
        check_positive(self.name, "vocab_size", self.vocab_size)
        self._texts: dict[str, str] | None = None
        self._tokenizer: Tokenizer | None = None
        self._chunks: dict[str, list[list[int]]] = {}
        self._objective = LMObjective()

    # -- data ----------------------------------------------------------------------------
    def text(self) -> str:
        """The whole corpus.

        Raises:
            TaskError: a missing/empty data file, or a missing ``bible`` program.
        """
        if self.options.data is not None:
            return read_text_file(self.options.data, "language-model text")
        return kjv_text() if self.corpus == "kjv" else pydoc_text()

    def texts(self) -> dict[str, str]:
        """The train/valid/test parts of the corpus (see :func:`split_text`)."""
        if self._texts is None:
            self._texts = split_text(self.text())
        return self._texts

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer (trained on the training text on first use, or loaded)."""
        if self._tokenizer is None:
            train = self.texts()["train"]
            if self.tokenizer_kind == "char":
                self._tokenizer = CharTokenizer.train([train])
            else:
                try:
                    self._tokenizer = BPETokenizer.train(
                        train.splitlines(keepends=True), self.vocab_size
                    )
                except ValueError as e:
                    raise TaskError(f"task 'lm': {e}") from e
            self._chunks.clear()
        return self._tokenizer

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a whole text (BPE: line by line, concatenated)."""
        if isinstance(self.tokenizer, CharTokenizer):
            return self.tokenizer.encode(text)
        return [
            i for ids in self.tokenizer.encode_batch(text.splitlines(keepends=True)) for i in ids
        ]

    def examples(self, split: Split) -> list[list[int]]:
        """Token chunks of ``max_len + 1`` ids (see :func:`chunk_ids`)."""
        check_choice(self.name, "split", split, SPLITS)
        if split not in self._chunks:
            _ = self.tokenizer  # training it clears the chunk cache: do that first
            self._chunks[split] = chunk_ids(self.encode_text(self.texts()[split]), self.max_len)
        return self._chunks[split]

    def collate(self, examples: Sequence[Sequence[int]]) -> Batch:
        """``input_ids`` = chunk[:-1], ``labels`` = chunk[1:], ``padding_mask`` True on
        real tokens; all ``(b, s)``, right-padded with PAD (ignored by the loss)."""
        return self._objective.collate(examples)

    def n_tokens(self, batch: Batch) -> int:
        return self._objective.n_tokens(batch)

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """An :class:`~qkv.models.LMConfig` sized to the vocabulary and ``max_len``.

        Raises:
            TaskError: a preset of another model family.
        """
        sizes = {
            "vocab_size": self.tokenizer.vocab_size,
            "max_len": self.max_len,
            "pad_token_id": PAD_ID,
        }
        return sized_config(self, "lm", preset, self.default_model, sizes, overrides, base)

    # -- objective and metrics -----------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Next-token cross entropy summed over the real label tokens."""
        return self._objective.loss(model, batch, label_smoothing=label_smoothing)

    def n_chars(self, chunk: Sequence[int]) -> int:
        """Characters of the text a chunk's labels (``chunk[1:]``) decode to."""
        if isinstance(self.tokenizer, CharTokenizer):
            return len(chunk) - 1
        return len(self.tokenizer.decode(chunk[1:]))

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
        """Bits per character, loss (nats per token) and perplexity on (the first ``limit``
        chunks of) a split. ``beam_size`` is ignored.

        For the char tokenizer bpc = loss / ln 2; for BPE the summed nats are divided by the
        characters the predicted tokens decode to.

        Raises:
            TaskError: the split has no chunks.
        """
        chunks = self.examples(split)[:limit]
        if not chunks:
            raise TaskError(f"task 'lm': split {split!r} has no text to evaluate")
        total, n, _ = evaluate_sums(model, self, chunks, batch_size=batch_size, progress=progress)
        n_chars = sum(self.n_chars(c) for c in chunks)
        loss = total / n
        return {
            "bpc": metrics.bits_per_char(total, max(n_chars, 1)),
            "loss": loss,
            "ppl": metrics.perplexity(loss),
        }

    def samples(self, model: nn.Module, k: int = 1) -> list[str]:
        """A sampled continuation (top-p 0.95, temperature 0.8, seeded) of the start of the
        held-out text."""
        text = self.texts()["valid"]
        prompt = text[: text.find("\n", 40) + 1 or 60]
        g = torch.Generator().manual_seed(0)
        outs = self.predict(model, [prompt] * k, max_new_tokens=160, generator=g)
        return [repr(prompt + out) for out in outs]

    def predict(self, model: nn.Module, inputs: Sequence[str], **generate_kwargs: Any) -> list[str]:
        """Continue each prompt (the continuation only, without the prompt).

        By default a language model samples (``strategy="sample"``, ``temperature=0.8``,
        nucleus ``top_p=0.95``; greedy decoding of a small model loops), 200 new tokens.
        Running text has no end token, so beam search runs to the budget. Longer
        continuations than the model's context slide a window over the last
        ``max_len // 2`` tokens. An empty prompt starts from a newline.
        """
        kw = dict(generate_kwargs)
        if "strategy" not in kw:
            kw = {"strategy": "sample", "temperature": 0.8, "top_p": 0.95, **kw}
        total_new = int(kw.pop("max_new_tokens", 200))
        kw.setdefault("eos_id", None)  # running text has no end-of-sequence token
        device = model_device(model)
        out = []
        for prompt in inputs:
            ids = self.encode_text(prompt or "\n")
            new: list[int] = []
            while len(new) < total_new:
                seq = ids + new
                if len(seq) >= self.max_len:  # slide: keep the last half context
                    seq = seq[-max(1, self.max_len // 2) :]
                step = min(total_new - len(new), self.max_len - len(seq))
                if step < 1:
                    break
                x = torch.tensor([seq], dtype=torch.long, device=device)  # (1, s)
                gen = generate(model, x, max_new_tokens=step, **kw)
                if not gen.tokens[0]:
                    break
                new += gen.tokens[0]
            out.append(self.tokenizer.decode(new))
        return out

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json`` and ``tokenizer.json``."""
        directory = Path(directory)
        write_task_file(
            self, directory, {"tokenizer": self.tokenizer_kind, "max_len": self.max_len}
        )
        self.tokenizer.save(directory)

    def load(self, directory: Path) -> None:
        """Read the tokenizer written by :meth:`save` (the text is not read)."""
        self._tokenizer = load_tokenizer(self.name, directory)
        self._chunks.clear()


__all__ = ["LMTask", "chunk_ids", "kjv_text", "pydoc_text", "split_text"]
