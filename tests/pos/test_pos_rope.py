"""Rotary position embedding against independent implementations and its defining properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv.pos import RoPE


def complex_rope(x: torch.Tensor, pos: torch.Tensor, base: float, r: int) -> torch.Tensor:
    """Paper/GPT-J layout: pair (2i, 2i+1) is a complex number multiplied by exp(j pos theta_i)."""
    theta = 1.0 / base ** (torch.arange(0, r, 2, dtype=torch.float64) / r)  # (r/2,)
    angles = pos.double().unsqueeze(-1) * theta  # (s, r/2) or (b, s, r/2)
    if pos.dim() == 2:
        angles = angles.unsqueeze(1)  # (b, 1, s, r/2)
    rot = torch.polar(torch.ones_like(angles), angles)
    xc = torch.view_as_complex(x[..., :r].double().reshape(*x.shape[:-1], r // 2, 2).contiguous())
    out = torch.view_as_real(xc * rot).flatten(-2)  # (b, h, s, r)
    return torch.cat((out, x[..., r:].double()), dim=-1).to(x.dtype)


@pytest.mark.parametrize("rotary_dim", [None, 8])
@pytest.mark.parametrize("batched_pos", [False, True])
def test_interleaved_matches_complex_reference(rotary_dim: int | None, batched_pos: bool) -> None:
    torch.manual_seed(0)
    b, h, s, d = 2, 3, 11, 16
    x = torch.randn(b, h, s, d)
    pos = torch.randint(0, 5000, (b, s) if batched_pos else (s,))
    mod = RoPE(d, base=10000.0, rotary_dim=rotary_dim, interleaved=True)
    ref = complex_rope(x, pos, 10000.0, rotary_dim or d)
    torch.testing.assert_close(mod(x, positions=pos), ref, atol=2e-5, rtol=1e-5)
    # Default positions are arange(s).
    torch.testing.assert_close(mod(x), complex_rope(x, torch.arange(s), 10000.0, rotary_dim or d))


@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_rotate_half_matches_hf_llama(base: float) -> None:
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    torch.manual_seed(0)
    b, h, s, d = 2, 4, 13, 32
    cfg = LlamaConfig(hidden_size=h * d, num_attention_heads=h, head_dim=d, rope_theta=base)
    hf_rope = llama.LlamaRotaryEmbedding(cfg)
    q, k = torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    pos = torch.stack([torch.arange(s), torch.arange(s) + 1000])  # (b, s)
    cos, sin = hf_rope(q, pos)
    q_ref, k_ref = llama.apply_rotary_pos_emb(q, k, cos, sin)
    mod = RoPE(d, base=base)
    torch.testing.assert_close(mod(q, positions=pos), q_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mod(k, positions=pos), k_ref, atol=1e-4, rtol=1e-4)


def test_partial_rotate_half_matches_formula() -> None:
    """GPT-NeoX partial rotary: rotate_half on the first r features, frequencies over r."""
    torch.manual_seed(0)
    b, h, s, d, r = 1, 2, 9, 24, 8
    x = torch.randn(b, h, s, d, dtype=torch.float64)
    pos = torch.arange(s) + 3
    theta = 1.0 / 10000.0 ** (torch.arange(0, r, 2, dtype=torch.float64) / r)
    emb = torch.cat([pos.double()[:, None] * theta] * 2, dim=-1)  # (s, r)
    xr = x[..., :r]
    rotate_half = torch.cat((-xr[..., r // 2 :], xr[..., : r // 2]), dim=-1)
    ref = torch.cat((xr * emb.cos() + rotate_half * emb.sin(), x[..., r:]), dim=-1)
    out = RoPE(d, rotary_dim=r)(x, positions=pos)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert torch.equal(out[..., r:], x[..., r:])


def test_layouts_are_a_feature_permutation_of_each_other() -> None:
    torch.manual_seed(0)
    d = 12
    x = torch.randn(2, 2, 7, d, dtype=torch.float64)
    perm = torch.cat((torch.arange(0, d, 2), torch.arange(1, d, 2)))  # interleaved -> halves
    out_i = RoPE(d, interleaved=True)(x)
    out_h = RoPE(d, interleaved=False)(x[..., perm])
    torch.testing.assert_close(out_h, out_i[..., perm], atol=1e-12, rtol=0)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rotary_dim", [None, 6])
def test_preserves_norm(interleaved: bool, rotary_dim: int | None) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 50, 16, dtype=torch.float64)
    out = RoPE(16, rotary_dim=rotary_dim, interleaved=interleaved)(x, torch.arange(50) * 37)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), atol=1e-12, rtol=0)
    assert not torch.allclose(out[:, :, 1:], x[:, :, 1:])


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(0, 4096),
    n=st.integers(0, 4096),
    t=st.integers(-4096, 4096),
    interleaved=st.booleans(),
)
def test_scores_depend_only_on_relative_position(m: int, n: int, t: int, interleaved: bool) -> None:
    if min(m + t, n + t) < 0:
        t = -min(m, n)
    gen = torch.Generator().manual_seed(m * 7919 + n)
    q = torch.randn(1, 2, 1, 16, dtype=torch.float64, generator=gen)
    k = torch.randn(1, 2, 1, 16, dtype=torch.float64, generator=gen)
    rope = RoPE(16, interleaved=interleaved)

    def score(pm: int, pn: int) -> torch.Tensor:
        rq = rope(q, positions=torch.tensor([pm]))
        rk = rope(k, positions=torch.tensor([pn]))
        return (rq * rk).sum(-1)

    torch.testing.assert_close(score(m, n), score(m + t, n + t), atol=1e-9, rtol=1e-9)


def test_relative_property_changes_with_distance() -> None:
    """Guard against a no-op rotation passing the relative test."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    rope = RoPE(16)
    s1 = (rope(q, torch.tensor([5])) * rope(k, torch.tensor([2]))).sum()
    s2 = (rope(q, torch.tensor([5])) * rope(k, torch.tensor([4]))).sum()
    assert not torch.isclose(s1, s2)


def test_decode_step_matches_full_sequence() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 2, 10, 8)
    rope = RoPE(8)
    full = rope(x)
    step = rope(x[:, :, -1:], positions=torch.tensor([9]))
    torch.testing.assert_close(step, full[:, :, -1:])


def test_low_precision_input_keeps_dtype_and_accuracy() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 64, 32)
    rope = RoPE(32)
    ref = rope(x.bfloat16().float(), torch.arange(64) + 10000)
    out = rope(x.bfloat16(), torch.arange(64) + 10000)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_dim": 8, "rotary_dim": 5}, r"rotary_dim must be even.*5"),
        ({"head_dim": 8, "rotary_dim": 10}, r"rotary_dim \(10\) must be <= head_dim \(8\)"),
        ({"head_dim": 8, "rotary_dim": 0}, r"rotary_dim must be a positive int or None, got 0"),
        ({"head_dim": 7}, r"rotary_dim must be even.*7"),
        ({"head_dim": 0}, r"head_dim must be a positive int, got 0"),
        ({"head_dim": 8, "base": 0.0}, r"base must be positive, got base=0.0"),
    ],
)
def test_bad_constructor_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RoPE(**kwargs)


def test_bad_forward_inputs() -> None:
    rope = RoPE(8)
    with pytest.raises(ValueError, match=r"head_dim=8.*\(2, 3, 8\)"):
        rope(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match=r"positions must have shape.*\(3, 4\)"):
        rope(torch.zeros(2, 1, 4, 8), positions=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        rope(torch.zeros(2, 1, 4, 8), positions=torch.arange(4.0))
