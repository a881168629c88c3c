"""DETR: qkv reads the Transformer and heads of a tiny random ``DetrForObjectDetection``
(ResNet backbone config, no timm, no pretrained weights) and matches its logits and boxes
given the same backbone features."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.interop import HFConversionError, from_hf, to_hf

T = pytest.importorskip("transformers")


def _config(**kw):
    backbone = T.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"]
    )
    base = dict(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=5,
        num_labels=3,
    )  # fmt: skip
    return T.DetrConfig(**{**base, **kw})


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_object_detection_parity_given_the_backbone_features(kit, act):
    hf = T.DetrForObjectDetection(_config(activation_function=act))
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.DETR) and model.config.backbone == "features"
    assert model.config.backbone_channels == [16] and model.config.n_classes == 3
    images = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(pixel_values=images)
        mask = torch.ones(2, 64, 48, dtype=torch.long)
        features = hf.model.backbone(images, mask)[-1][0]  # (2, 16, 8, 6)
        out = model(features)
    assert out.grid == (8, 6)
    assert kit.diff(out.logits, ref.logits) <= kit.atol
    assert kit.diff(out.boxes, ref.pred_boxes) <= kit.atol


def test_what_cannot_convert_is_listed(kit):
    d = kit.save(T.DetrForObjectDetection(_config(auxiliary_loss=True, decoder_ffn_dim=32)))
    with pytest.raises(
        HFConversionError,
        match=r"encoder_ffn_dim=64 != decoder_ffn_dim=32[\s\S]*auxiliary_loss=True",
    ):
        from_hf(d)
    with pytest.raises(HFConversionError, match="needs a backbone"):
        to_hf(M.from_preset("detr-tiny"), kit.tmp / "out")
