"""The Whisper model family: config checks, parameter count, padding invariance of the
encoder (padded frames change nothing), and decoding a padded batch as each row alone."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.generation import generate
from qkv.models.memory import buffer_count


def _cfg(**kw):
    base = dict(d_model=32, n_heads=4, d_ff=48, n_encoder_layers=2, n_decoder_layers=2,
                vocab_size=40, max_len=20, n_mels=12, max_frames=64, dropout=0.0,
                pad_token_id=0)  # fmt: skip
    return M.WhisperConfig(**{**base, **kw})


@pytest.mark.parametrize(("strides", "ctc"), [([1, 2], False), ([2, 2], False), ([2, 2], True)])
def test_parameter_count_and_json(strides, ctc):
    cfg = _cfg(conv_strides=strides, ctc_head=ctc)
    model = M.build(cfg)
    assert M.count_parameters(model) == M.parameter_count(cfg)
    assert buffer_count(cfg) == model.enc_pos.numel()
    assert M.config_from_dict(cfg.to_dict()) == cfg
    assert cfg.max_source_len == 64 // strides[0] // 2
    assert cfg.source_len(7) == {1: 4, 2: 2}[strides[0]]  # ceil(ceil(7 / s) / 2)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"conv_strides": [1, 5]}, r"conv_strides must be two ints in 1..4, got \[1, 5\]"),
        ({"pos": "rope"}, r"WhisperConfig needs pos='learned', got 'rope'"),
        ({"n_mels": 0}, r"n_mels must be"),
        ({"ctc_head": 1}, r"ctc_head must be a bool, got 1"),
    ],
)
def test_config_errors_name_values(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


@pytest.mark.parametrize("strides", [[1, 2], [2, 2]])
def test_padded_frames_change_nothing(strides):
    """Each row of a right-padded batch encodes and decodes as it does alone."""
    torch.manual_seed(0)
    model = M.build(_cfg(conv_strides=strides)).eval()
    lengths = [37, 50]
    feats = torch.randn(2, 50, 12)
    mask = torch.arange(50)[None] < torch.tensor(lengths)[:, None]  # (b, t)
    tgt = torch.randint(3, 40, (2, 6))
    with torch.no_grad():
        memory = model.encode(feats, mask)
        logits = model.decode(tgt, memory, src_padding_mask=mask)
        for i, n in enumerate(lengths):
            alone = model.encode(feats[i : i + 1, :n])
            s = alone.shape[1]
            assert torch.allclose(memory[i, :s], alone[0], atol=1e-5)
            assert torch.allclose(logits[i], model.decode(tgt[i : i + 1], alone)[0], atol=1e-5)


def test_padded_batch_generates_as_rows_alone():
    torch.manual_seed(1)
    model = M.build(_cfg()).eval()
    feats = torch.randn(2, 40, 12)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[0, 25:] = False
    kw = dict(max_new_tokens=10, bos_id=1, eos_id=2, pad_id=0)
    got = generate(model, feats, padding_mask=mask, **kw).tokens
    beam = generate(model, feats, padding_mask=mask, strategy="beam", beam_size=3, **kw)
    assert got[0] == generate(model, feats[:1, :25], **kw).tokens[0]
    assert got[1] == generate(model, feats[1:], **kw).tokens[0]
    assert beam.tokens[0] == generate(model, feats[:1, :25], strategy="beam", beam_size=3,
                                      **kw).tokens[0]  # fmt: skip


def test_encode_rejects_bad_features():
    model = M.build(_cfg())
    with pytest.raises(ValueError, match=r"features must be \(b, t, 12\), got \(1, 5, 7\)"):
        model.encode(torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match=r"65 frames exceed max_frames \(64\)"):
        model.encode(torch.randn(1, 65, 12))


def test_ctc_head_forward_matches_its_parts():
    """``forward(..., ctc=True)`` is the decoder's logits, the head's log-softmax over the
    encoder states and the encoder positions' mask; a model without the head says so."""
    torch.manual_seed(2)
    model = M.build(_cfg(conv_strides=[2, 2], ctc_head=True)).eval()
    feats = torch.randn(2, 30, 12)
    mask = torch.arange(30)[None] < torch.tensor([30, 13])[:, None]
    tgt = torch.randint(3, 40, (2, 5))
    with torch.no_grad():
        logits, log_probs, enc_mask = model(feats, tgt, src_padding_mask=mask, ctc=True)
        memory = model.encode(feats, mask)
        assert torch.equal(logits, model(feats, tgt, src_padding_mask=mask))
        by_hand = torch.log_softmax(memory @ model.ctc_head.weight.T + model.ctc_head.bias, -1)
    assert torch.allclose(log_probs, by_hand, atol=1e-5)
    assert enc_mask.sum(-1).tolist() == [8, 4]  # ceil(ceil(n / 2) / 2)
    with pytest.raises(ValueError, match="this Whisper has no CTC head"):
        M.build(_cfg()).ctc_log_probs(memory)
