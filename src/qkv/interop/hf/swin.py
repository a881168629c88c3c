"""Swin (Liu et al. 2021) <-> :class:`qkv.models.Swin`.

Reads ``SwinForImageClassification`` (a linear classifier on the mean of the last stage)
and ``SwinModel`` (no classifier: a qkv ``Swin`` with ``n_classes=0`` that returns the
pooled features) checkpoints. Stage ``i`` of ``transformers`` (``encoder.layers.i``, blocks
``blocks.j``, merging ``downsample``) is flattened into qkv's ``layers.N`` (every block,
stage after stage) and ``merges.i``. Checkpoints written by ``transformers`` 4
(``attention.self.query``, ``intermediate.dense``, ...) are renamed on reading.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from qkv.interop._convert import Rule, copy, modules, stacked
from qkv.interop.hf._common import (
    HFFamily,
    Issues,
    activation_to_hf,
    common_to_hf,
    required,
    to_hf_issues,
)
from qkv.models import SwinConfig, TransformerConfig

# -- weight map ------------------------------------------------------------------------
EMBEDDINGS: dict[str, str] = {
    "embeddings.patch_embeddings.projection": "patch_embed.proj",
    "embeddings.norm": "embed_norm",
}
#: ``(1, n_patches, d)`` in HF; the qkv table is ``(n_patches, d)``.
POSITIONS: dict[str, str] = {"embeddings.position_embeddings": "pos_emb.emb.weight"}
#: HF ``SwinLayer`` submodule -> qkv ``SwinBlock`` submodule (weight and bias each).
BLOCK: dict[str, str] = {
    "layernorm_before": "self_attn_norm",
    "attention.o_proj": "self_attn.out_proj",
    "layernorm_after": "ff_norm",
    "mlp.fc1": "ff.fc1",
    "mlp.fc2": "ff.fc2",
}
BLOCK_QKV: dict[tuple[str, ...], str] = {
    ("attention.q_proj", "attention.k_proj", "attention.v_proj"): "self_attn.qkv_proj"
}
BIAS_TABLE: dict[str, str] = {
    "attention.relative_position_bias.relative_position_bias_table": (
        "pos_bias.relative_position_bias_table"
    )
}
MERGE: dict[str, str] = {"downsample.norm": "norm"}
MERGE_REDUCTION: dict[str, str] = {"downsample.reduction.weight": "reduction.weight"}
FINAL_NORM: dict[str, str] = {"layernorm": "norm"}
CLASSIFIER: dict[str, str] = {"classifier": "head"}
ARCHITECTURE = "SwinForImageClassification"
BASE_ARCHITECTURE = "SwinModel"

#: ``transformers`` 4 names -> ``transformers`` 5 names (inside a block).
LEGACY: dict[str, str] = {
    "attention.self.query": "attention.q_proj",
    "attention.self.key": "attention.k_proj",
    "attention.self.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "attention.self.relative_position_bias_table": (
        "attention.relative_position_bias.relative_position_bias_table"
    ),
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_LEGACY = re.compile(r"(\.blocks\.\d+\.)(" + "|".join(re.escape(k) for k in LEGACY) + r")(\.|$)")


def _rename(name: str) -> str:
    return _LEGACY.sub(lambda m: m[1] + LEGACY[m[2]] + m[3], name)


def _ignored(name: str) -> bool:
    """The fixed relative position index (a buffer old checkpoints saved) and the mask
    token of masked-image-modelling checkpoints."""
    return name.endswith("relative_position_index") or name == "embeddings.mask_token"


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a Swin checkpoint (without the ``swin.`` prefix) and a qkv ``Swin``."""
    assert isinstance(cfg, SwinConfig)
    rules = modules(EMBEDDINGS)
    if cfg.pos == "learned":
        rules += [
            Rule((h,), (q,), to_qkv=lambda ts: [ts[0][0]], to_hf=lambda ts: [ts[0][None]])
            for h, q in POSITIONS.items()
        ]
    n = 0
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            hf, qkv = f"encoder.layers.{i}.blocks.{j}.", f"layers.{n}."
            rules += modules(BLOCK, hf, qkv)
            rules += stacked(BLOCK_QKV, hf, qkv)
            rules += [copy(hf + h, qkv + q) for h, q in BIAS_TABLE.items()]
            n += 1
        if i < cfg.n_stages - 1:
            rules += modules(MERGE, f"encoder.layers.{i}.", f"merges.{i}.")
            rules += [
                copy(f"encoder.layers.{i}.{h}", f"merges.{i}.{q}")
                for h, q in MERGE_REDUCTION.items()
            ]
    rules += modules(FINAL_NORM)
    if cfg.n_classes:
        rules += modules(CLASSIFIER)
    return rules


# -- config map ------------------------------------------------------------------------
def _d_ff(hf: Mapping[str, Any], issues: Issues) -> int:
    """qkv's stage-0 ``d_ff`` from ``mlp_ratio``, checked against every stage's
    ``int(mlp_ratio * width)``."""
    ratio, d = hf.get("mlp_ratio", 4.0), hf["embed_dim"]
    d_ff = int(ratio * d)
    for i in range(len(hf["depths"])):
        if int(ratio * d * 2**i) != d_ff * 2**i:
            issues.add(
                f"mlp_ratio={ratio!r} (qkv needs int(mlp_ratio * embed_dim * 2^i) = "
                f"d_ff * 2^i in every stage)"
            )
            break
    return d_ff


def config_from_hf(hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str) -> SwinConfig:
    """``SwinConfig`` (transformers) -> :class:`~qkv.models.SwinConfig`.

    Raises:
        HFConversionError: values qkv cannot express (no query/key/value bias, non-square
            images or patches, an unknown activation), all listed.
    """
    issues = Issues(what)
    required(hf, issues, "embed_dim", "depths", "num_heads", "window_size")
    issues.expect(hf, "qkv_bias", (True,), True)
    for key in ("image_size", "patch_size"):
        if not isinstance(hf.get(key, 224 if key == "image_size" else 4), int):
            issues.add(f"{key}={hf.get(key)!r} (qkv supports square images and patches: an int)")
    act = issues.activation("hidden_act", hf.get("hidden_act", "gelu"))
    issues.raise_if_any()
    d_ff = _d_ff(hf, issues)
    issues.raise_if_any()
    n_classes = int(weights["classifier.weight"].shape[0]) if "classifier.weight" in weights else 0
    heads = list(hf["num_heads"])
    doubling = heads == [heads[0] * 2**i for i in range(len(heads))]
    return SwinConfig(
        d_model=hf["embed_dim"],
        n_heads=hf["num_heads"][0],
        d_ff=d_ff,
        activation=act,  # type: ignore[arg-type]
        norm="layer",
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        norm_placement="pre",
        bias=True,
        dropout=hf.get("hidden_dropout_prob", 0.0),
        attn_dropout=hf.get("attention_probs_dropout_prob", 0.0),
        pos="learned" if hf.get("use_absolute_embeddings", False) else "none",
        init="normal",
        init_std=hf.get("initializer_range", 0.02),
        image_size=hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 4),
        in_channels=hf.get("num_channels", 3),
        n_classes=n_classes,
        depths=list(hf["depths"]),
        stage_heads=None if doubling else heads,
        window_size=hf["window_size"],
        drop_path=hf.get("drop_path_rate", 0.1),
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.SwinConfig` -> transformers ``SwinConfig`` dict
    (``SwinForImageClassification``, or ``SwinModel`` when ``n_classes=0``).

    Raises:
        HFConversionError: features Swin lacks (RMSNorm, no biases, gated activations),
            all listed.
    """
    issues = to_hf_issues(cfg, "Swin", SwinConfig)
    assert isinstance(cfg, SwinConfig)
    common_to_hf(cfg, issues, norm="layer", bias=True, ff_dropout=0.0)
    for i, side in enumerate(cfg.stage_grids):
        if side < cfg.window_size:
            issues.add(
                f"stage {i} has a {side}x{side} grid, smaller than window_size="
                f"{cfg.window_size} (transformers 5 sizes that stage's bias table for the "
                f"full window and cannot run it)"
            )
    act = activation_to_hf(cfg, issues, ("gelu", "gelu_tanh", "relu", "silu"))
    issues.raise_if_any()
    labels = {
        "id2label": {str(i): f"LABEL_{i}" for i in range(cfg.n_classes)},
        "label2id": {f"LABEL_{i}": i for i in range(cfg.n_classes)},
    }
    return {
        "model_type": "swin",
        "architectures": [ARCHITECTURE if cfg.n_classes else BASE_ARCHITECTURE],
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_channels,
        "embed_dim": cfg.d_model,
        "depths": list(cfg.depths),
        "num_heads": cfg.heads_per_stage,
        "window_size": cfg.window_size,
        "mlp_ratio": cfg.d_ff / cfg.d_model,
        "qkv_bias": True,
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout,
        "drop_path_rate": cfg.drop_path,
        "hidden_act": act,
        "use_absolute_embeddings": cfg.pos == "learned",
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.norm_eps,
        **(labels if cfg.n_classes else {}),
    }


FAMILY = HFFamily(
    name="swin",
    model_types=("swin",),
    config_family="swin",
    prefix="swin.",
    heads=("classifier.",),
    base_architectures=(BASE_ARCHITECTURE,),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=_ignored,
    rename=_rename,
)
