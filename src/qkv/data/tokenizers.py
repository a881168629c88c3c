"""Tokenizers: characters, words, and byte-level BPE, with one set of special ids.

Every kind reserves the same four ids, so models, losses and :func:`qkv.generation.generate`
never need to ask which tokenizer made the data:

=====  ======  =========================================
id     token   meaning
=====  ======  =========================================
0      <pad>   padding (ignored by losses and masks)
1      <bos>   first decoder input (teacher forcing, generation)
2      <eos>   end of a target sequence
3      <unk>   a character or word not in the vocabulary
=====  ======  =========================================

``encode`` never adds specials; ``decode`` skips all four. ``save(directory)`` writes one
``tokenizer.json`` with a ``kind`` field and :meth:`Tokenizer.load` dispatches on it.

>>> tok = WordTokenizer.train(["the cat sees the dog.", "a dog sleeps!"])
>>> tok.decode(tok.encode("the dog sees a cat."))
'the dog sees a cat.'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from qkv.data._bpe import BPETokenizer
from qkv.data._tokenizer import (
    BOS_ID,
    EOS_ID,
    MAX_VOCAB_SIZE,
    PAD_ID,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    UNK_ID,
    Tokenizer,
    TokenizerFileError,
    check_vocab_size,
)


class _VocabTokenizer(Tokenizer):
    """A tokenizer with an explicit token list (ids 0..3 are the specials)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        vocab = list(SPECIAL_TOKENS)
        seen = set(vocab)
        for t in tokens:
            if t not in seen:
                seen.add(t)
                vocab.append(t)
        self._vocab = vocab
        self._index = {t: i for i, t in enumerate(vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def vocab(self) -> list[str]:
        """All tokens in id order (a copy)."""
        return list(self._vocab)

    def id_to_token(self, token_id: int) -> str:
        self._check_id(token_id)
        return self._vocab[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self._index.get(token)

    def _pieces(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            self._check_id(i)
            if i >= len(SPECIAL_TOKENS):
                out.append(self._vocab[i])
        return out


def _saved_vocab(state: dict[str, Any]) -> list[str]:
    """The ``vocab`` of a saved char/word tokenizer without the specials, checked.

    Raises:
        ValueError: not a list of distinct strings that starts with the four specials.
    """
    vocab = state.get("vocab")
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise ValueError(f"'vocab' must be a list of strings, got {str(vocab)[:80]}")
    if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"'vocab' must start with {list(SPECIAL_TOKENS)}, got {vocab[:4]}")
    if len(set(vocab)) != len(vocab):
        raise ValueError("'vocab' holds the same token twice")
    return vocab[len(SPECIAL_TOKENS) :]


class CharTokenizer(_VocabTokenizer):
    """One token per Unicode character.

    Args:
        chars: the characters of the vocabulary (ids follow the specials, in this order).
    """

    kind = "char"

    @classmethod
    def train(cls, texts: Iterable[str], min_freq: int = 1) -> CharTokenizer:
        """Vocabulary of every character seen at least ``min_freq`` times (sorted)."""
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(t)
        return cls(sorted(c for c, n in counts.items() if n >= min_freq))

    def encode(self, text: str) -> list[int]:
        get = self._index.get
        return [get(c, UNK_ID) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._pieces(ids))

    def _state(self) -> dict[str, Any]:
        return {"vocab": self._vocab}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> CharTokenizer:
        return cls(_saved_vocab(state))


# A token is a decimal number ("3.5", "10,000"), a word possibly joined by an inner
# apostrophe or hyphen ("don't", "well-known"), or any other single non-space character.
WORD_RE = re.compile(r"\d+(?:[.,:]\d+)+|\w+(?:['’-]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = frozenset(".,!?;:%)]}…")
_NO_SPACE_AFTER = frozenset("([{¿¡")


def split_words(text: str, lowercase: bool = False) -> list[str]:
    """Split text into words and punctuation marks with :data:`WORD_RE`."""
    return WORD_RE.findall(text.lower() if lowercase else text)


def detokenize(words: Sequence[str]) -> str:
    """Join words with spaces except before closing and after opening punctuation.

    Straight double quotes alternate between opening and closing. For text split by
    :func:`split_words`, ``split_words(detokenize(w)) == w``.
    """
    out: list[str] = []
    quote_open = False
    glue_next = True  # no space before the first word
    for w in words:
        is_quote = w == '"'
        closing = w in _NO_SPACE_BEFORE or (is_quote and quote_open)
        if out and not glue_next and not closing:
            out.append(" ")
        out.append(w)
        glue_next = w in _NO_SPACE_AFTER or (is_quote and not quote_open)
        if is_quote:
            quote_open = not quote_open
    return "".join(out)


class WordTokenizer(_VocabTokenizer):
    """Words and punctuation marks split by :data:`WORD_RE`; decode re-joins them with
    :func:`detokenize`.

    Args:
        words: the vocabulary (ids follow the specials, in this order).
        lowercase: lowercase text before splitting.
    """

    kind = "word"

    def __init__(self, words: Iterable[str], lowercase: bool = False) -> None:
        super().__init__(words)
        self.lowercase = lowercase

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        min_freq: int = 1,
        lowercase: bool = False,
        max_size: int | None = None,
    ) -> WordTokenizer:
        """Vocabulary of the words seen at least ``min_freq`` times, most frequent first
        (ties alphabetical), at most ``max_size`` ids in all when given.

        Raises:
            ValueError: ``min_freq < 1``, or a ``max_size`` that is not an int, not above
                the 4 specials or above :data:`MAX_VOCAB_SIZE`.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None:
            n = len(SPECIAL_TOKENS)
            check_vocab_size("max_size", max_size, n + 1, f"more than the {n} specials")
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(split_words(t, lowercase))
        words = sorted(
            (w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max_size - len(SPECIAL_TOKENS)]
        return cls(words, lowercase=lowercase)

    def tokenize(self, text: str) -> list[str]:
        """The word strings of ``text`` (before mapping to ids)."""
        return split_words(text, self.lowercase)

    def encode(self, text: str) -> list[int]:
        get = self._index.get
        return [get(w, UNK_ID) for w in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return detokenize(self._pieces(ids))

    def _state(self) -> dict[str, Any]:
        return {"vocab": self._vocab, "lowercase": self.lowercase}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> WordTokenizer:
        lowercase = state.get("lowercase", False)
        if not isinstance(lowercase, bool):
            raise ValueError(f"'lowercase' must be true or false, got {lowercase!r}")
        return cls(_saved_vocab(state), lowercase=lowercase)


def train_tokenizer(
    kind: str, texts: Sequence[str], *, vocab_size: int | None = None, lowercase: bool = False
) -> Tokenizer:
    """Train a tokenizer of ``kind`` (``"char"``, ``"word"`` or ``"bpe"``) on ``texts``.

    Raises:
        ValueError: an unknown kind, ``"bpe"`` without ``vocab_size``, or a ``vocab_size``
            that is not an int or out of bounds (see :func:`check_vocab_size`).
    """
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "word":
        if vocab_size is not None:
            n = len(SPECIAL_TOKENS)
            check_vocab_size("word vocab_size", vocab_size, n + 1, f"more than the {n} specials")
        return WordTokenizer.train(texts, lowercase=lowercase, max_size=vocab_size)
    if kind == "bpe":
        if vocab_size is None:
            raise ValueError("a BPE tokenizer needs a vocab_size")
        return BPETokenizer.train(texts, vocab_size)
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose 'char', 'word' or 'bpe'")


__all__ = [
    "BOS_ID",
    "EOS_ID",
    "MAX_VOCAB_SIZE",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "UNK_ID",
    "WORD_RE",
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "TokenizerFileError",
    "WordTokenizer",
    "check_vocab_size",
    "detokenize",
    "split_words",
    "train_tokenizer",
]
