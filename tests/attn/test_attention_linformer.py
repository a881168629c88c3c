"""Linformer: with identity projections it is exact attention (the eager reference,
forward and backward); padding, refusals, and the error against the projected length."""

from __future__ import annotations

import pytest
import torch

from qkv.attn import MultiHeadAttention
from qkv.attn.approx import approximation_error
from qkv.attn.linformer import LinformerAttention, linformer_attention, pooling_projection


def test_pooling_projection():
    p = pooling_projection(3, 7)
    assert p.shape == (3, 7)
    torch.testing.assert_close(p.sum(1), torch.ones(3))
    assert torch.equal((p > 0).sum(0), torch.ones(7, dtype=torch.long))  # each position once
    assert torch.equal(pooling_projection(5, 5), torch.eye(5))
    with pytest.raises(ValueError, match="k must be an int in"):
        pooling_projection(8, 7)


@pytest.mark.parametrize("s", [6, 9])
def test_identity_projections_give_exact_attention(s):
    """E = F = I (n = k = s): Linformer is MultiHeadAttention, forward and backward. (A
    shorter or padded input keeps k projected rows, some of them empty keys that still
    take softmax mass: not exact, as in the paper.)"""
    torch.manual_seed(0)
    lin = LinformerAttention(16, 4, max_len=s, k=s).double()
    mha = MultiHeadAttention(16, 4).double()
    mha.load_state_dict({k: v for k, v in lin.state_dict().items() if not k.startswith("proj_")})
    with torch.no_grad():
        lin.proj_k.weight.copy_(torch.eye(s))
        lin.proj_v.weight.copy_(torch.eye(s))
    x = torch.randn(2, s, 16, dtype=torch.float64, requires_grad=True)
    a, b = lin(x), mha(x)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    grad = torch.randn_like(a)
    ga = torch.autograd.grad(a, (x, lin.qkv_proj.weight), grad)
    gb = torch.autograd.grad(b, (x, mha.qkv_proj.weight), grad)
    for u, w in zip(ga, gb):
        torch.testing.assert_close(u, w, atol=1e-11, rtol=0)


def test_padded_positions_do_not_matter():
    torch.manual_seed(0)
    m = LinformerAttention(16, 4, max_len=12, k=4).eval()
    x = torch.randn(2, 8, 16)
    real = torch.ones(2, 8, dtype=torch.bool)
    real[1, 5:] = False
    y = x.clone()
    y[1, 5:] = torch.randn(3, 16) * 100
    a, b = m(x, padding_mask=real), m(y, padding_mask=real)
    torch.testing.assert_close(a[1, :5], b[1, :5], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0], b[0])


def test_backward_reaches_the_projections():
    torch.manual_seed(0)
    m = LinformerAttention(16, 4, max_len=12, k=4)
    m(torch.randn(2, 12, 16)).square().sum().backward()
    for p in (m.proj_k.weight, m.proj_v.weight, m.qkv_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_linformer_error_shrinks_with_the_projected_length():
    rows = approximation_error("linformer", (4, 16, 32, 64), length=64, head_dim=16, trials=2)
    errors = [r.error for r in rows]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-12  # pooling of one position each: exact


def test_refusals():
    torch.manual_seed(0)
    m = LinformerAttention(16, 4, max_len=8, k=4)
    x = torch.randn(1, 6, 16)
    with pytest.raises(ValueError, match="causal attention"):
        m(x, is_causal=True)
    with pytest.raises(ValueError, match="cross-attention"):
        m(x, torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match="cover 8 positions"):
        m(torch.randn(1, 9, 16))
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        LinformerAttention(16, 4, max_len=0, k=4)
    with pytest.raises(ValueError, match="cover"):
        linformer_attention(
            torch.randn(1, 1, 5, 4),
            torch.randn(1, 1, 5, 4),
            torch.randn(1, 1, 5, 4),
            torch.randn(2, 4),
            torch.randn(2, 4),
        )
