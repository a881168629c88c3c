"""Shallow fusion with an n-gram language model: the interpolated Kneser-Ney probabilities
against a hand computation, every context a distribution, and the fused beam's score ==
the recomputed log p_dec(y + EOS) + beta log p_lm(y + EOS) of what it returns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _ctc_model import BLANK, BOS, EOS, features, whisper

from qkv.generation import GenerationConfig, Lexicon, NGramLM, NGramScorer, generate
from qkv.generation.lexicon import WORD_START


def _hand_lm() -> NGramLM:
    # padded: [1 3 4 2], [1 3 5 2], [1 4 2]
    return NGramLM([[3, 4], [3, 5], [4]], vocab_size=6, order=2, bos_id=BOS, eos_id=EOS)


def test_kneser_ney_probabilities_match_a_hand_computation():
    """Bigram counts (1)->3:2 4:1, (3)->4:1 5:1, (4)->2:2, (5)->2:1: n1 = 4, n2 = 2, so
    D2 = 4 / (4 + 4) = 1/2. Continuations (distinct left neighbours) 3:1 4:2 5:1 2:2:
    n1 = n2 = 2, D1 = 2 / 6 = 1/3, and p1(w) = max(N(w) - 1/3, 0) / 6 + (1/3)(4/6)(1/6)."""
    lm = _hand_lm()
    assert lm.discounts == pytest.approx([1 / 3, 1 / 2])
    p1 = {0: 1 / 27, 1: 1 / 27, 2: 17 / 54, 3: 4 / 27, 4: 17 / 54, 5: 4 / 27}
    # p2(w | h) = max(c - 1/2, 0) / c(h) + (1/2) N1+(h .) / c(h) p1(w)
    want = {
        (3, 4): 0.5 / 2 + 0.5 * 2 / 2 * p1[4],  # 11/27
        (3, 5): 0.5 / 2 + 0.5 * 2 / 2 * p1[5],
        (4, 2): 1.5 / 2 + 0.5 * 1 / 2 * p1[2],  # 179/216
        (BOS, 3): 1.5 / 3 + 0.5 * 2 / 3 * p1[3],
        (BOS, 4): 0.5 / 3 + 0.5 * 2 / 3 * p1[4],
        (BOS, 5): 0.5 * 2 / 3 * p1[5],  # seen after 3, never after BOS
    }
    assert want[(3, 4)] == pytest.approx(11 / 27) and want[(4, 2)] == pytest.approx(179 / 216)
    for (h, w), p in want.items():
        assert lm.log_probs([h]).exp()[w].item() == pytest.approx(p, rel=1e-6), (h, w)
    # an unseen context (0) backs off whole to the unigram level
    got = lm.log_probs([0]).exp()
    assert got.tolist() == pytest.approx([p1[i] for i in range(6)], rel=1e-6)
    # the empty context is the start of a sentence
    assert torch.equal(lm.log_probs([]), lm.log_probs([BOS]))
    # a sentence's score: p(3 | BOS) p(4 | 3) p(EOS | 4)
    assert lm.score([3, 4]) == pytest.approx(
        math.log(want[(BOS, 3)] * want[(3, 4)] * want[(4, 2)]), rel=1e-6
    )


def test_every_context_is_a_distribution():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 9, (int(n),), generator=g).tolist()
            for n in torch.randint(1, 12, (40,), generator=g)]  # fmt: skip
    lm = NGramLM(seqs, vocab_size=10, order=4, bos_id=BOS, eos_id=EOS)
    contexts = [[], [3], [3, 4], [5, 6, 7], [0, 0, 0], [9, 9], seqs[0], seqs[1][:2]]
    for h in contexts:
        p = lm.log_probs(h).exp()
        assert p.sum().item() == pytest.approx(1.0, abs=1e-6), h
        assert (p > 0).all(), h  # the uniform floor: every token keeps a probability
    # the order-1 model is the unigram level alone: the same for every context
    uni = NGramLM(seqs, vocab_size=10, order=1, bos_id=BOS, eos_id=EOS)
    assert torch.equal(uni.log_probs([3]), uni.log_probs([4, 5]))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="order must be >= 1, got 0"):
        NGramLM([[3]], vocab_size=5, order=0, bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match=r"token ids \[7\] are outside the vocabulary of 5"):
        NGramLM([[3, 7]], vocab_size=5, order=2, bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match="at least one training sequence"):
        NGramLM([], vocab_size=5, order=2, bos_id=BOS, eos_id=EOS)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="lm_weight"):
            GenerationConfig(lm_weight=bad)
    with pytest.raises(ValueError, match="not strategy='sample'"):
        GenerationConfig(lm_weight=0.3, strategy="sample")


def test_the_scorer_follows_the_beams():
    lm = _hand_lm()
    scorer = NGramScorer(lm, rows=3)
    torch.testing.assert_close(scorer.scores(), lm.log_probs([]).expand(3, -1))
    scorer.select(torch.tensor([0, 0, 2]), torch.tensor([3, 4, 5]))
    scorer.select(torch.tensor([2, 0, 1]), torch.tensor([4, 5, 2]))
    assert scorer.contexts == [(4,), (5,), (2,)]  # order 2 keeps the last token
    torch.testing.assert_close(scorer.scores()[0], lm.log_probs([5, 4]))


def _lm() -> NGramLM:
    return NGramLM([[3, 4, 5], [3, 4, 6], [6, 5]] * 3, vocab_size=7, order=3, bos_id=BOS,
                   eos_id=EOS)  # fmt: skip


def test_weight_zero_equals_plain_beam_search():
    model = whisper()
    src, mask = features()
    kw = {"strategy": "beam", "beam_size": 3, "max_new_tokens": 8}
    plain = generate(model, src, padding_mask=mask, **kw)
    fused = generate(model, src, padding_mask=mask, lm=_lm(), lm_weight=0.0, **kw)
    assert fused.tokens == plain.tokens and fused.scores == pytest.approx(plain.scores)


@pytest.mark.parametrize(("weight", "beams", "ctc"), [(0.4, 3, 0.0), (1.0, 1, 0.0), (0.5, 2, 0.5)])
def test_fused_score_is_recomputed_from_the_decoder_and_the_lm(weight, beams, ctc):
    """The fused beam's score (no length penalty) equals ``(1 - w) log p_dec(y + EOS) +
    w log p_ctc(y) + beta log p_lm(y + EOS)`` of the transcript it returns; a padded batch
    decodes as each row alone; greedy with an lm is beam search with one beam."""
    model, lm = whisper(), _lm()
    src, mask = features()
    kw = {"strategy": "beam", "beam_size": beams, "max_new_tokens": 8, "length_penalty": 0.0,
          "ctc_prefix_weight": ctc}  # fmt: skip
    out = generate(model, src, padding_mask=mask, lm=lm, lm_weight=weight, **kw)
    if beams == 1:
        greedy = generate(model, src, padding_mask=mask, lm=lm, lm_weight=weight,
                          **{**kw, "strategy": "greedy"})  # fmt: skip
        assert greedy.tokens == out.tokens
    with torch.no_grad():
        ctc_lp = model.ctc_log_probs(model.encode(src, mask))
        pos = model.source_mask(mask).sum(-1)
    finished = 0
    for i, y in enumerate(out.tokens):
        n = int(mask[i].sum())
        alone = generate(model, src[i : i + 1, :n], lm=lm, lm_weight=weight, **kw)
        assert alone.tokens[0] == y
        if len(y) == 8:  # ran to the budget without EOS: not a finished transcript
            continue
        finished += 1
        with torch.no_grad():
            logits = model(src[i : i + 1, :n], torch.tensor([[BOS, *y]]))
        dec = float(logits.log_softmax(-1)[0].gather(1, torch.tensor([*y, EOS])[:, None]).sum())
        p_ctc = -F.ctc_loss(ctc_lp[i, : int(pos[i])][:, None], torch.tensor([y]),
                            pos[i : i + 1], torch.tensor([len(y)]), blank=BLANK,
                            reduction="sum")  # fmt: skip
        want = (1 - ctc) * dec + (ctc * float(p_ctc) if ctc else 0.0) + weight * lm.score(y)
        assert out.scores[i] == pytest.approx(want, abs=1e-3)
    assert finished  # the check above ran


def test_a_confident_lm_steers_the_output():
    """With a large weight the output is the LM's sentence: the untrained decoder hears
    nothing, the n-gram knows 3 4 5 and nothing else."""
    model = whisper()
    src, mask = features()
    lm = NGramLM([[3, 4, 5]] * 5, vocab_size=7, order=3, bos_id=BOS, eos_id=EOS)
    out = generate(model, src, padding_mask=mask, strategy="beam", beam_size=2,
                   max_new_tokens=8, lm=lm, lm_weight=20.0)  # fmt: skip
    assert out.tokens == [[3, 4, 5], [3, 4, 5]]
    plain = generate(model, src, padding_mask=mask, strategy="beam", beam_size=2,
                     max_new_tokens=8)  # fmt: skip
    assert plain.tokens != out.tokens  # the decoder alone says something else


# the lexicon tests: id 3 is the space, words are spelled with 4, 5 and 6
SPACE = 3


def _lexicon(penalty: float = 2.0) -> Lexicon:
    return Lexicon([[4, 5], [4, 5, 6], [6]], vocab_size=7, word_ends=[SPACE, EOS],
                   penalty=penalty)  # fmt: skip


def test_the_lexicon_charges_a_word_off_the_list_once():
    lex, p = _lexicon(), -2.0
    # ids:                             blank bos  eos  space  4    5    6
    assert lex.penalties(WORD_START).tolist() == [p, p, 0.0, 0.0, 0.0, p, 0.0]
    four = lex.step(WORD_START, 4)
    assert four == ((4,), False)  # a prefix of "4 5", not a word: ending here costs
    assert lex.penalties(four).tolist() == [p, p, p, p, p, 0.0, p]
    four_five = lex.step(four, 5)
    assert lex.penalties(four_five).tolist() == [p, p, 0.0, 0.0, p, p, 0.0]
    off = lex.step(four, 4)  # "4 4": off the list, paid for at this token
    assert off == ((4, 4), True) and lex.penalties(off).tolist() == [0.0] * 7
    assert lex.penalties(lex.step(off, 6)).tolist() == [0.0] * 7  # the rest of it is free
    assert lex.step(off, SPACE) == lex.step(four_five, EOS) == WORD_START
    assert (4, 5) in lex and (4,) not in lex and len(lex) == 3
    with pytest.raises(ValueError, match="outside the vocabulary of 7"):
        Lexicon([[4, 9]], vocab_size=7, word_ends=[SPACE], penalty=1.0)
    with pytest.raises(ValueError, match="penalty must be a finite number >= 0"):
        _lexicon(float("inf"))
    with pytest.raises(ValueError, match="at least one word"):
        Lexicon([[]], vocab_size=7, word_ends=[SPACE], penalty=1.0)


def test_the_scorer_adds_the_lexicon_to_the_lm_and_follows_the_beams():
    lm, lex = _lm(), _lexicon()
    scorer = NGramScorer(lm, rows=2, lexicon=lex)
    torch.testing.assert_close(scorer.scores(), (lm.log_probs([]) + lex.penalties(WORD_START))
                               .expand(2, -1))  # fmt: skip
    scorer.select(torch.tensor([0, 0]), torch.tensor([4, 6]))
    scorer.select(torch.tensor([1, 0]), torch.tensor([SPACE, 4]))  # the rows swap
    assert scorer.words == [WORD_START, ((4, 4), True)]
    start = lm.log_probs([6, SPACE]) + lex.penalties(WORD_START)
    torch.testing.assert_close(scorer.scores()[0], start)
    torch.testing.assert_close(scorer.scores()[1], lm.log_probs([4, 4]))  # paid: no penalty
    with pytest.raises(ValueError, match="the lexicon scores 9 token ids, the n-gram 7"):
        NGramScorer(lm, rows=1, lexicon=Lexicon([[4]], vocab_size=9, word_ends=[3], penalty=1))


def _words(tokens: list[int]) -> list[tuple[int, ...]]:
    """The words of a hypothesis, split at the space."""
    words: list[list[int]] = [[]]
    for t in tokens:
        words.append([]) if t == SPACE else words[-1].append(t)
    return [tuple(w) for w in words if w]


def test_a_heavy_lexicon_keeps_every_word_on_the_list():
    """An n-gram that prefers "4 4" (off the list) to "4 5" says it when it steers; with a
    penalty no score outweighs, the beam says words of the list only, and pays nothing; with penalty 0 the lexicon changes nothing."""
    model, src, mask = whisper(), *features()
    lm = NGramLM([[4, 4, SPACE, 6]] * 3 + [[4, 5, SPACE, 6]], vocab_size=7, order=3,
                 bos_id=BOS, eos_id=EOS)  # fmt: skip
    kw = {"strategy": "beam", "beam_size": 3, "max_new_tokens": 10, "lm": lm,
          "lm_weight": 5.0, "padding_mask": mask}  # fmt: skip
    plain = generate(model, src, **kw)
    assert plain.tokens == [[4, 4, SPACE, 6]] * 2
    heavy = generate(model, src, lexicon=_lexicon(1e4), **kw)
    assert heavy.tokens != plain.tokens and min(heavy.scores) > -1e3
    assert all(w in _lexicon() for y in heavy.tokens for w in _words(y))
    free = generate(model, src, lexicon=_lexicon(0.0), **kw)
    assert free.tokens == plain.tokens and free.scores == pytest.approx(plain.scores)
    with pytest.raises(ValueError, match="a lexicon is fused with a language model"):
        generate(model, src, padding_mask=mask, lexicon=_lexicon(), strategy="beam")
