"""Head statistics and pattern labels on constructed attention."""

from __future__ import annotations

import math

import pytest
import torch

from qkv.interp import AttentionEntry, head_stats, label_heads, record_attention


def _rows(s: int, fn) -> torch.Tensor:
    """A (1, 1, s, s) weight matrix whose row i puts all weight on key fn(i)."""
    w = torch.zeros(1, 1, s, s)
    for i in range(s):
        w[0, 0, i, fn(i)] = 1.0
    return w


def test_pure_previous_token_head_is_labelled_so():
    s = 8
    prev = _rows(s, lambda i: max(i - 1, 0))  # row 0 has only itself to attend to
    (st,) = head_stats(prev, kind="decoder_self")
    assert st.label == "previous_token"
    assert st.previous == pytest.approx(1.0)
    assert st.diagonal == pytest.approx(1 / s)  # only row 0
    assert st.next == pytest.approx(0.0)
    assert st.entropy == pytest.approx(0.0)
    assert st.distance == pytest.approx((s - 1) / s)


def test_labels_of_constructed_heads():
    s = 10
    heads = torch.cat(
        [
            _rows(s, lambda i: max(i - 1, 0)),
            _rows(s, lambda i: min(i + 1, s - 1)),
            _rows(s, lambda i: i),
            _rows(s, lambda i: 0),
            torch.full((1, 1, s, s), 1.0 / s),  # uniform
            _rows(s, lambda i: (3 * i + 5) % s),  # scattered, one key each
        ],
        dim=1,
    )
    labels = label_heads(heads)
    assert [labels[("", h)] for h in range(6)] == [
        "previous_token",
        "next_token",
        "diagonal",
        "first_token",
        "broad",
        "mixed",
    ]
    stats = head_stats(heads, special=[s - 1])
    assert stats[3].first_token == pytest.approx(1.0)
    assert stats[4].norm_entropy == pytest.approx(1.0)
    assert stats[4].entropy == pytest.approx(math.log(s))
    assert stats[4].special == pytest.approx(1.0 / s)
    assert stats[1].next == pytest.approx(1.0)


def test_special_tokens_and_cross_attention_have_no_positional_label():
    s = 6
    w = _rows(s, lambda i: i)
    (cross,) = head_stats(w, kind="cross")
    assert cross.diagonal == pytest.approx(1.0) and cross.label == "mixed"
    sep = _rows(s, lambda i: 4)
    (st,) = head_stats(sep, special=torch.tensor([0, 0, 0, 0, 1, 0], dtype=torch.bool))
    assert st.special == pytest.approx(1.0) and st.label == "special_tokens"


def test_query_positions_follow_recorded_rows_and_cache_offset():
    w = _rows(6, lambda i: max(i - 1, 0))[:, :, [2, 5]]  # rows 2 and 5 only
    e = AttentionEntry("x", "decoder_self", 0, w, (0,), (2, 5), 6)
    (st,) = head_stats(e)
    assert st.previous == pytest.approx(1.0) and st.distance == pytest.approx(1.0)
    # one decoding step: query 0 sits at key position 5
    step = AttentionEntry("x", "decoder_self", 0, w[:, :, 1:], (0,), (0,), 1)
    assert step.key_offset == 5
    assert head_stats(step)[0].previous == pytest.approx(1.0)


def test_head_stats_of_a_record_and_query_mask(tiny):
    model = tiny.lm()
    with record_attention(model, layers=[0], heads=[0, 2], dtype=None) as rec:
        tiny.run(model)
    stats = head_stats(rec)
    assert [(s.layer, s.head) for s in stats] == [
        ("decoder.layers.0.self_attn", 0),
        ("decoder.layers.0.self_attn", 2),
    ]
    for s in stats:
        assert s.next == pytest.approx(0.0)  # causal: never the next token
        assert 0.0 <= s.norm_entropy <= 1.0 + 1e-6
    only_first = torch.zeros(2, 9, dtype=torch.bool)
    only_first[:, 1] = True
    masked = head_stats(rec, query_mask=only_first)
    assert masked[0].first_token + masked[0].diagonal == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"special positions \[9\] out of range"):
        head_stats(rec["decoder.layers.0.self_attn"].weights, special=[9])
    with pytest.raises(ValueError, match=r"weights must be \(h, s_q, s_k\)"):
        head_stats(torch.zeros(4, 4))
