"""record_attention: weights equal the math backend's, outputs are unchanged, selections,
no state left on modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qkv.attn import MultiHeadAttention, _record, functional
from qkv.interp import AttentionRecord, record_attention

TOL = {"atol": 1e-5, "rtol": 1e-4}
#: recording every weight computes the output from them instead of the fast backend: equal
#: to it within the numerics contract's tolerance (docs/architecture.md), not bit for bit
OUT_TOL = {"atol": 1e-5, "rtol": 1e-5}


def _module_state(model: nn.Module) -> dict[str, tuple]:
    return {
        name: (
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks),
            tuple(m._backward_hooks),
            tuple(sorted(m.__dict__)),
            tuple(sorted(m._buffers)),
        )
        for name, m in model.named_modules()
    }


def _math_weights(model: nn.Module, tiny) -> dict[str, torch.Tensor]:
    """Every attention module's weights from the math backend itself (return_weights)."""
    model.set_backend("math")
    store: dict[str, torch.Tensor] = {}
    mods = {n: m for n, m in model.named_modules() if isinstance(m, MultiHeadAttention)}

    def wrap(name: str, forward):
        def f(*args, **kwargs):
            out, w = forward(*args, **{**kwargs, "return_weights": True})
            store[name] = w
            return out

        return f

    for n, m in mods.items():
        m.forward = wrap(n, m.forward)  # instance attribute, deleted below
    try:
        tiny.run(model)
    finally:
        for m in mods.values():
            del m.forward
    return store


@pytest.mark.parametrize("family", ["bert", "lm", "seq2seq", "vit"])
@pytest.mark.parametrize("backend", ["sdpa", "auto"])
def test_recording_equals_math_weights_and_keeps_outputs(family, backend, tiny):
    model = tiny.family(family)
    model.set_backend(backend)
    plain = tiny.run(model)
    with record_attention(model, dtype=None) as rec:  # kept in float32
        recorded = tiny.run(model)
    torch.testing.assert_close(recorded, plain, **OUT_TOL)
    reference = _math_weights(model, tiny)
    assert list(rec) == list(reference)
    for name, entry in rec.items():
        torch.testing.assert_close(entry.weights, reference[name], **TOL)
        _, h, s_q, _ = reference[name].shape
        assert entry.heads == tuple(range(h)) and entry.rows == tuple(range(s_q))


def test_record_keys_kinds_and_layer_indices(tiny):
    model = tiny.seq2seq()
    with record_attention(model) as rec:
        tiny.run(model)
    assert list(rec) == [
        "encoder.layers.0.self_attn",
        "encoder.layers.1.self_attn",
        "decoder.layers.0.self_attn",
        "decoder.layers.0.cross_attn",
        "decoder.layers.1.self_attn",
        "decoder.layers.1.cross_attn",
    ]
    assert rec.kinds == ("encoder_self", "decoder_self", "cross")
    cross = rec["decoder.layers.1.cross_attn"]
    assert cross.kind == "cross" and cross.layer_index == 1
    assert tuple(cross.weights.shape) == (2, 4, 5, 7) and cross.weights.dtype == torch.bfloat16
    # the padded source keys get no weight, every query row sums to 1 (each of its 7
    # weights within bfloat16's relative 2^-8, so the sum within 2^-8)
    assert torch.all(cross.weights[-1, :, :, 5:] == 0)
    sums = cross.weights.float().sum(-1)
    torch.testing.assert_close(sums, torch.ones(2, 4, 5), atol=2**-8, rtol=0)
    assert rec.stack("encoder_self").shape == (2, 2, 4, 7, 7)
    assert rec["decoder.layers.0.self_attn"].weights.triu(1).abs().max() == 0  # causal


def test_selection_of_layers_heads_rows_matches_full_record(tiny):
    model = tiny.seq2seq(pos="alibi")  # a per-head float bias must be sliced with the heads
    with record_attention(model, dtype=None) as full:
        tiny.run(model)
    with record_attention(model, layers=[1], heads=[3, 1], rows=[0, -1], dtype=None) as part:
        tiny.run(model)
    assert sorted(part) == [
        "decoder.layers.1.cross_attn",
        "decoder.layers.1.self_attn",
        "encoder.layers.1.self_attn",
    ]
    for name, e in part.items():
        s_q = full[name].s_q
        assert e.heads == (3, 1) and e.rows == (0, s_q - 1)
        expected = full[name].weights[:, [3, 1]][:, :, [0, s_q - 1]]
        torch.testing.assert_close(e.weights, expected, **TOL)
        torch.testing.assert_close(e.head(1), expected[0, 1], **TOL)
    with record_attention(model, layers=["cross", "encoder.layers.0.self_attn"]) as sel:
        tiny.run(model)
    assert sorted(sel) == [
        "decoder.layers.0.cross_attn",
        "decoder.layers.1.cross_attn",
        "encoder.layers.0.self_attn",
    ]


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_grouped_query_attention(pos, tiny):
    model = tiny.lm(n_heads=4, n_kv_heads=2, pos=pos)
    model.set_backend("sdpa")
    plain = tiny.run(model)
    with record_attention(model, dtype=None) as full:
        out = tiny.run(model)
    torch.testing.assert_close(out, plain, **OUT_TOL)
    with record_attention(model, heads=[1, 2], rows=[3, 8], dtype=None) as part:
        tiny.run(model)
    for name, e in part.items():
        torch.testing.assert_close(e.weights, full[name].weights[:, [1, 2]][:, :, [3, 8]], **TOL)
    # math-backend weights of a GQA module, computed by hand from its projections
    m = model.decoder.layers[0].self_attn
    x = torch.randn(1, 6, 32)
    with record_attention(m, dtype=None) as rec:
        m(x, is_causal=True, positions=torch.arange(6))
    _, w = m(x, is_causal=True, positions=torch.arange(6), return_weights=True)
    torch.testing.assert_close(rec[""].weights, w, **TOL)


def test_no_state_left_on_modules(tiny):
    model = tiny.seq2seq()
    before = _module_state(model)
    with record_attention(model, heads=[0]) as rec:
        tiny.run(model)
        assert _module_state(model) == before  # not even while recording
    assert _module_state(model) == before
    assert _record.current() is None
    n = len(rec.calls("encoder.layers.0.self_attn"))
    tiny.run(model)  # after the block nothing is recorded any more
    assert len(rec.calls("encoder.layers.0.self_attn")) == n == 1


def test_recorders_nest_and_calls_accumulate(tiny):
    model = tiny.lm()
    with record_attention(model) as outer:
        tiny.run(model)
        with record_attention(model, layers=[0]) as inner:
            tiny.run(model)
    assert list(inner) == ["decoder.layers.0.self_attn"]
    assert len(outer.calls("decoder.layers.0.self_attn")) == 2
    assert [e.call for e in outer.calls("decoder.layers.1.self_attn")] == [0, 1]


def test_incremental_decoding_aligns_queries_to_the_end(tiny):
    model = tiny.lm()
    ids = torch.randint(0, 50, (1, 6))
    cache = model.make_cache(1, 8)
    with record_attention(model) as rec:
        model(ids[:, :5], cache=cache)
        model(ids[:, 5:], cache=cache)
    with record_attention(model) as full:
        model(ids)
    step = rec.calls("decoder.layers.1.self_attn")[1]
    assert step.s_q == 1 and step.s_k == 6 and step.key_offset == 5
    torch.testing.assert_close(
        step.weights, full["decoder.layers.1.self_attn"].weights[:, :, 5:], **TOL
    )


def test_selection_errors_name_the_values(tiny):
    model = tiny.seq2seq()
    with pytest.raises(ValueError, match=r"layers entry 7 matches no attention module"):
        record_attention(model, layers=[7]).__enter__()
    with pytest.raises(ValueError, match=r"heads \[4\] out of range .* n_heads=4"):
        record_attention(model, heads=[0, 4]).__enter__()
    with pytest.raises(ValueError, match=r"rows \[9\] out of range"):
        with record_attention(model, rows=[9]):
            tiny.run(model)
    with pytest.raises(ValueError, match="no qkv MultiHeadAttention"):
        record_attention(nn.Linear(2, 2)).__enter__()
    assert _record.current() is None
    assert isinstance(AttentionRecord(), AttentionRecord)


@pytest.mark.parametrize("family", ["lm", "seq2seq"])
def test_streaming_entries_share_one_buffer_and_equal_the_full_record(family, tiny):
    model = tiny.family(family)
    with record_attention(model) as full:
        tiny.run(model)
    seen: list[tuple[str, int, torch.Tensor, int]] = []

    def keep(entry):
        seen.append((entry.name, entry.call, entry.weights.clone(), entry.weights.data_ptr()))

    with record_attention(model, on_entry=keep) as rec:
        out = tiny.run(model)
    assert len(rec) == 0  # nothing kept
    torch.testing.assert_close(out, tiny.run(model), **OUT_TOL)
    assert [n for n, *_ in seen] == list(full)
    for name, call, w, _ in seen:
        assert call == 0
        torch.testing.assert_close(w, full[name].weights, atol=0, rtol=0)
    # modules of one shape write into one buffer
    by_shape: dict[tuple, set[int]] = {}
    for _, _, w, ptr in seen:
        by_shape.setdefault(tuple(w.shape), set()).add(ptr)
    assert all(len(ptrs) == 1 for ptrs in by_shape.values())
    assert len(by_shape) < len(seen)


def test_the_default_bfloat16_rounds_the_float32_weights_once(tiny):
    model = tiny.lm()
    with record_attention(model, dtype=None) as full:
        out = tiny.run(model)
    with record_attention(model) as compact:  # the default: bfloat16
        out_compact = tiny.run(model)
    # the outputs come from the float32 weights, before they are rounded for storage
    assert torch.equal(out_compact, out)
    for name, e in compact.items():
        assert full[name].weights.dtype == torch.float32 and e.weights.dtype == torch.bfloat16
        assert torch.equal(e.weights, full[name].weights.to(torch.bfloat16))
    with record_attention(model, dtype=torch.bfloat16, heads=[1], rows=[-1, 0]) as half:
        tiny.run(model)
    for name, e in half.items():
        assert e.weights.dtype == torch.bfloat16
        want = full[name].weights[:, [1]][:, :, [-1, 0]].to(torch.bfloat16)
        assert torch.equal(e.weights, want)
    with pytest.raises(ValueError, match=r"dtype must be a floating torch.dtype, got torch.int8"):
        record_attention(model, dtype=torch.int8).__enter__()


def test_causal_selections_equal_the_full_record(tiny):
    # a plain causal mask keeps its shortcut for head selections and gives row selections
    # their own rows of the mask; both must equal slices of the full record
    model = tiny.lm()
    with record_attention(model, dtype=None) as full:
        tiny.run(model)
    for heads, rows in (([2, 0], None), (None, [0, -1, 3]), ([1], [-2])):
        with record_attention(model, heads=heads, rows=rows, dtype=None) as part:
            tiny.run(model)
        for name, e in part.items():
            want = full[name].weights[:, list(e.heads)][:, :, list(e.rows)]
            torch.testing.assert_close(e.weights, want, atol=1e-6, rtol=0)


def _output_and_grads(model: nn.Module, tiny) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    out = tiny.run(model)
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
    params = list(model.parameters())
    return out.detach(), list(torch.autograd.grad(loss, params, allow_unused=True))


@pytest.mark.parametrize(
    ("family", "kw", "backend"),
    [
        ("lm", {}, "math"),
        ("lm", {}, "sdpa"),
        ("lm", {}, "auto"),
        ("lm", {}, "blocksparse"),
        ("lm", {"pos": "relative", "n_kv_heads": 2}, "sdpa"),  # learned bias, grouped heads
        ("seq2seq", {"pos": "relative"}, "sdpa"),  # padding, cross-attention
        ("seq2seq", {}, "auto"),
        ("bert", {}, "sdpa"),
        ("vit", {}, "auto"),
    ],
)
def test_every_weight_recorded_keeps_outputs_and_gradients(family, kw, backend, tiny):
    """Recording every weight computes each output from them (weights_and_output) instead
    of the backend: outputs and every parameter's gradient equal the backend's within the
    numerics contract's tolerance."""
    model = getattr(tiny, family)(**kw)
    model.set_backend(backend)
    plain, plain_grads = _output_and_grads(model, tiny)
    with record_attention(model) as rec:
        out, grads = _output_and_grads(model, tiny)
    assert len(rec) > 0
    torch.testing.assert_close(out, plain, **OUT_TOL)
    assert sum(g is not None for g in grads) > len(grads) // 2
    for got, want in zip(grads, plain_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, **OUT_TOL)


def test_every_weight_runs_attention_once_and_selections_keep_the_backend(tiny, monkeypatch):
    calls: list[int] = []
    math = functional._BACKENDS["math"]
    spy = functional.Backend("spy", lambda p: calls.append(1) or math.run(p), math.why_not, None)
    monkeypatch.setitem(functional._BACKENDS, "spy", spy)
    model = tiny.lm()  # 2 layers
    model.set_backend("spy")
    plain = tiny.run(model)
    assert len(calls) == 2
    for selection, backend_calls in (
        ({}, 0),  # every weight: the output comes from them
        ({"heads": [0]}, 2),  # selections compute only what is asked, beside the backend
        ({"rows": [-1]}, 2),
        ({"layers": [0]}, 1),  # the layer not recorded runs its backend
        ({"dtype": None}, 0),  # kept in float32, as the default bfloat16 (rounded after)
    ):
        calls.clear()
        with record_attention(model, **selection) as rec:
            out = tiny.run(model)
        assert len(calls) == backend_calls, selection
        torch.testing.assert_close(out, plain, **OUT_TOL)
        assert len(rec) == (1 if "layers" in selection else 2)
    calls.clear()
    with record_attention(model) as outer, record_attention(model) as inner:
        tiny.run(model)  # the outer recorder computes the output; the inner reuses it
    assert calls == []
    for name, e in inner.items():
        torch.testing.assert_close(e.weights, outer[name].weights, atol=0, rtol=0)
    mha = model.decoder.layers[0].self_attn
    x = torch.randn(1, 6, 32)
    with record_attention(mha, dtype=None) as rec:
        _, w = mha(x, is_causal=True, return_weights=True)  # asked of the module: it runs
    assert len(calls) == 1
    torch.testing.assert_close(rec[""].weights, w, **TOL)


def test_attention_dropout_in_training_keeps_the_backend_and_pre_dropout_weights(tiny):
    model = tiny.lm(attn_dropout=0.5).train()
    torch.manual_seed(3)
    plain = tiny.run(model)
    torch.manual_seed(3)
    with record_attention(model, dtype=None) as rec:
        out = tiny.run(model)
    assert torch.equal(out, plain)  # the backend ran, with the same dropout draws
    assert not torch.allclose(out, tiny.run(model.eval()), **OUT_TOL)  # dropout did act
    for e in rec.values():  # recorded before dropout: every row still sums to 1
        torch.testing.assert_close(e.weights.sum(-1), torch.ones(e.weights.shape[:-1]))
