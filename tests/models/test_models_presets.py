"""Sweep over the tiny presets and position/norm variants: forward, backward, every
parameter gets a gradient, output shapes, initialization per family."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import qkv.models as M
from qkv.attn.mha import MultiHeadAttention

TINY = ("transformer-tiny", "t5-tiny", "gpt2-tiny", "bert-tiny", "vit-tiny")
VARIANTS = (
    {},
    {"pos": "rope"},
    {"pos": "alibi"},
    {"pos": "relative"},
    {"pos": "learned", "norm_placement": "pre", "norm": "rms"},
    {"pos": "sinusoidal", "n_kv_heads": 2, "activation": "swiglu", "bias": False},
    {"pos": "none", "norm_placement": "post", "embed_norm": True},
)


def _inputs(model: nn.Module, b: int = 2) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    cfg = model.config
    if isinstance(model, M.ViT):
        return (torch.randn(b, cfg.in_channels, cfg.image_size, cfg.image_size),), {}
    if isinstance(model, M.Seq2SeqTransformer):
        src, tgt = torch.randint(1, cfg.vocab_size, (b, 7)), torch.randint(1, 128, (b, 5))
        src_padding_mask = torch.ones(b, 7, dtype=torch.bool)
        src_padding_mask[1, 5:] = False
        return (src, tgt), {"src_padding_mask": src_padding_mask}
    ids = torch.randint(1, cfg.vocab_size, (b, 6))
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[1, 4:] = False
    kw: dict[str, Tensor] = {"padding_mask": mask}
    if isinstance(model, M.EncoderModel):
        kw["token_type_ids"] = torch.tensor([[0, 0, 0, 1, 1, 1]] * b)
    return (ids,), kw


def _loss(out: object) -> Tensor:
    if isinstance(out, M.EncoderOutput):
        parts = [out.last_hidden_state, out.pooled, out.mlm_logits]
        return sum(p.square().mean() for p in parts if p is not None)  # type: ignore[return-value]
    assert isinstance(out, Tensor)
    return out.square().mean()


def _expected_shape(model: nn.Module, args: tuple[Tensor, ...]) -> tuple[int, ...]:
    cfg = model.config
    if isinstance(model, M.ViT):
        return (args[0].shape[0], cfg.n_classes)
    if isinstance(model, M.Seq2SeqTransformer):
        return (*args[1].shape, cfg.target_vocab)
    return (*args[0].shape, cfg.vocab_size)


@pytest.mark.parametrize(
    "variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "preset"
)
@pytest.mark.parametrize("name", TINY)
def test_forward_backward_every_parameter_gets_a_gradient(name: str, variant: dict) -> None:
    kw = dict(variant)
    if name == "vit-tiny":
        kw.pop("embed_norm", None)  # images have no token embeddings
    model = M.from_preset(name, **kw)
    model.train()
    args, kwargs = _inputs(model)
    out = model(*args, **kwargs)
    if isinstance(out, M.EncoderOutput):
        b, s = args[0].shape
        assert out.last_hidden_state.shape == (b, s, 32)
        assert out.pooled is not None and out.pooled.shape == (b, 32)
        assert out.mlm_logits is not None and out.mlm_logits.shape == (b, s, 128)
    else:
        assert out.shape == _expected_shape(model, args)
        assert out.dtype == torch.float32
    loss = _loss(out)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, zero


def test_vit_features_shape() -> None:
    vit = M.from_preset("vit-tiny").eval()
    images = torch.randn(3, 3, 32, 32)
    feats = vit.features(images)
    assert feats.shape == (3, 1 + 16, 32)
    torch.testing.assert_close(vit(images), vit.head(feats[:, 0]))
    with pytest.raises(ValueError, match=r"images must be \(b, 3, 32, 32\), got \(1, 3, 24, 24\)"):
        vit(torch.randn(1, 3, 24, 24))


def test_module_paths_for_interpretability() -> None:
    s2s = M.from_preset("transformer-tiny")
    names = dict(s2s.named_modules())
    assert isinstance(names["encoder.layers.0.self_attn"], MultiHeadAttention)
    assert isinstance(names["decoder.layers.1.self_attn"], MultiHeadAttention)
    assert isinstance(names["decoder.layers.1.cross_attn"], MultiHeadAttention)
    assert isinstance(s2s.encoder.layers, nn.ModuleList)
    lm = M.from_preset("gpt2-tiny")
    assert "decoder.layers.1.self_attn" in dict(lm.named_modules())
    assert lm.decoder.layers[0].cross_attn is None
    for name in ("bert-tiny", "vit-tiny"):
        assert "encoder.layers.0.self_attn" in dict(M.from_preset(name).named_modules())


def test_dropout_is_active_in_training_only() -> None:
    model = M.from_preset("gpt2-tiny", dropout=0.5)
    ids = torch.randint(0, 128, (2, 6))
    model.train()
    assert not torch.equal(model(ids), model(ids))
    model.eval()
    assert torch.equal(model(ids), model(ids))


# -- initialization ---------------------------------------------------------------------
def _std(t: Tensor) -> float:
    return float(t.detach().float().std())


def test_xavier_init_for_the_original_transformer() -> None:
    m = M.from_preset("transformer-tiny", d_model=128, n_heads=4, d_ff=256, vocab_size=512)
    attn, fc1 = m.encoder.layers[0].self_attn, m.decoder.layers[1].ff.fc1
    # the stacked q/k/v projection gets Xavier per projection, as if they were separate
    weights = [*(attn.projection(x) for x in "qkv"), (fc1.weight, fc1.bias)]
    for weight, bias in weights:
        fan_out, fan_in = weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert float(weight.detach().abs().max()) <= bound
        assert _std(weight) == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert float(bias.detach().abs().max()) == 0.0
    emb = m.src_embed.tok_emb.weight
    assert _std(emb[1:]) == pytest.approx(128**-0.5, rel=0.1)
    assert float(emb[0].detach().abs().max()) == 0.0  # pad_token_id=0


@pytest.mark.parametrize("name", ["bert-tiny", "vit-tiny", "gpt2-tiny"])
def test_normal_init(name: str) -> None:
    big = {"d_model": 128, "n_heads": 4, "d_ff": 512}
    m = M.from_preset(name, **big)
    stack = m.decoder if name == "gpt2-tiny" else m.encoder
    layer = stack.layers[0]
    assert _std(layer.self_attn.qkv_proj.weight) == pytest.approx(0.02, rel=0.1)
    assert _std(layer.ff.fc1.weight) == pytest.approx(0.02, rel=0.1)
    out_std = 0.02 / math.sqrt(2 * 2) if name == "gpt2-tiny" else 0.02
    assert _std(layer.self_attn.out_proj.weight) == pytest.approx(out_std, rel=0.1)
    assert _std(layer.ff.fc2.weight) == pytest.approx(out_std, rel=0.1)
    assert float(layer.ff.fc1.bias.detach().abs().max()) == 0.0
    assert torch.equal(layer.self_attn_norm.weight, torch.ones(128))
    if name == "vit-tiny":
        assert _std(m.patch_embed.proj.weight) == pytest.approx(0.02, rel=0.1)
    else:
        assert _std(m.embed.tok_emb.weight) == pytest.approx(0.02, rel=0.15)
