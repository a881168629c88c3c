"""ViT: parity with ``transformers`` (hidden states and logits) and a to_hf round trip."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.interop import HFConversionError, from_hf, to_hf

T = pytest.importorskip("transformers")


def _config(**kw):
    base = dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=72,
        image_size=24, patch_size=6, num_channels=3, num_labels=7,
    )  # fmt: skip
    return T.ViTConfig(**{**base, **kw})


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_image_classification_parity(kit, act):
    hf = T.ViTForImageClassification(_config(hidden_act=act))
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.ViT) and model.config.n_classes == 7
    assert model.config.norm_eps == hf.config.layer_norm_eps
    images = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref_hidden = hf.vit(pixel_values=images).last_hidden_state
        ref_logits = hf(pixel_values=images).logits
        assert kit.diff(model.features(images), ref_hidden) <= kit.atol
        assert kit.diff(model(images), ref_logits) <= kit.atol


def test_vit_model_without_classifier_is_refused(kit):
    d = kit.save(T.ViTModel(_config()))
    with pytest.raises(HFConversionError, match=r"no classifier in the checkpoint.*ViTModel"):
        from_hf(d)


def test_to_hf_round_trip_from_qkv(kit):
    cfg = M.ViTConfig(
        d_model=32, n_heads=4, d_ff=64, n_layers=2, image_size=16, patch_size=4,
        n_classes=5, dropout=0.0,
    )  # fmt: skip
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-vit")
    hf = T.ViTForImageClassification.from_pretrained(d).eval()
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert kit.diff(model(images), hf(pixel_values=images).logits) <= kit.atol
