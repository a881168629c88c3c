"""An n-gram language model over token ids for shallow fusion in beam search.

Shallow fusion (Gulcehre et al. 2015; Kannan et al. 2018 for attention-based speech
recognition) adds an external language model's log-probability to each step's decoder
score, ``score(h c) = score(h) + log p_dec(c | h, x) + beta log p_lm(c | h)``, so that a
decoder which hears letters also knows which words they spell. The external model here is
an interpolated Kneser-Ney n-gram (Kneser & Ney 1995; Chen & Goodman 1998, eq. 17) over the
same token ids as the decoder, trained on text alone:

``p_n(w | h) = max(c(h w) - D_n, 0) / c(h) + D_n N1+(h .) / c(h) p_{n-1}(w | h')``

where ``h'`` drops the oldest token of ``h``; ``c`` counts the n-grams at the highest order
and their *continuations* (distinct left neighbours) at the lower ones; ``N1+(h .)`` is the
number of distinct tokens seen after ``h``; and each order's discount is Ney's estimate
``D_n = n1 / (n1 + 2 n2)`` from its count-of-counts. The unigram level interpolates with
the uniform distribution, so every token keeps a probability; an unseen context backs off
whole to the shorter one. Every sequence is read as ``[bos] * (order - 1) + ids + [eos]``,
so the model scores beginnings and ends of sentences too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from qkv.generation.lexicon import WORD_START, Lexicon, LexiconState


class NGramLM:
    """An interpolated Kneser-Ney n-gram model over token ids ``0 .. vocab_size - 1``.

    >>> lm = NGramLM([[5, 6, 7], [5, 6, 8]], vocab_size=10, order=3, bos_id=1, eos_id=2)
    >>> lm.log_probs((5, 6)).argmax().item() in (7, 8)
    True

    Args:
        sequences: the training token-id sequences (without BOS/EOS).
        vocab_size: ``V``; every id must be below it.
        order: ``n`` (>= 1): the model looks at the last ``n - 1`` tokens.
        bos_id: the id that pads the context before a sequence's first token.
        eos_id: the id predicted after its last token.

    Raises:
        ValueError: an order below 1, an empty training set, or an id outside the vocabulary.
    """

    def __init__(
        self,
        sequences: Iterable[Sequence[int]],
        *,
        vocab_size: int,
        order: int,
        bos_id: int,
        eos_id: int,
    ) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if not 0 <= bos_id < vocab_size or not 0 <= eos_id < vocab_size:
            raise ValueError(f"bos_id {bos_id} and eos_id {eos_id} must be below {vocab_size}")
        self.vocab_size, self.order, self.bos_id, self.eos_id = vocab_size, order, bos_id, eos_id
        # plain dicts of counts: a Counter per context costs a Python-level __init__, the
        # bulk of the build time at ~750k contexts (9-gram of ~14,500 sentences)
        top: dict[tuple[int, ...], dict[int, int]] = defaultdict(dict)
        for seq in sequences:
            ids = [int(i) for i in seq]
            bad = [i for i in ids if not 0 <= i < vocab_size]
            if bad:
                raise ValueError(f"token ids {bad[:5]} are outside the vocabulary of {vocab_size}")
            padded = [bos_id] * (order - 1) + ids + [eos_id]
            for t in range(order - 1, len(padded)):
                nxt = top[tuple(padded[t - order + 1 : t])]
                nxt[padded[t]] = nxt.get(padded[t], 0) + 1
        if not top:
            raise ValueError("the n-gram model needs at least one training sequence")
        # counts per order (index n - 1 holds contexts of n - 1 tokens): raw at the top,
        # continuation counts (distinct left neighbours) below it
        self._counts: list[dict[tuple[int, ...], dict[int, int]]] = [{} for _ in range(order)]
        self._counts[order - 1] = dict(top)
        for n in range(order - 1, 0, -1):
            lower: dict[tuple[int, ...], dict[int, int]] = defaultdict(dict)
            for h, nxt in self._counts[n].items():
                below = lower[h[1:]]
                for w in nxt:
                    below[w] = below.get(w, 0) + 1  # one more distinct left neighbour h[0]
            self._counts[n - 1] = dict(lower)
        self.discounts = [self._discount(c) for c in self._counts]
        self._cache: dict[tuple[int, ...], Tensor] = {}  # log p(. | h), float32
        self._pcache: dict[tuple[int, ...], Tensor] = {}  # p(. | h), float64

    @staticmethod
    def _discount(counts: dict[tuple[int, ...], dict[int, int]]) -> float:
        """Ney's ``D = n1 / (n1 + 2 n2)`` of one order (0.5 when it has no count of 1 or 2)."""
        hist = Counter(c for nxt in counts.values() for c in nxt.values())
        n1, n2 = hist[1], hist[2]
        return n1 / (n1 + 2 * n2) if n1 + n2 > 0 and n1 > 0 else 0.5

    def _probs(self, h: tuple[int, ...]) -> Tensor:
        """``p(. | h)`` as a ``(V,)`` float64 tensor, ``h`` at most ``order - 1`` tokens
        (cached: the shorter contexts are shared by many longer ones)."""
        out = self._pcache.get(h)
        if out is None:
            out = self._pcache[h] = self._interpolated(h)
        return out

    def _interpolated(self, h: tuple[int, ...]) -> Tensor:
        if not h:
            lower = torch.full((self.vocab_size,), 1.0 / self.vocab_size, dtype=torch.float64)
        else:
            lower = self._probs(h[1:])
        nxt = self._counts[len(h)].get(h)
        if nxt is None:  # an unseen context: the shorter one's distribution whole
            return lower
        d = self.discounts[len(h)]
        ids = torch.tensor(list(nxt.keys()), dtype=torch.long)
        counts = torch.tensor(list(nxt.values()), dtype=torch.float64)
        total = float(counts.sum())
        p = lower * (d * len(nxt) / total)
        p[ids] += (counts - d).clamp_min(0.0) / total
        return p

    def log_probs(self, context: Sequence[int]) -> Tensor:
        """``log p(. | context)``, ``(V,)`` float32: the context's last ``order - 1`` ids
        (padded with ``bos_id`` in front when shorter). Cached per context."""
        k = self.order - 1
        h = tuple(int(i) for i in context)[-k:] if k else ()
        h = (self.bos_id,) * (k - len(h)) + h
        out = self._cache.get(h)
        if out is None:
            out = self._cache[h] = self._probs(h).log().float()
        return out

    def score(self, ids: Sequence[int]) -> float:
        """The total log-probability of ``ids`` followed by ``eos_id``."""
        seq = [int(i) for i in ids]
        return sum(float(self.log_probs(seq[:t])[w]) for t, w in enumerate([*seq, self.eos_id]))


class NGramScorer:
    """The beams' contexts in :func:`~qkv.generation.beam.beam_search`, one row per beam:
    :meth:`scores` gives each row's ``log p_lm(. | h)``, :meth:`select` follows the search's
    reordering and appends the chosen tokens (as
    :class:`~qkv.generation.ctc.CTCPrefixScorer` does).

    With a ``lexicon`` (:class:`~qkv.generation.lexicon.Lexicon`), each row also keeps its
    place in its current word, and :meth:`scores` adds the lexicon's penalties to the
    log-probabilities: the fused language model is the n-gram and the word list together.
    """

    def __init__(
        self,
        lm: NGramLM,
        rows: int,
        device: torch.device | str | None = None,
        *,
        lexicon: Lexicon | None = None,
    ) -> None:
        if lexicon is not None and lexicon.vocab_size != lm.vocab_size:
            raise ValueError(
                f"the lexicon scores {lexicon.vocab_size} token ids, the n-gram {lm.vocab_size}"
            )
        self.lm, self.lexicon = lm, lexicon
        self.device = device
        self.contexts: list[tuple[int, ...]] = [()] * rows
        self.words: list[LexiconState] = [WORD_START] * rows

    def scores(self) -> Tensor:
        """``(rows, V)`` log-probabilities of the next token after each row's context
        (less the lexicon's penalties, with one)."""
        out = torch.stack([self.lm.log_probs(h) for h in self.contexts])
        if self.lexicon is not None:
            out = out + torch.stack([self.lexicon.penalties(w) for w in self.words])
        return out.to(self.device)

    def select(self, src: Tensor, tokens: Tensor) -> None:
        """Row ``i`` becomes row ``src[i]``'s context followed by ``tokens[i]``."""
        keep = self.lm.order - 1
        old, rows = self.contexts, list(zip(src.tolist(), tokens.tolist()))
        self.contexts = [(*old[s], t)[-keep:] if keep else () for s, t in rows]
        if self.lexicon is not None:
            words, step = self.words, self.lexicon.step
            self.words = [step(words[s], t) for s, t in rows]


__all__ = ["NGramLM", "NGramScorer"]
