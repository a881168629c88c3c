"""T5: parity with ``transformers`` for T5 (ReLU, tied, scaled output) and T5 v1.1 / Flan
(gated-GELU with the tanh GELU, untied ``lm_head``), greedy tokens, record_attention, and a
to_hf round trip."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.generation import generate
from qkv.interop import from_hf, to_hf
from qkv.interp import record_attention

T = pytest.importorskip("transformers")

V, PAD, EOS = 91, 0, 1


def _hf(untie: bool = False, **kw):
    cfg = dict(
        vocab_size=V, d_model=48, d_kv=16, d_ff=72, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
        dropout_rate=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )  # fmt: skip
    hf = T.T5ForConditionalGeneration(T.T5Config(**{**cfg, **kw}))
    if untie:  # transformers 5 always ties in memory; v1.1 checkpoints hold their own lm_head
        hf.lm_head.weight = torch.nn.Parameter(hf.shared.weight.detach().clone())
    return hf


def _batch():
    g = torch.Generator().manual_seed(7)
    src = torch.randint(2, V, (3, 30), generator=g)  # longer than max_distance: far buckets
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[0, 21:] = False
    src[~mask] = PAD
    return src, mask, torch.randint(2, V, (3, 25), generator=g)


VARIANTS = {
    "t5": dict(feed_forward_proj="relu"),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, untie=True),
    "gated-silu": dict(feed_forward_proj="gated-silu", num_decoder_layers=3),
}
EXPECTED = {"t5": ("relu", True), "v1.1": ("geglu_tanh", False), "gated-silu": ("swiglu", True)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conditional_generation_parity(kit, variant):
    hf = _hf(**VARIANTS[variant])
    model = from_hf(kit.save(hf))
    cfg = model.config
    act, tie = EXPECTED[variant]
    assert (cfg.activation, cfg.tie_embeddings) == (act, tie)
    assert cfg.output_scale == (48**-0.5 if hf.config.scale_decoder_outputs else 1.0)
    assert cfg.norm == "rms" and cfg.attn_scale == 1.0 and not cfg.bias and cfg.pos == "relative"
    src, mask, tgt = _batch()
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt)
        memory = model.encode(src, mask)
        logits = model.decode(tgt, memory, src_padding_mask=mask)
    assert kit.diff(memory[mask], ref.encoder_last_hidden_state[mask]) <= kit.atol
    assert kit.diff(logits, ref.logits) <= kit.atol


@pytest.mark.parametrize("variant", ["t5", "v1.1"])
def test_greedy_generation_identical_tokens(kit, variant):
    hf = _hf(**VARIANTS[variant])
    model = from_hf(kit.save(hf))
    src, mask, _ = _batch()
    ref = kit.hf_greedy(hf, src, mask, 24, eos=EOS, seq2seq=True)
    got = generate(
        model, src, padding_mask=mask, max_new_tokens=24, bos_id=PAD, eos_id=EOS, pad_id=PAD
    )
    assert got.tokens == ref and sum(map(len, ref)) > 10


def test_record_attention_on_loaded_t5(kit):
    hf = _hf(attn_implementation="eager")
    model = from_hf(kit.save(hf))
    src, mask, tgt = _batch()
    with torch.no_grad():
        ref = hf(
            input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt, output_attentions=True
        )
        with record_attention(model) as rec:
            model(src, tgt, src_padding_mask=mask)
    assert rec.kinds == ("encoder_self", "decoder_self", "cross")
    enc, dec, cross = (rec.stack(k) for k in rec.kinds)  # (layers, b, h, s_q, s_k)
    keys = mask[:, None, None, :]
    assert (
        kit.diff(enc[:, 0], torch.stack(ref.encoder_attentions)[:, 0]) <= kit.atol
    )  # unpadded row
    assert kit.diff(dec, torch.stack(ref.decoder_attentions)) <= kit.atol
    assert (
        kit.diff(
            cross.masked_fill(~keys, 0), torch.stack(ref.cross_attentions).masked_fill(~keys, 0)
        )
        <= kit.atol
    )


def test_to_hf_round_trip_from_qkv(kit):
    cfg = M.Seq2SeqConfig(
        d_model=32, n_heads=4, head_dim=12, d_ff=48, n_encoder_layers=2, n_decoder_layers=2,
        vocab_size=57, pad_token_id=0, activation="geglu_tanh", norm="rms", norm_eps=1e-6,
        norm_placement="pre", bias=False, pos="relative", rel_buckets=16, rel_max_distance=40,
        attn_scale=1.0, scale_embeddings=False, tie_embeddings=False, dropout=0.0, max_len=512,
    )  # fmt: skip
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-t5")
    hf = T.T5ForConditionalGeneration.from_pretrained(d).eval()
    assert hf.lm_head.weight.data_ptr() != hf.shared.weight.data_ptr()
    src, _, tgt = _batch()
    src, tgt = src % 57, tgt % 57
    with torch.no_grad():
        assert (
            kit.diff(model(src, tgt), hf(input_ids=src, decoder_input_ids=tgt).logits) <= kit.atol
        )
