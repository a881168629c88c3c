"""The block-sparse backend against the math reference with the dense mask: outputs and
gradients of q, k and v, for every mask family, composed with causal and padding."""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv import masks
from qkv.attn import attention, make_problem, pick_backend

bs = importlib.import_module("qkv.attn.blocksparse")

ATOL = RTOL = 1e-5  # fp32


@pytest.fixture(autouse=True)
def _one_thread():
    # the tensors here are tiny: one thread avoids waiting on a busy sibling core
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _inputs(b, h, h_kv, s_q, s_k, d=8, d_v=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, s_q, d, generator=g, dtype=dtype).requires_grad_()
    k = torch.randn(b, h_kv, s_k, d, generator=g, dtype=dtype).requires_grad_()
    v = torch.randn(b, h_kv, s_k, d_v, generator=g, dtype=dtype).requires_grad_()
    return q, k, v


def _check(mask, q, k, v, block=16, is_causal=False, atol=ATOL, **kw):
    """Forward and backward of blocksparse (tile ``block``) equal math with the dense mask."""
    ref = attention(q, k, v, mask, backend="math", is_causal=is_causal, **kw)
    p = make_problem(q, k, v, mask, is_causal=is_causal, **kw)
    assert pick_backend(p, "blocksparse").name == "blocksparse"
    out = bs.blocksparse_attention(p, block=block)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=atol, rtol=RTOL)
    go = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=ref.dtype)
    grads_ref = torch.autograd.grad(ref, (q, k, v), go)
    grads = torch.autograd.grad(out, (q, k, v), go)
    for name, g, g_ref in zip("qkv", grads, grads_ref):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, g_ref, atol=atol, rtol=RTOL, msg=f"grad of {name}")
    return out


def _doc_ids(b, s, seed=0):
    return (
        torch.randint(0, 4, (b, s), generator=torch.Generator().manual_seed(seed)).sort(-1).values
    )


FAMILIES = {
    "window": lambda b, s: masks.sliding_window(9),
    "causal_window": lambda b, s: masks.sliding_window(20, causal=True),
    "dilated": lambda b, s: masks.dilated(5, 3),
    "global|window": lambda b, s: masks.global_tokens([0, s // 2]) | masks.sliding_window(5),
    "random": lambda b, s: masks.random_blocks(2, block=16, seed=1),
    "bigbird": lambda b, s: masks.bigbird(8, 3, 1, 2, seed=2),
    "prefix_lm": lambda b, s: masks.prefix_lm([5, s // 2][:b]),
    "document": lambda b, s: masks.document(_doc_ids(b, s)),
}


@pytest.mark.parametrize("compose", ["alone", "causal", "padding", "causal&padding"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_families_match_math(family, compose):
    b, s = 2, 75  # not a multiple of the tile: padded and masked
    mask = FAMILIES[family](b, s)
    if "causal" in compose:
        mask = masks.causal() & mask
    if "padding" in compose:
        mask = mask & masks.padding([s, 30])
    _check(mask, *_inputs(b, 4, 2, s, s))


def test_is_causal_folds_in_and_cross_lengths():
    q, k, v = _inputs(2, 2, 2, 40, 90)
    _check(masks.sliding_window(7), q, k, v, is_causal=True)  # queries at the end of the keys
    q, k, v = _inputs(1, 2, 2, 90, 40)
    _check(masks.sliding_window(15) | masks.global_tokens([3]), q, k, v)  # s_q > s_k
    _check(masks.bigbird(8, 3, 1, 1) & masks.causal(), q, k, v)
    _check(None, q, k, v)  # no mask: every tile


def test_rows_that_see_nothing_give_zeros_and_finite_grads():
    q, k, v = _inputs(3, 2, 2, 50, 50)
    mask = masks.sliding_window(3) & masks.padding([0, 10, 50])  # row 0 sees nothing at all
    out = _check(mask, q, k, v)
    assert (out[0] == 0).all()
    assert (out[1, :, 12:] == 0).all()  # queries past key 11 see no real key
    q, k, v = _inputs(1, 2, 2, 40, 40)
    out = _check(~masks.sliding_window(100), q, k, v)  # every row empty
    assert (out == 0).all()


def test_grouped_shared_and_unbatched_heads():
    _check(masks.sliding_window(11), *_inputs(2, 6, 3, 70, 70))  # GQA, 2 query heads per kv head
    _check(masks.bigbird(16, 3, 1, 1), *_inputs(1, 4, 1, 70, 70))  # multi-query
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 33, 8, generator=g).requires_grad_()  # (h, s, d)
    k = torch.randn(3, 33, 8, generator=g).requires_grad_()
    v = torch.randn(3, 33, 8, generator=g).requires_grad_()
    _check(masks.sliding_window(5, causal=True), q, k, v, block=8)
    _check(masks.dilated(3, 2), q[0], k[0], v[0], block=8)  # (s, d)
    kb = torch.randn(1, 2, 40, 8, generator=g).requires_grad_()  # keys broadcast over batch
    vb = torch.randn(1, 2, 40, 8, generator=g).requires_grad_()
    qb = torch.randn(3, 2, 40, 8, generator=g).requires_grad_()
    _check(masks.sliding_window(9), qb, kb, vb)


def test_score_scale_generic_masks_and_tile_sizes():
    q, k, v = _inputs(2, 2, 2, 45, 45)
    _check(masks.sliding_window(9), q, k, v, scale=0.3)
    _check(masks.sliding_window(9), q, k, v, score="dot")
    r = torch.rand(45, 45, generator=torch.Generator().manual_seed(3)) < 0.2
    _check(masks.causal() & masks.DenseMask(r), q, k, v)  # no analytic bounds: dense fallback
    for block in (1, 7, 64, 128):  # tiles larger than the sequence, too
        _check(masks.sliding_window(6, causal=True), q, k, v, block=block)


def test_chunking_over_rows_heads_and_groups(monkeypatch):
    monkeypatch.setattr(bs, "CHUNK_ELEMENTS", 300)  # smaller than one tile row: splits heads
    _check(masks.bigbird(8, 3, 1, 2) & masks.padding([70, 44]), *_inputs(2, 4, 4, 70, 70), block=8)
    monkeypatch.setattr(bs, "CHUNK_ELEMENTS", 5000)
    _check(masks.global_tokens([2]) | masks.sliding_window(9), *_inputs(2, 4, 2, 70, 70), block=8)


def test_half_precision_runs_in_float32():
    q, k, v = (t.detach().bfloat16().requires_grad_() for t in _inputs(1, 2, 2, 40, 40))
    out = attention(q, k, v, masks.sliding_window(7), backend="blocksparse")
    assert out.dtype == torch.bfloat16
    ref = attention(*(t.float() for t in (q, k, v)), masks.sliding_window(7), backend="math")
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    out.sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16


@settings(max_examples=25, deadline=None)
@given(
    s_q=st.integers(1, 150),
    s_k=st.integers(1, 150),
    block=st.sampled_from([8, 16, 32, 64]),
    w=st.integers(1, 80),
    seed=st.integers(0, 1000),
    kind=st.sampled_from(["window", "causal_window", "bigbird", "global", "random", "document"]),
    causal=st.booleans(),
)
def test_hypothesis_lengths_windows_seeds(s_q, s_k, block, w, seed, kind, causal):
    if kind == "window":
        mask = masks.sliding_window(w)
    elif kind == "causal_window":
        mask = masks.sliding_window(w, causal=True)
    elif kind == "bigbird":
        mask = masks.bigbird(1 + w % 20, 1 + 2 * (seed % 2), seed % 3, seed % 4, seed)
    elif kind == "global":
        mask = masks.global_tokens([seed % s_k]) | masks.dilated(1 + w % 9, 1 + seed % 4)
    elif kind == "random":
        mask = masks.random_blocks(1 + seed % 3, block=1 + w % 24, seed=seed)
    else:
        s_q = min(s_q, s_k)
        mask = masks.document(_doc_ids(1, s_k, seed))
    if causal:
        mask = masks.causal() & mask
    _check(mask, *_inputs(1, 2, 1, s_q, s_k, seed=seed), block=block)


def test_saved_memory_is_linear_in_length():
    # the backward keeps q, k, v, out and the row log-sum-exp: no (s_q, s_k) tensor
    s = 4096
    q, k, v = _inputs(1, 2, 2, s, s, d=16, d_v=16)
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = attention(q, k, v, masks.sliding_window(64, causal=True), backend="blocksparse")
    io = q.numel() * q.element_size()
    assert sum(saved) <= 5 * io  # q, k, v, out (+ lse): far below one s^2 score matrix
    assert sum(saved) < s * s
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_refusals_say_why():
    q, k, v = _inputs(2, 2, 2, 20, 20)
    m = masks.sliding_window(5)
    with pytest.raises(ValueError, match="does not implement dropout"):
        attention(q, k, v, m, dropout_p=0.1, backend="blocksparse")
    with pytest.raises(ValueError, match="never materializes the weights"):
        attention(q, k, v, m, return_weights=True, backend="blocksparse")
    with pytest.raises(ValueError, match="needs a lazy qkv.masks.Mask"):
        attention(q, k, v, m.to_dense(20, 20), backend="blocksparse")
    with pytest.raises(ValueError, match="dot-product scores only"):
        attention(q, k, v, m, score=lambda a, b: a @ b.transpose(-1, -2), backend="blocksparse")
    per_head = masks.DenseMask(torch.rand(2, 2, 20, 20) < 0.5)
    with pytest.raises(ValueError, match="same for every head"):
        attention(q, k, v, masks.causal() & per_head, backend="blocksparse")
    with pytest.raises(ValueError, match=r"batch size 3 but the problem's batch shape is \(2, 2\)"):
        attention(q, k, v, masks.padding([1, 2, 3]), backend="blocksparse")
    with pytest.raises(ValueError, match="block must be a positive int, got 0"):
        bs.blocksparse_attention(make_problem(q, k, v, m), block=0)


def test_auto_takes_blocksparse_only_for_long_sparse_problems():
    def picked(s, mask, **kw):
        x = torch.zeros(1, 1, s, 8)
        return pick_backend(make_problem(x, x, x, mask, **kw), "auto").name

    assert picked(2048, masks.sliding_window(128, causal=True)) == "blocksparse-auto"
    assert picked(4096, masks.bigbird(64, 3, 1, 3)) == "blocksparse-auto"
    assert picked(1024, masks.sliding_window(64, causal=True)) == "sdpa"  # short
    assert picked(2048, masks.causal()) == "sdpa"  # half the tiles: dense is faster
    assert picked(2048, None, is_causal=True) == "sdpa"
    assert picked(2048, None) == "sdpa"
    r = masks.DenseMask(torch.eye(2048, dtype=torch.bool))
    assert picked(2048, r) == "sdpa"  # generic mask: no analytic bounds
    reason = bs.auto_why_not(make_problem(*(torch.zeros(1, 1, 2048, 8),) * 3, masks.causal()))
    assert reason is not None and "of the tiles are needed" in reason
