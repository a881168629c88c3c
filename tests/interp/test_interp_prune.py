"""Head pruning: physically removing heads equals masking them."""

from __future__ import annotations

import json

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


def test_a_pruned_model_saves_reloads_and_decodes(tiny, tmp_path):
    """config.pruned_heads (unpruned numbering) rebuilds the pruned shapes: the checkpoint
    loads strictly, logits match, and KV caches are sized per layer."""
    from qkv import models as M
    from qkv.generation import generate
    from qkv.training.checkpoint import load_weights, save_checkpoint

    model = tiny.lm(n_heads=4, n_kv_heads=2)
    model.prune_heads({0: [1, 3]})  # one head of each kv group
    model.prune_heads({0: [0], 1: [2, 3]})  # current numbering: old head 0; a whole group
    assert model.config.pruned_heads == {
        "decoder.layers.0.self_attn": [0, 1, 3],
        "decoder.layers.1.self_attn": [2, 3],
    }
    save_checkpoint(tmp_path / "ckpt", model, model.config.to_dict())
    cfg = M.config_from_dict(json.loads((tmp_path / "ckpt" / "config.json").read_text()))
    again = M.build(cfg).eval()
    load_weights(again, tmp_path / "ckpt")
    layer0 = again.decoder.layers[0].self_attn
    assert (layer0.n_heads, layer0.n_kv_heads) == (1, 1)
    ids = torch.randint(4, 50, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(again(ids), model(ids), atol=0, rtol=0)
    caches = again.make_cache(2, 16)
    assert [c.k.shape[1] for c in caches] == [1, 1]
    cached = generate(again, ids, max_new_tokens=5, eos_id=None)
    assert (
        cached.tokens == generate(again, ids, max_new_tokens=5, eos_id=None, use_cache=False).tokens
    )


def test_pruned_heads_config_is_validated_and_refused_by_to_hf(tiny, tmp_path):
    from qkv import models as M
    from qkv.interop import HFConversionError, to_hf

    with pytest.raises(
        ValueError,
        match=r"pruned_heads\['x'\] must be a non-empty list of head indices in \[0, n_heads=4\), got \[4\]",
    ):
        M.LMConfig(n_heads=4, d_model=32, pruned_heads={"x": [4]})
    with pytest.raises(ValueError, match=r"removes every head \(4\)"):
        M.LMConfig(n_heads=4, d_model=32, pruned_heads={"x": [0, 1, 2, 3]})
    with pytest.raises(ValueError, match=r"no attention module named 'decoder.layers.9.self_attn'"):
        M.build(
            M.LMConfig(
                n_heads=4, d_model=32, n_layers=2, pruned_heads={"decoder.layers.9.self_attn": [0]}
            )
        )
    model = M.from_preset("gpt2-tiny", vocab_size=50)
    model.prune_heads({0: [0]})
    with pytest.raises(HFConversionError, match=r"pruned_heads=.*export the unpruned model"):
        to_hf(model, tmp_path / "hf")
