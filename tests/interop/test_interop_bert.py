"""BERT: parity with ``transformers`` (tiny random models, no download), to_hf round trip,
and record_attention on a loaded model against transformers' own attention weights."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.interop import from_hf, to_hf
from qkv.interp import record_attention

T = pytest.importorskip("transformers")


def _config(**kw):
    base = dict(
        vocab_size=101,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=72,
        max_position_embeddings=40,
        type_vocab_size=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return T.BertConfig(**{**base, **kw})


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 101, (3, 11), generator=g)
    types = torch.randint(0, 3, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 7:] = False  # right padding
    mask[2, 4:] = False
    ids[~mask] = 0
    return ids, types, mask


def test_masked_lm_parity(kit):
    hf = T.BertForMaskedLM(_config())
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.EncoderModel) and model.pooler is None and model.mlm_head is not None
    assert model.config.tie_embeddings and model.config.norm_placement == "post"
    ids, types, mask = _inputs()
    with torch.no_grad():
        ref = hf(
            input_ids=ids,
            token_type_ids=types,
            attention_mask=mask.long(),
            output_hidden_states=True,
        )
        out = model(ids, token_type_ids=types, padding_mask=mask)
    assert kit.diff(out.last_hidden_state[mask], ref.hidden_states[-1][mask]) <= kit.atol
    assert kit.diff(out.mlm_logits[mask], ref.logits[mask]) <= kit.atol


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_base_model_with_pooler_parity(kit, act):
    hf = T.BertModel(_config(hidden_act=act))
    model = from_hf(kit.save(hf))
    assert model.pooler is not None and model.mlm_head is None
    ids, types, mask = _inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        out = model(ids, token_type_ids=types, padding_mask=mask)
    assert kit.diff(out.last_hidden_state[mask], ref.last_hidden_state[mask]) <= kit.atol
    assert kit.diff(out.pooled, ref.pooler_output) <= kit.atol


def test_to_hf_round_trip_from_qkv(kit):
    cfg = M.EncoderConfig(
        d_model=32, n_heads=4, d_ff=64, n_layers=2, vocab_size=77, max_len=24,
        type_vocab_size=2, pooler=False, mlm_head=True, dropout=0.0, attn_dropout=0.0,
    )  # fmt: skip
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-bert")
    hf = T.BertForMaskedLM.from_pretrained(d).eval()
    ids = torch.randint(0, 77, (2, 9))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        out = model(ids).mlm_logits
    assert kit.diff(out, ref) <= kit.atol
    back = from_hf(d)  # and back again: identical tensors
    for (n, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n


def test_record_attention_matches_transformers_weights(kit):
    hf = T.BertModel(_config(attn_implementation="eager"))
    model = from_hf(kit.save(hf))
    ids, types, mask = _inputs()
    with torch.no_grad():
        ref = hf(
            input_ids=ids, token_type_ids=types, attention_mask=mask.long(), output_attentions=True
        )
        with record_attention(model, dtype=None) as rec:  # float32, as transformers'
            out = model(ids, token_type_ids=types, padding_mask=mask)
    assert list(rec) == [f"encoder.layers.{i}.self_attn" for i in range(2)]
    for i, name in enumerate(rec):
        w, w_ref = rec[name].weights, ref.attentions[i]  # (b, h, s, s)
        real = mask[:, None, :, None] & mask[:, None, None, :]  # pairs of real tokens
        assert kit.diff(w.masked_fill(~real, 0), w_ref.masked_fill(~real, 0)) <= kit.atol
    # recording every weight computes the outputs from them: the backend's within 1e-5
    # (the numerics contract's tolerance, docs/architecture.md)
    plain = model(ids, token_type_ids=types, padding_mask=mask).last_hidden_state
    torch.testing.assert_close(out.last_hidden_state, plain, atol=1e-5, rtol=1e-5)
