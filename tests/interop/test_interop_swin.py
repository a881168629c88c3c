"""Swin: parity with ``transformers`` (logits, last hidden state, pooled features), legacy
names, a to_hf round trip, and the configurations that cannot convert."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import qkv.models as M
from qkv.interop import HFConversionError, from_hf, to_hf

T = pytest.importorskip("transformers")


def _config(**kw):
    base = dict(
        image_size=32, patch_size=2, num_channels=3, embed_dim=16, depths=[2, 2],
        num_heads=[2, 4], window_size=4, num_labels=5,
    )  # fmt: skip
    return T.SwinConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"hidden_act": "gelu_new", "use_absolute_embeddings": True, "layer_norm_eps": 1e-6},
        {
            "image_size": 36,
            "depths": [2, 2, 1],
            "num_heads": [2, 2, 4],
        },  # padded windows, odd merge
        {"image_size": 28, "window_size": 7, "depths": [2, 2], "mlp_ratio": 2.0},  # last: 1 window
    ],
    ids=["base", "abs-pos", "padded", "one-window"],
)
def test_image_classification_parity(kit, kw):
    hf = T.SwinForImageClassification(_config(**kw))
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.Swin) and model.config.n_classes == 5
    size = kw.get("image_size", 32)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = hf(pixel_values=images)
        ref_hidden = hf.swin(pixel_values=images).last_hidden_state
        assert kit.diff(model.features(images), ref_hidden) <= kit.atol
        assert kit.diff(model(images), ref.logits) <= kit.atol


def test_swin_model_without_classifier_returns_the_pooled_features(kit):
    hf = T.SwinModel(_config())
    model = from_hf(kit.save(hf))
    assert model.config.n_classes == 0 and model.head is None
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert kit.diff(model(images), hf(pixel_values=images).pooler_output) <= kit.atol


def test_transformers_4_names_are_read(kit):
    hf = T.SwinForImageClassification(_config())
    d = kit.save(hf)
    old = {"q_proj": "self.query", "k_proj": "self.key", "v_proj": "self.value"}
    tensors = load_file(d / "model.safetensors")
    renamed = {}
    for name, t in tensors.items():
        for new, legacy in old.items():
            name = name.replace(f"attention.{new}", f"attention.{legacy}")
        name = name.replace("attention.o_proj", "attention.output.dense")
        name = name.replace("mlp.fc1", "intermediate.dense").replace("mlp.fc2", "output.dense")
        name = name.replace(
            "attention.relative_position_bias.relative_position_bias_table",
            "attention.self.relative_position_bias_table",
        )
        renamed[name] = t
        if name.endswith("relative_position_bias_table"):  # the v4 buffer, ignored
            renamed[name.replace("bias_table", "index")] = torch.zeros(16 * 16, dtype=torch.long)
    save_file(renamed, d / "model.safetensors", metadata={"format": "pt"})
    model = from_hf(d)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert kit.diff(model(images), hf(pixel_values=images).logits) <= kit.atol


def test_to_hf_round_trip_from_qkv(kit):
    cfg = M.preset_config("swin-tiny", pos="learned", drop_path=0.0, n_classes=4)
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-swin")
    hf = T.SwinForImageClassification.from_pretrained(d).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert kit.diff(model(images), hf(pixel_values=images).logits) <= kit.atol
    assert from_hf(d).config == cfg


def test_unsupported_configurations_are_listed(kit):
    d = kit.save(T.SwinForImageClassification(_config(qkv_bias=False, hidden_act="gelu_fast")))
    with pytest.raises(HFConversionError, match=r"qkv_bias=False[\s\S]*hidden_act='gelu_fast'"):
        from_hf(d)
    small = M.build(M.preset_config("swin-tiny", window_size=7, image_size=16))  # 4x4 last grid
    with pytest.raises(HFConversionError, match=r"stage 1 has a 4x4 grid, smaller than"):
        to_hf(small, kit.tmp / "small")
    with pytest.raises(HFConversionError, match=r"norm='rms'"):
        to_hf(M.build(M.preset_config("swin-tiny", norm="rms")), kit.tmp / "rms")
