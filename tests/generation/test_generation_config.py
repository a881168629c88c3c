"""GenerationConfig validation and merging, Generated tensors, model.generate, beam search
without EOS, and the position-capacity check."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from qkv.generation import Generated, GenerationConfig, generate, length_penalty
from qkv.generation.sampling import sample
from qkv.models import from_preset

V = 13


def _lm(pos: str = "learned", **kw):
    torch.manual_seed(0)
    return from_preset(
        "gpt2-tiny", vocab_size=V, pos=pos, dropout=0.0, attn_dropout=0.0, **kw
    ).eval()


def _s2s(pos: str = "sinusoidal", **kw):
    torch.manual_seed(0)
    return from_preset(
        "transformer-tiny", vocab_size=V, pos=pos, dropout=0.0, attn_dropout=0.0, **kw
    ).eval()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", math.nan, "temperature must be a finite number, got nan"),
        ("temperature", 0.0, "temperature must be > 0, got 0.0"),
        ("length_penalty", math.nan, "length_penalty must be a finite number, got nan"),
        ("length_penalty", math.inf, "length_penalty must be a finite number, got inf"),
        ("length_penalty", -0.5, "length_penalty must be >= 0, got -0.5"),
        ("top_k", 2.5, "top_k must be a positive int or None, got 2.5"),
        ("top_k", True, "top_k must be a positive int or None, got True"),
        ("top_k", 0, "top_k must be a positive int or None, got 0"),
        ("beam_size", 0, "beam_size must be a positive int, got 0"),
        ("top_p", 0.0, "top_p must be in \\(0, 1\\], got 0.0"),
        ("top_p", 1.5, "top_p must be in \\(0, 1\\], got 1.5"),
        ("top_p", math.nan, "top_p must be a finite number, got nan"),
        ("max_new_tokens", 0, "max_new_tokens must be a positive int, got 0"),
        ("max_new_tokens", 3.0, "max_new_tokens must be a positive int, got 3.0"),
        ("strategy", "nucleus", "strategy must be 'greedy', 'beam' or 'sample', got 'nucleus'"),
        ("eos_id", -1, "eos_id must be an int >= 0 or None, got -1"),
        ("pad_id", None, "pad_id must be an int >= 0, got None"),
        ("use_cache", 1, "use_cache must be a bool, got 1"),
        ("seed", 1.5, "seed must be an int >= 0 or None, got 1.5"),
    ],
)
def test_config_refuses_bad_values_naming_field_and_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**{field: value})
    with pytest.raises(ValueError, match=message):  # overrides are validated the same way
        GenerationConfig().merged(**{field: value})


def test_config_refuses_logits_with_beam_and_unknown_keywords():
    with pytest.raises(ValueError, match="beam search .* does not return them"):
        GenerationConfig(strategy="beam", return_logits=True)
    with pytest.raises(TypeError, match="unknown generation settings \\['beams', 'topk'\\]"):
        GenerationConfig().merged(beams=2, topk=3)


def test_config_json_round_trip_and_eos_none():
    cfg = GenerationConfig(strategy="sample", top_p=0.9, top_k=5, eos_id=None, seed=3)
    assert GenerationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert GenerationConfig(strategy="beam", eos_id=None).eos_id is None


def test_generate_with_config_equals_keywords_and_keywords_override():
    model = _lm()
    prompt = torch.tensor([[3, 4, 5], [6, 7, 0]])
    mask = prompt != 0
    cfg = GenerationConfig(strategy="beam", beam_size=3, max_new_tokens=6, eos_id=None)
    a = generate(model, prompt, cfg, padding_mask=mask)
    b = generate(
        model,
        prompt,
        padding_mask=mask,
        strategy="beam",
        beam_size=3,
        max_new_tokens=6,
        eos_id=None,
    )
    assert a.tokens == b.tokens and a.scores == b.scores
    c = generate(model, prompt, cfg, padding_mask=mask, max_new_tokens=2)
    assert [len(t) for t in c.tokens] == [2, 2]
    assert model.generate(prompt, cfg, padding_mask=mask).tokens == a.tokens
    with pytest.raises(TypeError, match="unknown generation settings \\['bogus'\\]"):
        generate(model, prompt, bogus=1)
    with pytest.raises(TypeError, match="config must be a GenerationConfig or None, got dict"):
        generate(model, prompt, {"max_new_tokens": 2})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k must be a positive int or None, got 2.5"):
        generate(model, prompt, strategy="sample", top_k=2.5)


def test_seeded_config_samples_reproducibly_and_refuses_a_generator_too():
    model = _lm()
    prompt = torch.tensor([[3, 4, 5]])
    cfg = GenerationConfig(strategy="sample", max_new_tokens=10, eos_id=None, seed=7)
    first = generate(model, prompt, cfg)
    torch.manual_seed(123)  # the global RNG does not matter
    assert generate(model, prompt, cfg).tokens == first.tokens
    g = torch.Generator().manual_seed(7)
    assert generate(model, prompt, cfg, seed=None, generator=g).tokens == first.tokens
    with pytest.raises(ValueError, match="give a generator or config.seed \\(7\\), not both"):
        generate(model, prompt, cfg, generator=torch.Generator())


def test_generated_ids_and_lengths_pad_the_token_lists():
    model = _s2s()
    src = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0], [3, 0, 0, 0]])
    free = generate(model, src, padding_mask=src != 0, max_new_tokens=8, eos_id=None)
    eos = free.tokens[0][2]  # an EOS some rows emit early
    for strategy in ("greedy", "beam"):
        out = model.generate(
            src, padding_mask=src != 0, max_new_tokens=8, eos_id=eos, pad_id=11, strategy=strategy
        )
        n = max(len(t) for t in out.tokens)
        assert out.ids.shape == (3, n) and out.ids.dtype == torch.long
        assert out.lengths.tolist() == [len(t) for t in out.tokens]
        for row, toks in zip(out.ids.tolist(), out.tokens):
            assert row == toks + [11] * (n - len(toks))
        if strategy == "greedy":
            assert out.tokens[0] == free.tokens[0][: free.tokens[0].index(eos)]
    fake = Generated([[1, 2], []], [0.0, 0.0])  # defaults: pad 0, CPU
    assert fake.ids.tolist() == [[1, 2], [0, 0]] and fake.lengths.tolist() == [2, 0]
    assert Generated([[], []], [0.0, 0.0]).ids.shape == (2, 0)


def test_encoder_and_vit_do_not_generate():
    assert not hasattr(from_preset("bert-tiny"), "generate")
    assert not hasattr(from_preset("vit-tiny"), "generate")
    with pytest.raises(TypeError, match="generate needs a model with make_cache"):
        generate(from_preset("bert-tiny"), torch.tensor([[3, 4]]))  # type: ignore[arg-type]


def _lm_logprob(model, prompt, seq):
    with torch.no_grad():
        logp = model(torch.tensor([prompt + seq[:-1]])).log_softmax(-1)[0]
    return sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(seq))


def test_beam_without_eos_runs_to_the_budget_and_finds_the_best_sequence():
    vocab, prompt, max_new = 6, [3, 4, 5], 3
    torch.manual_seed(1)
    model = from_preset("gpt2-tiny", vocab_size=vocab, dropout=0.0, attn_dropout=0.0).eval()
    best = max(
        itertools.product(range(vocab), repeat=max_new),
        key=lambda seq: _lm_logprob(model, prompt, list(seq)),
    )
    # vocab ** 2 beams see every prefix of length 2, so they keep the best sequence
    out = generate(
        model,
        torch.tensor([prompt, prompt]),
        strategy="beam",
        beam_size=vocab**2,
        max_new_tokens=max_new,
        eos_id=None,
    )
    assert out.tokens == [list(best)] * 2
    expect = _lm_logprob(model, prompt, list(best)) / length_penalty(max_new, 0.6)
    assert out.scores[0] == pytest.approx(expect, abs=1e-4)
    small = generate(model, torch.tensor([prompt]), strategy="beam", max_new_tokens=5, eos_id=None)
    assert len(small.tokens[0]) == 5 and small.lengths.tolist() == [5]


def test_learned_positions_decode_up_to_max_len_and_not_past_it():
    model = _lm("learned", max_len=8)
    prompt = torch.tensor([[3, 4, 5, 6, 7], [3, 4, 0, 0, 0]])
    mask = prompt != 0
    for use_cache in (True, False):  # 5 + 4 - 1 = 8 positions: exactly the table
        out = generate(
            model, prompt, padding_mask=mask, max_new_tokens=4, eos_id=None, use_cache=use_cache
        )
        assert [len(t) for t in out.tokens] == [4, 4]
    msg = (
        "prompt \\(5 tokens\\) \\+ max_new_tokens \\(5\\) needs 9 positions .* learned positions "
        "stop at max_len \\(8\\); lower max_new_tokens to at most 4"
    )
    with pytest.raises(ValueError, match=msg):
        generate(model, prompt, padding_mask=mask, max_new_tokens=5)
    # the longest *real* prompt counts: padding does not use positions
    short = generate(model, prompt[1:], padding_mask=mask[1:], max_new_tokens=7, eos_id=None)
    assert short.lengths.tolist() == [7]
    with pytest.raises(ValueError, match="the prompt has 9 tokens, but the model's learned"):
        generate(model, torch.ones(1, 9, dtype=torch.long), max_new_tokens=1)


@pytest.mark.parametrize("pos", ["rope", "alibi", "none"])
def test_positions_without_a_table_have_no_limit(pos):
    model = _lm(pos, max_len=8)
    out = generate(model, torch.tensor([[3, 4, 5, 6, 7]]), max_new_tokens=10, eos_id=None)
    assert len(out.tokens[0]) == 10


def test_seq2seq_capacity_counts_source_and_target_separately():
    model = _s2s("sinusoidal", max_len=6)
    src = torch.tensor([[3, 4, 5, 6, 7, 8]])
    assert len(generate(model, src, max_new_tokens=6, eos_id=None).tokens[0]) == 6
    with pytest.raises(ValueError, match="max_new_tokens \\(7\\) needs decoder positions up to 6"):
        generate(model, src, max_new_tokens=7)
    with pytest.raises(ValueError, match="the source has 7 tokens, but .* max_len \\(6\\)"):
        generate(model, torch.ones(1, 7, dtype=torch.long), max_new_tokens=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_samples_the_same_tokens_from_gpu_logits():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    cpu = sample(logits, torch.Generator().manual_seed(0), top_p=0.9)
    gpu = sample(logits.cuda(), torch.Generator().manual_seed(0), top_p=0.9)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
