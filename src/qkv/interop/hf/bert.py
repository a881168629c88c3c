"""BERT (Devlin et al. 2019) <-> :class:`qkv.models.EncoderModel`.

Reads ``BertModel`` (pooler), ``BertForMaskedLM`` (MLM head) and ``BertForPreTraining``
checkpoints, including small MiniLM-style BERTs such as all-MiniLM-L6-v2. BERT is a
post-norm encoder with token, position and token-type embeddings followed by a LayerNorm,
which is what ``EncoderConfig`` describes with ``norm_placement="post"``,
``embed_norm=True``.

Which heads the model gets is read from the tensors: a pooler when ``pooler.dense`` is
there, an MLM head when ``cls.predictions`` is. The next-sentence head of
``BertForPreTraining`` (``cls.seq_relationship``) is not modelled and is skipped.
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
    ignore_exactly,
    pad_id,
    required,
    tied,
    to_hf_issues,
)
from qkv.models import EncoderConfig, TransformerConfig

# -- weight map ------------------------------------------------------------------------
#: HF ``BertEmbeddings`` tensor -> qkv ``EncoderModel.embed`` tensor.
EMBEDDINGS: dict[str, str] = {
    "embeddings.word_embeddings.weight": "embed.tok_emb.weight",
    "embeddings.position_embeddings.weight": "embed.pos_emb.emb.weight",
    "embeddings.LayerNorm.weight": "embed.norm.weight",
    "embeddings.LayerNorm.bias": "embed.norm.bias",
}
TOKEN_TYPES: dict[str, str] = {"embeddings.token_type_embeddings.weight": "embed.type_emb.weight"}
#: HF ``BertLayer`` submodule -> qkv ``EncoderLayer`` submodule (weight and bias each).
LAYER: dict[str, str] = {
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_norm",
    "intermediate.dense": "ff.fc1",
    "output.dense": "ff.fc2",
    "output.LayerNorm": "ff_norm",
}
#: HF's separate query, key and value -> qkv's stacked projection (rows in this order).
LAYER_QKV: dict[tuple[str, ...], str] = {
    ("attention.self.query", "attention.self.key", "attention.self.value"): "self_attn.qkv_proj"
}
POOLER: dict[str, str] = {"pooler.dense": "pooler.dense"}
#: HF ``BertOnlyMLMHead`` submodule -> qkv ``MLMHead`` submodule.
MLM_HEAD: dict[str, str] = {
    "cls.predictions.transform.dense": "mlm_head.dense",
    "cls.predictions.transform.LayerNorm": "mlm_head.norm",
}
MLM_BIAS = "cls.predictions.bias"
MLM_DECODER = "cls.predictions.decoder"
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
#: Known tensors deliberately left unread: the ``position_ids`` buffer of older checkpoints
#: and ``BertForPreTraining``'s next-sentence head.
IGNORED: tuple[str, ...] = (
    "embeddings.position_ids",
    "cls.seq_relationship.weight",
    "cls.seq_relationship.bias",
)
#: TF-era LayerNorm parameter names.
LEGACY: dict[str, str] = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a BERT checkpoint (without the ``bert.`` prefix) and an
    ``EncoderModel`` of ``cfg``."""
    assert isinstance(cfg, EncoderConfig)
    tied_decoder = cfg.mlm_head and cfg.tie_embeddings
    rules = [
        copy(
            h,
            q,
            aliases=(f"{MLM_DECODER}.weight",) if h == WORD_EMBEDDINGS and tied_decoder else (),
        )
        for h, q in EMBEDDINGS.items()
    ]
    if cfg.type_vocab_size:
        rules += [copy(h, q) for h, q in TOKEN_TYPES.items()]
    for i in range(cfg.n_layers):
        rules += modules(LAYER, f"encoder.layer.{i}.", f"encoder.layers.{i}.")
        rules += stacked(LAYER_QKV, f"encoder.layer.{i}.", f"encoder.layers.{i}.")
    if cfg.pooler:
        rules += modules(POOLER)
    if cfg.mlm_head:
        rules += modules(MLM_HEAD)
        rules.append(copy(MLM_BIAS, "mlm_head.decoder.bias", aliases=(f"{MLM_DECODER}.bias",)))
        if not cfg.tie_embeddings:
            rules.append(copy(f"{MLM_DECODER}.weight", "mlm_head.decoder.weight"))
    return rules


# -- config map ------------------------------------------------------------------------
def config_from_hf(
    hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str
) -> EncoderConfig:
    """``BertConfig`` -> :class:`~qkv.models.EncoderConfig`.

    Raises:
        HFConversionError: values qkv cannot express (relative position embeddings, a
            decoder, an unknown activation), all listed.
    """
    issues = Issues(what)
    required(hf, issues, *BERT_STYLE_REQUIRED, "vocab_size")
    issues.expect(hf, "position_embedding_type", ("absolute",), "absolute")
    issues.expect(hf, "is_decoder", (False,), False)
    issues.expect(hf, "add_cross_attention", (False,), False)
    fields = bert_style_fields(hf, issues, dropout=0.1)
    issues.raise_if_any()
    mlm = "cls.predictions.transform.dense.weight" in weights
    return EncoderConfig(
        **fields,  # hidden_size, ..., initializer_range: named as in BERT
        norm="layer",
        norm_placement="post",
        bias=True,
        pos="learned",
        init="normal",
        vocab_size=hf["vocab_size"],
        max_len=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        pad_token_id=pad_id(hf, 0),
        pooler="pooler.dense.weight" in weights,
        mlm_head=mlm,
        tie_embeddings=mlm and tied(hf, weights, WORD_EMBEDDINGS, f"{MLM_DECODER}.weight"),
        scale_embeddings=False,
        embed_norm=True,
    )


def architecture(cfg: EncoderConfig) -> str:
    """The ``transformers`` class that holds exactly the heads of ``cfg`` (both heads:
    ``BertForPreTraining``, whose next-sentence head ``transformers`` then initializes)."""
    if cfg.mlm_head:
        return "BertForPreTraining" if cfg.pooler else "BertForMaskedLM"
    return "BertModel"


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.EncoderConfig` -> ``BertConfig`` dict.

    Raises:
        HFConversionError: features BERT lacks (pre-norm, RoPE, RMSNorm, ...), all listed.
    """
    issues = to_hf_issues(cfg, "BERT", EncoderConfig, article="an")
    assert isinstance(cfg, EncoderConfig)
    common_to_hf(
        cfg,
        issues,
        norm="layer",
        norm_placement="post",
        bias=True,
        pos="learned",
        n_kv_heads=None,
        head_dim=None,
        attn_scale=None,
        scale_embeddings=False,
        embed_norm=True,
    )
    if cfg.type_vocab_size == 0:
        issues.add("type_vocab_size=0 (BERT always adds a token-type embedding)")
    if not cfg.pooler and not cfg.mlm_head:
        issues.add(
            "a model without pooler and MLM head (transformers' BertModel always has a pooler)"
        )
    out = bert_style_to_hf(cfg, issues)
    issues.raise_if_any()
    return {
        "model_type": "bert",
        "architectures": [architecture(cfg)],
        **out,  # hidden_size, ..., initializer_range: named as in BERT
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_len,
        "type_vocab_size": cfg.type_vocab_size,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": cfg.tie_embeddings,
    }


def _rename(name: str) -> str:
    for old, new in LEGACY.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


FAMILY = HFFamily(
    name="bert",
    model_types=("bert",),
    config_family="encoder",
    prefix="bert.",
    heads=("cls.",),
    base_architectures=("BertModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=ignore_exactly(IGNORED),
    rename=_rename,
)
