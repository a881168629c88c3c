"""qkv.attention: the math reference against hand computation, sdpa against math."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qkv
from qkv import masks
from qkv.attn import attention_weights
from qkv.attn.problem import make_problem
from qkv.attn.weights import _masked_scores, safe_softmax
from qkv.scores import Additive, Bilinear

BACKENDS = ["math", "sdpa", "auto"]


def _rand(*shape, dtype=torch.float64, grad=True):
    t = torch.randn(*shape, dtype=dtype)
    return t.requires_grad_(grad)


def test_tiny_attention_by_hand():
    # two queries, three keys, d = 2: everything written out with math.exp
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    s = 1 / math.sqrt(2)
    expected_w, expected_o = [], []
    for qi in q.tolist():
        scores = [s * (qi[0] * kj[0] + qi[1] * kj[1]) for kj in k.tolist()]
        z = sum(math.exp(x) for x in scores)
        w = [math.exp(x) / z for x in scores]
        expected_w.append(w)
        expected_o.append([sum(w[j] * v[j, c].item() for j in range(3)) for c in range(2)])
    for backend in BACKENDS:
        out, w = qkv.attention(q, k, v, return_weights=True, backend=backend)
        assert torch.allclose(w, torch.tensor(expected_w, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(out, torch.tensor(expected_o, dtype=torch.float64), atol=1e-12)
    # causal by hand: query 0 sees keys 0 and 1 (bottom-right alignment, s_k - s_q = 1)
    out, w = qkv.attention(q, k, v, is_causal=True, return_weights=True, backend="math")
    sc = [s * (q[0] @ k[j]).item() for j in range(2)]
    z = sum(map(math.exp, sc))
    assert w[0].tolist() == pytest.approx([math.exp(sc[0]) / z, math.exp(sc[1]) / z, 0.0])
    assert w[1].sum().item() == pytest.approx(1.0)


def test_dot_score_has_no_scale():
    q, k, v = _rand(3, 4, grad=False), _rand(5, 4, grad=False), _rand(5, 2, grad=False)
    _, w = qkv.attention(q, k, v, score="dot", return_weights=True)
    assert torch.allclose(w, torch.softmax(q @ k.T, -1))
    _, w = qkv.attention(q, k, v, score="dot", scale=0.5, return_weights=True)
    assert torch.allclose(w, torch.softmax(0.5 * q @ k.T, -1))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "bool", "float", "object"])
def test_sdpa_matches_math_forward_and_backward(causal, mask_kind):
    b, h, s_q, s_k, d = 2, 3, 5, 7, 8
    q, k, v = _rand(b, h, s_q, d), _rand(b, h, s_k, d), _rand(b, h, s_k, 6)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(b, 1, s_q, s_k) > 0.3
        mask[0, 0, 1] = False  # a row that sees nothing
    elif mask_kind == "float":
        mask = torch.randn(1, h, s_q, s_k, dtype=torch.float64)
        mask[..., 2, :] = float("-inf")
    elif mask_kind == "object":
        mask = masks.padding(torch.tensor([7, 3]))
    outs = {}
    for backend in ("math", "sdpa"):
        o = qkv.attention(q, k, v, mask, is_causal=causal, backend=backend)
        gq, gk, gv = torch.autograd.grad(o.square().sum(), (q, k, v))
        outs[backend] = (o, gq, gk, gv)
    for a, b_ in zip(outs["math"], outs["sdpa"]):
        assert torch.isfinite(b_).all()
        torch.testing.assert_close(a, b_, atol=1e-10, rtol=1e-8)


def test_grouped_query_heads_equal_repeated_kv():
    q = _rand(2, 8, 5, 4)
    k, v = _rand(2, 2, 5, 4), _rand(2, 2, 5, 4)
    ref = qkv.attention(
        q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), is_causal=True, backend="math"
    )
    g_ref = torch.autograd.grad(ref.sum(), (q, k, v))
    for backend in BACKENDS:
        out = qkv.attention(q, k, v, is_causal=True, backend=backend)
        torch.testing.assert_close(out, ref)
        for g1, g2 in zip(torch.autograd.grad(out.sum(), (q, k, v)), g_ref):
            torch.testing.assert_close(g1, g2)


def test_fully_masked_rows_zero_forward_and_backward_fp32():
    q, k, v = (
        _rand(1, 2, 4, 8, dtype=torch.float32),
        _rand(1, 2, 4, 8, dtype=torch.float32),
        _rand(1, 2, 4, 8, dtype=torch.float32),
    )
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1] = False
    for backend in BACKENDS:
        out, w = qkv.attention(q, k, v, mask, backend=backend, return_weights=True)
        assert torch.all(out[:, :, 1] == 0) and torch.all(w[:, :, 1] == 0)
        grads = torch.autograd.grad(out.sum() + w.sum(), (q, k, v))
        assert all(torch.isfinite(g).all() for g in grads)
        assert torch.all(grads[0][:, :, 1] == 0)


def test_bottom_right_causal_for_decode_step():
    q = _rand(1, 1, 1, 4, grad=False)
    k, v = _rand(1, 1, 6, 4, grad=False), _rand(1, 1, 6, 4, grad=False)
    full = qkv.attention(q, k, v, backend="math")
    for backend in BACKENDS:
        torch.testing.assert_close(qkv.attention(q, k, v, is_causal=True, backend=backend), full)


def test_bilinear_and_additive_scores_by_formula():
    q, k, v = _rand(2, 3, 4), _rand(2, 5, 6), _rand(2, 5, 2)
    bil = Bilinear(4, 6).double()
    _, w = qkv.attention(q, k, v, score=bil, return_weights=True)
    torch.testing.assert_close(w, torch.softmax(q @ bil.weight @ k.transpose(1, 2), -1))
    add = Additive(4, 6, 7).double()
    _, w = qkv.attention(q, k, v, score=add, return_weights=True)
    ref = torch.empty(2, 3, 5, dtype=torch.float64)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                h = torch.tanh(add.w_q.weight @ q[b, i] + add.w_k.weight @ k[b, j] + add.w_k.bias)
                ref[b, i, j] = add.v.weight[0] @ h
    torch.testing.assert_close(w, torch.softmax(ref, -1))
    # gradients reach the score's parameters
    out = qkv.attention(q, k, v, score=add)
    out.sum().backward()
    assert add.w_q.weight.grad is not None and add.w_q.weight.grad.abs().sum() > 0


def test_dropout_zeroes_and_rescales():
    torch.manual_seed(1)
    q, k = _rand(1, 64, 8, grad=False), _rand(1, 64, 8, grad=False)
    v = torch.eye(64, dtype=torch.float64)[None]
    out, w = qkv.attention(q, k, v, dropout_p=0.5, return_weights=True, backend="math")
    ratio = out[w > 0] / w[w > 0]  # out == dropped(w) @ I: each entry is 0 or w / (1 - p)
    assert torch.all((ratio.abs() < 1e-12) | ((ratio - 2.0).abs() < 1e-9))
    assert 0.3 < (ratio == 0).double().mean() < 0.7


def test_mask_objects_compose():
    m = masks.causal() & masks.padding([3, 5])
    dense = m.to_dense(5, 5)
    assert dense.shape == (2, 1, 5, 5)
    tri = torch.ones(5, 5, dtype=torch.bool).tril()
    assert torch.equal(dense[0, 0], tri & (torch.arange(5) < 3))
    assert torch.equal(dense[1, 0], tri)
    q = _rand(2, 2, 5, 4, grad=False)
    a = qkv.attention(q, q, q, m, backend="math")
    b = qkv.attention(q, q, q, dense, backend="math")
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    s_q=st.integers(1, 9),
    s_k=st.integers(1, 9),
    d=st.integers(1, 8),
    p=st.floats(0.0, 1.0),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_no_nan_rows_sum_to_one_or_zero(b, h, s_q, s_k, d, p, causal, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, s_q, d, generator=g, requires_grad=True)
    k = torch.randn(b, h, s_k, d, generator=g, requires_grad=True)
    v = torch.randn(b, h, s_k, d, generator=g, requires_grad=True)
    mask = torch.rand(b, 1, s_q, s_k, generator=g) < p
    ref_out, ref_w = qkv.attention(
        q, k, v, mask, is_causal=causal, return_weights=True, backend="math"
    )
    allowed = mask & masks.causal().to_dense(s_q, s_k) if causal else mask
    sees = allowed.expand(b, h, s_q, s_k).any(-1)
    row_sums = ref_w.sum(-1)
    assert torch.allclose(row_sums[sees], torch.ones(()), atol=1e-5)
    assert torch.all(row_sums[~sees] == 0)
    assert torch.all(ref_w[~allowed.expand(b, h, s_q, s_k)] == 0)
    ref_grads = torch.autograd.grad(ref_out.sum(), (q, k, v))
    for backend in ("sdpa", "auto"):
        out = qkv.attention(q, k, v, mask, is_causal=causal, backend=backend)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        for g1, g2 in zip(grads, ref_grads):
            assert torch.isfinite(g1).all()
            torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# bad input: every message names the argument
# ---------------------------------------------------------------------------------------
def test_errors_name_the_argument():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match=r"k and v .*\(2, 5, 4\).*\(2, 4, 6\)"):
        qkv.attention(q, k, torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match=r"same feature size.*\(2, 3, 4\).*\(2, 5, 3\)"):
        qkv.attention(q, torch.randn(2, 5, 3), v)
    with pytest.raises(ValueError, match=r"mask of shape \(3, 4\) does not broadcast.*\(2, 3, 5\)"):
        qkv.attention(q, k, v, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"mask must be bool.*torch.int64"):
        qkv.attention(q, k, v, torch.ones(3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match=r"q, k, v must share a dtype"):
        qkv.attention(q.double(), k, v)
    with pytest.raises(
        TypeError, match=r"k must be a floating-point tensor, got dtype torch.int64"
    ):
        qkv.attention(q, k.long(), v)
    with pytest.raises(TypeError, match=r"q must be a torch.Tensor, got list"):
        qkv.attention([1.0], k, v)
    with pytest.raises(ValueError, match=r"score must be .*'cosine'"):
        qkv.attention(q, k, v, score="cosine")
    with pytest.raises(ValueError, match=r"backend must be one of .*'flash9'"):
        qkv.attention(q, k, v, backend="flash9")
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1.5"):
        qkv.attention(q, k, v, dropout_p=1.5)
    with pytest.raises(ValueError, match=r"backend='sdpa' cannot .*custom score"):
        qkv.attention(q, k, v, score=lambda a, b: a @ b.transpose(-1, -2), backend="sdpa")
    with pytest.raises(ValueError, match=r"leading .* dims that do not broadcast"):
        qkv.attention(torch.randn(2, 3, 4, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4))
    with pytest.raises(ValueError, match=r"q must have shape \(\.\.\., s, d\), got \(4,\)"):
        qkv.attention(torch.randn(4), k, v)


# -- weights in row chunks (no gradients) against the one-piece reference ---------------
def _reference_weights(p):
    from qkv.attn.problem import _expand_kv
    from qkv.attn.weights import _masked_scores, safe_softmax

    k, _ = _expand_kv(p)
    return safe_softmax(_masked_scores(p, k)).to(p.q.dtype)  # float32 scores for half q


MASKS = {
    "none": lambda s_q, s_k: (None, False),
    "causal": lambda s_q, s_k: (None, True),
    "causal_before_keys": lambda s_q, s_k: (masks.causal(offset=-3), False),
    "bool_with_empty_rows": lambda s_q, s_k: (torch.rand(2, 1, s_q, s_k) > 0.6, False),
    "float_bias": lambda s_q, s_k: (torch.randn(s_q, s_k, dtype=torch.float64), False),
    "window_and_causal": lambda s_q, s_k: (masks.sliding_window(4), True),
}


@settings(max_examples=40, deadline=None)
@given(
    s_q=st.integers(1, 45),
    s_k=st.integers(1, 45),
    h_kv=st.sampled_from([4, 2]),
    mask=st.sampled_from(sorted(MASKS)),
    chunk=st.sampled_from([1, 64, 1 << 20]),
    seed=st.integers(0, 2**16),
)
def test_row_chunked_weights_equal_the_reference(s_q, s_k, h_kv, mask, chunk, seed):
    """attention_weights without gradients (row chunks, causal key skipping) against the
    reference, fp64, whatever the chunk size (1 << 20 elements: one chunk; 1: 16 rows)."""
    from qkv.attn import functional, weights

    torch.manual_seed(seed)
    m, causal = MASKS[mask](s_q, s_k)
    if isinstance(m, torch.Tensor) and m.dtype == torch.bool:
        m[0, 0, 0] = False  # a row that sees nothing
    q = torch.randn(2, 4, s_q, 8, dtype=torch.float64)
    k = torch.randn(2, h_kv, s_k, 8, dtype=torch.float64)
    p = functional.make_problem(q, k, k, m, is_causal=causal)
    saved, weights._CHUNK_ELEMENTS = weights._CHUNK_ELEMENTS, chunk
    try:
        with torch.no_grad():
            got = functional.attention_weights(p)
    finally:
        weights._CHUNK_ELEMENTS = saved
    torch.testing.assert_close(got, _reference_weights(p), atol=1e-12, rtol=0)
    assert not got.isnan().any()


def test_row_chunked_weights_in_half_precision_and_with_gradients():
    from qkv.attn import functional

    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 33, 16), torch.randn(1, 2, 33, 16)
    p = functional.make_problem(q.half(), k.half(), k.half(), is_causal=True)
    with torch.no_grad():
        got = functional.attention_weights(p)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, _reference_weights(p), atol=1e-3, rtol=0)
    # with gradients wanted, the one-piece reference runs and gradients flow
    qg = q.double().requires_grad_()
    pg = functional.make_problem(qg, k.double(), k.double(), is_causal=True)
    w = functional.attention_weights(pg)
    (g,) = torch.autograd.grad((w * torch.arange(33.0).double()).sum(), qg)
    assert g.abs().sum() > 0


def test_attention_weights_into_a_buffer_checks_its_shape():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=g) for _ in range(3))
    p = make_problem(q, k, v, is_causal=True)
    ref = attention_weights(p)  # chunked without gradients; the reference with them
    torch.testing.assert_close(ref, safe_softmax(_masked_scores(p, k)), atol=1e-6, rtol=0)
    buf = torch.full((1, 2, 5, 5), float("nan"))
    assert attention_weights(p, out=buf) is buf
    assert torch.equal(buf, ref)
    half = torch.empty(1, 2, 5, 5, dtype=torch.bfloat16)
    assert torch.equal(attention_weights(p, out=half), ref.to(torch.bfloat16))
    with pytest.raises(ValueError, match=r"out must have shape \(1, 2, 5, 5\), got \(1, 2, 5, 4\)"):
        attention_weights(p, out=torch.empty(1, 2, 5, 4))
