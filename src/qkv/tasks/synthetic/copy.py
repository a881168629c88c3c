"""``copy``: the Annotated Transformer's first exercise, copy a random symbol string.

Each example is a random string of 1..``max_len`` symbols (default 10) over a small alphabet
(default the 16 hexadecimal digits ``0-9a-f``, option ``symbols`` to change); the target
is the same string. Tokens are characters. A 2-layer model learns it in a minute on a CPU;
the headline metric is exact match (BLEU and chrF are computed over space-separated
symbols).

>>> task = CopyTask(CopyTask.Options(n_train=4, n_valid=2, n_test=2))
>>> all(p.src == p.tgt for p in task.examples("train"))
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from qkv.data.tokenizers import CharTokenizer, Tokenizer
from qkv.tasks._limits import check_generated, text_pair_bytes
from qkv.tasks.base import TaskError
from qkv.tasks.options import (
    LengthOption,
    OptionsLike,
    SeedOption,
    SizeOptions,
    TokenizerOption,
    option,
)
from qkv.tasks.text._seq2seq import Pair, Seq2SeqTask

DEFAULT_SYMBOLS = "0123456789abcdef"


class CopyTask(Seq2SeqTask):
    """Copy a random symbol string (target = source).

    Options: ``max_len`` (longest string, default 10), ``seed``, ``n_train``/``n_valid``/
    ``n_test`` (defaults 20,000/500/500; sources distinct across splits, except at
    lengths with fewer strings than examples; more examples than the free memory holds are
    refused before any is drawn), ``symbols`` (the alphabet).
    """

    @dataclass
    class Options(TokenizerOption, LengthOption, SizeOptions, SeedOption):
        """copy's (and reverse's) options: characters only, one shared alphabet."""

        tokenizer: str | None = option("char", "tokenizer kind", choices=("char",))
        symbols: str = option(DEFAULT_SYMBOLS, "the alphabet: at least 2 distinct characters")

    options: Options
    name = "copy"
    headline = "exact_match"
    default_max_len = 10
    default_tokenizer = "char"
    tokenizer_choices = ("char",)
    default_sizes: ClassVar[dict[str, int]] = {"test": 500, "valid": 500, "train": 20000}
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 64,
        "n_heads": 4,
        "d_ff": 128,
        "n_encoder_layers": 2,
        "n_decoder_layers": 2,
        "dropout": 0.0,
        "norm_placement": "pre",
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        symbols = self.options.symbols
        if (
            not isinstance(symbols, str)
            or len(set(symbols)) < 2
            or len(set(symbols)) != len(symbols)
        ):
            raise TaskError(
                f"task {self.name!r}: symbols must be a string of at least 2 distinct "
                f"characters, got {symbols!r}"
            )
        self.symbols = symbols

    @staticmethod
    def target(source: str) -> str:
        """The target of a source string (here: the string itself)."""
        return source

    def _make_splits(self) -> dict[str, list[Pair]]:
        o = self.options
        sizes = {
            "test": o.n_test if o.n_test is not None else self.default_sizes["test"],
            "valid": o.n_valid if o.n_valid is not None else self.default_sizes["valid"],
            "train": o.n_train if o.n_train is not None else self.default_sizes["train"],
        }
        k, m = len(self.symbols), self.max_len
        mean = (m + 2) // 2  # lengths are uniform in 1..m
        check_generated(self.name, sizes, text_pair_bytes(mean, mean))
        rng = random.Random(o.seed)
        seen: set[str] = set()
        out: dict[str, list[Pair]] = {}
        total = sum(sizes.values())
        # Lengths with fewer strings than examples requested (1 symbol: 16 strings), those
        # below `repeat_below`, may repeat across splits; kept apart, the held-out splits,
        # drawn first, would take them all and training would never see a short string.
        # Every other length has at least `total` strings, so the loop always ends.
        repeat_below = 1
        while k**repeat_below < total:
            repeat_below += 1
        for split, n in sizes.items():
            pairs: list[Pair] = []
            while len(pairs) < n:
                s = "".join(rng.choices(self.symbols, k=rng.randint(1, m)))
                if s not in seen or len(s) < repeat_below:
                    seen.add(s)
                    pairs.append(Pair(s, self.target(s)))
            out[split] = pairs
        return out

    def _train_tokenizers(self, train: Sequence[Pair]) -> tuple[Tokenizer, Tokenizer]:
        tok = CharTokenizer(self.symbols)  # fixed alphabet: no data needed
        return tok, tok

    def _metric_text(self, text: str) -> str:
        return " ".join(text)


__all__ = ["DEFAULT_SYMBOLS", "CopyTask"]
