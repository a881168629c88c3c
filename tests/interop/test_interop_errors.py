"""Errors name what is wrong: unknown architectures, missing, unexpected and mismatched
tensors (all in one message), unsupported configuration values, unsafe pickles."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import qkv.models as M
from qkv.interop import HFConversionError, HFFileError, from_hf, load_hf_tokenizer, to_hf

T = pytest.importorskip("transformers")


def _bert_dir(kit):
    cfg = T.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=40, max_position_embeddings=16,
    )  # fmt: skip
    return kit.save(T.BertModel(cfg))


def _edit_config(d, **changes):
    f = d / "config.json"
    cfg = json.loads(f.read_text())
    cfg.update(changes)
    f.write_text(json.dumps(cfg))


def test_unknown_model_type_lists_the_supported_ones(kit):
    d = _bert_dir(kit)
    _edit_config(d, model_type="llama")
    with pytest.raises(
        ValueError, match=r"unsupported Hugging Face model type 'llama'.*'bert'.*'t5'"
    ):
        from_hf(d)
    with pytest.raises(ValueError, match=r"unsupported Hugging Face model type 'gpt9'"):
        from_hf(d, family="gpt9")


def test_missing_unexpected_and_mismatched_tensors_in_one_error(kit):
    d = _bert_dir(kit)
    sd = load_file(d / "model.safetensors")
    del sd["encoder.layer.1.attention.self.key.bias"]  # missing
    sd["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)  # unexpected
    sd["pooler.dense.weight"] = torch.zeros(32, 31)  # shape mismatch
    save_file(sd, d / "model.safetensors")
    with pytest.raises(HFConversionError) as info:
        from_hf(d)
    e = info.value
    msg = str(e)
    assert msg.startswith(f"cannot load {d} as bert: 1 missing, 1 unexpected, 1 mismatched\n")
    assert e.missing == [
        "encoder.layer.1.attention.self.key.bias -> encoder.layers.1.self_attn.qkv_proj.bias"
    ]
    assert e.unexpected == ["encoder.layer.0.attention.self.rotary.weight"]
    assert e.mismatched == [
        "pooler.dense.weight -> pooler.dense.weight: checkpoint (32, 31) vs qkv (32, 32)"
    ]
    for item in (*e.missing, *e.unexpected, *e.mismatched):
        assert item in msg


def test_config_that_disagrees_with_the_weights(kit):
    d = _bert_dir(kit)
    _edit_config(d, intermediate_size=48)
    with pytest.raises(
        HFConversionError,
        match=r"intermediate\.dense\.weight -> .*ff\.fc1\.weight: checkpoint \(40, 32\) vs qkv \(48, 32\)",
    ):
        from_hf(d)


def test_unsupported_configuration_values_are_listed(kit):
    d = _bert_dir(kit)
    _edit_config(d, position_embedding_type="relative_key", hidden_act="quick_gelu")
    with pytest.raises(HFConversionError) as info:
        from_hf(d)
    assert info.value.unsupported == [
        "position_embedding_type='relative_key' (qkv supports 'absolute')",
        "hidden_act='quick_gelu' (qkv supports ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu', 'silu', 'swish'])",
    ]


def test_missing_files(kit, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a directory"):
        from_hf(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        from_hf(tmp_path)
    d = _bert_dir(kit)
    (d / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"has no weights: looked for model\.safetensors.*pytorch_model\.bin",
    ):
        from_hf(d)
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json"):
        load_hf_tokenizer(d)


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickles_are_read_with_weights_only(kit, capsys):
    d = _bert_dir(kit)
    (d / "model.safetensors").unlink()
    torch.save({"x": _Payload()}, d / "pytorch_model.bin")
    with pytest.raises(HFFileError, match=r"pytorch_model\.bin is not a weights-only"):
        from_hf(d)
    assert "pickled code ran" not in capsys.readouterr().out


def test_legacy_layernorm_names_load(kit):
    hf = T.BertModel(T.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=40))  # fmt: skip
    d = kit.save(hf)
    sd = load_file(d / "model.safetensors")
    sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
          for k, v in sd.items()}  # fmt: skip
    save_file(sd, d / "model.safetensors")
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        assert (
            kit.diff(from_hf(d)(ids).last_hidden_state, hf(input_ids=ids).last_hidden_state)
            <= kit.atol
        )


def test_to_hf_lists_what_the_family_cannot_express(tmp_path):
    model = M.build(M.LMConfig(d_model=32, n_heads=4, n_kv_heads=2, d_ff=64, n_layers=1,
                               vocab_size=40, max_len=16, pos="rope", norm="rms"))  # fmt: skip
    with pytest.raises(HFConversionError) as info:
        to_hf(model, tmp_path / "x")
    assert info.value.unsupported == [
        "norm='rms' (the family needs 'layer')",
        "pos='rope' (the family needs 'learned')",
        "n_kv_heads=2 (the family needs None)",
    ]
    with pytest.raises(ValueError, match=r"bert holds encoder models, got a lm model"):
        to_hf(model, tmp_path / "y", family="bert")
    assert not (tmp_path / "x").exists()
