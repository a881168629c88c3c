"""Marian: parity with ``transformers`` (the [sin | cos] position layout, scaled
embeddings, SiLU, separate target vocabularies) and a to_hf round trip."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.generation import generate
from qkv.interop import HFConversionError, from_hf, to_hf
from qkv.interop.hf.marian import marian_sinusoids

T = pytest.importorskip("transformers")

V, PAD, EOS = 83, 82, 0


def _hf(**kw):
    cfg = dict(
        vocab_size=V, d_model=48, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=72,
        decoder_ffn_dim=72, max_position_embeddings=40, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
        scale_embedding=True, activation_function="swish", forced_eos_token_id=None,
    )  # fmt: skip
    return T.MarianMTModel(T.MarianConfig(**{**cfg, **kw}))


def _batch(tgt_vocab=V):
    g = torch.Generator().manual_seed(6)
    src = torch.randint(1, V - 1, (3, 9), generator=g)
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[2, 5:] = False
    src[~mask] = PAD
    return src, mask, torch.randint(1, tgt_vocab - 1, (3, 6), generator=g)


def test_sinusoids_match_transformers():
    hf = _hf(d_model=30, encoder_attention_heads=5, decoder_attention_heads=5)  # odd half width
    table = hf.model.encoder.embed_positions.weight
    assert torch.equal(marian_sinusoids(40, 30), table)


def test_mt_parity_and_frozen_positions(kit):
    hf = _hf()
    model = from_hf(kit.save(hf))
    cfg = model.config
    assert not cfg.embed_norm and cfg.scale_embeddings and cfg.activation == "silu"
    assert not model.src_embed.pos_emb.weight.requires_grad
    src, mask, tgt = _batch()
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt)
        memory = model.encode(src, mask)
        logits = model.decode(tgt, memory, src_padding_mask=mask)
    assert kit.diff(memory[mask], ref.encoder_last_hidden_state[mask]) <= kit.atol
    assert kit.diff(logits, ref.logits) <= kit.atol


def test_separate_target_vocabulary_parity(kit):
    hf = _hf(decoder_vocab_size=61, share_encoder_decoder_embeddings=False, pad_token_id=60,
             decoder_start_token_id=60)  # fmt: skip
    model = from_hf(kit.save(hf))
    assert not model.config.share_embeddings and model.config.target_vocab == 61
    src, mask, tgt = _batch(61)
    src[~mask] = 60
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        assert kit.diff(model(src, tgt, src_padding_mask=mask), ref) <= kit.atol


def test_greedy_generation_identical_tokens(kit):
    hf = _hf()
    model = from_hf(kit.save(hf))
    src, mask, _ = _batch()
    ref = kit.hf_greedy(hf, src, mask, 12, eos=EOS, seq2seq=True)
    got = generate(
        model, src, padding_mask=mask, max_new_tokens=12, bos_id=PAD, eos_id=EOS, pad_id=PAD
    )
    assert got.tokens == ref and sum(map(len, ref)) > 10


def test_to_hf_round_trip_and_changed_positions_refused(kit):
    hf = _hf()
    model = from_hf(kit.save(hf))
    d = to_hf(model, kit.tmp / "qkv-marian")
    back = T.MarianMTModel.from_pretrained(d).eval()
    src, mask, tgt = _batch()
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        assert (
            kit.diff(
                back(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits, ref
            )
            <= kit.atol
        )
        model.tgt_embed.pos_emb.weight.add_(1.0)
    with pytest.raises(
        HFConversionError, match=r"tgt_embed\.pos_emb\.emb\.weight differs from the fixed table"
    ):
        to_hf(model, kit.tmp / "changed")
    assert isinstance(model, M.Seq2SeqTransformer)
