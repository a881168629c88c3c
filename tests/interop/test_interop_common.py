"""The plumbing the family files share (``qkv.interop.hf._common``), seen through the
families: the wrong-config message of every ``config_to_hf``, the BERT-style config names
read and written by BERT and ViT with their own defaults, and the ``ignored`` predicates.
No ``transformers`` needed."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.interop import HFConversionError
from qkv.interop.hf import FAMILIES

_LM = M.LMConfig(d_model=32, n_heads=4, d_ff=64, n_layers=1, vocab_size=40, max_len=16)
_S2S = M.Seq2SeqConfig(d_model=32, n_heads=4, d_ff=64, vocab_size=40, max_len=16)


@pytest.mark.parametrize(
    ("family", "cfg", "name", "needs"),
    [
        ("bert", _LM, "BERT", "an EncoderConfig"),
        ("gpt2", _S2S, "GPT-2", "an LMConfig"),
        ("vit", _LM, "ViT", "a ViTConfig"),
        ("bart", _LM, "BART", "a Seq2SeqConfig"),
        ("marian", _LM, "Marian", "a Seq2SeqConfig"),
        ("t5", _LM, "T5", "a Seq2SeqConfig"),
    ],
)
def test_config_to_hf_refuses_another_kind_of_config_alone(family, cfg, name, needs):
    with pytest.raises(HFConversionError) as info:
        FAMILIES[family].config_to_hf(cfg)
    e = info.value
    assert e.unsupported == [f"{name} needs {needs}, got {type(cfg).__name__}"]
    assert str(e).startswith(f"cannot write this model as {name}: 1 unsupported")


_BERT_STYLE = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 40,
    "num_hidden_layers": 2,
}


@pytest.mark.parametrize(("family", "dropout"), [("bert", 0.1), ("vit", 0.0)])
def test_bert_style_names_round_trip_with_each_family_defaults(family, dropout):
    fam = FAMILIES[family]
    if family == "bert":
        hf = {**_BERT_STYLE, "vocab_size": 50}
        weights = {"pooler.dense.weight": torch.zeros(32, 32)}  # BertModel
    else:
        hf = {**_BERT_STYLE, "image_size": 16, "patch_size": 4}
        weights = {"classifier.weight": torch.zeros(3, 32)}
    cfg = fam.config_from_hf(hf, weights, "here")
    assert (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.n_layers) == (32, 4, 40, 2)
    assert (cfg.activation, cfg.norm_eps, cfg.init_std) == ("gelu", 1e-12, 0.02)
    assert cfg.dropout == cfg.attn_dropout == dropout
    back = fam.config_to_hf(cfg)
    assert {k: back[k] for k in _BERT_STYLE} == _BERT_STYLE
    assert back["hidden_act"] == "gelu"
    assert back["hidden_dropout_prob"] == back["attention_probs_dropout_prob"] == dropout
    assert list(back)[:4] == ["model_type", "architectures", "hidden_size", "num_attention_heads"]


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_bert_style_problems_keep_their_order(family):
    hf = {"hidden_act": "quick_gelu", "image_size": 16, "patch_size": 4}
    with pytest.raises(HFConversionError) as info:
        FAMILIES[family].config_from_hf(hf, {"classifier.weight": torch.zeros(3, 8)}, "here")
    items = info.value.unsupported
    assert items[:4] == [
        f"{k} is missing from config.json"
        for k in ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers")
    ]
    assert items[-1].startswith("hidden_act='quick_gelu' (qkv supports ")


@pytest.mark.parametrize(
    ("family", "ignored", "kept"),
    [
        ("bert", "cls.seq_relationship.bias", "cls.predictions.bias"),
        ("gpt2", "h.3.attn.masked_bias", "h.3.attn.c_attn.bias"),
        ("bart", "encoder.version", "encoder.layers.0.fc1.bias"),
        ("marian", "shared.weight", "lm_head.weight"),
        (
            "t5",
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
            "shared.weight",
        ),
        ("vit", None, "vit.embeddings.cls_token"),
    ],
)
def test_ignored_names_are_exactly_the_listed_ones(family, ignored, kept):
    fam = FAMILIES[family]
    if ignored is not None:
        assert fam.ignored(ignored)
        assert not fam.ignored(ignored + ".x")
    assert not fam.ignored(kept)
