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

import abc
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from qkv.data.files import read_json

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
TOKENIZER_FILE = "tokenizer.json"

#: Largest vocabulary a tokenizer trains: 2**24 ids, 80x GPT-4o's ~200k. The BPE trainer of
#: the ``tokenizers`` package reserves a hash map and a list of ``vocab_size`` entries
#: (~60 bytes each) before it reads any text, so 10**9 would ask for ~60 GB up front; at
#: 2**24 that reservation stays near 1 GiB. (``qkv.data`` sits below ``qkv.models``, whose
#: ``check_memory`` the models and tasks use: this bound is the tokenizers' own.)
MAX_VOCAB_SIZE: int = 2**24


def check_vocab_size(name: str, value: object, minimum: int, why: str) -> None:
    """Refuse a vocabulary size that is not an int in ``[minimum, MAX_VOCAB_SIZE]``.

    Args:
        name: the argument's name, for the message.
        value: the size.
        minimum: the smallest size allowed.
        why: what ``minimum`` holds, for the message (``"4 specials + 256 bytes"``).

    Raises:
        ValueError: naming the argument, the bounds and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} ({value}) must be at least {minimum} ({why})")
    if value > MAX_VOCAB_SIZE:
        shown = f"{value:,}" if value.bit_length() <= 64 else f"an int of {value.bit_length()} bits"
        raise ValueError(
            f"{name} must be at most {MAX_VOCAB_SIZE:,} (2**24, the tokenizers' bound), got {shown}"
        )


class TokenizerFileError(ValueError):
    """A ``tokenizer.json`` that cannot be read: not UTF-8 or JSON, an unknown ``kind``, or a
    malformed vocabulary. The message names the file."""


class Tokenizer(abc.ABC):
    """Base class: a reversible map between text and ids ``0 .. vocab_size - 1``.

    Subclasses set ``kind`` (the value of the ``kind`` field in ``tokenizer.json``) and
    implement :meth:`encode`, :meth:`decode`, :meth:`id_to_token`, :meth:`token_to_id`,
    :attr:`vocab_size` and the ``_state``/``_from_state`` pair used by save/load.
    """

    kind: ClassVar[str]
    PAD: ClassVar[int] = PAD_ID
    BOS: ClassVar[int] = BOS_ID
    EOS: ClassVar[int] = EOS_ID
    UNK: ClassVar[int] = UNK_ID
    _KINDS: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Tokenizer._KINDS[cls.kind] = cls

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, without special tokens."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; the four special ids are skipped.

        Raises:
            ValueError: an id outside ``[0, vocab_size)``.
        """

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The token string of an id.

        Raises:
            ValueError: an id outside ``[0, vocab_size)``.
        """

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of a token string, or None if it is not in the vocabulary."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text."""
        return [self.encode(t) for t in texts]

    def decode_batch(self, ids: Sequence[Iterable[int]]) -> list[str]:
        """:meth:`decode` of each id sequence."""
        return [self.decode(x) for x in ids]

    # -- persistence ---------------------------------------------------------------------
    @abc.abstractmethod
    def _state(self) -> dict[str, Any]:
        """JSON-serializable state (without ``kind``)."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, state: dict[str, Any]) -> Tokenizer:
        """Inverse of :meth:`_state`."""

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` (creating ``directory``); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TOKENIZER_FILE
        state = {"kind": self.kind, **self._state()}
        path.write_text(json.dumps(state, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @staticmethod
    def load(directory: str | Path) -> Tokenizer:
        """Read ``directory/tokenizer.json`` written by :meth:`save` (any kind).

        Raises:
            FileNotFoundError: no ``tokenizer.json`` in ``directory``.
            TokenizerFileError: naming the file: not UTF-8, not JSON (or nested too deeply),
                not an object, an unknown ``kind``, or a state the kind rejects (a vocabulary
                that is not a list of distinct strings starting with the specials, ...).
        """
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file {path}")
        state = read_json(path, TokenizerFileError)
        kind = state.pop("kind", None) if isinstance(state, dict) else None
        if not isinstance(kind, str) or kind not in Tokenizer._KINDS:
            raise TokenizerFileError(
                f"{path}: unknown tokenizer kind {kind!r}; known kinds: {sorted(Tokenizer._KINDS)}"
            )
        try:
            return Tokenizer._KINDS[kind]._from_state(state)
        except (ValueError, TypeError, KeyError) as e:
            raise TokenizerFileError(f"{path}: bad {kind!r} tokenizer: {e}") from None

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside [0, vocab_size={self.vocab_size})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


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


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) from the ``tokenizers`` package, trained locally.

    Byte-level means every string encodes without ``<unk>`` and ``decode(encode(s)) == s``
    exactly. The package's own JSON is stored inside our ``tokenizer.json``.

    Args:
        hf_tokenizer: a ``tokenizers.Tokenizer`` whose ids 0..3 are our specials.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: Any) -> None:
        for i, tok in enumerate(SPECIAL_TOKENS):
            if hf_tokenizer.token_to_id(tok) != i:
                raise ValueError(f"BPE tokenizer must map {tok!r} to id {i}")
        self._tok = hf_tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
        """Learn merges on ``texts`` until ``vocab_size`` ids (specials and the 256 byte
        symbols included) or no pair occurs ``min_frequency`` times.

        Raises:
            ValueError: a ``vocab_size`` that is not an int, below 4 specials + 256 bytes =
                260, or above :data:`MAX_VOCAB_SIZE`.
        """
        n_min = len(SPECIAL_TOKENS) + 256
        check_vocab_size("BPE vocab_size", vocab_size, n_min, "4 specials + 256 bytes")
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.ids) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        for i in ids:
            self._check_id(i)
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def id_to_token(self, token_id: int) -> str:
        self._check_id(token_id)
        return str(self._tok.id_to_token(token_id))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def _state(self) -> dict[str, Any]:
        return {"hf_tokenizer": json.loads(self._tok.to_str())}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        saved = state.get("hf_tokenizer")
        if not isinstance(saved, dict):
            raise ValueError(f"'hf_tokenizer' must be an object, got {type(saved).__name__}")
        try:
            hf = HFTokenizer.from_str(json.dumps(saved))
        except Exception as e:  # the tokenizers package raises plain Exception
            raise ValueError(f"'hf_tokenizer' does not load: {e}") from None
        return cls(hf)


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
