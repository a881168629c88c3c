"""The analytic estimates of qkv.models.memory against built models (on the meta device)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import qkv.models as M
from qkv.layers.feedforward import FeedForward
from qkv.models import memory


def _meta(config: M.TransformerConfig) -> M.TransformerModel:
    with torch.device("meta"):
        return M.build(config)


def _assert_counts(config: M.TransformerConfig) -> None:
    model = _meta(config)
    assert memory.parameter_count(config) == M.count_parameters(model)
    assert memory.buffer_count(config) == sum(b.numel() for b in model.buffers())


@pytest.mark.parametrize("name", M.PRESETS)
def test_presets(name: str) -> None:
    _assert_counts(M.preset_config(name))


# Each family's tiny preset with variations of every field that shapes a parameter.
_COMMON: list[dict[str, Any]] = [
    {},
    {"n_kv_heads": 2},
    {"n_kv_heads": 1, "head_dim": 6},
    {"norm": "rms", "bias": False},
    {"activation": "swiglu"},
    {"activation": "geglu_tanh", "norm_placement": "post"},
    *({"pos": p} for p in M.POS_KINDS),
    {"pos": "relative", "rel_buckets": 8},
]
_FAMILY: dict[str, list[dict[str, Any]]] = {
    "gpt2-tiny": [{"tie_embeddings": False}, {"embed_norm": True}],
    "transformer-tiny": [
        {"tie_embeddings": False},
        {"share_embeddings": False, "tgt_vocab_size": 96},
        {"share_embeddings": False, "tgt_vocab_size": 96, "tie_embeddings": False},
        {"output_bias": True, "embed_norm": True},
    ],
    "bert-tiny": [
        {"mlm_head": False},
        {"tie_embeddings": False},
        {"pooler": False, "type_vocab_size": 0},
        {"n_classes": 3},
        {"mlm_head": True, "tie_embeddings": False, "n_classes": 5, "norm": "rms"},
    ],
    "vit-tiny": [{"in_channels": 1}, {"patch_size": 4, "n_classes": 2}],
}
_CASES = [
    (preset, overrides)
    for preset, extra in _FAMILY.items()
    for overrides in (*_COMMON, *extra)
    if not (preset == "vit-tiny" and overrides.get("pos") == "sinusoidal")
] + [("vit-tiny", {"pos": "sinusoidal", "d_model": 32})]


@pytest.mark.parametrize(("preset", "overrides"), _CASES, ids=lambda v: str(v))
def test_variants(preset: str, overrides: dict[str, Any]) -> None:
    _assert_counts(M.preset_config(preset, **overrides))


@pytest.mark.parametrize(
    ("preset", "overrides", "pruned"),
    [
        ("gpt2-tiny", {}, {"decoder.layers.0.self_attn": [1, 3]}),
        ("bert-tiny", {}, {"encoder.layers.1.self_attn": [0], "encoder.layers.0.self_attn": [2]}),
        ("vit-tiny", {}, {"encoder.layers.0.self_attn": [0, 1, 2]}),
        # grouped heads: removing a whole group removes its key/value head too
        ("gpt2-tiny", {"n_kv_heads": 2}, {"decoder.layers.1.self_attn": [0, 1]}),
        ("gpt2-tiny", {"n_kv_heads": 2}, {"decoder.layers.1.self_attn": [0, 2]}),
        (
            "transformer-tiny",
            {"n_kv_heads": 2},
            {"decoder.layers.0.cross_attn": [2, 3], "encoder.layers.1.self_attn": [1, 3]},
        ),
    ],
)
def test_pruned_heads(preset: str, overrides: dict[str, Any], pruned: dict[str, list[int]]) -> None:
    _assert_counts(M.preset_config(preset, pruned_heads=pruned, **overrides))


def test_pruning_a_model_updates_the_estimate() -> None:
    model = M.from_preset("transformer-tiny")
    model.prune_heads({"decoder.layers.1.self_attn": [0, 1], "decoder.layers.0.cross_attn": [3]})
    assert memory.parameter_count(model.config) == M.count_parameters(model)


def test_gated_activations_match_the_feedforward() -> None:
    for act in M.ACTIVATIONS:
        with torch.device("meta"):
            gated = FeedForward(8, 16, act).gated  # type: ignore[arg-type]
        assert gated == (act in memory.GATED_ACTIVATIONS), act


def test_bytes() -> None:
    cfg = M.preset_config("gpt2-small")
    n = 124_439_808
    assert memory.parameter_count(cfg) == n
    assert memory.parameter_bytes(cfg) == 4 * n
    assert memory.parameter_bytes(cfg, torch.bfloat16) == 2 * n
    assert memory.training_bytes(cfg) == 16 * n  # weights, gradients, Adam's two moments
    t = M.preset_config("transformer-base")  # sinusoidal tables: 2 x 1024 x 512 buffers
    assert memory.model_bytes(t) == 4 * (memory.parameter_count(t) + 2 * 1024 * 512)
    with pytest.raises(ValueError, match="dtype must be a torch.dtype, got 'float32'"):
        memory.parameter_bytes(cfg, "float32")  # type: ignore[arg-type]


def test_not_a_family() -> None:
    with pytest.raises(TypeError, match="got TransformerConfig"):
        memory.parameter_count(M.TransformerConfig())


def _cache_bytes(cache: list[Any]) -> int:
    total = 0
    for entry in cache:
        for c in entry if isinstance(entry, tuple) else (entry,):
            total += c.k.numel() * c.k.element_size() + c.v.numel() * c.v.element_size()
    return total


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"n_kv_heads": 2},
        {"n_kv_heads": 2, "pruned_heads": {"decoder.layers.0.self_attn": [0, 1]}},
    ],
    ids=str,
)
def test_kv_cache_bytes_lm(overrides: dict[str, Any]) -> None:
    cfg = M.preset_config("gpt2-tiny", **overrides)
    model = _meta(cfg)
    cache = model.make_cache(3, 40, dtype=torch.float32, device="meta")
    assert memory.kv_cache_bytes(cfg, 3, 40) == _cache_bytes(cache)
    cache16 = model.make_cache(3, 40, dtype=torch.float16, device="meta")
    assert memory.kv_cache_bytes(cfg, 3, 40, torch.float16) == _cache_bytes(cache16)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"n_kv_heads": 2, "pruned_heads": {"decoder.layers.1.cross_attn": [2, 3]}}],
    ids=str,
)
def test_kv_cache_bytes_seq2seq(overrides: dict[str, Any]) -> None:
    cfg = M.preset_config("transformer-tiny", **overrides)
    torch.manual_seed(0)
    model = M.build(cfg).eval()
    src = torch.randint(4, 128, (2, 7))
    cache = model.make_cache(2, 10)
    with torch.no_grad():  # the first decoding step fills the cross-attention caches
        model.decode(torch.ones(2, 1, dtype=torch.long), model.encode(src), cache=cache)
    assert memory.kv_cache_bytes(cfg, 2, 10, source_length=7) == _cache_bytes(cache)
    # the source defaults to the longest the model takes
    assert memory.kv_cache_bytes(cfg, 2, 10) > memory.kv_cache_bytes(cfg, 2, 10, source_length=7)


def test_kv_cache_bytes_refusals() -> None:
    cfg = M.preset_config("gpt2-tiny")
    with pytest.raises(ValueError, match="batch must be a positive int, got 0"):
        memory.kv_cache_bytes(cfg, 0, 10)
    with pytest.raises(ValueError, match="length must be a positive int, got 2.5"):
        memory.kv_cache_bytes(cfg, 1, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="EncoderConfig describes a model without a decoder"):
        memory.kv_cache_bytes(M.preset_config("bert-tiny"), 1, 10)
