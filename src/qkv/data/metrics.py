"""Evaluation metrics: BLEU and chrF (sacrebleu), exact match, accuracy, perplexity, bpc.

Percentages (``bleu``, ``chrf``, ``exact_match``, ``accuracy``) are on a 0-100 scale so every
"higher is better" score in qkv's logs reads the same way.

References may be one string per hypothesis, or a list of alternative references per
hypothesis (the lists may differ in length): BLEU and chrF use them as multiple references,
exact match accepts any of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _ref_lists(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> list[list[str]]:
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} references")
    if len(hyps) == 0:
        raise ValueError("no hypotheses to score")
    out = []
    for i, r in enumerate(refs):
        rs = [r] if isinstance(r, str) else list(r)
        if not rs:
            raise ValueError(f"hypothesis {i} has an empty list of references")
        out.append(rs)
    return out


def _streams(ref_lists: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference slot; ``None`` fills missing slots."""
    k = max(len(r) for r in ref_lists)
    return [[r[j] if j < len(r) else None for r in ref_lists] for j in range(k)]


def bleu(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU (Papineni et al., 2002) with sacrebleu's defaults (13a tokenization,
    exponential smoothing), 0-100.

    Args:
        hyps: detokenized hypotheses.
        refs: one reference (or a list of references) per hypothesis.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    import sacrebleu

    ref_lists = _ref_lists(hyps, refs)
    return float(sacrebleu.corpus_bleu(list(hyps), _streams(ref_lists)).score)


def chrf(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus chrF (Popović, 2015; character 6-grams, beta 2) via sacrebleu, 0-100.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    import sacrebleu

    ref_lists = _ref_lists(hyps, refs)
    return float(sacrebleu.corpus_chrf(list(hyps), _streams(ref_lists)).score)


def exact_match(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Percentage of hypotheses equal to (one of) their reference(s) after stripping
    surrounding whitespace, 0-100.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    ref_lists = _ref_lists(hyps, refs)
    hits = sum(h.strip() in {r.strip() for r in rs} for h, rs in zip(hyps, ref_lists))
    return 100.0 * hits / len(hyps)


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Percentage of predictions equal to their labels, 0-100.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no predictions to score")
    return 100.0 * sum(int(p) == int(y) for p, y in zip(predictions, labels)) / len(labels)


def perplexity(loss_nats: float) -> float:
    """Perplexity ``exp(loss)`` of a mean per-token cross entropy in nats (inf on overflow)."""
    try:
        return math.exp(loss_nats)
    except OverflowError:
        return math.inf


def bits_per_char(total_nats: float, n_chars: int) -> float:
    """Bits per character: ``total_nats / (n_chars * ln 2)``.

    Args:
        total_nats: summed negative log likelihood of a text, in nats.
        n_chars: number of characters of that text.

    Raises:
        ValueError: ``n_chars`` is not positive.
    """
    if n_chars <= 0:
        raise ValueError(f"n_chars must be positive, got {n_chars}")
    return total_nats / (n_chars * math.log(2))


__all__ = ["accuracy", "bits_per_char", "bleu", "chrf", "exact_match", "perplexity"]
