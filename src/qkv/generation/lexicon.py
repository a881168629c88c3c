"""A soft lexicon constraint for beam search over characters.

A decoder that spells letter by letter can spell words that do not exist ("streat" for
"street"); a character n-gram makes them unlikely but not rare enough. Lexicon-constrained
decoding (the lexicon decoders of speech recognition, e.g. wav2letter's and Flashlight's
beam-search decoders) keeps each hypothesis's current word on a word list's prefixes.
Here the constraint is soft, so that a word missing from the list can still be written: a
hypothesis pays ``penalty`` once per word, at the token that takes its current word off
every word's prefixes, or at the word end (a word-end token or EOS) of a word that is a
prefix but not a word itself. Once off the list, the rest of that word is free.

:class:`Lexicon` holds the words as token-id tuples; :class:`LexiconState` is one
hypothesis's place in its current word. :class:`~qkv.generation.ngram.NGramScorer` adds
the penalties to the language model's scores when given a lexicon, so shallow fusion
weighs both together (``lm_weight * (log p_lm - penalties)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

#: A hypothesis's place in its current word: the word's tokens so far, and whether they
#: already left the lexicon (its penalty paid).
LexiconState = tuple[tuple[int, ...], bool]
#: The state at the start of a word.
WORD_START: LexiconState = ((), False)


class Lexicon:
    """A word list over token ids, with a penalty for leaving it.

    >>> lex = Lexicon([[7, 8], [7, 9, 9]], vocab_size=12, word_ends=[3, 2], penalty=5.0)
    >>> lex.penalties(WORD_START).tolist()[7], lex.penalties(WORD_START).tolist()[8]
    (0.0, -5.0)
    >>> lex.penalties(((7,), False)).tolist()[3]  # "7" alone is a prefix, not a word
    -5.0

    Args:
        words: each word's token ids (no word-end token in them); empty words are skipped.
        vocab_size: ``V`` of the scores.
        word_ends: the ids that end a word (the space, EOS).
        penalty: the log-probability (>= 0) a hypothesis pays once per word off the list.

    Raises:
        ValueError: no word, a negative or non-finite penalty, or an id outside
            ``0 .. V - 1``.
    """

    def __init__(
        self,
        words: Iterable[Sequence[int]],
        *,
        vocab_size: int,
        word_ends: Iterable[int],
        penalty: float,
    ) -> None:
        self.words = frozenset(tuple(int(i) for i in w) for w in words if len(w))
        if not self.words:
            raise ValueError("a lexicon needs at least one word")
        if not 0.0 <= penalty < float("inf"):
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        self.vocab_size, self.penalty = vocab_size, float(penalty)
        self.word_ends = tuple(sorted({int(i) for i in word_ends}))
        ids = {i for w in self.words for i in w} | set(self.word_ends)
        bad = sorted(i for i in ids if not 0 <= i < vocab_size)
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary of {vocab_size}")
        self._prefixes = frozenset(w[:n] for w in self.words for n in range(1, len(w) + 1))
        self._cache: dict[tuple[int, ...], Tensor] = {}
        self._free = torch.zeros(vocab_size)  # a paid word's (read only: callers stack it)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, tuple) and word in self.words

    def penalties(self, state: LexiconState) -> Tensor:
        """``(V,)`` float32: ``-penalty`` for each next token that costs it from ``state``,
        0 for the others (all 0 once the word left the list)."""
        prefix, off = state
        if off or self.penalty == 0.0:
            return self._free
        out = self._cache.get(prefix)
        if out is None:
            out = torch.full((self.vocab_size,), -self.penalty)
            for c in range(self.vocab_size):
                if (*prefix, c) in self._prefixes:
                    out[c] = 0.0
            end = 0.0 if not prefix or prefix in self.words else -self.penalty
            out[list(self.word_ends)] = end
            self._cache[prefix] = out
        return out

    def step(self, state: LexiconState, token: int) -> LexiconState:
        """The state after ``token``: a word end starts a new word; a token off the list
        marks the word as paid for."""
        if token in self.word_ends:
            return WORD_START
        prefix, off = state
        prefix = (*prefix, token)
        return prefix, off or prefix not in self._prefixes


__all__ = ["WORD_START", "Lexicon", "LexiconState"]
