"""ViT (Dosovitskiy et al. 2021) <-> :class:`qkv.models.ViT`.

Reads ``ViTForImageClassification`` checkpoints: a pre-norm encoder with a final
LayerNorm, a class token, learned positions and a linear classifier on the class token,
exactly ``ViTConfig``'s layout. ``ViTModel`` checkpoints (no classifier, a pooler instead)
are refused: qkv's ViT always ends in a classification head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from qkv.interop._convert import Rule, copy, modules, stacked
from qkv.interop.hf._common import (
    BERT_STYLE_REQUIRED,
    HFFamily,
    Issues,
    bert_style_fields,
    bert_style_to_hf,
    common_to_hf,
    required,
    to_hf_issues,
)
from qkv.models import TransformerConfig, ViTConfig

# -- weight map ------------------------------------------------------------------------
CLS_TOKEN: dict[str, str] = {"embeddings.cls_token": "cls_token"}  # (1, 1, d) both
#: ``(1, 1 + n_patches, d)`` in HF; the qkv table is ``(1 + n_patches, d)``.
POSITIONS: dict[str, str] = {"embeddings.position_embeddings": "pos_emb.emb.weight"}
PATCHES: dict[str, str] = {"embeddings.patch_embeddings.projection": "patch_embed.proj"}
#: HF ``ViTLayer`` submodule -> qkv ``EncoderLayer`` submodule (weight and bias each).
LAYER: dict[str, str] = {
    "layernorm_before": "self_attn_norm",
    "attention.output.dense": "self_attn.out_proj",
    "layernorm_after": "ff_norm",
    "intermediate.dense": "ff.fc1",
    "output.dense": "ff.fc2",
}
#: HF's separate query, key and value -> qkv's stacked projection (rows in this order).
LAYER_QKV: dict[tuple[str, ...], str] = {
    (
        "attention.attention.query",
        "attention.attention.key",
        "attention.attention.value",
    ): "self_attn.qkv_proj"
}
FINAL_NORM: dict[str, str] = {"layernorm": "encoder.norm"}
CLASSIFIER: dict[str, str] = {"classifier": "head"}
ARCHITECTURE = "ViTForImageClassification"


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a ViT checkpoint (without the ``vit.`` prefix) and a qkv ``ViT``."""
    assert isinstance(cfg, ViTConfig)
    return encoder_rules(cfg.n_layers) + modules(CLASSIFIER)


def encoder_rules(n_layers: int) -> list[Rule]:
    """The rules of a ``ViTModel`` without its pooler (patches, class token, positions,
    ``n_layers`` layers, final norm) <-> qkv's ``patch_embed``, ``cls_token``, ``pos_emb``
    and ``encoder`` (:class:`~qkv.models.ViT`, :class:`~qkv.models.Captioner`)."""
    rules = [copy(h, q) for h, q in CLS_TOKEN.items()]
    rules += [
        Rule((h,), (q,), to_qkv=lambda ts: [ts[0][0]], to_hf=lambda ts: [ts[0][None]])
        for h, q in POSITIONS.items()
    ]
    rules += modules(PATCHES)
    for i in range(n_layers):
        rules += modules(LAYER, f"encoder.layer.{i}.", f"encoder.layers.{i}.")
        rules += stacked(LAYER_QKV, f"encoder.layer.{i}.", f"encoder.layers.{i}.")
    return rules + modules(FINAL_NORM)


# -- config map ------------------------------------------------------------------------
def _n_classes(hf: Mapping[str, Any], weights: Mapping[str, Tensor]) -> int:
    if "classifier.weight" in weights:
        return int(weights["classifier.weight"].shape[0])
    labels = hf.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels else int(hf.get("num_labels", 2))


def config_from_hf(hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str) -> ViTConfig:
    """``ViTConfig`` (transformers) -> :class:`~qkv.models.ViTConfig`.

    Raises:
        HFConversionError: values qkv cannot express (no query/key/value bias, non-square
            images or patches, a checkpoint without a classifier), all listed.
    """
    issues = Issues(what)
    required(hf, issues, *BERT_STYLE_REQUIRED, "image_size", "patch_size")
    issues.expect(hf, "qkv_bias", (True,), True)
    for key in ("image_size", "patch_size"):
        if not isinstance(hf.get(key, 0), int):
            issues.add(f"{key}={hf.get(key)!r} (qkv supports square images and patches: an int)")
    archs = hf.get("architectures") or []
    if "classifier.weight" not in weights:
        issues.add(
            f"no classifier in the checkpoint (architectures={archs}); qkv's ViT needs one, "
            f"as in {ARCHITECTURE}"
        )
    fields = bert_style_fields(hf, issues, dropout=0.0)
    issues.raise_if_any()
    return ViTConfig(
        **fields,  # hidden_size, ..., initializer_range: named as in BERT
        norm="layer",
        norm_placement="pre",
        bias=True,
        pos="learned",
        init="normal",
        image_size=hf["image_size"],
        patch_size=hf["patch_size"],
        in_channels=hf.get("num_channels", 3),
        n_classes=_n_classes(hf, weights),
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.ViTConfig` -> transformers ``ViTConfig`` dict
    (``ViTForImageClassification``).

    Raises:
        HFConversionError: features ViT lacks (post-norm, RoPE, RMSNorm, ...), all listed.
    """
    issues = to_hf_issues(cfg, "ViT", ViTConfig)
    assert isinstance(cfg, ViTConfig)
    common_to_hf(
        cfg,
        issues,
        norm="layer",
        norm_placement="pre",
        bias=True,
        pos="learned",
        n_kv_heads=None,
        head_dim=None,
        attn_scale=None,
    )
    out = bert_style_to_hf(cfg, issues)
    issues.raise_if_any()
    return {
        "model_type": "vit",
        "architectures": [ARCHITECTURE],
        **out,  # hidden_size, ..., initializer_range: named as in BERT
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_channels,
        "qkv_bias": True,
        "id2label": {str(i): f"LABEL_{i}" for i in range(cfg.n_classes)},
        "label2id": {f"LABEL_{i}": i for i in range(cfg.n_classes)},
    }


FAMILY = HFFamily(
    name="vit",
    model_types=("vit",),
    config_family="vit",
    prefix="vit.",
    heads=("classifier.",),
    base_architectures=("ViTModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
)
