"""DETR (Carion et al. 2020) <-> :class:`qkv.models.DETR`, the Transformer and heads only.

Reads ``DetrForObjectDetection`` checkpoints: the input projection, the object queries, the
post-norm encoder and decoder (positions on queries and keys), the class and box heads. qkv
does not model the ResNet backbone: the loaded model has ``backbone="features"`` and reads
the backbone's feature maps (``backbone_channels`` = the projection's input channels), so
``model(features)`` equals ``transformers``' output for images whose backbone gives those
features. The backbone's tensors are left unread. Writing a DETR back is refused: a
``DetrForObjectDetection`` needs a backbone qkv does not have.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from qkv.interop._convert import HFConversionError, Rule, modules, stacked
from qkv.interop.hf._common import HFFamily, Issues, required
from qkv.interop.hf.bart import DECODER_LAYER, DECODER_QKV, ENCODER_LAYER, ENCODER_QKV
from qkv.models import DETRConfig, TransformerConfig

# -- weight map ------------------------------------------------------------------------
TOP: dict[str, str] = {"input_projection": "input_proj"}
QUERIES: dict[str, str] = {"query_position_embeddings.weight": "query_embed.weight"}
#: DETR checkpoints name each layer's parts as BART does (``transformers`` 5 writes them so
#: too; its in-memory ``mlp.fc1`` / ``o_proj`` names are renamed to these on reading): the
#: layer and q/k/v maps are BART's (``ENCODER_LAYER``, ``DECODER_LAYER``, ``*_QKV``).
FINAL_NORM: dict[str, str] = {"decoder.layernorm": "decoder.norm"}
HEADS: dict[str, str] = {
    "class_labels_classifier": "class_head",
    "bbox_predictor.layers.0": "box_head.layers.0",
    "bbox_predictor.layers.1": "box_head.layers.1",
    "bbox_predictor.layers.2": "box_head.layers.2",
}
ARCHITECTURE = "DetrForObjectDetection"


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a DETR checkpoint (without the ``model.`` prefix) and a qkv
    ``DETR`` with ``backbone="features"``."""
    assert isinstance(cfg, DETRConfig)
    rules = modules(TOP)
    rules += [Rule((h,), (q,)) for h, q in QUERIES.items()]
    for i in range(cfg.n_encoder_layers):
        rules += modules(ENCODER_LAYER, f"encoder.layers.{i}.", f"encoder.layers.{i}.")
        rules += stacked(ENCODER_QKV, f"encoder.layers.{i}.", f"encoder.layers.{i}.")
    for i in range(cfg.n_decoder_layers):
        rules += modules(DECODER_LAYER, f"decoder.layers.{i}.", f"decoder.layers.{i}.")
        rules += stacked(DECODER_QKV, f"decoder.layers.{i}.", f"decoder.layers.{i}.")
    rules += modules(FINAL_NORM)
    rules += modules(HEADS)
    return rules


_IN_MEMORY = re.compile(
    r"(\.layers\.\d+\.)(mlp\.fc1|mlp\.fc2|self_attn\.o_proj|encoder_attn\.o_proj)\."
)


def _rename(name: str) -> str:
    """``transformers`` 5's in-memory names (a ``state_dict``) -> the checkpoint names."""
    return _IN_MEMORY.sub(
        lambda m: m[1] + m[2].removeprefix("mlp.").replace("o_proj", "out_proj") + ".", name
    )


def _ignored(name: str) -> bool:
    """The backbone (a ResNet qkv does not model) and its frozen batch-norm buffers."""
    return name.startswith("backbone.")


# -- config map ------------------------------------------------------------------------
def config_from_hf(hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str) -> DETRConfig:
    """``DetrConfig`` (transformers) -> :class:`~qkv.models.DETRConfig` (``backbone="features"``).

    Raises:
        HFConversionError: values qkv cannot express (different encoder and decoder widths
            or heads, learned positions, layer drop, no box head), all listed.
    """
    issues = Issues(what)
    required(hf, issues, "d_model", "encoder_layers", "decoder_layers", "num_queries")
    for a, b in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if hf.get(a, 8 if "heads" in a else 2048) != hf.get(b, 8 if "heads" in b else 2048):
            issues.add(f"{a}={hf.get(a)!r} != {b}={hf.get(b)!r} (qkv's DETR has one value)")
    issues.expect(hf, "position_embedding_type", ("sine",), "sine")
    issues.expect(hf, "dilation", (False, None), False)
    for key in ("encoder_layerdrop", "decoder_layerdrop"):
        issues.expect(hf, key, (0, 0.0), 0.0)
    if hf.get("auxiliary_loss", False):
        issues.add(
            "auxiliary_loss=True (transformers 5 then feeds every decoder layer's normalized "
            "output to the next layer, unlike the reference DETR, which qkv follows; load "
            "with auxiliary_loss=false)"
        )
    act = issues.activation("activation_function", hf.get("activation_function", "relu"))
    for name in ("input_projection.weight", "class_labels_classifier.weight"):
        if name not in weights:
            issues.add(f"no {name} in the checkpoint; qkv reads {ARCHITECTURE}")
    issues.raise_if_any()
    proj = weights["input_projection.weight"]  # (d, c, 1, 1)
    return DETRConfig(
        d_model=hf["d_model"],
        n_heads=hf.get("encoder_attention_heads", 8),
        d_ff=hf.get("encoder_ffn_dim", 2048),
        activation=act,  # type: ignore[arg-type]
        norm="layer",
        norm_eps=1e-5,
        norm_placement="post",
        bias=True,
        dropout=hf.get("dropout", 0.1),
        attn_dropout=hf.get("attention_dropout", 0.0),
        ff_dropout=hf.get("activation_dropout", 0.0),
        init_std=hf.get("init_std", 0.02),
        n_encoder_layers=hf["encoder_layers"],
        n_decoder_layers=hf["decoder_layers"],
        n_queries=hf["num_queries"],
        n_classes=int(weights["class_labels_classifier.weight"].shape[0]) - 1,
        in_channels=hf.get("num_channels", 3),
        backbone="features",
        backbone_channels=[int(proj.shape[1])],
        aux_loss=False,
        cost_class=float(hf.get("class_cost", 1)),
        cost_bbox=float(hf.get("bbox_cost", 5)),
        cost_giou=float(hf.get("giou_cost", 2)),
        loss_bbox=float(hf.get("bbox_loss_coefficient", 5)),
        loss_giou=float(hf.get("giou_loss_coefficient", 2)),
        eos_coef=float(hf.get("eos_coefficient", 0.1)),
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """Refused: see the module docstring.

    Raises:
        HFConversionError: always.
    """
    raise HFConversionError(
        "cannot write this model as DETR",
        unsupported=[
            f"{ARCHITECTURE} needs a backbone (a ResNet) that qkv's DETR does not model; "
            f"qkv reads DETR's Transformer and heads only"
        ],
    )


FAMILY = HFFamily(
    name="detr",
    model_types=("detr",),
    config_family="detr",
    prefix="model.",
    heads=("class_labels_classifier.", "bbox_predictor."),
    base_architectures=("DetrModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=_ignored,
    rename=_rename,
)
