"""Cached incremental decoding equals the full forward pass (max abs error <= 1e-5)."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.attn.kv_cache import CrossKVCache, KVCache

POS = ("learned", "sinusoidal", "rope", "alibi", "relative", "xl", "none")
TOL = {"atol": 1e-5, "rtol": 0.0}
LM_VARIANTS = (
    {},
    {"n_kv_heads": 2, "norm": "rms"},
    {"norm_placement": "post"},
)


@pytest.mark.parametrize("variant", LM_VARIANTS, ids=("gpt2", "gqa-rms", "post-norm"))
@pytest.mark.parametrize("pos", POS)
@torch.no_grad()
def test_lm_one_token_at_a_time(pos: str, variant: dict) -> None:
    model: M.DecoderLM = M.from_preset("gpt2-tiny", pos=pos, **variant).eval()  # type: ignore[assignment]
    ids = torch.randint(0, 128, (2, 12))
    full = model(ids)
    cache = model.make_cache(2, 16)
    assert len(cache) == 2 and all(isinstance(c, KVCache) for c in cache)
    steps = [model(ids[:, t : t + 1], cache=cache) for t in range(12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)
    assert M.cache_length(cache) == 12


@pytest.mark.parametrize("pos", POS)
@torch.no_grad()
def test_lm_prefill_then_steps_with_left_padding(pos: str) -> None:
    model: M.DecoderLM = M.from_preset("gpt2-tiny", pos=pos).eval()  # type: ignore[assignment]
    ids = torch.randint(1, 128, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, :3] = False  # row 1 is left-padded
    full = model(ids, padding_mask=mask)
    cache = model.make_cache(2, 10)
    out = [model(ids[:, :6], padding_mask=mask[:, :6], cache=cache)]
    for t in range(6, 10):
        out.append(model(ids[:, t : t + 1], padding_mask=mask[:, : t + 1], cache=cache))
    got = torch.cat(out, dim=1)
    torch.testing.assert_close(got[mask], full[mask], **TOL)


@pytest.mark.parametrize("pos", POS)
@torch.no_grad()
def test_seq2seq_one_token_at_a_time(pos: str) -> None:
    model: M.Seq2SeqTransformer = M.from_preset("transformer-tiny", pos=pos).eval()  # type: ignore[assignment]
    src, tgt = torch.randint(1, 128, (2, 9)), torch.randint(1, 128, (2, 7))
    src_padding_mask = torch.ones(2, 9, dtype=torch.bool)
    src_padding_mask[0, 6:] = False
    full = model(src, tgt, src_padding_mask=src_padding_mask)
    memory = model.encode(src, src_padding_mask)
    cache = model.make_cache(2, 8)
    assert all(isinstance(a, KVCache) and isinstance(c, CrossKVCache) for a, c in cache)
    steps = [
        model.decode(tgt[:, t : t + 1], memory, src_padding_mask=src_padding_mask, cache=cache)
        for t in range(7)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)
    assert all(c.is_set for _, c in cache)  # cross keys/values were projected once


@torch.no_grad()
def test_seq2seq_cache_with_target_padding_and_positions() -> None:
    model: M.Seq2SeqTransformer = M.from_preset("transformer-tiny", pos="learned").eval()  # type: ignore[assignment]
    src, tgt = torch.randint(1, 128, (2, 5)), torch.randint(1, 128, (2, 6))
    tgt_padding_mask = torch.ones(2, 6, dtype=torch.bool)
    tgt_padding_mask[1, 4:] = False
    full = model(src, tgt, tgt_padding_mask=tgt_padding_mask)
    memory = model.encode(src)
    cache = model.make_cache(2, 6)
    first = model.decode(tgt[:, :3], memory, tgt_padding_mask=tgt_padding_mask[:, :3], cache=cache)
    rest = [
        model.decode(
            tgt[:, t : t + 1],
            memory,
            tgt_padding_mask=tgt_padding_mask[:, : t + 1],
            cache=cache,
            positions=torch.tensor([t]),
        )
        for t in range(3, 6)
    ]
    got = torch.cat([first, *rest], dim=1)
    torch.testing.assert_close(got[tgt_padding_mask], full[tgt_padding_mask], **TOL)


def test_cache_errors() -> None:
    model: M.DecoderLM = M.from_preset("gpt2-tiny").eval()  # type: ignore[assignment]
    cache = model.make_cache(1, 4)
    with pytest.raises(ValueError, match="KVCache overflow"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cache has 1 entries but the decoder has 2 layers"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache[:1])


def test_make_cache_dtype_and_device() -> None:
    model: M.DecoderLM = M.from_preset("gpt2-tiny")  # type: ignore[assignment]
    c = model.make_cache(3, 5)[0]
    assert c.k.shape == (3, 4, 5, 8) and c.k.dtype == torch.float32
    assert model.make_cache(1, 2, dtype=torch.float64)[0].k.dtype == torch.float64
    gqa: M.DecoderLM = M.from_preset("gpt2-tiny", n_kv_heads=1)  # type: ignore[assignment]
    assert gqa.make_cache(1, 2)[0].k.shape == (1, 1, 2, 8)
