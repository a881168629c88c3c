"""Decoding: cached == uncached greedy, beam search == brute force, sampling filters."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from qkv.generation import filter_logits, generate, length_penalty
from qkv.generation._stepper import Stepper
from qkv.generation.beam import beam_search
from qkv.models import MemoryLimitError, from_preset

V = 13


def _lm(pos: str = "learned", vocab: int = V, **kw):
    torch.manual_seed(0)
    return from_preset(
        "gpt2-tiny", vocab_size=vocab, pos=pos, dropout=0.0, attn_dropout=0.0, **kw
    ).eval()


def _s2s(pos: str = "sinusoidal", vocab: int = V, **kw):
    torch.manual_seed(0)
    return from_preset(
        "transformer-tiny", vocab_size=vocab, pos=pos, dropout=0.0, attn_dropout=0.0, **kw
    ).eval()


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_lm_cached_greedy_equals_uncached_with_padding(pos):
    model = _lm(pos)
    inputs = torch.tensor([[5, 6, 7, 8, 9], [4, 3, 0, 0, 0], [7, 0, 0, 0, 0]])
    mask = inputs != 0
    a = generate(
        model, inputs, padding_mask=mask, max_new_tokens=12, eos_id=None, return_logits=True
    )
    b = generate(
        model,
        inputs,
        padding_mask=mask,
        max_new_tokens=12,
        eos_id=None,
        use_cache=False,
        return_logits=True,
    )
    assert a.tokens == b.tokens
    assert len(a.logits) == len(b.logits) == 12
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)
    # a padded row decodes exactly as it does alone
    alone = generate(model, inputs[1:2, :2], max_new_tokens=12, eos_id=None)
    assert alone.tokens[0] == a.tokens[1]


@pytest.mark.parametrize("pos", ["sinusoidal", "learned", "relative"])
def test_seq2seq_cached_greedy_equals_uncached(pos):
    model = _s2s(pos)
    src = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0]])
    mask = src != 0
    a = generate(model, src, padding_mask=mask, max_new_tokens=10, eos_id=None, return_logits=True)
    b = generate(
        model,
        src,
        padding_mask=mask,
        max_new_tokens=10,
        eos_id=None,
        use_cache=False,
        return_logits=True,
    )
    assert a.tokens == b.tokens
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)
    alone = generate(model, src[1:, :2], max_new_tokens=10, eos_id=None)
    assert alone.tokens[0] == a.tokens[1]


def test_greedy_matches_manual_argmax_loop():
    model = _lm()
    prompt = torch.tensor([[3, 4, 5]])
    out = generate(model, prompt, max_new_tokens=6, eos_id=None)
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(6):
            nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert out.tokens[0] == seq[0, 3:].tolist()


def test_greedy_stops_at_eos_and_excludes_it():
    model = _lm()
    prompt = torch.tensor([[3, 4, 5]])
    free = generate(model, prompt, max_new_tokens=8, eos_id=None).tokens[0]
    eos = free[2]
    stopped = generate(model, prompt, max_new_tokens=8, eos_id=eos).tokens[0]
    assert stopped == free[: free.index(eos)]


@pytest.mark.parametrize("model_fn", [_lm, _s2s], ids=["lm", "seq2seq"])
def test_greedy_dropping_finished_rows_gives_the_full_batch_tokens(model_fn, monkeypatch):
    """Greedy decoding drops rows that emitted EOS once half the batch has (Stepper.reorder
    of the caches); every row's tokens and score equal the full batch's (return_logits
    keeps every row) and its own EOS-free decoding cut at its first EOS."""
    model = model_fn(vocab=64)  # tiny models of 13 tokens repeat one token forever
    # the first prompt three times: it ends (at its EOS) with half the batch
    inputs = torch.tensor([[5, 6, 7, 8]] * 3 + [[4, 3, 0, 0], [7, 0, 0, 0], [9, 2, 6, 0]])
    mask = inputs != 0
    n = 12
    free = generate(model, inputs, padding_mask=mask, max_new_tokens=n, eos_id=None).tokens

    def finish_step(row: list[int], eos: int) -> int:
        return row.index(eos) if eos in row else n

    # an EOS that ends at least half the rows after their first step, before the last
    # ones, while another row decodes on
    eos = next(
        e
        for e in range(64)
        if 2 * sum(0 < finish_step(r, e) < n - 2 for r in free) >= len(free)
        and any(finish_step(r, e) == n for r in free)
    )
    reorders: list[int] = []
    reorder = Stepper.reorder

    def spy(self, index):
        reorders.append(len(index))
        reorder(self, index)

    monkeypatch.setattr(Stepper, "reorder", spy)
    out = generate(model, inputs, padding_mask=mask, max_new_tokens=n, eos_id=eos)
    assert reorders and reorders[0] <= 3  # finished rows left the batch
    full = generate(
        model, inputs, padding_mask=mask, max_new_tokens=n, eos_id=eos, return_logits=True
    )
    assert out.tokens == full.tokens == [r[: finish_step(r, eos)] for r in free]
    assert out.scores == pytest.approx(full.scores, abs=1e-5)
    assert out.ids.shape == full.ids.shape and torch.equal(out.ids, full.ids)


def _seq_logprob(model, src, seq, bos=1):
    """log P(seq | src) for a seq2seq model by one teacher-forced forward."""
    tgt_in = torch.tensor([[bos, *seq[:-1]]])
    with torch.no_grad():
        logp = model(src, tgt_in).log_softmax(-1)[0]
    return sum(logp[i, t].item() for i, t in enumerate(seq))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_with_vocab_size_beams_finds_brute_force_best(alpha):
    torch.manual_seed(1)
    vocab = 6
    model = from_preset("transformer-tiny", vocab_size=vocab, dropout=0.0, attn_dropout=0.0).eval()
    src = torch.tensor([[3, 4, 5]])
    eos, max_new = 2, 2
    # every hypothesis: ends in EOS at length 1..max_new, or runs to max_new without EOS
    best, best_seq = -math.inf, None
    for n in range(1, max_new + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if eos in seq[:-1] or (n < max_new and seq[-1] != eos):
                continue
            score = _seq_logprob(model, src, list(seq)) / length_penalty(n, alpha)
            if score > best:
                best, best_seq = score, list(seq)
    out = generate(
        model,
        src,
        strategy="beam",
        beam_size=vocab,
        length_penalty=alpha,
        max_new_tokens=max_new,
        eos_id=eos,
    )
    expect = best_seq[:-1] if best_seq[-1] == eos else best_seq
    assert out.tokens[0] == expect
    assert out.scores[0] == pytest.approx(best, abs=1e-4)


def test_beam_batched_equals_one_by_one_and_beam1_equals_greedy():
    model = _s2s()
    src = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0]])
    mask = src != 0
    both = generate(model, src, padding_mask=mask, strategy="beam", beam_size=3, max_new_tokens=8)
    for i in range(2):
        n = int(mask[i].sum())
        one = generate(model, src[i : i + 1, :n], strategy="beam", beam_size=3, max_new_tokens=8)
        assert one.tokens[0] == both.tokens[i]
        assert one.scores[0] == pytest.approx(both.scores[i], abs=1e-5)
    g = generate(model, src, padding_mask=mask, max_new_tokens=8)
    b1 = generate(
        model,
        src,
        padding_mask=mask,
        strategy="beam",
        beam_size=1,
        max_new_tokens=8,
        length_penalty=0.0,
    )
    assert g.tokens == b1.tokens


def test_sampling_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_logits(logits, top_k=2)
    assert torch.isinf(k2[0, 2:]).all() and torch.isfinite(k2[0, :2]).all()
    p = filter_logits(logits, top_p=0.8)  # 0.5 + 0.3 reaches 0.8: keep two
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    p = filter_logits(logits, top_p=0.81)
    assert torch.isfinite(p[0, :3]).all() and torch.isinf(p[0, 3])
    t = filter_logits(logits, temperature=0.5)
    torch.testing.assert_close(t, logits * 2)
    with pytest.raises(ValueError, match="top_p must be in \\(0, 1\\], got 1.5"):
        filter_logits(logits, top_p=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        filter_logits(logits, temperature=0)


def test_sampling_is_seeded_and_top_k1_is_greedy():
    model = _lm()
    prompt = torch.tensor([[3, 4, 5]])
    g1 = generate(
        model,
        prompt,
        strategy="sample",
        max_new_tokens=8,
        eos_id=None,
        generator=torch.Generator().manual_seed(3),
    )
    g2 = generate(
        model,
        prompt,
        strategy="sample",
        max_new_tokens=8,
        eos_id=None,
        generator=torch.Generator().manual_seed(3),
    )
    assert g1.tokens == g2.tokens
    k1 = generate(model, prompt, strategy="sample", top_k=1, max_new_tokens=8, eos_id=None)
    assert k1.tokens == generate(model, prompt, max_new_tokens=8, eos_id=None).tokens


def test_generate_errors():
    model = _lm()
    with pytest.raises(ValueError, match="strategy must be .*'nucleus'"):
        generate(model, torch.tensor([[1]]), strategy="nucleus")
    with pytest.raises(ValueError, match="inputs must be \\(b, s\\) integer ids"):
        generate(model, torch.randn(1, 3))
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, got 0"):
        generate(model, torch.tensor([[1]]), max_new_tokens=0)


class _ScriptedStepper:
    """A stepper whose every row gets ``probs[t]`` at step ``t`` (for beam_search)."""

    def __init__(self, probs: list[list[float]], rows: int) -> None:
        self.probs, self.batch_size, self.t = probs, rows, 0
        self.device = torch.device("cpu")

    def logits(self) -> torch.Tensor:
        return torch.tensor(self.probs[self.t]).log().expand(self.batch_size, -1)

    def reorder(self, index: torch.Tensor) -> None:
        pass

    def append(self, tokens: torch.Tensor) -> None:
        self.t += 1


def test_beam_finishes_only_an_eos_among_the_best_k_candidates():
    # tokens: 0 = EOS, 1 = a, 2 = b, 3 = c; two beams. Step 0 ranks a, b, then EOS (third:
    # outside the best two, so no hypothesis ends there, as in fairseq and transformers);
    # kept, the empty output's log 0.16 = -1.83 would beat the best two-token one, a a:
    # log 0.5 + log 0.3 = -1.90
    probs = [[0.16, 0.5, 0.34, 1e-6], [0.2, 0.3, 0.26, 0.24]]
    toks, scores = beam_search(
        _ScriptedStepper(probs, 2), beam_size=2, max_new_tokens=2, eos_id=0, alpha=0.0
    )
    assert toks == [[1, 1]]
    assert scores[0] == pytest.approx(math.log(0.5) + math.log(0.3), abs=1e-6)
    # an EOS that is among the best two does finish a hypothesis
    probs[0] = [0.4, 0.5, 0.1, 1e-6]
    toks, scores = beam_search(
        _ScriptedStepper(probs, 2), beam_size=2, max_new_tokens=2, eos_id=0, alpha=0.0
    )
    assert toks == [[]] and scores[0] == pytest.approx(math.log(0.4), abs=1e-6)


def test_a_beam_no_memory_holds_is_refused_before_the_source_is_copied(monkeypatch):
    """The cache's memory check comes first: 10^8 beams are refused without copying the
    encoder's output (or any buffer) 10^8 times."""
    copied, reorder = [], Stepper.reorder

    def spy(self, index):  # type: ignore[no-untyped-def]
        copied.append(len(index))
        reorder(self, index)

    monkeypatch.setattr(Stepper, "reorder", spy)
    model, src = _s2s(), torch.tensor([[5, 6, 7, 2]])
    with pytest.raises(MemoryLimitError, match="does not fit"):
        generate(model, src, max_new_tokens=8, strategy="beam", beam_size=10**8, bos_id=1)
    assert copied == []
    generate(model, src, max_new_tokens=2, strategy="beam", beam_size=3, bos_id=1)
    assert copied[0] == 3  # the same path copies a beam that fits
