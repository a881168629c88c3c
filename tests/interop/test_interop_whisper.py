"""Whisper: parity with ``transformers``' ``WhisperForConditionalGeneration`` from a tiny
random config (encoder states, logits, greedy tokens), the key projection without a bias,
and a to_hf round trip."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.generation import generate
from qkv.interop import HFConversionError, from_hf, to_hf

T = pytest.importorskip("transformers")

V, PAD, BOS, EOS, MELS = 71, 0, 1, 2, 16


def _hf(**kw):
    cfg = dict(
        vocab_size=V, num_mel_bins=MELS, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
        decoder_ffn_dim=48, max_source_positions=20, max_target_positions=24, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=PAD, bos_token_id=BOS,
        eos_token_id=EOS, decoder_start_token_id=BOS, suppress_tokens=None,
        begin_suppress_tokens=None,
    )  # fmt: skip
    torch.manual_seed(0)
    return T.WhisperForConditionalGeneration(T.WhisperConfig(**{**cfg, **kw})).eval()


def _inputs():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 40, MELS, generator=g)  # (b, t, n_mels): 2 x max_source_positions
    tgt = torch.randint(3, V, (2, 7), generator=g)
    return feats, tgt


def test_conditional_generation_parity(kit):
    hf = _hf()
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.Whisper)
    cfg = model.config
    assert (cfg.max_frames, cfg.max_len, cfg.n_mels, cfg.tie_embeddings) == (40, 24, MELS, True)
    feats, tgt = _inputs()
    with torch.no_grad():
        ref = hf(input_features=feats.transpose(1, 2), decoder_input_ids=tgt)
        memory = model.encode(feats)
        logits = model.decode(tgt, memory)
    assert kit.diff(memory, ref.encoder_last_hidden_state) <= 1e-4
    assert kit.diff(logits, ref.logits) <= 1e-4
    # the key bias is zero after loading: Whisper's key projections have none
    k_bias = model.encoder.layers[0].self_attn.qkv_proj.bias.chunk(3)[1]
    assert torch.equal(k_bias, torch.zeros_like(k_bias))


def test_greedy_generation_identical_tokens(kit):
    hf = _hf()
    model = from_hf(kit.save(hf))
    feats, _ = _inputs()
    with torch.no_grad():
        memory = hf.model.encoder(feats.transpose(1, 2)).last_hidden_state
        ids = torch.full((2, 1), BOS)
        for _ in range(12):  # greedy by hand: HF's generate adds Whisper's task tokens
            logits = hf(encoder_outputs=(memory,), decoder_input_ids=ids).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    got = generate(model, feats, max_new_tokens=12, bos_id=BOS, eos_id=None, pad_id=PAD)
    assert got.ids.tolist() == ids[:, 1:].tolist()
    assert len(set(ids[:, 1:].flatten().tolist())) > 3  # not one token repeated


def test_to_hf_round_trip_from_qkv(kit):
    cfg = M.WhisperConfig(
        d_model=32, n_heads=4, d_ff=64, n_encoder_layers=2, n_decoder_layers=1, vocab_size=53,
        max_len=16, n_mels=MELS, max_frames=30, pad_token_id=PAD,
    )  # fmt: skip
    model = kit.randomize(M.build(cfg)).eval()
    d = to_hf(model, kit.tmp / "qkv-whisper")
    hf = T.WhisperForConditionalGeneration.from_pretrained(d).eval()
    feats = torch.randn(2, 30, MELS)
    tgt = torch.randint(3, 53, (2, 5))
    with torch.no_grad():  # the random key bias is dropped: the outputs do not change
        ref = hf(input_features=feats.transpose(1, 2), decoder_input_ids=tgt).logits
        assert kit.diff(model(feats, tgt), ref) <= 1e-4
    back = from_hf(d)
    with torch.no_grad():
        assert kit.diff(back(feats, tgt), ref) <= 1e-4


def test_to_hf_refuses_quarter_strides(kit):
    cfg = M.WhisperConfig(
        d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1, n_decoder_layers=1, vocab_size=53,
        max_len=16, n_mels=MELS, max_frames=32, conv_strides=[2, 2],
    )  # fmt: skip
    with pytest.raises(HFConversionError, match="conv_strides"):
        to_hf(M.build(cfg), kit.tmp / "bad")


def test_to_hf_refuses_a_ctc_head(kit):
    cfg = M.WhisperConfig(
        d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1, n_decoder_layers=1, vocab_size=53,
        max_len=16, n_mels=MELS, max_frames=32, ctc_head=True,
    )  # fmt: skip
    with pytest.raises(HFConversionError, match=r"ctc_head=True \(the family needs False\)"):
        to_hf(M.build(cfg), kit.tmp / "bad")
