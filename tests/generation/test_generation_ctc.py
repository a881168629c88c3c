"""Joint CTC/attention decoding: CTC prefix scores == brute force over alignments, the whole
transcript's score == torch's CTC loss, weight 0 == plain beam search, and the joint beam's
score == the recomputed (1 - w) log p_att + w log p_ctc of what it returns."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from _ctc_model import BLANK, BOS, EOS, features, whisper

import qkv.models as M
from qkv.generation import GenerationConfig, generate
from qkv.generation._stepper import Stepper
from qkv.generation.beam import beam_search, joint_scores
from qkv.generation.ctc import CTCPrefixScorer
from qkv.generation.generate import ctc_scorer


def _brute_prefix(log_probs: torch.Tensor, prefix: list[int]) -> float:
    """log of the summed probability of every path whose collapse starts with ``prefix``."""
    t, vocab = log_probs.shape
    terms = []
    for path in itertools.product(range(vocab), repeat=t):
        labels, prev = [], None
        for s in path:
            if s != prev and s != BLANK:
                labels.append(s)
            prev = s
        if labels[: len(prefix)] == prefix:
            terms.append(sum(float(log_probs[i, s]) for i, s in enumerate(path)))
    return float(torch.logsumexp(torch.tensor(terms), 0)) if terms else -math.inf


def _log_probs(n: int, t: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, vocab, generator=g).mul(1.5).log_softmax(-1)


@pytest.mark.parametrize("length", [5, 3])
def test_prefix_scores_equal_brute_force_step_by_step(length):
    """Extending a prefix label by label (a repeat among them), every candidate's
    psi(h + c) - psi(h) matches the brute-force sums over alignments of the first
    ``length`` positions (the rest padding), and EOS scores the whole transcript."""
    vocab, t = 4, 5
    lp = _log_probs(1, t, vocab)
    scorer = CTCPrefixScorer(lp, torch.tensor([length]), blank=BLANK, eos_id=EOS)
    real = lp[0, :length]
    prefix: list[int] = []
    for nxt in [3, 3, 1]:  # 3 3 needs a blank between: a different prefix from 3
        inc = scorer.scores(None)[0]
        psi_h = _brute_prefix(real, prefix)
        for c in range(vocab):
            if c == BLANK:
                assert inc[c] == -math.inf
            elif c == EOS:  # EOS is an ordinary label to the brute force: skip it there
                continue
            else:
                want = _brute_prefix(real, [*prefix, c]) - psi_h
                if math.isinf(want):
                    assert inc[c] == -math.inf
                else:
                    assert float(inc[c]) == pytest.approx(want, abs=1e-4)
        scorer.select(torch.tensor([0]), torch.tensor([nxt]))
        prefix.append(nxt)
    # EOS: log p_ctc(prefix | x), the negative of torch's CTC loss of the whole transcript
    inc = scorer.scores(None)[0]
    whole = -F.ctc_loss(real[:, None], torch.tensor([prefix]), torch.tensor([length]),
                        torch.tensor([len(prefix)]), blank=BLANK, reduction="sum")  # fmt: skip
    assert float(inc[EOS]) + float(scorer.psi[0]) == pytest.approx(float(whole), abs=1e-4)


def test_candidates_and_reorder_keep_rows_apart():
    """Scoring a subset of candidates gives the full scores' entries; rows with other
    lengths and histories, reordered and selected, score as each alone."""
    lp = _log_probs(2, 6, 5, seed=1)
    lengths = torch.tensor([6, 4])
    both = CTCPrefixScorer(lp, lengths, blank=BLANK, eos_id=EOS)
    both.reorder(torch.tensor([1, 0, 0]))
    full = both.scores(None)
    cand = torch.tensor([[4, 3], [3, 2], [2, 4]])
    torch.testing.assert_close(both.scores(cand), full.gather(1, cand))
    both.select(torch.tensor([0, 2]), torch.tensor([3, 4]))  # row 1 + [3], row 0 + [4]
    got = both.scores(None)
    for row, (i, tok) in enumerate([(1, 3), (0, 4)]):
        alone = CTCPrefixScorer(lp[i : i + 1], lengths[i : i + 1], blank=BLANK, eos_id=EOS)
        alone.scores(None)
        alone.select(torch.tensor([0]), torch.tensor([tok]))
        torch.testing.assert_close(got[row], alone.scores(None)[0])


def test_weight_zero_equals_plain_beam_search():
    model = whisper()
    src, mask = features()
    plain = generate(model, src, padding_mask=mask, strategy="beam", beam_size=3,
                     max_new_tokens=8)  # fmt: skip
    cfg = GenerationConfig(strategy="beam", beam_size=3, max_new_tokens=8, ctc_prefix_weight=0.5)
    with torch.inference_mode():
        stepper = Stepper(model, src, mask, 8, bos_id=BOS, use_cache=True, beams=3)
        toks, scores = beam_search(stepper, beam_size=3, max_new_tokens=8, eos_id=EOS,
                                   ctc=ctc_scorer(model, stepper, cfg), ctc_weight=0.0)  # fmt: skip
    assert toks == plain.tokens
    assert scores == pytest.approx(plain.scores, abs=1e-5)


@pytest.mark.parametrize(("weight", "beams"), [(0.3, 3), (0.7, 1), (1.0, 4)])
def test_joint_score_is_recomputed_from_both_heads(weight, beams):
    """The joint beam's score (no length penalty) equals (1 - w) log p_att(y + EOS) +
    w log p_ctc(y) of the transcript it returns; a padded batch decodes as each row alone."""
    model = whisper()
    src, mask = features()
    kw = {"strategy": "beam", "beam_size": beams, "max_new_tokens": 8, "length_penalty": 0.0,
          "ctc_prefix_weight": weight}  # fmt: skip
    out = generate(model, src, padding_mask=mask, **kw)
    with torch.no_grad():
        memory = model.encode(src, mask)
        ctc_lp = model.ctc_log_probs(memory)
        pos = model.source_mask(mask).sum(-1)
    for i, y in enumerate(out.tokens):
        n = int(mask[i].sum())
        alone = generate(model, src[i : i + 1, :n], **kw)
        assert alone.tokens[0] == y
        if len(y) == 8:  # ran to the budget without EOS: not a finished transcript
            continue
        with torch.no_grad():
            logits = model(src[i : i + 1, :n], torch.tensor([[BOS, *y]]))
        att = logits.log_softmax(-1)[0].gather(1, torch.tensor([*y, EOS])[:, None]).sum()
        ctc = -F.ctc_loss(ctc_lp[i, : int(pos[i])][:, None], torch.tensor([y]),
                          pos[i : i + 1], torch.tensor([len(y)]), blank=BLANK,
                          reduction="sum")  # fmt: skip
        want = (1 - weight) * float(att) + weight * float(ctc)
        assert out.scores[i] == pytest.approx(want, abs=1e-3)


def test_ctc_prefix_weight_needs_a_ctc_head_and_a_valid_value():
    src, mask = features()
    torch.manual_seed(0)
    plain = M.build(M.WhisperConfig(d_model=32, n_heads=4, d_ff=48, n_encoder_layers=1,
                                    n_decoder_layers=1, vocab_size=7, max_len=12,
                                    max_frames=64, pad_token_id=BLANK))  # fmt: skip
    with pytest.raises(ValueError, match="no CTC head"):
        generate(plain, src, padding_mask=mask, max_new_tokens=4, ctc_prefix_weight=0.3)
    lm = M.from_preset("gpt2-tiny", vocab_size=7)
    with pytest.raises(TypeError, match=r"ctc_prefix_weight \(0.3\) needs an encoder-decoder"):
        generate(lm, torch.tensor([[3, 4]]), max_new_tokens=4, ctc_prefix_weight=0.3)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"ctc_prefix_weight must be in \[0, 1\], got"):
            GenerationConfig(ctc_prefix_weight=bad)
    with pytest.raises(ValueError, match="not strategy='sample'"):
        GenerationConfig(ctc_prefix_weight=0.3, strategy="sample")


def test_pre_beam_scores_the_attention_top_tokens_only():
    """A vocabulary larger than ``pre_beam`` (BPE): each beam's ``pre_beam`` likeliest
    tokens under the attention decoder get the joint scores the whole vocabulary would
    give them; the others are dropped (-inf)."""
    lp = _log_probs(3, 6, 9, seed=4)
    logp = torch.randn(3, 9, generator=torch.Generator().manual_seed(6)).log_softmax(-1)
    lengths = torch.tensor([6, 5, 3])
    full = joint_scores(logp, CTCPrefixScorer(lp, lengths, blank=BLANK, eos_id=EOS), 0.4, 32)
    part = joint_scores(logp, CTCPrefixScorer(lp, lengths, blank=BLANK, eos_id=EOS), 0.4, 4)
    top = logp.topk(4, dim=-1).indices
    kept = torch.zeros_like(logp, dtype=torch.bool).scatter(1, top, True)
    torch.testing.assert_close(part[kept], full[kept])
    assert torch.isinf(part[~kept]).all()
