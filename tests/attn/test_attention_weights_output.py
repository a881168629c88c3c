"""weights_and_output: the output ``weights @ V`` and the weights computed once (what
record_attention runs instead of the fast backend) equal the math backend, forward and
backward, whatever the mask, grouped heads and chunk size; zeroed() memory."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv import masks
from qkv.attn import attention, make_problem
from qkv.attn import weights as weights_module
from qkv.attn.weights import weights_and_output, zeroed

MASKS = {
    "none": lambda b, s_q, s_k: (None, False),
    "causal": lambda b, s_q, s_k: (None, True),
    "causal_before_keys": lambda b, s_q, s_k: (masks.causal(offset=-3), False),
    "causal_short_of_keys": lambda b, s_q, s_k: (masks.causal(offset=-1), False),
    "padding_and_causal": lambda b, s_q, s_k: (
        masks.padding(torch.tensor([s_k, max(0, s_k - 3)])) & masks.causal(),
        False,
    ),
    "bool_with_empty_rows": lambda b, s_q, s_k: (torch.rand(b, 1, s_q, s_k) > 0.6, False),
    "float_bias": lambda b, s_q, s_k: (
        torch.randn(1, 4, s_q, s_k, dtype=torch.float64).requires_grad_(),
        False,
    ),
}


def _grads(out: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return torch.autograd.grad(out, inputs, probe)


@settings(max_examples=15, deadline=None)
@given(
    s_q=st.integers(1, 40),
    s_k=st.integers(1, 40),
    h_kv=st.sampled_from([4, 2, 1]),
    mask=st.sampled_from(sorted(MASKS)),
    chunk=st.sampled_from([1, 1 << 20]),
    seed=st.integers(0, 2**16),
)
def test_equals_the_math_backend_forward_and_backward(s_q, s_k, h_kv, mask, chunk, seed):
    """fp64, so that the only difference is the order of float operations (1e-12)."""
    torch.manual_seed(seed)
    m, causal = MASKS[mask](2, s_q, s_k)
    if isinstance(m, torch.Tensor) and m.dtype == torch.bool:
        m[0, 0, 0] = False  # a row that sees nothing
    q = torch.randn(2, 4, s_q, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, h_kv, s_k, 8, dtype=torch.float64, requires_grad=True) for _ in "kv")
    leaves = [q, k, v] + ([m] if isinstance(m, torch.Tensor) and m.requires_grad else [])
    want, want_w = attention(q, k, v, m, is_causal=causal, backend="math", return_weights=True)
    saved, weights_module._CHUNK_ELEMENTS = weights_module._CHUNK_ELEMENTS, chunk
    try:
        got, got_w = weights_and_output(make_problem(q, k, v, m, is_causal=causal))
        with torch.no_grad():
            got_ng, got_w_ng = weights_and_output(make_problem(q, k, v, m, is_causal=causal))
    finally:
        weights_module._CHUNK_ELEMENTS = saved
    for a, b in ((got, want), (got_w, want_w), (got_ng, want), (got_w_ng, want_w)):
        torch.testing.assert_close(a, b.detach(), atol=1e-12, rtol=0)
    assert not got_w.requires_grad and not got.isnan().any()
    for a, b in zip(_grads(got, leaves), _grads(want, leaves)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_half_inputs_compute_in_float32_and_round_the_weights_once(dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 33, 16, generator=g).to(dtype) for _ in range(3))
    p = make_problem(q, k, v, is_causal=True)
    want, want_w = attention(q, k, v, is_causal=True, backend="math", return_weights=True)
    fast = attention(q, k, v, is_causal=True, backend="sdpa")
    with torch.no_grad():
        got, got_w = weights_and_output(p)
        into = torch.full((2, 4, 33, 33), float("nan"), dtype=torch.bfloat16)
        got2, w2 = weights_and_output(p, into)
    assert got.dtype == got_w.dtype == dtype and w2 is into
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 0}
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(got, fast, **tol)
    torch.testing.assert_close(got_w, want_w, **tol)
    # the output comes from the float32 weights, before they are rounded into `into`
    assert torch.equal(got2, got) and torch.equal(w2, got_w.float().to(torch.bfloat16))


def test_refuses_dropout_custom_scores_and_a_wrong_buffer():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match=r"dot-product score and no dropout.*dropout_p=0.1"):
        weights_and_output(make_problem(q, q, q, dropout_p=0.1))
    with pytest.raises(ValueError, match=r"dot-product score and no dropout, got score="):
        weights_and_output(make_problem(q, q, q, score=lambda a, b: a @ b.transpose(-1, -2)))
    with pytest.raises(ValueError, match=r"out must have shape \(1, 2, 5, 5\), got \(1, 2, 5, 4\)"):
        weights_and_output(make_problem(q, q, q), torch.empty(1, 2, 5, 4))


def test_zeroed_memory_reads_as_zeros_and_takes_writes():
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        z = zeroed((3, 1000, 1001), dtype, "cpu")
        assert z.shape == (3, 1000, 1001) and z.dtype == dtype and z.is_contiguous()
        assert not z.any()
        z[1, 2:5, 7] = 1.5
        assert z.sum().item() == 4.5
    assert zeroed((0, 4), torch.float32, "cpu").shape == (0, 4)
