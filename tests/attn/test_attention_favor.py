"""FAVOR+ (Performer): linear attention against its dense reference (forward and backward,
exact in float64), the random features, the approximation error shrinking with the number
of features, and FavorAttention as a drop-in for MultiHeadAttention."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from qkv.attn import KVCache, MultiHeadAttention, attention
from qkv.attn.approx import approximation_error
from qkv.attn.favor import (
    FavorAttention,
    default_features,
    favor_attention,
    linear_attention,
    orthogonal_gaussian,
    positive_features,
)


def _dense_linear(phi_q: Tensor, phi_k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """The eager reference: the (s_q, s_k) kernel matrix, masked, row-normalized."""
    a = phi_q @ phi_k.transpose(-2, -1)  # (..., s_q, s_k)
    if causal:
        s_q, s_k = a.shape[-2:]
        a = a * torch.ones(s_q, s_k, dtype=torch.bool).tril(s_k - s_q)
    den = a.sum(-1, keepdim=True)
    return (a @ v) / torch.where(den > 0, den, torch.ones_like(den))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("s_q", "s_k", "chunk"), [(37, 37, 8), (16, 16, 16), (5, 29, 4), (29, 11, 8), (1, 9, 128)]
)
def test_linear_attention_matches_the_dense_reference(causal, s_q, s_k, chunk):
    g = torch.Generator().manual_seed(0)
    phi_q = torch.rand(2, 3, s_q, 6, generator=g, dtype=torch.float64, requires_grad=True)
    phi_k = torch.rand(2, 3, s_k, 6, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, s_k, 5, generator=g, dtype=torch.float64, requires_grad=True)
    out = linear_attention(phi_q, phi_k, v, causal=causal, chunk=chunk)
    ref = _dense_linear(phi_q, phi_k, v, causal)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (phi_q, phi_k, v), grad)
    want = torch.autograd.grad(ref, (phi_q, phi_k, v), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)


def test_causal_rows_without_keys_are_zero():
    phi_q, phi_k = torch.rand(1, 1, 6, 4), torch.rand(1, 1, 2, 4)
    out = linear_attention(phi_q, phi_k, torch.randn(1, 1, 2, 3), causal=True, chunk=4)
    assert torch.equal(out[..., :4, :], torch.zeros(1, 1, 4, 3))
    assert out[..., 4:, :].abs().sum() > 0


def test_orthogonal_gaussian_blocks_are_orthogonal():
    g = torch.Generator().manual_seed(1)
    w = orthogonal_gaussian(20, 8, generator=g, dtype=torch.float64)
    assert w.shape == (20, 8)
    for block in (w[:8], w[8:16], w[16:]):
        unit = block / block.norm(dim=1, keepdim=True)
        gram = unit @ unit.T
        torch.testing.assert_close(gram, torch.eye(len(block), dtype=torch.float64))
    again = orthogonal_gaussian(
        20, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    assert torch.equal(w, again)
    with pytest.raises(ValueError, match="m must be a positive int"):
        orthogonal_gaussian(0, 8)


def test_positive_features_estimate_the_softmax_kernel():
    """E[phi(q) . phi(k)] = exp(q . k) (lemma 1), up to the stabilizers' constants: the
    ratios between keys, which attention uses, are unbiased."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 8, generator=g, dtype=torch.float64) * 0.3
    k = torch.randn(5, 8, generator=g, dtype=torch.float64) * 0.3
    w = orthogonal_gaussian(200_000, 8, generator=g, dtype=torch.float64)
    est = positive_features(q, w, is_query=True) @ positive_features(k, w, is_query=False).T
    exact = torch.exp(q @ k.T)
    ratio = (est / est.sum()) / (exact / exact.sum())
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=0.01, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_favor_converges_to_softmax_attention(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 2, 24, 8, generator=g, dtype=torch.float64) * s for s in (0.5, 0.5, 1)
    )
    exact = attention(q, k, v, is_causal=causal, backend="math")
    w = orthogonal_gaussian(100_000, 8, generator=g, dtype=torch.float64)
    approx = favor_attention(q, k, v, w, causal=causal)
    assert (approx - exact).norm() / exact.norm() < 0.02


@pytest.mark.parametrize("causal", [False, True])
def test_approximation_error_shrinks_as_features_grow(causal):
    rows = approximation_error(
        "favor",
        (8, 64, 512),
        length=64,
        head_dim=16,
        n_heads=2,
        causal=causal,
        input_std=0.5,
        trials=3,
    )
    errors = [r.error for r in rows]
    assert errors[0] > errors[1] > errors[2], errors
    assert [r.size for r in rows] == [8, 64, 512] and rows[0].trials == 3


def test_approximation_error_refusals():
    with pytest.raises(ValueError, match="method must be one of"):
        approximation_error("lsh", (8,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sizes must be ints"):
        approximation_error("linformer", (0,), length=16)
    with pytest.raises(ValueError, match="bidirectional"):
        approximation_error("linformer", (4,), length=16, causal=True)


def test_default_features():
    assert default_features(64) == 266  # round(64 ln 64), the Performer default
    assert default_features(1) == 1


# ---------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------
def _favor(**kw) -> FavorAttention:
    torch.manual_seed(0)
    return FavorAttention(16, 4, seed=0, **kw).eval()


def test_favor_attention_runs_favor_on_mha_projections():
    """Same weights as MultiHeadAttention (the features are the only extra tensor); the
    heads meet through favor_attention."""
    m = _favor()
    mha = MultiHeadAttention(16, 4).eval()
    missing = mha.load_state_dict(m.state_dict(), strict=False)
    assert missing.unexpected_keys == ["features"] and not missing.missing_keys
    x = torch.randn(2, 7, 16)
    q, k, v = m._project_self(x)
    want = m.out_proj(
        favor_attention(q, k, v, m.features, causal=True).transpose(1, 2).reshape(2, 7, 16)
    )
    torch.testing.assert_close(m(x, is_causal=True), want)


def test_favor_attention_backward_reaches_every_parameter():
    m = _favor(n_features=32).train()
    x = torch.randn(2, 9, 16, requires_grad=True)
    m(x, is_causal=True).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert not m.features.requires_grad


def test_cached_decoding_matches_the_full_forward():
    """Decoding attends to the cached keys aligned to their end; the key stabilizer is
    taken over the keys present, so steps agree with the full pass up to FEATURE_EPS."""
    m = _favor()
    x = torch.randn(2, 10, 16)
    full = m(x, is_causal=True)
    cache = KVCache(2, 4, 10, 4)
    steps = [m(x[:, :6], is_causal=True, cache=cache)]
    steps += [m(x[:, i : i + 1], is_causal=True, cache=cache) for i in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-3, rtol=2e-3)


def test_padded_keys_do_not_matter():
    m = _favor()
    x = torch.randn(2, 8, 16)
    real = torch.ones(2, 8, dtype=torch.bool)
    real[1, 5:] = False
    y = x.clone()
    y[1, 5:] = torch.randn(3, 16) * 100  # padding content must not leak
    for causal in (False, True):
        a = m(x, padding_mask=real, is_causal=causal)
        b = m(y, padding_mask=real, is_causal=causal)
        torch.testing.assert_close(a[1, :5], b[1, :5], atol=1e-6, rtol=0)
        torch.testing.assert_close(a[0], b[0])


def test_redraw_features():
    m = _favor()
    before = m.features.clone()
    m.redraw_features(torch.Generator().manual_seed(5))
    assert not torch.equal(before, m.features) and m.features.shape == before.shape


def test_half_precision():
    m = _favor().to(torch.bfloat16)
    out = m(torch.randn(2, 5, 16, dtype=torch.bfloat16), is_causal=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_refusals():
    m = _favor()
    x = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="cannot take a mask"):
        m(x, mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_bias"):
        m(x, attn_bias=torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="return_weights"):
        m(x, return_weights=True)
    with pytest.raises(ValueError, match="n_features must be a positive int"):
        FavorAttention(16, 4, n_features=0)
    with pytest.raises(ValueError, match="dot-product"):
        FavorAttention(16, 4, score=lambda q, k: q @ k.transpose(-2, -1))
