"""Batch-specific masks for every batch size, the empty batch (``b = 0``) included.

Property tests (Hypothesis): ``padding`` (from lengths or a bool key mask) and ``document``
masks, alone and joined with batch-independent masks by ``&``, ``|`` and ``~``, materialize
to the dense tensor an independent loop computes, with ``to_bias`` and ``to_block_layout``
consistent with it, for ``b`` in 0..3.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv import masks
from qkv.attn import attention, available_backends


def _pad_ref(lengths: list[int], s_q: int, s_k: int) -> torch.Tensor:
    out = torch.zeros(len(lengths), 1, s_q, s_k, dtype=torch.bool)
    for b, n in enumerate(lengths):
        for q in range(s_q):
            for k in range(s_k):
                out[b, 0, q, k] = k < n
    return out


def _causal_ref(s_q: int, s_k: int) -> torch.Tensor:
    # bottom-right aligned: query q sits at key position q + s_k - s_q
    return torch.tensor(
        [[k <= q + s_k - s_q for k in range(s_k)] for q in range(s_q)], dtype=torch.bool
    ).view(s_q, s_k)


@st.composite
def _problem(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    s_q = draw(st.integers(0, 9))
    s_k = draw(st.integers(0, 9))
    b = draw(st.integers(0, 3))
    lengths = draw(st.lists(st.integers(0, s_k), min_size=b, max_size=b))
    return s_q, s_k, lengths


def _check_views(m: masks.Mask, expect: torch.Tensor, s_q: int, s_k: int) -> None:
    dense = m.to_dense(s_q, s_k)
    assert dense.dtype == torch.bool and dense.shape == expect.shape
    assert torch.equal(dense, expect)
    bias = m.to_bias(s_q, s_k)
    assert torch.equal(bias == 0, expect) and torch.isneginf(bias[~expect]).all()
    # the keys some query may attend to (what backends without a dense mask select by)
    assert torch.equal(m.seen_keys(s_q, s_k), expect.any(dim=2)[:, 0])
    block = 4
    layout = m.to_block_layout(s_q, s_k, block)
    n_qb, n_kb = -(-s_q // block), -(-s_k // block)
    assert layout.shape == (expect.shape[0], n_qb, n_kb)
    for i in range(n_qb):
        for j in range(n_kb):
            tile = expect[:, 0, i * block : (i + 1) * block, j * block : (j + 1) * block]
            assert torch.equal(layout[:, i, j], tile.flatten(1).any(1))


@settings(max_examples=60, deadline=None)
@given(_problem(), st.sampled_from(["lengths", "bool"]), st.sampled_from(["&", "|", "~", ""]))
def test_padding_masks_and_their_combinations_for_any_batch_size(problem, form, op):
    s_q, s_k, lengths = problem
    ref = _pad_ref(lengths, s_q, s_k)
    if form == "lengths":
        pad = masks.padding(lengths)
    else:
        key = torch.arange(s_k)[None, :] < torch.tensor(lengths, dtype=torch.long)[:, None]
        pad = masks.padding(key.view(len(lengths), s_k))
    tri = _causal_ref(s_q, s_k)[None, None]
    m, expect = {
        "&": (pad & masks.causal(), ref & tri),
        "|": (pad | masks.causal(), ref | tri),
        "~": (~pad, ~ref),
        "": (pad, ref),
    }[op]
    _check_views(m, expect.expand(len(lengths), 1, s_q, s_k), s_q, s_k)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3), st.integers(0, 8), st.data())
def test_document_masks_for_any_batch_size(b, s, data):
    ids = data.draw(st.lists(st.lists(st.integers(0, 2), min_size=s, max_size=s), min_size=b,
                             max_size=b))  # fmt: skip
    t = torch.tensor(ids, dtype=torch.long).view(b, s)
    expect = (t[:, None, :, None] == t[:, None, None, :]).view(b, 1, s, s)
    _check_views(masks.document(t), expect, s, s)
    pad = masks.padding([s] * b)
    _check_views(masks.document(t) & pad, expect, s, s)


@settings(max_examples=30, deadline=None)
@given(_problem())
def test_per_row_prefix_lm_for_any_batch_size(problem):
    s_q, s_k, prefix = problem
    tri = _causal_ref(s_q, s_k)[None, None]
    expect = tri | _pad_ref(prefix, s_q, s_k)
    _check_views(masks.prefix_lm(prefix), expect.expand(len(prefix), 1, s_q, s_k), s_q, s_k)


@pytest.mark.parametrize("backend", ["math", "sdpa", "auto", "blocksparse", "flex"])
def test_attention_over_an_empty_batch_with_a_padding_mask_is_empty(backend):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available here")
    q = torch.randn(0, 2, 3, 4, requires_grad=True)
    mask = masks.padding([]) & masks.causal()
    if backend == "flex" and not torch.cuda.is_available():  # no FlexAttention backward on CPU
        with torch.no_grad():
            assert attention(q, q, q, mask=mask, backend=backend).shape == (0, 2, 3, 4)
        return
    out = attention(q, q, q, mask=mask, backend=backend)
    assert out.shape == (0, 2, 3, 4)
    out.sum().backward()
    assert q.grad is not None and q.grad.shape == q.shape
