"""Byte-level BPE (GPT-2 style) trained with the ``tokenizers`` package: the ``bpe`` kind of
:mod:`qkv.data.tokenizers`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from qkv._resources import starting
from qkv.data._tokenizer import SPECIAL_TOKENS, Tokenizer, check_vocab_size

#: What to do when the ``tokenizers`` package cannot start its threads: it reads these
#: variables each time it would run in parallel.
_FIX = "run the tokenizer on one thread: TOKENIZERS_PARALLELISM=false (or RAYON_NUM_THREADS=1)"


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
        with starting("the tokenizer's training threads", _FIX):
            tok.train_from_iterator(texts, trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        with starting("the tokenizer's encoding threads", _FIX):
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


__all__ = ["BPETokenizer"]
