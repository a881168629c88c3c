"""CLIP: parity with ``transformers``' ``CLIPModel`` (image and text embeddings, logits) and
a to_hf round trip."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.interop import HFConversionError, from_hf, to_hf

T = pytest.importorskip("transformers")

VOCAB, EOS = 40, 39


def _config(**vision_kw):
    text = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=12, eos_token_id=EOS, pad_token_id=0,
        projection_dim=24,
    )  # fmt: skip
    vision = dict(
        hidden_size=40, intermediate_size=56, num_hidden_layers=3, num_attention_heads=5,
        image_size=16, patch_size=4, num_channels=3, projection_dim=24,
    )  # fmt: skip
    return T.CLIPConfig(text_config=text, vision_config={**vision, **vision_kw}, projection_dim=24)


def _texts():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, EOS, (3, 10), generator=g)
    for row, end in enumerate((9, 4, 6)):  # end-of-text at different places, then padding
        ids[row, end] = EOS
        ids[row, end + 1 :] = 0
    return ids


def test_clip_parity(kit):
    hf = T.CLIPModel(_config()).eval()
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.CLIP) and model.config.eos_token_id == EOS
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ids = _texts()
    mask = torch.arange(10)[None] <= torch.tensor([9, 4, 6])[:, None]
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long(), pixel_values=images)
        ref_img = hf.get_image_features(pixel_values=images)
        ref_txt = hf.get_text_features(input_ids=ids, attention_mask=mask.long())
        ref_img = getattr(ref_img, "pooler_output", ref_img)
        ref_txt = getattr(ref_txt, "pooler_output", ref_txt)
        out = model(images, ids, padding_mask=mask)
        assert kit.diff(model.image_features(images), ref_img) <= kit.atol
        assert kit.diff(model.text_features(ids, padding_mask=mask), ref_txt) <= kit.atol
        assert kit.diff(out.image_embeds, ref.image_embeds) <= kit.atol
        assert kit.diff(out.text_embeds, ref.text_embeds) <= kit.atol
        assert kit.diff(out.logits_per_image, ref.logits_per_image) <= kit.atol
        assert kit.diff(out.logits_per_text, ref.logits_per_text) <= kit.atol
        # padding after the end-of-text token changes nothing (causal mask)
        assert kit.diff(model.text_features(ids), ref_txt) <= kit.atol


def test_legacy_eos_token_id_reads_the_last_token(kit):
    cfg = _config()
    cfg.text_config.eos_token_id = 2
    d = kit.save(T.CLIPModel(cfg))
    assert from_hf(d).config.eos_token_id == VOCAB - 1


def test_towers_with_different_activations_are_refused(kit):
    d = kit.save(T.CLIPModel(_config(hidden_act="gelu")))
    with pytest.raises(HFConversionError, match="vision_config.hidden_act='gelu' differs"):
        from_hf(d)


def test_to_hf_round_trip_from_qkv(kit):
    model = kit.randomize(M.from_preset("clip-tiny", dropout=0.0))
    d = to_hf(model, kit.tmp / "qkv-clip")
    hf = T.CLIPModel.from_pretrained(d).eval()
    images = torch.rand(2, 1, 16, 16)
    ids = torch.randint(1, 127, (3, 8))
    ids[:, 5] = 127
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=images)
        out = model(images, ids)
    assert kit.diff(out.logits_per_image, ref.logits_per_image) <= kit.atol
    back = from_hf(d)
    assert back.config == model.config
