"""Head pruning: physically removing heads equals masking them."""

from __future__ import annotations

import pytest
import torch

from qkv.interp import mask_heads, prune_heads, record_attention


def test_pruning_equals_masking_the_heads(tiny):
    model = tiny.seq2seq()
    src = torch.randint(4, 50, (2, 7))
    tgt = torch.randint(4, 50, (2, 5))
    masks = {
        "encoder.layers.0.self_attn": torch.tensor([1.0, 0.0, 1.0, 0.0]),
        "decoder.layers.1.cross_attn": torch.tensor([0.0, 1.0, 1.0, 1.0]),
    }
    with torch.no_grad(), mask_heads(model, masks):
        masked = model(src, tgt)
    kept = prune_heads(
        model, {"encoder.layers.0.self_attn": [1, 3], "decoder.layers.1.cross_attn": [0]}
    )
    assert kept == {"encoder.layers.0.self_attn": (0, 2), "decoder.layers.1.cross_attn": (1, 2, 3)}
    enc = model.encoder.layers[0].self_attn
    assert (enc.n_heads, enc.n_kv_heads) == (2, 2)
    assert enc.qkv_proj.weight.shape == (3 * 16, 32) and enc.out_proj.weight.shape == (32, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(src, tgt), masked)
    with record_attention(model) as rec:
        tiny.run(model)
    assert rec["encoder.layers.0.self_attn"].weights.shape[1] == 2
    assert rec["decoder.layers.1.cross_attn"].weights.shape[1] == 3


def test_pruning_grouped_query_heads(tiny):
    model = tiny.lm(n_heads=4, n_kv_heads=2)
    ids = torch.randint(0, 50, (2, 9))
    with (
        torch.no_grad(),
        mask_heads(model, {"decoder.layers.0.self_attn": torch.tensor([1.0, 0.0, 1.0, 0.0])}),
    ):
        masked = model(ids)
    # one head from each of the two groups: groups keep one query head each
    assert prune_heads(model, {0: [1, 3]}) == {"decoder.layers.0.self_attn": (0, 2)}
    attn = model.decoder.layers[0].self_attn
    assert (attn.n_heads, attn.n_kv_heads) == (2, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), masked)
    # a whole group removes its key/value head
    prune_heads(model, {1: [2, 3]})
    assert (
        model.decoder.layers[1].self_attn.n_heads,
        model.decoder.layers[1].self_attn.n_kv_heads,
    ) == (2, 1)
    tiny.run(model)


def test_pruning_errors_and_atomicity(tiny):
    model = tiny.lm(n_heads=4, n_kv_heads=2)
    w = model.decoder.layers[0].self_attn.qkv_proj.weight.clone()
    with pytest.raises(ValueError, match=r"different numbers of query heads \{0: 1, 1: 2\}"):
        prune_heads(model, {0: [1]})
    with pytest.raises(ValueError, match=r"head 4 out of range .* n_heads=4"):
        prune_heads(model, {0: [0, 2], 1: [4]})
    assert torch.equal(model.decoder.layers[0].self_attn.qkv_proj.weight, w)  # nothing changed
    with pytest.raises(ValueError, match="cannot prune every head"):
        prune_heads(model, {1: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match=r"layer 0 matches 2 .* self-attention modules"):
        prune_heads(tiny.seq2seq(), {0: [1]})
    with pytest.raises(ValueError, match=r"per-head position bias \(ALiBi\)"):
        prune_heads(tiny.lm(pos="alibi"), {0: [1]})


def test_model_method_prunes_like_the_function():
    import torch as _torch

    from qkv.models import from_preset

    _torch.manual_seed(0)
    a = from_preset("gpt2-tiny", dropout=0.0, attn_dropout=0.0).eval()
    b = from_preset("gpt2-tiny", dropout=0.0, attn_dropout=0.0).eval()
    b.load_state_dict(a.state_dict())
    assert a.prune_heads({0: [1]}) == prune_heads(b, {0: [1]})
    x = _torch.randint(0, a.config.vocab_size, (2, 7))
    _torch.testing.assert_close(a(x), b(x))
    assert a.decoder.layers[0].self_attn.n_heads == a.config.n_heads - 1
