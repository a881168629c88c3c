"""prefill + decode_one_token with a KV cache == the uncached forward, for both families."""

from __future__ import annotations

import pytest
import torch

from qkv.generation import decode_one_token, prefill
from qkv.models import from_preset

V = 13


def _lm(pos: str):
    torch.manual_seed(0)
    return from_preset(
        "gpt2-tiny", vocab_size=V, pos=pos, dropout=0.0, attn_dropout=0.0, max_len=32
    ).eval()


def _s2s(pos: str):
    torch.manual_seed(0)
    return from_preset(
        "transformer-tiny", vocab_size=V, pos=pos, dropout=0.0, attn_dropout=0.0, max_len=32
    ).eval()


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi", "relative", "none"])
def test_lm_prefill_then_decode_one_token_equals_uncached_forward(pos):
    model = _lm(pos)
    seq = torch.randint(3, V, (2, 9))
    n_prompt = 4
    with torch.no_grad():
        ref = model(seq)  # (b, 9, V)
        cache = model.make_cache(2, 9)
        got = [prefill(model, seq[:, :n_prompt], cache=cache)]  # (b, 4, V)
        for t in range(n_prompt, 9):
            got.append(decode_one_token(model, seq[:, t], cache=cache)[:, None])  # (b, 1, V)
    torch.testing.assert_close(torch.cat(got, 1), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_lm_left_padded_prompt_with_masks_and_positions(pos):
    """Left padding, a growing padding_mask and explicit per-row positions (what the
    generate loop passes) give each row its logits alone."""
    model = _lm(pos)
    seq = torch.randint(3, V, (2, 8))
    seq[1, :3] = 0  # row 1: 3 pads, then 5 real tokens
    mask = seq != 0
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)  # (b, 8)
    with torch.no_grad():
        cache = model.make_cache(2, 8)
        got = [prefill(model, seq[:, :5], cache=cache, padding_mask=mask[:, :5])]
        for t in range(5, 8):
            step = decode_one_token(
                model,
                seq[:, t],
                cache=cache,
                positions=positions[:, t],
                padding_mask=mask[:, : t + 1],
            )
            got.append(step[:, None])
        got_all = torch.cat(got, 1)  # (b, 8, V)
        alone = model(seq[1:, 3:])  # (1, 5, V): row 1 without its padding
        ref = model(seq, padding_mask=mask)
    torch.testing.assert_close(got_all[:, 3:], ref[:, 3:], atol=1e-5, rtol=0)
    torch.testing.assert_close(got_all[1, 3:], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pos", ["sinusoidal", "learned", "relative", "rope"])
def test_seq2seq_prefill_then_decode_one_token_equals_uncached_forward(pos):
    model = _s2s(pos)
    src = torch.randint(3, V, (2, 6))
    src_mask = torch.ones(2, 6, dtype=torch.bool)
    src_mask[1, 4:] = False
    tgt = torch.randint(3, V, (2, 7))
    with torch.no_grad():
        ref = model(src, tgt, src_padding_mask=src_mask)  # (b, 7, V)
        memory = model.encode(src, src_mask)
        cache = model.make_cache(2, 7)
        kw = {"memory": memory, "src_padding_mask": src_mask}
        got = [prefill(model, tgt[:, :2], cache=cache, **kw)]
        for t in range(2, 7):
            got.append(decode_one_token(model, tgt[:, t], cache=cache, **kw)[:, None])
    torch.testing.assert_close(torch.cat(got, 1), ref, atol=1e-5, rtol=0)


def test_prefill_without_cache_is_the_forward():
    model = _lm("learned")
    seq = torch.randint(3, V, (2, 5))
    with torch.no_grad():
        assert torch.equal(prefill(model, seq, cache=None), model(seq))


def test_step_errors():
    lm, s2s = _lm("learned"), _s2s("sinusoidal")
    tok = torch.tensor([3, 4])
    with pytest.raises(ValueError, match="decode_one_token needs the cache prefill filled"):
        decode_one_token(lm, tok, cache=None)
    with pytest.raises(ValueError, match="token must be \\(b,\\), got shape \\(2, 1\\)"):
        decode_one_token(lm, tok[:, None], cache=lm.make_cache(2, 4))
    with pytest.raises(ValueError, match="positions must be \\(b,\\)"):
        decode_one_token(lm, tok, cache=lm.make_cache(2, 4), positions=torch.zeros(2, 1))
    with pytest.raises(ValueError, match="an encoder-decoder needs memory"):
        prefill(s2s, tok[:, None], cache=None)
    with pytest.raises(ValueError, match="memory/src_padding_mask are for encoder-decoders"):
        prefill(lm, tok[:, None], cache=None, memory=torch.zeros(2, 3, 64))
