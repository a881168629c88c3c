"""The tokenizer interface shared by every kind (:mod:`qkv.data.tokenizers`): the four
special ids, the vocabulary bound, and :class:`Tokenizer` with its ``tokenizer.json``
persistence (written atomically, read after finishing an interrupted model save)."""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from qkv.data._saves import finish_pending_save, replace_file
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
        """Write ``directory/tokenizer.json`` (creating ``directory``) atomically: a crash
        leaves the old file or the new one (:func:`qkv.data._saves.replace_file`); returns
        its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {"kind": self.kind, **self._state()}
        text = json.dumps(state, ensure_ascii=False, indent=1)
        return replace_file(directory / TOKENIZER_FILE, text.encode("utf-8"))

    @staticmethod
    def load(directory: str | Path) -> Tokenizer:
        """Read ``directory/tokenizer.json`` written by :meth:`save` (any kind). A model
        save that was interrupted after its commit point (``.save-pending``, see
        :func:`qkv.data._saves.finish_pending_save`) is finished first, as the model's
        readers do, so the tokenizer read is the one saved with the weights.

        Raises:
            FileNotFoundError: no ``tokenizer.json`` in ``directory``.
            TokenizerFileError: naming the file: not UTF-8, not JSON (or nested too deeply),
                not an object, an unknown ``kind``, or a state the kind rejects (a vocabulary
                that is not a list of distinct strings starting with the specials, ...); or
                an interrupted save that cannot be finished (a read-only directory).
        """
        try:
            finish_pending_save(directory)
        except ValueError as e:
            raise TokenizerFileError(str(e)) from None
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


__all__ = [
    "BOS_ID",
    "EOS_ID",
    "MAX_VOCAB_SIZE",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "UNK_ID",
    "Tokenizer",
    "TokenizerFileError",
    "check_vocab_size",
]
