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
        q_kw["padding_mask"] = real  # qkv: True = real token
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


@pytest.mark.parametrize("kdim", [None, 6])
def test_from_torch_keeps_float64(kdim):
    """Built in the source's dtype before the copy: no rounding through float32."""
    torch.manual_seed(0)
    tm = nn.MultiheadAttention(16, 4, kdim=kdim, vdim=kdim, batch_first=True)
    tm = tm.double().eval()
    with torch.no_grad():
        tm.in_proj_bias.normal_()
        tm.out_proj.bias.normal_()
    m = MultiHeadAttention.from_torch(tm).eval()
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    if kdim is None:
        assert torch.equal(m.qkv_proj.weight, tm.in_proj_weight)
    else:
        assert torch.equal(m.k_proj.weight, tm.k_proj_weight)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    mem = x if kdim is None else torch.randn(2, 7, kdim, dtype=torch.float64)
    ref, ref_w = tm(x, mem, mem)
    out, w = m(x, mem, mem, return_weights=True)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(w.mean(1), ref_w, atol=1e-12, rtol=0)


def test_cross_attention_with_kdim_vdim_parity():
    tm, m = _pair(d=16, h=2, kdim=6, vdim=10, batch_first=False)
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 9, 6), torch.randn(2, 9, 10)
    real = torch.tensor([[True] * 9, [True] * 3 + [False] * 6])
    ref, ref_w = tm(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), key_padding_mask=~real)
    out, w = m(q, k, v, padding_mask=real, return_weights=True)
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
        for which in ("q", "k", "v"):
            (w, b), (dst_w, dst_b) = gqa.projection(which), full.projection(which)
            if which != "q":  # kv head j serves query heads 4j .. 4j+3
                w = w.view(2, d_h, 32).repeat_interleave(4, 0).reshape(32, 32)
                b = b.view(2, d_h).repeat_interleave(4, 0).reshape(32)
            dst_w.copy_(w)
            dst_b.copy_(b)
        full.out_proj.load_state_dict(gqa.out_proj.state_dict())
    x = torch.randn(2, 6, 32)
    for backend in ("math", "sdpa"):
        gqa.backend = full.backend = backend
        torch.testing.assert_close(
            gqa(x, is_causal=True), full(x, is_causal=True), atol=1e-6, rtol=0
        )
    assert gqa.projection("k")[0].shape == (8, 32)  # 2 kv heads x d_h 4
    assert gqa.qkv_proj.weight.shape == (32 + 8 + 8, 32)
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
    cache = qkv.CrossKVCache()
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
    with pytest.raises(ValueError, match=r"padding_mask must be a bool \(b, s_k\) = \(2, 5\)"):
        m(torch.randn(2, 5, 16), padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key must be \(b=2, s_k, kdim=16\), got \(3, 5, 16\)"):
        m(torch.randn(2, 5, 16), torch.randn(3, 5, 16))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))


# -- the stacked projection and the unmasked shortcut ----------------------------------
def test_packed_and_separate_projections_compute_the_same():
    """qkv_proj (kdim == vdim == d_model) against the same weights held apart."""
    torch.manual_seed(0)
    packed = MultiHeadAttention(24, 6, n_kv_heads=2)
    apart = MultiHeadAttention(24, 6, n_kv_heads=2, kdim=25)  # kdim != d: separate q/k/v
    assert packed.packed and not apart.packed
    assert packed.qkv_proj.weight.shape == (24 + 2 * 8, 24)
    with torch.no_grad():
        for which in "qv":
            for dst, src in zip(apart.projection(which), packed.projection(which)):
                dst.copy_(src)
        wk, bk = packed.projection("k")
        apart.k_proj.weight.copy_(torch.cat([wk, torch.zeros(8, 1)], 1))  # last input unused
        apart.k_proj.bias.copy_(bk)
        apart.out_proj.load_state_dict(packed.out_proj.state_dict())
    x, mem = torch.randn(2, 5, 24), torch.randn(2, 7, 24)
    mem_k = torch.cat([mem, torch.randn(2, 7, 1)], -1)
    torch.testing.assert_close(apart(x, mem_k, mem), packed(x, mem, mem), atol=1e-6, rtol=0)
    # key is value: one matmul for both; a distinct value: two
    torch.testing.assert_close(packed(x, mem), packed(x, mem, mem.clone()), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"which must be 'q', 'k' or 'v', got 'o'"):
        packed.projection("o")


def test_projection_views_write_through():
    m = MultiHeadAttention(8, 2)
    with torch.no_grad():
        m.projection("v")[0].fill_(3.0)
    assert torch.all(m.qkv_proj.weight[16:] == 3.0) and not torch.any(m.qkv_proj.weight[:16] == 3)


@pytest.mark.parametrize("h_kv", [4, 2, 1])
@pytest.mark.parametrize("case", ["none", "causal_square", "causal_one_query"])
def test_unmasked_shortcut_equals_the_math_reference(h_kv, case):
    """MHA's shortcut (no Problem, straight to SDPA) against backend='math', forward and
    backward, fp64; a decoding step's single query sees every cached key."""
    torch.manual_seed(0)
    fast = MultiHeadAttention(16, 4, n_kv_heads=h_kv).double()
    ref = MultiHeadAttention(16, 4, n_kv_heads=h_kv, backend="math").double()
    ref.load_state_dict(fast.state_dict())
    s_q = 1 if case == "causal_one_query" else 6
    causal = case != "none"
    x = torch.randn(2, s_q, 16, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(2, 9, 16, dtype=torch.float64)
    if case == "causal_one_query":
        caches = [qkv.KVCache(2, h_kv, 10, 4, dtype=torch.float64) for _ in range(2)]
        for m, c in zip((fast, ref), caches):
            m(kv, is_causal=True, cache=c)  # prefill 9 keys
        outs = [m(x, is_causal=True, cache=c) for m, c in zip((fast, ref), caches)]
    else:
        outs = [m(x, is_causal=causal) for m in (fast, ref)]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-12, rtol=0)
    grads = [torch.autograd.grad(o.square().sum(), x)[0] for o in outs]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=0)


def test_unmasked_sdpa_refuses_misaligned_causal():
    from qkv.attn.functional import unmasked_sdpa

    q, k = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match=r"s_q == s_k or s_q == 1, got s_q=3, s_k=5"):
        unmasked_sdpa(q, k, k, is_causal=True)
    torch.testing.assert_close(
        unmasked_sdpa(q, k, k, score="dot"), qkv.attention(q, k, k, score="dot", backend="math")
    )
