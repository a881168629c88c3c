"""DecoderLM with ``sliding_window`` (Mistral's causal local attention): equal to the same
weights with an explicit dense band mask, to the plain model when the window covers the
input, the same on the block-sparse backend, through cached decoding, and refused where
it cannot apply."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.generation import decode_one_token, prefill
from qkv.interop import to_hf

BASE = dict(d_model=32, n_heads=4, d_ff=64, n_layers=2, vocab_size=40, max_len=64,
            dropout=0.0, attn_dropout=0.0)  # fmt: skip


def _pair(window: int, **kw) -> tuple[M.DecoderLM, M.DecoderLM]:
    torch.manual_seed(0)
    local = M.DecoderLM(M.LMConfig(**BASE, sliding_window=window, **kw)).double().eval()
    plain = M.DecoderLM(M.LMConfig(**BASE, **kw)).double().eval()
    plain.load_state_dict(local.state_dict())
    return local, plain


def _ids(s: int, b: int = 2) -> torch.Tensor:
    return torch.randint(0, 40, (b, s), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("window", [1, 3, 8])
def test_equals_an_explicit_dense_band_mask(window):
    local, plain = _pair(window)
    ids = _ids(20)
    i = torch.arange(20)
    band = (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] < window)  # (s, s)
    with torch.no_grad():
        x = plain.embed(ids, positions=torch.arange(20))
        ref = plain.lm_head(plain.decoder(x, mask=band))  # causal AND the hand-built band
        got = local(ids)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        assert not torch.allclose(got, plain(ids))  # the window changed something


def test_a_window_covering_the_input_is_the_plain_model():
    local, plain = _pair(16)
    ids = _ids(16)
    with torch.no_grad():
        torch.testing.assert_close(local(ids), plain(ids), rtol=1e-12, atol=1e-12)


def test_block_sparse_backend_agrees_with_math():
    local, _ = _pair(8, attn_backend="blocksparse")
    ids = _ids(48)
    with torch.no_grad():
        sparse = local(ids)
        local.set_backend("math")
        torch.testing.assert_close(sparse, local(ids), rtol=1e-9, atol=1e-9)


def test_cached_decoding_keeps_the_window():
    local, _ = _pair(4)
    ids = _ids(12, b=1)
    with torch.no_grad():
        full = local(ids)  # (1, 12, V)
        cache = local.make_cache(1, 12)
        steps = [prefill(local, ids[:, :5], cache=cache)[:, -1]]
        for t in range(5, 12):
            steps.append(decode_one_token(local, ids[:, t], cache=cache))  # (1, V)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 4:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"sliding_window": -1}, "sliding_window"),
        ({"sliding_window": 4, "attn_kind": "favor"}, "attn_kind='favor'"),
        ({"sliding_window": 4, "pos": "xl", "mem_len": 8}, "mem_len=8"),
    ],
)
def test_refused_where_it_cannot_apply(kw, message):
    with pytest.raises(ValueError, match=message):
        M.LMConfig(**BASE, **kw)


def test_gpt2_export_refuses_a_window(tmp_path):
    local, _ = _pair(4)
    with pytest.raises(ValueError, match="sliding_window=4"):
        to_hf(local.float(), tmp_path / "gpt2")


def test_padding_with_a_window_stays_block_sparse_and_agrees_with_math():
    # the padding mask joins the window lazily (masks.Padding), so the block-sparse backend
    # can still read the sparsity: a training batch with padding runs on it
    local, _ = _pair(8, attn_backend="blocksparse")
    ids = _ids(40)
    real = torch.ones(2, 40, dtype=torch.bool)
    real[1, :6] = False  # left padding
    with torch.no_grad():
        sparse = local(ids, padding_mask=real)
        local.set_backend("math")
        dense = local(ids, padding_mask=real)
    torch.testing.assert_close(sparse[real], dense[real], rtol=1e-9, atol=1e-9)
