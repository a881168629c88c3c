"""Metrics against sacrebleu itself and hand-computed values."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from qkv.data.metrics import accuracy, bits_per_char, bleu, chrf, exact_match, perplexity

HYPS = ["the cat sat on the mat .", "a dog barks loudly", "hello world"]
REFS = ["the cat sat on a mat .", "the dog barks loudly", "hello there world"]


def test_bleu_and_chrf_match_sacrebleu() -> None:
    assert bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)


def test_multiple_references_of_varying_number() -> None:
    refs = [
        ["the cat sat on a mat .", "the cat sat on the mat ."],
        ["the dog barks loudly"],
        REFS[2],
    ]
    streams = [[r[0] for r in refs[:2]] + [REFS[2]], [refs[0][1], None, None]]
    assert bleu(HYPS, refs) == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score)
    assert chrf(HYPS, refs) == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
    assert bleu(HYPS, refs) > bleu(HYPS, REFS)  # the second reference matches hyp 0 exactly


def test_perfect_and_disjoint_scores() -> None:
    assert bleu(REFS, REFS) == pytest.approx(100.0)
    assert chrf(REFS, REFS) == pytest.approx(100.0)
    assert bleu(["xyz qqq"], ["abc def"]) == pytest.approx(0.0)


def test_exact_match_by_hand() -> None:
    assert exact_match(["a b", " c ", "d"], ["a b", "c", "e"]) == pytest.approx(200 / 3)
    assert exact_match(["x"], [["y", "x"]]) == 100.0


def test_accuracy_perplexity_bpc_by_hand() -> None:
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 75.0
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e6) == math.inf
    # 10 characters, each with probability 1/4: 2 bits per character
    assert bits_per_char(10 * math.log(4.0), 10) == pytest.approx(2.0)


def test_errors_name_the_sizes() -> None:
    with pytest.raises(ValueError, match="got 2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no hypotheses"):
        chrf([], [])
    with pytest.raises(ValueError, match="hypothesis 0 has an empty list"):
        exact_match(["a"], [[]])
    with pytest.raises(ValueError, match="got 1 predictions but 2 labels"):
        accuracy([1], [1, 2])
    with pytest.raises(ValueError, match="n_chars must be positive, got 0"):
        bits_per_char(1.0, 0)
