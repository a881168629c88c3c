"""Efficient attention in the model families (``attn_kind``): every parameter gets a
gradient, parameter and buffer counts from the config equal the built model's, weights
save and reload bit-exactly, cached decoding follows the full pass, and configs refuse
what a variant cannot do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import qkv.models as M
from qkv.attn import FavorAttention, LinformerAttention, LSHSelfAttention
from qkv.layers import ChunkedFeedForward
from qkv.models import memory
from qkv.models.reversible import ReversibleLayer

# (preset, overrides) of every family that takes each kind
CASES: list[tuple[str, dict[str, Any]]] = [
    ("gpt2-tiny", {"attn_kind": "favor"}),
    ("gpt2-tiny", {"attn_kind": "favor", "favor_features": 8, "pos": "rope", "n_kv_heads": 2}),
    ("transformer-tiny", {"attn_kind": "favor"}),
    ("bert-tiny", {"attn_kind": "favor"}),
    ("bert-tiny", {"attn_kind": "linformer", "linformer_k": 16}),
    ("vit-tiny", {"attn_kind": "linformer", "linformer_k": 8}),
    ("vit-tiny", {"attn_kind": "favor"}),
    ("gpt2-tiny", {"attn_kind": "lsh", "lsh_bucket_size": 2}),
    ("transformer-tiny", {"attn_kind": "lsh", "lsh_bucket_size": 2, "lsh_n_hashes": 3}),
    ("bert-tiny", {"attn_kind": "lsh", "lsh_bucket_size": 2, "bias": False}),
    ("gpt2-tiny", {"reversible": True, "ff_chunk_size": 4}),
    ("gpt2-tiny", {"reversible": True, "attn_kind": "lsh", "lsh_bucket_size": 2}),
    ("bert-tiny", {"reversible": True, "norm_placement": "pre", "attn_kind": "favor"}),
    ("vit-tiny", {"reversible": True, "pos": "sinusoidal", "d_model": 32}),
]


def _ids(case: tuple[str, dict[str, Any]]) -> str:
    return case[0] + ":" + ",".join(f"{k}={v}" for k, v in case[1].items())


def _inputs(model: M.TransformerModel) -> tuple[tuple[Any, ...], dict[str, Any]]:
    cfg: Any = model.config
    if isinstance(model, M.ViT):
        return (torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size),), {}
    if isinstance(model, M.Seq2SeqTransformer):
        src_mask = torch.ones(2, 7, dtype=torch.bool)
        src_mask[1, 5:] = False
        src, tgt = torch.randint(1, 128, (2, 7)), torch.randint(1, 128, (2, 5))
        return (src, tgt), {"src_padding_mask": src_mask}
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    return (torch.randint(1, 128, (2, 6)),), {"padding_mask": mask}


def _loss(out: Any) -> torch.Tensor:
    if isinstance(out, M.EncoderOutput):
        parts = (out.last_hidden_state, out.pooled, out.mlm_logits)
        return sum(p.square().mean() for p in parts if p is not None)  # type: ignore[return-value]
    return out.square().mean()


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_every_parameter_gets_a_gradient(case: tuple[str, dict[str, Any]]) -> None:
    model = M.from_preset(case[0], **case[1]).train()
    kinds = {
        "favor": FavorAttention,
        "linformer": LinformerAttention,
        "lsh": LSHSelfAttention,
        "softmax": nn.Module,
    }
    assert any(isinstance(m, kinds[case[1].get("attn_kind", "softmax")]) for m in model.modules())
    if case[1].get("reversible"):
        assert any(isinstance(m, ReversibleLayer) for m in model.modules())
    if case[1].get("ff_chunk_size"):
        assert any(isinstance(m, ChunkedFeedForward) for m in model.modules())
    args, kw = _inputs(model)
    loss = _loss(model(*args, **kw))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, missing


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_counts_from_the_config(case: tuple[str, dict[str, Any]]) -> None:
    cfg = M.preset_config(case[0], **case[1])
    with torch.device("meta"):
        model = M.build(cfg)
    assert memory.parameter_count(cfg) == M.count_parameters(model)
    assert memory.buffer_count(cfg) == sum(b.numel() for b in model.buffers())


@pytest.mark.parametrize("case", CASES[:1] + CASES[4:5], ids=_ids)
def test_save_and_load_keep_the_outputs(case: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """FAVOR+'s random features are a saved buffer: a reloaded model answers the same."""
    model = M.from_preset(case[0], **case[1]).eval()
    args, kw = _inputs(model)
    model.save_pretrained(tmp_path)
    again = M.load(tmp_path).eval()
    a, b = model(*args, **kw), again(*args, **kw)
    a = a.last_hidden_state if isinstance(a, M.EncoderOutput) else a
    b = b.last_hidden_state if isinstance(b, M.EncoderOutput) else b
    assert torch.equal(a, b)


@torch.no_grad()
def test_favor_lm_cached_decoding_follows_the_full_pass() -> None:
    model: M.DecoderLM = M.from_preset("gpt2-tiny", attn_kind="favor", dropout=0.0).eval()  # type: ignore[assignment]
    ids = torch.randint(0, 128, (2, 12))
    full = model(ids)
    cache = model.make_cache(2, 12)
    steps = [model(ids[:, :5], cache=cache)] + [
        model(ids[:, t : t + 1], cache=cache) for t in range(5, 12)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-2, rtol=1e-2)
    out = model.generate(ids[:, :4], max_new_tokens=5)
    assert out.ids.shape == (2, 5)


@pytest.mark.parametrize("overrides", [{"reversible": True}, {"reversible": True, "pos": "rope"}])
@torch.no_grad()
def test_reversible_lm_cached_decoding_equals_the_full_pass(overrides: dict[str, Any]) -> None:
    model: M.DecoderLM = M.from_preset("gpt2-tiny", **overrides).eval()  # type: ignore[assignment]
    ids = torch.randint(0, 128, (2, 10))
    full = model(ids)
    cache = model.make_cache(2, 10)
    steps = [model(ids[:, :4], cache=cache)] + [
        model(ids[:, t : t + 1], cache=cache) for t in range(4, 10)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


@torch.no_grad()
def test_lsh_lm_generates_with_a_cache() -> None:
    model: M.DecoderLM = M.from_preset("gpt2-tiny", attn_kind="lsh", lsh_bucket_size=16).eval()  # type: ignore[assignment]
    ids = torch.randint(0, 128, (2, 12))
    full = model(ids)  # 12 <= bucket_size: full shared-QK attention, as every decoding step
    cache = model.make_cache(2, 12)
    steps = [model(ids[:, :5], cache=cache)] + [
        model(ids[:, t : t + 1], cache=cache) for t in range(5, 12)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    assert model.generate(ids[:, :3], max_new_tokens=4).ids.shape == (2, 4)


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("gpt2-tiny", {"attn_kind": "linformer"}, "bidirectional"),
        ("transformer-tiny", {"attn_kind": "linformer"}, "bidirectional"),
        ("gpt2-tiny", {"attn_kind": "favor", "pos": "alibi"}, "forms no score matrix"),
        ("bert-tiny", {"attn_kind": "flash"}, "attn_kind must be one of"),
        ("bert-tiny", {"attn_kind": "linformer", "linformer_k": 0}, "linformer_k must be"),
        ("bert-tiny", {"attn_kind": "favor", "favor_features": -1}, "favor_features must be"),
        ("gpt2-tiny", {"attn_kind": "lsh", "n_kv_heads": 2}, "shares queries and keys"),
        ("gpt2-tiny", {"attn_kind": "lsh", "pos": "rope"}, "rotary"),
        ("gpt2-tiny", {"attn_kind": "lsh", "lsh_n_buckets": 3}, "lsh_n_buckets must be even"),
        ("bert-tiny", {"reversible": True}, "norm_placement='pre'"),
        ("transformer-tiny", {"reversible": True, "norm_placement": "pre"}, "cross-attention"),
        ("gpt2-tiny", {"ff_chunk_size": -1}, "ff_chunk_size must be"),
    ],
)
def test_config_refusals(preset: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        M.preset_config(preset, **overrides)


def test_to_hf_refuses_an_approximate_model() -> None:
    from qkv.interop import HFConversionError
    from qkv.interop.hf import gpt2

    with pytest.raises(HFConversionError, match="attn_kind='favor'"):
        gpt2.config_to_hf(M.preset_config("gpt2-tiny", attn_kind="favor"))
