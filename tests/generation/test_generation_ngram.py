"""Shallow fusion with an n-gram language model: the interpolated Kneser-Ney probabilities
against a hand computation, every context a distribution, and the fused beam's score ==
the recomputed log p_dec(y + EOS) + beta log p_lm(y + EOS) of what it returns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _ctc_model import BLANK, BOS, EOS, features, whisper

from qkv.generation import GenerationConfig, NGramLM, NGramScorer, generate


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
