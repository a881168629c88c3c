"""Configs: validation messages, JSON round-trip, presets, dispatch, backend selection."""

from __future__ import annotations

import json

import pytest
import torch

import qkv.models as M
from qkv.attn.mha import MultiHeadAttention
from qkv.models.config import CONFIG_CLASSES


@pytest.mark.parametrize("name", M.PRESETS)
def test_preset_config_json_round_trip(name: str) -> None:
    cfg = M.preset_config(name)
    text = cfg.to_json()
    back = type(cfg).from_json(text)
    assert back == cfg
    assert M.config_from_dict(json.loads(text)) == cfg
    assert json.loads(text)["family"] == cfg.family


def test_round_trip_keeps_every_field_kind() -> None:
    cfg = M.LMConfig(
        d_model=48,
        n_heads=6,
        n_kv_heads=2,
        head_dim=10,
        d_ff=96,
        n_layers=1,
        vocab_size=50,
        norm="rms",
        pos="rope",
        attn_scale=1.0,
        bias=False,
        pad_token_id=3,
    )
    assert M.LMConfig.from_json(cfg.to_json()) == cfg
    assert cfg.resolved_head_dim == 10 and cfg.resolved_n_kv_heads == 2


@pytest.mark.parametrize("cls", list(CONFIG_CLASSES.values()))
def test_defaults_are_valid_and_build_on_meta(cls: type[M.TransformerConfig]) -> None:
    cfg = cls()
    with torch.device("meta"):
        model = M.build(cfg)
    assert model.config is cfg


def test_n_heads_must_divide_d_model() -> None:
    with pytest.raises(ValueError, match=r"n_heads \(7\) must divide d_model \(512\)"):
        M.Seq2SeqConfig(n_heads=7)
    with pytest.raises(ValueError, match=r"n_heads \(7\) must divide d_model \(512\)"):
        M.preset_config("transformer-base", n_heads=7)
    # an explicit head_dim lifts the constraint
    assert M.Seq2SeqConfig(n_heads=7, head_dim=64).resolved_head_dim == 64


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("d_model", -512),
        ("n_heads", 0),
        ("d_ff", -1),
        ("vocab_size", -5),
        ("max_len", 0),
        ("n_layers", -2),
        ("head_dim", -8),
    ],
)
def test_negative_sizes(field: str, value: int) -> None:
    kwargs = {field: value}
    if field == "d_model":
        kwargs["head_dim"] = 8  # reach the size check, not the divisibility one
    with pytest.raises(ValueError, match=rf"{field} must be a positive int, got {value}"):
        M.LMConfig(**kwargs)


def test_negative_sizes_other_families() -> None:
    with pytest.raises(ValueError, match=r"n_encoder_layers must be a positive int, got -1"):
        M.Seq2SeqConfig(n_encoder_layers=-1)
    with pytest.raises(ValueError, match=r"tgt_vocab_size must be a positive int, got -3"):
        M.Seq2SeqConfig(tgt_vocab_size=-3, share_embeddings=False)
    with pytest.raises(ValueError, match=r"type_vocab_size must be an int >= 0, got -1"):
        M.EncoderConfig(type_vocab_size=-1)
    with pytest.raises(ValueError, match=r"patch_size must be a positive int, got -16"):
        M.ViTConfig(patch_size=-16)
    with pytest.raises(ValueError, match=r"n_classes must be a positive int, got 0"):
        M.preset_config("vit-tiny", n_classes=0)


@pytest.mark.parametrize(
    ("field", "value", "choice"),
    [
        ("pos", "xpos", "'alibi'"),
        ("norm", "batch", "'rms'"),
        ("activation", "tanh", "'swiglu'"),
        ("norm_placement", "sandwich", "'pre'"),
        ("init", "kaiming", "'xavier'"),
    ],
)
def test_unknown_names_list_the_choices(field: str, value: str, choice: str) -> None:
    with pytest.raises(
        ValueError, match=rf"{field} must be one of \(.*{choice}.*\), got '{value}'"
    ):
        M.LMConfig(**{field: value})


def test_other_validation_messages() -> None:
    with pytest.raises(
        ValueError, match=r"dropout must be a finite number in \[0.0, 1.0\), got 1.5"
    ):
        M.LMConfig(dropout=1.5)
    with pytest.raises(ValueError, match=r"n_kv_heads \(5\) must divide n_heads \(12\)"):
        M.LMConfig(n_kv_heads=5)
    with pytest.raises(ValueError, match=r"pad_token_id \(100\) must be < vocab_size \(100\)"):
        M.LMConfig(vocab_size=100, pad_token_id=100)
    with pytest.raises(ValueError, match=r"patch_size \(15\) must divide image_size \(224\)"):
        M.ViTConfig(patch_size=15)
    with pytest.raises(ValueError, match=r"tgt_vocab_size \(10\) == vocab_size \(37000\)"):
        M.Seq2SeqConfig(tgt_vocab_size=10)
    with pytest.raises(ValueError, match=r"pos='rope' needs an even head_dim, got 5"):
        M.LMConfig(d_model=20, n_heads=4, pos="rope")
    with pytest.raises(ValueError, match=r"bias must be a bool, got 1"):
        M.LMConfig(bias=1)


def test_from_dict_rejects_unknown_fields_and_wrong_family() -> None:
    with pytest.raises(ValueError, match=r"unknown LMConfig fields \['n_lyers'\]"):
        M.LMConfig.from_dict({"n_lyers": 3})
    with pytest.raises(ValueError, match=r"unknown LMConfig fields \['colour'\]"):
        M.preset_config("gpt2-tiny", colour="red")
    with pytest.raises(ValueError, match=r"LMConfig needs family='lm', got 'vit'"):
        M.LMConfig.from_dict(M.ViTConfig().to_dict())
    with pytest.raises(ValueError, match=r"family must be one of .*'seq2seq'.*got 'rnn'"):
        M.config_from_dict({"family": "rnn"})


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'gpt5'; known presets: .*gpt2-small"):
        M.from_preset("gpt5")
    with pytest.raises(ValueError, match=r"unknown preset"):
        M.preset_config("bert")


def test_presets_cover_the_issue() -> None:
    for name in ("transformer-base", "transformer-big", "bert-base", "gpt2-small", "vit-b16"):
        assert name in M.PRESETS
    for name in ("transformer-tiny", "bert-tiny", "gpt2-tiny", "vit-tiny"):
        assert name in M.PRESETS
    base, big = M.preset_config("transformer-base"), M.preset_config("transformer-big")
    assert (base.d_model, base.d_ff, base.n_heads, base.dropout) == (512, 2048, 8, 0.1)
    assert (big.d_model, big.d_ff, big.n_heads, big.dropout) == (1024, 4096, 16, 0.3)
    for c in (base, big):
        assert (c.n_encoder_layers, c.n_decoder_layers, c.vocab_size) == (6, 6, 37000)
        assert c.share_embeddings and c.tie_embeddings and c.scale_embeddings
        assert (c.pos, c.norm_placement, c.init) == ("sinusoidal", "post", "xavier")


def test_overrides_reach_the_model() -> None:
    m = M.from_preset("gpt2-tiny", pos="rope", norm="rms", n_layers=3)
    assert len(m.decoder.layers) == 3 and m.config.pos == "rope"
    assert m.decoder.layers[0].self_attn.rope is not None


def test_build_dispatch_and_type_errors() -> None:
    assert isinstance(M.build(M.preset_config("bert-tiny")), M.EncoderModel)
    assert isinstance(M.build(M.preset_config("vit-tiny")), M.ViT)
    with pytest.raises(TypeError, match="build needs one of"):
        M.build({"family": "lm"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DecoderLM needs an LMConfig, got ViTConfig"):
        M.DecoderLM(M.ViTConfig())  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["transformer-tiny", "gpt2-tiny", "bert-tiny", "vit-tiny"])
def test_backend_reaches_every_attention_module(name: str) -> None:
    model = M.from_preset(name, attn_backend="math")
    mhas = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    assert mhas and all(m.backend == "math" for m in mhas)
    assert model.backend == "math"
    model.set_backend("sdpa")
    assert all(m.backend == "sdpa" for m in mhas)
    assert model.backend == "sdpa" and model.config.attn_backend == "sdpa"
    with pytest.raises(ValueError, match=r"attn_backend must be one of \[.*'math'.*\], got 'nope'"):
        model.set_backend("nope")
    with pytest.raises(ValueError, match=r"got 'nope'"):
        M.from_preset(name, attn_backend="nope")


def test_backends_agree() -> None:
    model = M.from_preset("gpt2-tiny", attn_backend="math").eval()
    ids = torch.randint(0, 128, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :3] = False
    with torch.no_grad():
        ref = model(ids, padding_mask=mask)
        model.set_backend("sdpa")
        fast = model(ids, padding_mask=mask)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
