"""VisionEncoderDecoderModel (ViT + GPT-2 with cross-attention) <-> Captioner: logits
parity with ``transformers``, greedy captions alike, a to_hf round trip, refusals."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.interop import HFConversionError, from_hf, to_hf

T = pytest.importorskip("transformers")


def _hf(act: str = "gelu", tie: bool = True, **dec_kw):
    enc = T.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        image_size=16, patch_size=4, num_channels=1, hidden_act=act, layer_norm_eps=1e-5,
    )  # fmt: skip
    dec = T.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_inner=48, vocab_size=40, n_positions=24,
        activation_function=act, add_cross_attention=True, is_decoder=True,
        tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0, **dec_kw,
    )  # fmt: skip
    cfg = T.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    return T.VisionEncoderDecoderModel(cfg)


def _inputs(b: int = 3, s: int = 7):
    g = torch.Generator().manual_seed(5)
    return torch.rand(b, 1, 16, 16, generator=g), torch.randint(3, 40, (b, s), generator=g)


@pytest.mark.parametrize(("act", "tie"), [("gelu", True), ("gelu_new", False)])
def test_logits_parity(kit, act, tie):
    hf = _hf(act, tie)
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.Captioner)
    assert model.config.tie_embeddings is tie and model.config.n_patches == 16
    images, ids = _inputs()
    with torch.no_grad():
        ref = hf(pixel_values=images, decoder_input_ids=ids)
        memory = model.encode(images)
        assert kit.diff(memory, ref.encoder_last_hidden_state) <= kit.atol
        assert kit.diff(model(images, ids), ref.logits) <= kit.atol


def test_greedy_captions_match_transformers(kit):
    hf = _hf()
    model = from_hf(kit.save(hf))
    images, _ = _inputs()
    with torch.no_grad():
        ref = hf.generate(
            pixel_values=images, max_new_tokens=8, do_sample=False, num_beams=1,
            decoder_start_token_id=1, eos_token_id=-1, pad_token_id=0,
        )  # fmt: skip
    ours = model.generate(images, max_new_tokens=8, bos_id=1, eos_id=None)
    assert ours.ids.tolist() == ref[:, 1:].tolist()


def test_to_hf_round_trip_from_qkv(kit):
    cfg = M.CaptionerConfig(
        d_model=32, n_heads=4, d_ff=64, image_size=16, patch_size=4, in_channels=1,
        n_encoder_layers=1, n_decoder_layers=2, vocab_size=30, max_len=12, dropout=0.0,
        attn_dropout=0.0, activation="gelu_tanh",
    )  # fmt: skip
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-captioner")
    hf = T.VisionEncoderDecoderModel.from_pretrained(d).eval()
    images, ids = _inputs(2, 5)
    ids = ids % 30
    with torch.no_grad():
        ref = hf(pixel_values=images, decoder_input_ids=ids).logits
        assert kit.diff(model(images, ids), ref) <= kit.atol
    back = from_hf(d)
    assert back.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def test_halves_that_differ_are_refused(kit):
    hf = _hf()
    d = kit.save(hf)
    cfg = (d / "config.json").read_text()
    (d / "config.json").write_text(
        cfg.replace('"layer_norm_eps": 1e-05', '"layer_norm_eps": 1e-12')
    )
    with pytest.raises(HFConversionError, match=r"norm epsilon: encoder 1e-12 vs decoder 1e-05"):
        from_hf(d)
