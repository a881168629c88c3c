"""MultiHeadAttention: parity with torch.nn.MultiheadAttention, grouped heads, caches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qkv
from qkv import MultiHeadAttention


def _pair(d=16, h=4, kdim=None, vdim=None, bias=True, batch_first=True):
    torch.manual_seed(0)
    tm = nn.MultiheadAttention(d, h, kdim=kdim, vdim=vdim, bias=bias, batch_first=batch_first)
    if bias:
        with torch.no_grad():  # torch zero-inits biases; make them matter
            tm.in_proj_bias.normal_() if tm.in_proj_bias is not None else None
            tm.out_proj.bias.normal_()
    return tm.eval(), MultiHeadAttention.from_torch(tm).eval()


@pytest.mark.parametrize("backend", ["math", "sdpa", "auto"])
@pytest.mark.parametrize("masking", ["none", "kpm", "attn_bool", "attn_float", "causal", "both"])
def test_self_attention_parity_with_torch(backend, masking):
    tm, m = _pair()
    m.backend = backend
    b, s = 3, 7
    x = torch.randn(b, s, 16)
    lengths = torch.tensor([7, 4, 2])
    real = torch.arange(s)[None] < lengths[:, None]  # (b, s) True = real token
    allowed = torch.rand(s, s) > 0.3
    allowed |= torch.eye(s, dtype=torch.bool)
    allowed[:, 0] = True  # torch gives NaN for rows that see nothing; qkv gives zeros
    bias = torch.randn(s, s)
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    t_kw, q_kw = {}, {}
    if masking in ("kpm", "both"):
        t_kw["key_padding_mask"] = ~real  # torch: True = padding
        q_kw["key_padding_mask"] = real  # qkv: True = real token
    if masking in ("attn_bool", "both"):
        t_kw["attn_mask"] = ~allowed  # torch: True = not allowed
        q_kw["mask"] = allowed
    if masking == "attn_float":
        t_kw["attn_mask"] = q_kw["mask"] = bias
    if masking == "causal":
        t_kw["attn_mask"] = ~causal
        q_kw["is_causal"] = True
    ref, ref_w = tm(x, x, x, **t_kw)
    out, w = m(x, return_weights=True, **q_kw)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(w.mean(1), ref_w, atol=1e-6, rtol=0)
    out_fast = m(x, **q_kw)
    torch.testing.assert_close(out_fast, ref, atol=1e-6, rtol=0)


def test_cross_attention_with_kdim_vdim_parity():
    tm, m = _pair(d=16, h=2, kdim=6, vdim=10, batch_first=False)
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 9, 6), torch.randn(2, 9, 10)
    real = torch.tensor([[True] * 9, [True] * 3 + [False] * 6])
    ref, ref_w = tm(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), key_padding_mask=~real)
    out, w = m(q, k, v, key_padding_mask=real, return_weights=True)
    torch.testing.assert_close(out, ref.transpose(0, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.mean(1), ref_w, atol=1e-6, rtol=0)


def test_no_bias_parity_and_gradients():
    tm, m = _pair(bias=False)
    x = torch.randn(2, 5, 16, requires_grad=True)
    ref = tm(x, x, x, need_weights=False)[0]
    out = m(x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    g_ref = torch.autograd.grad(ref.square().sum(), x)[0]
    g = torch.autograd.grad(out.square().sum(), x)[0]
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=0)


def test_grouped_heads_equal_explicitly_repeated_heads():
    torch.manual_seed(0)
    gqa = MultiHeadAttention(32, 8, n_kv_heads=2)
    full = MultiHeadAttention(32, 8)
    d_h = 4
    with torch.no_grad():
        full.q_proj.load_state_dict(gqa.q_proj.state_dict())
        full.out_proj.load_state_dict(gqa.out_proj.state_dict())
        for src, dst in ((gqa.k_proj, full.k_proj), (gqa.v_proj, full.v_proj)):
            w = src.weight.view(2, d_h, 32).repeat_interleave(4, 0).reshape(32, 32)
            dst.weight.copy_(w)
            dst.bias.copy_(src.bias.view(2, d_h).repeat_interleave(4, 0).reshape(32))
    x = torch.randn(2, 6, 32)
    for backend in ("math", "sdpa"):
        gqa.backend = full.backend = backend
        torch.testing.assert_close(
            gqa(x, is_causal=True), full(x, is_causal=True), atol=1e-6, rtol=0
        )
    assert gqa.k_proj.weight.shape == (8, 32)  # 2 kv heads x d_h 4
    mqa = MultiHeadAttention(32, 8, n_kv_heads=1)
    assert mqa(x).shape == (2, 6, 32)


def test_kv_cache_decoding_equals_full_causal():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, n_kv_heads=2).eval()
    x = torch.randn(2, 6, 16)
    full = m(x, is_causal=True)
    cache = qkv.KVCache(2, 2, 8, 4)
    steps = [m(x[:, :3], is_causal=True, cache=cache)]
    for t in range(3, 6):
        steps.append(m(x[:, t : t + 1], is_causal=True, cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="KVCache overflow: 6 cached \\+ 3 new > max_len=8"):
        m(x[:, :3], cache=cache)


def test_static_cross_cache_reuses_projection():
    m = MultiHeadAttention(16, 4).eval()
    q, mem = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    cache = qkv.StaticKVCache()
    a = m(q, mem, cache=cache)
    assert cache.is_set
    b = m(q, torch.zeros_like(mem), cache=cache)  # memory ignored once cached
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, m(q, mem))


def test_head_mask_removes_a_head():
    m = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    hm = torch.tensor([1.0, 0.0, 1.0, 1.0])
    out = m(x, head_mask=hm)
    # reference: zero head 1's slice of the concatenated heads before out_proj
    with torch.no_grad():
        w = m.out_proj.weight.clone()
        m.out_proj.weight[:, 4:8] = 0
        ref = m(x)
        m.out_proj.weight.copy_(w)
    torch.testing.assert_close(out, ref)


def test_mha_errors():
    with pytest.raises(ValueError, match=r"n_heads \(3\) must divide d_model \(16\)"):
        MultiHeadAttention(16, 3)
    with pytest.raises(
        ValueError, match=r"n_kv_heads \(3\) must be a positive divisor of n_heads \(4\)"
    ):
        MultiHeadAttention(16, 4, n_kv_heads=3)
    m = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"query must be \(b, s_q, d_model=16\), got \(2, 5, 8\)"):
        m(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"key_padding_mask must be a bool \(b, s_k\) = \(2, 5\)"):
        m(torch.randn(2, 5, 16), key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key must be \(b=2, s_k, kdim=16\), got \(3, 5, 16\)"):
        m(torch.randn(2, 5, 16), torch.randn(3, 5, 16))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))
