"""CLIP (Radford et al. 2021) <-> :class:`qkv.models.CLIP`.

Reads and writes ``CLIPModel`` checkpoints: a ``vision_model`` (patch embedding without a
bias, a class embedding, learned positions, ``pre_layrnorm``, pre-norm layers,
``post_layernorm``), a causal ``text_model`` (``final_layer_norm``, read at the end-of-text
token), two bias-free projections and ``logit_scale``. Both towers must share the activation
and LayerNorm epsilon (every released CLIP does).

Old configs say ``eos_token_id=2`` while the real end-of-text token is the vocabulary's last
(``transformers`` then pools at the largest id, which is that token): qkv reads them with
``eos_token_id = vocab_size - 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from qkv.interop._convert import Rule, copy, modules, stacked
from qkv.interop.hf._common import (
    HFFamily,
    Issues,
    activation_to_hf,
    common_to_hf,
    ignore_exactly,
    pad_id,
    required,
    to_hf_issues,
)
from qkv.models import CLIPConfig, TransformerConfig

# -- weight map ------------------------------------------------------------------------
#: HF ``CLIPEncoderLayer`` submodule -> qkv ``EncoderLayer`` submodule (weight and bias).
LAYER: dict[str, str] = {
    "layer_norm1": "self_attn_norm",
    "self_attn.out_proj": "self_attn.out_proj",
    "layer_norm2": "ff_norm",
    "mlp.fc1": "ff.fc1",
    "mlp.fc2": "ff.fc2",
}
#: HF's separate query, key and value -> qkv's stacked projection (rows in this order).
LAYER_QKV: dict[tuple[str, ...], str] = {
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"): "self_attn.qkv_proj"
}
VISION: dict[str, str] = {
    "vision_model.pre_layrnorm": "vision.pre_norm",
    "vision_model.post_layernorm": "vision.encoder.norm",
}
TEXT: dict[str, str] = {"text_model.final_layer_norm": "text.encoder.norm"}
WEIGHTS: dict[str, str] = {
    "vision_model.embeddings.patch_embedding.weight": "vision.patch_embed.proj.weight",
    "vision_model.embeddings.position_embedding.weight": "vision.pos_emb.emb.weight",
    "text_model.embeddings.token_embedding.weight": "text.embed.tok_emb.weight",
    "text_model.embeddings.position_embedding.weight": "text.embed.pos_emb.emb.weight",
    "visual_projection.weight": "visual_projection.weight",
    "text_projection.weight": "text_projection.weight",
}
#: ``(d,)`` in HF; qkv's class token is ``(1, 1, d)`` as ViT's.
CLASS_EMBEDDING = ("vision_model.embeddings.class_embedding", "vision.cls_token")
#: a scalar both ways (``transformers`` stores it 0-dimensional)
LOGIT_SCALE = ("logit_scale", "logit_scale")
#: position-id buffers that old checkpoints saved
IGNORED = (
    "vision_model.embeddings.position_ids",
    "text_model.embeddings.position_ids",
)
ARCHITECTURE = "CLIPModel"


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a ``CLIPModel`` checkpoint and a qkv ``CLIP``."""
    assert isinstance(cfg, CLIPConfig)
    rules = [copy(h, q) for h, q in WEIGHTS.items()]
    h, q = CLASS_EMBEDDING
    rules.append(
        Rule(
            (h,), (q,), to_qkv=lambda ts: [ts[0].view(1, 1, -1)], to_hf=lambda ts: [ts[0].flatten()]
        )
    )
    h, q = LOGIT_SCALE
    rules.append(
        Rule(
            (h,), (q,), to_qkv=lambda ts: [ts[0].reshape(())], to_hf=lambda ts: [ts[0].reshape(())]
        )
    )
    rules += modules(VISION) + modules(TEXT)
    for tower, n in (("vision", cfg.vision_n_layers), ("text", cfg.n_layers)):
        hf_prefix, qkv_prefix = f"{tower}_model.encoder.layers.", f"{tower}.encoder.layers."
        for i in range(n):
            rules += modules(LAYER, f"{hf_prefix}{i}.", f"{qkv_prefix}{i}.")
            rules += stacked(LAYER_QKV, f"{hf_prefix}{i}.", f"{qkv_prefix}{i}.")
    return rules


# -- config map ------------------------------------------------------------------------
_TOWER_REQUIRED = ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers")


def _tower(hf: Mapping[str, Any], key: str, issues: Issues) -> dict[str, Any]:
    tower = hf.get(key)
    if not isinstance(tower, Mapping):
        issues.add(f"{key} is missing from config.json")
        return {}
    required(tower, issues, *(f"{k}" for k in _TOWER_REQUIRED))
    return dict(tower)


def config_from_hf(hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str) -> CLIPConfig:
    """``CLIPConfig`` (transformers) -> :class:`~qkv.models.CLIPConfig`.

    Raises:
        HFConversionError: values qkv cannot express (towers with different activations or
            epsilons, non-square images or patches, an unknown activation), all listed.
    """
    issues = Issues(what)
    text, vision = _tower(hf, "text_config", issues), _tower(hf, "vision_config", issues)
    required(text, issues, "vocab_size")
    act = text.get("hidden_act", "quick_gelu")
    eps = text.get("layer_norm_eps", 1e-5)
    for key, value in (("hidden_act", act), ("layer_norm_eps", eps)):
        if vision.get(key, value) != value:
            issues.add(
                f"vision_config.{key}={vision.get(key)!r} differs from text_config.{key}="
                f"{value!r} (qkv's CLIP shares it)"
            )
    for key in ("image_size", "patch_size"):
        if not isinstance(vision.get(key, 224 if key == "image_size" else 32), int):
            issues.add(f"vision_config.{key}={vision.get(key)!r} (qkv supports an int)")
    activation = "quick_gelu" if act == "quick_gelu" else issues.activation("hidden_act", act)
    issues.raise_if_any()
    vocab = text["vocab_size"]
    eos = text.get("eos_token_id", vocab - 1)
    return CLIPConfig(
        d_model=text["hidden_size"],
        n_heads=text["num_attention_heads"],
        d_ff=text["intermediate_size"],
        n_layers=text["num_hidden_layers"],
        vocab_size=vocab,
        max_len=text.get("max_position_embeddings", 77),
        eos_token_id=vocab - 1 if eos == 2 else eos,  # see the module docstring
        pad_token_id=pad_id(text),
        activation=activation,
        norm_eps=eps,
        dropout=0.0,
        attn_dropout=text.get("attention_dropout", 0.0),
        init_std=text.get("initializer_range", 0.02),
        image_size=vision.get("image_size", 224),
        patch_size=vision.get("patch_size", 32),
        in_channels=vision.get("num_channels", 3),
        vision_d_model=vision["hidden_size"],
        vision_n_heads=vision["num_attention_heads"],
        vision_d_ff=vision["intermediate_size"],
        vision_n_layers=vision["num_hidden_layers"],
        embed_dim=hf.get("projection_dim", 512),
        logit_scale_init=hf.get("logit_scale_init_value", 2.6592),
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.CLIPConfig` -> transformers ``CLIPConfig`` dict (``CLIPModel``).

    Raises:
        HFConversionError: features CLIP lacks (RMSNorm, no biases, an activation without a
            Hugging Face name, ...), all listed.
    """
    issues = to_hf_issues(cfg, "CLIP", CLIPConfig)
    assert isinstance(cfg, CLIPConfig)
    common_to_hf(cfg, issues, norm="layer", bias=True, attn_backend=cfg.attn_backend)
    if cfg.activation == "quick_gelu":
        act = "quick_gelu"
    else:
        act = activation_to_hf(cfg, issues, ("gelu", "gelu_tanh", "relu", "silu"))
    issues.raise_if_any()
    shared = {
        "hidden_act": act,
        "layer_norm_eps": cfg.norm_eps,
        "attention_dropout": cfg.attn_dropout,
        "initializer_range": cfg.init_std,
        "projection_dim": cfg.embed_dim,
    }
    text = {
        **shared,
        "hidden_size": cfg.d_model,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_len,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": None,  # qkv's CLIP has no start token; HF's default lies outside small vocabularies
    }
    vision = {
        **shared,
        "hidden_size": cfg.vision_d_model,
        "num_attention_heads": cfg.vision_n_heads,
        "intermediate_size": cfg.vision_d_ff,
        "num_hidden_layers": cfg.vision_n_layers,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_channels,
    }
    return {
        "model_type": "clip",
        "architectures": [ARCHITECTURE],
        "text_config": text,
        "vision_config": vision,
        "projection_dim": cfg.embed_dim,
        "logit_scale_init_value": cfg.logit_scale_init,
    }


FAMILY = HFFamily(
    name="clip",
    model_types=("clip",),
    config_family="clip",
    prefix="",
    heads=(),
    base_architectures=(ARCHITECTURE,),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=ignore_exactly(IGNORED),
)
