"""DETR: shapes, backbones, DETR's 2-D sine positions (against transformers' own), the
positions reaching queries and keys but not values, recording, counts and config errors."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.interp import record_attention
from qkv.pos import sine_2d


@pytest.mark.parametrize(
    ("kw", "grid"),
    [({}, (8, 8)), ({"backbone": "patch", "backbone_channels": [12], "patch_size": 4}, (8, 8))],
)
def test_shapes_and_backbones(kw, grid) -> None:
    model = M.from_preset("detr-tiny", **kw).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 1, 32, 32))
    assert out.logits.shape == (3, 6, 11) and out.boxes.shape == (3, 6, 4)
    assert out.grid == grid and len(out.aux) == 1
    assert ((out.boxes > 0) & (out.boxes < 1)).all()
    feats = M.from_preset("detr-tiny", backbone="features", backbone_channels=[7]).eval()
    with torch.no_grad():
        assert feats(torch.randn(2, 7, 3, 5)).grid == (3, 5)
    with pytest.raises(ValueError, match=r"reads feature maps \(b, 7, h, w\)"):
        feats(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images must be \(b, 1, H, W\)"):
        model(torch.rand(1, 3, 32, 32))


def test_sine_positions_equal_transformers() -> None:
    detr = pytest.importorskip("transformers.models.detr.modeling_detr")
    ref = detr.DetrSinePositionEmbedding(16, normalize=True)
    got = sine_2d(5, 7, 32)
    want = ref(shape=torch.Size([1, 32, 5, 7]), device="cpu", dtype=torch.float32)
    torch.testing.assert_close(got, want.flatten(2).transpose(1, 2)[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 4, got 30"):
        sine_2d(2, 2, 30)


def test_positions_enter_queries_and_keys_not_values() -> None:
    """One encoder layer by hand: attention(q = k = x + pos, v = x)."""
    model = M.from_preset("detr-tiny", dropout=0.0, attn_backend="math").eval()
    layer = model.encoder.layers[0]
    x = torch.randn(2, 6, 32)
    pos = sine_2d(2, 3, 32)[None]
    with torch.no_grad():
        got = layer(x, pos)
        a = layer.self_attn
        wq, bq = a.projection("q")
        wk, bk = a.projection("k")
        wv, bv = a.projection("v")
        heads = lambda t: t.view(2, 6, 4, 8).transpose(1, 2)  # noqa: E731
        q, k, v = heads((x + pos) @ wq.T + bq), heads((x + pos) @ wk.T + bk), heads(x @ wv.T + bv)
        w = (q @ k.transpose(-1, -2) / 8**0.5).softmax(-1)
        att = a.out_proj((w @ v).transpose(1, 2).reshape(2, 6, 32))
        h = layer.self_attn_norm(x + att)
        want = layer.ff_norm(h + layer.ff(h))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_recording_names_each_kind() -> None:
    model = M.from_preset("detr-tiny").eval()
    with torch.no_grad(), record_attention(model) as rec:
        model(torch.rand(2, 1, 32, 32))
    kinds = {name: e.kind for name, e in rec.items()}
    assert kinds["encoder.layers.0.self_attn"] == "encoder_self"
    assert kinds["decoder.layers.1.self_attn"] == "decoder_self"
    assert kinds["decoder.layers.1.cross_attn"] == "cross"
    assert rec["decoder.layers.1.cross_attn"].weights.shape == (2, 4, 6, 64)  # queries x cells


def test_counts_round_trip_and_backends(tmp_path) -> None:
    cfg = M.preset_config("detr-tiny")
    model = M.build(cfg).eval()
    assert M.parameter_count(cfg) == M.count_parameters(model)
    model.save_pretrained(tmp_path)
    back = M.load(tmp_path).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(back(x).boxes, ref.boxes)
        model.set_backend("math")
        torch.testing.assert_close(model(x).logits, ref.logits, rtol=1e-5, atol=1e-5)


def test_backbone_norm_batch_normalizes_every_convolution(tmp_path) -> None:
    cfg = M.preset_config("detr-tiny", backbone_norm=True)
    model = M.build(cfg)
    assert M.parameter_count(cfg) == M.count_parameters(model)
    assert all(conv.bias is None for conv in model.backbone.convs)
    x = torch.rand(4, 1, 32, 32)
    h = x
    for conv in model.backbone.convs:  # training mode: the batch's own statistics
        h = conv(h)
        mean, var = h.mean((0, 2, 3), keepdim=True), h.var((0, 2, 3), unbiased=False, keepdim=True)
        h = torch.relu((h - mean) / torch.sqrt(var + 1e-5))
    torch.testing.assert_close(model.train().features(x), h, rtol=1e-4, atol=1e-5)
    model.eval()  # the running statistics, which the checkpoint keeps
    model.save_pretrained(tmp_path)
    back = M.load(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(back(x).boxes, model(x).boxes)
    assert int(back.backbone.norms[0].num_batches_tracked) == 1


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"backbone": "resnet"}, "backbone must be one of"),
        ({"backbone_channels": []}, "backbone_channels must be a non-empty list"),
        ({"backbone": "patch"}, "has one stage: backbone_channels must have one entry"),
        ({"image_size": 34}, r"image_size \(34\) must be a multiple of the cnn backbone's stride"),
        ({"norm_placement": "pre"}, "DETR is post-norm"),
        ({"pos": "rope"}, "pos must be 'sinusoidal'"),
        ({"d_model": 30, "n_heads": 2}, "divisible by 4, got 30"),
        ({"eos_coef": -1.0}, "eos_coef must be a finite number"),
        ({"backbone": "features", "backbone_channels": [8], "backbone_norm": True}, "for the cnn"),
    ],
)
def test_config_errors_name_the_values(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        M.preset_config("detr-tiny", **kw)
