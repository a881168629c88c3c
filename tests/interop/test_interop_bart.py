"""BART: parity with ``transformers`` (encoder states, logits, greedy tokens; the position
offset of 2 and ``final_logits_bias``) and a to_hf round trip."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.generation import generate
from qkv.interop import from_hf, to_hf

T = pytest.importorskip("transformers")

V, PAD, BOS, EOS = 89, 1, 0, 2


def _hf(**kw):
    cfg = dict(
        vocab_size=V, d_model=48, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=72,
        decoder_ffn_dim=72, max_position_embeddings=40, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        decoder_start_token_id=EOS, forced_bos_token_id=None, forced_eos_token_id=None,
    )  # fmt: skip
    return T.BartForConditionalGeneration(T.BartConfig(**{**cfg, **kw}))


def _batch():
    g = torch.Generator().manual_seed(5)
    src = torch.randint(3, V, (3, 9), generator=g)
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[1, 6:] = False
    src[~mask] = PAD
    tgt = torch.randint(3, V, (3, 7), generator=g)
    return src, mask, tgt


@pytest.mark.parametrize("scale", [False, True])
def test_conditional_generation_parity(kit, scale):
    hf = _hf(scale_embedding=scale)
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.Seq2SeqTransformer)
    cfg = model.config
    assert cfg.embed_norm and cfg.output_bias and cfg.share_embeddings and cfg.tie_embeddings
    assert cfg.scale_embeddings == scale and cfg.max_len == 40
    src, mask, tgt = _batch()
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt)
        memory = model.encode(src, mask)
        logits = model.decode(tgt, memory, src_padding_mask=mask)
    assert kit.diff(memory[mask], ref.encoder_last_hidden_state[mask]) <= kit.atol
    assert kit.diff(logits, ref.logits) <= kit.atol


def test_greedy_generation_identical_tokens(kit):
    hf = _hf()
    model = from_hf(kit.save(hf))
    src, mask, _ = _batch()
    ref = kit.hf_greedy(hf, src, mask, 15, eos=EOS, seq2seq=True)
    got = generate(
        model, src, padding_mask=mask, max_new_tokens=15, bos_id=EOS, eos_id=EOS, pad_id=PAD
    )
    assert got.tokens == ref
    assert sum(map(len, ref)) > 10


def test_to_hf_round_trip_from_qkv(kit):
    cfg = M.Seq2SeqConfig(
        d_model=32, n_heads=4, d_ff=64, n_encoder_layers=2, n_decoder_layers=1, vocab_size=53,
        max_len=24, pad_token_id=PAD, norm_eps=1e-5, activation="gelu", pos="learned",
        embed_norm=True, scale_embeddings=False, output_bias=True, dropout=0.0, init="normal",
    )  # fmt: skip
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-bart")
    hf = T.BartForConditionalGeneration.from_pretrained(d).eval()
    src = torch.randint(3, 53, (2, 8))
    tgt = torch.randint(3, 53, (2, 5))
    with torch.no_grad():
        assert (
            kit.diff(model(src, tgt), hf(input_ids=src, decoder_input_ids=tgt).logits) <= kit.atol
        )
    assert from_hf(d).config == model.config
