"""The lean one-token decoding step (qkv.models._lean) gives bit-identical logits to the
model call it replaces, and steps aside when it must (recorders, hooks, uncovered models)."""

from __future__ import annotations

import pytest
import torch

from qkv.generation import decode_one_token, generate, prefill
from qkv.interp import record_attention
from qkv.models import from_preset
from qkv.models._lean import DecodeStep

V = 37

#: LM variants the lean step covers: GPT-2 (pre-norm, learned), post-norm, gated FF with
#: RMSNorm and grouped-query heads, sinusoidal positions
LM_VARIANTS = {
    "gpt2": {},
    "post": {"norm_placement": "post"},
    "swiglu_rms_gqa": {"activation": "swiglu", "norm": "rms", "n_kv_heads": 2},
    "sinusoidal": {"pos": "sinusoidal"},
}


def _lm(**kw):
    torch.manual_seed(0)
    cfg = {"vocab_size": V, "dropout": 0.0, "attn_dropout": 0.0, "max_len": 48, **kw}
    return from_preset("gpt2-tiny", **cfg).eval()


def _s2s(**kw):
    torch.manual_seed(0)
    cfg = {"vocab_size": V, "dropout": 0.0, "attn_dropout": 0.0, "max_len": 48, **kw}
    return from_preset("transformer-tiny", **cfg).eval()


def _left_padded(b: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b, s)`` ids and mask, row ``i`` with ``i % 3`` pads on the left."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.bool)
    for i in range(b):
        mask[i, : i % 3] = False
    return ids.masked_fill(~mask, 0), mask


@pytest.mark.parametrize("variant", sorted(LM_VARIANTS))
@pytest.mark.parametrize("b", [1, 8])
def test_lm_lean_step_bit_identical_to_model_call(variant, b):
    model = _lm(**LM_VARIANTS[variant])
    ids, mask = _left_padded(b, 6)
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)  # (b, 6)
    steps = 5
    g = torch.Generator().manual_seed(2)
    new = torch.randint(3, V, (b, steps), generator=g)
    full_mask = torch.cat([mask, torch.ones(b, steps, dtype=torch.bool)], 1)
    new_pos = positions[:, -1:] + torch.arange(1, steps + 1)  # (b, steps)
    with torch.inference_mode():
        ref_cache, lean_cache = model.make_cache(b, 12), model.make_cache(b, 12)
        for cache in (ref_cache, lean_cache):
            prefill(model, ids, cache=cache, padding_mask=mask, positions=positions)
        step = model.make_decode_step(lean_cache, padding_mask=mask)
        assert isinstance(step, DecodeStep)
        for t in range(steps):
            m = full_mask[:, : 7 + t]
            ref = decode_one_token(
                model, new[:, t], cache=ref_cache, positions=new_pos[:, t], padding_mask=m
            )
            got = step(new[:, t : t + 1], new_pos[:, t : t + 1], m)
            assert torch.equal(got, ref), (t, (got - ref).abs().max())
        # the caches agree on every real token (the lean step zeroed the pads' entries)
        real = full_mask[:, None, :11, None]
        for r, c in zip(ref_cache, lean_cache):
            assert r.length == c.length == 11
            assert torch.equal(r.k[:, :, :11] * real, c.k[:, :, :11])
            assert torch.equal(r.v[:, :, :11] * real, c.v[:, :, :11])


@pytest.mark.parametrize("placement", ["post", "pre"])
@pytest.mark.parametrize("b", [1, 8])
def test_seq2seq_lean_step_bit_identical_to_decode(placement, b):
    model = _s2s(norm_placement=placement)
    src, src_mask = _left_padded(b, 7)
    src_mask = src_mask.flip(-1)  # right padding, as generate takes sources
    src = src.flip(-1)
    g = torch.Generator().manual_seed(3)
    tgt = torch.randint(3, V, (b, 6), generator=g)
    with torch.inference_mode():
        memory = model.encode(src, src_padding_mask=src_mask)
        ref_cache, lean_cache = model.make_cache(b, 6), model.make_cache(b, 6)
        for cache in (ref_cache, lean_cache):
            prefill(model, tgt[:, :1], cache=cache, memory=memory, src_padding_mask=src_mask)
        step = model.make_decode_step(lean_cache, src_padding_mask=src_mask)
        assert isinstance(step, DecodeStep)
        for t in range(1, 6):
            pos = torch.full((b,), t)
            ref = decode_one_token(
                model, tgt[:, t], cache=ref_cache, positions=pos, memory=memory,
                src_padding_mask=src_mask,
            )  # fmt: skip
            got = step(tgt[:, t : t + 1], pos[:, None])
            assert torch.equal(got, ref), (t, (got - ref).abs().max())


def _no_op_hook(module, args):
    return None


@pytest.mark.parametrize("family", ["lm", "seq2seq"])
@pytest.mark.parametrize("b", [1, 8])
def test_generate_lean_equals_module_path(family, b):
    """generate with the lean step == generate through the model calls (a forward hook
    turns the lean step off), tokens and every step's logits, with padding."""
    model = _lm() if family == "lm" else _s2s()
    ids, mask = _left_padded(b, 6)
    if family == "seq2seq":
        ids, mask = ids.flip(-1), mask.flip(-1)
    kw = {"max_new_tokens": 8, "padding_mask": mask, "return_logits": True}
    lean = generate(model, ids, **kw)
    handle = model.lm_head.register_forward_pre_hook(_no_op_hook)
    try:
        calls = []
        model.lm_head.register_forward_hook(lambda m, a, o: calls.append(o.shape[1]))
        slow = generate(model, ids, **kw)
    finally:
        handle.remove()
    assert calls == [ids.shape[1] if family == "lm" else 1] + [1] * 7  # every step a call
    assert lean.tokens == slow.tokens
    for a, c in zip(lean.logits, slow.logits, strict=True):
        assert torch.equal(a, c)


@pytest.mark.parametrize("family", ["lm", "seq2seq"])
def test_beam_search_lean_equals_module_path(family):
    """Beam search reorders the rows every step: the lean step's prepared tensors follow."""
    model = _lm() if family == "lm" else _s2s()
    ids, mask = _left_padded(3, 6)
    if family == "seq2seq":
        ids, mask = ids.flip(-1), mask.flip(-1)
    kw = {"max_new_tokens": 6, "padding_mask": mask, "strategy": "beam", "beam_size": 3}
    lean = generate(model, ids, **kw)
    handle = model.lm_head.register_forward_pre_hook(_no_op_hook)
    try:
        slow = generate(model, ids, **kw)
    finally:
        handle.remove()
    assert lean.tokens == slow.tokens
    assert lean.scores == slow.scores


def test_recording_sees_every_decode_step():
    """Inside record_attention the lean step stays off: every layer of every step is
    recorded, as without it."""
    model = _lm()
    ids = torch.randint(3, V, (2, 5))
    calls: list[tuple[int, ...]] = []
    with record_attention(model, on_entry=lambda e: calls.append(tuple(e.weights.shape))):
        generate(model, ids, max_new_tokens=4)
    n_layers = model.config.n_layers
    # the prefill, then 3 one-token steps, every layer
    assert calls[:n_layers] == [(2, 4, 5, 5)] * n_layers
    assert calls[n_layers:] == [(2, 4, 1, 5 + t) for t in (1, 2, 3) for _ in range(n_layers)]


def test_uncovered_models_get_no_lean_step():
    """RoPE, ALiBi, a sliding window, T5's relative bias and hooks: the model call."""
    for model in (_lm(pos="rope"), _lm(pos="alibi"), _lm(sliding_window=4)):
        cache = model.make_cache(1, 8)
        with torch.inference_mode():
            prefill(model, torch.tensor([[3, 4, 5]]), cache=cache)
        assert model.make_decode_step(cache) is None
    model = _lm()
    cache = model.make_cache(1, 8)
    with torch.inference_mode():
        prefill(model, torch.tensor([[3, 4, 5]]), cache=cache)
        assert model.make_decode_step(cache) is not None
        handle = model.decoder.layers[0].ff.register_forward_hook(lambda m, a, o: None)
        assert model.make_decode_step(cache) is None
        handle.remove()
        assert model.train().make_decode_step(cache) is None
