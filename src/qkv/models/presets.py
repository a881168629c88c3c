"""Named model sizes with the papers' numbers, plus ``*-tiny`` versions for tests and demos.

Parameter counts of the built models (``count_parameters``, tied weights once; checked in
``tests/models/test_models_counts.py``):

==================  ===============  ===============================================
preset              parameters       reference
==================  ===============  ===============================================
transformer-base    63,082,496       Vaswani et al. 2017, table 3: 65M
transformer-big     214,245,376      Vaswani et al. 2017, table 3: 213M
bert-base           109,482,240      Hugging Face ``BertModel`` (bert-base-uncased)
bert-large          335,141,888      Hugging Face ``BertModel`` (bert-large-uncased)
gpt2-small          124,439,808      Hugging Face ``GPT2Model`` (gpt2)
gpt2-medium         354,823,168      Hugging Face ``GPT2Model`` (gpt2-medium)
vit-b16             86,567,656       timm ``vit_base_patch16_224``
vit-l16             304,326,632      timm ``vit_large_patch16_224``
swin-t              28,288,354       timm ``swin_tiny_patch4_window7_224``
clip-vit-b32        151,277,313      Hugging Face ``CLIPModel`` (openai/clip-vit-base-patch32)
t5-small            60,506,624       Hugging Face ``T5ForConditionalGeneration`` (t5-small)
==================  ===============  ===============================================
"""

from __future__ import annotations

from typing import Any

from qkv.models import family as registry
from qkv.models.base import TransformerModel
from qkv.models.bert import EncoderConfig
from qkv.models.build import build
from qkv.models.clip import CLIPConfig
from qkv.models.config import TransformerConfig
from qkv.models.detr import DETRConfig
from qkv.models.llava import LlavaConfig
from qkv.models.lm import LMConfig
from qkv.models.seq2seq import Seq2SeqConfig
from qkv.models.swin import SwinConfig
from qkv.models.vit import ViTConfig

# "Attention Is All You Need", table 3 and sec. 5.4/6.1: N=6 layers, shared 37,000-token
# BPE vocabulary (WMT14 En-De), sinusoidal positions, post-norm, P_drop on sublayer outputs
# and embedding sums, embeddings shared with the pre-softmax projection, scaled by sqrt(d).
_TRANSFORMER: dict[str, Any] = {
    "vocab_size": 37000,
    "n_encoder_layers": 6,
    "n_decoder_layers": 6,
    "activation": "relu",
    "norm_placement": "post",
    "pos": "sinusoidal",
    "share_embeddings": True,
    "tie_embeddings": True,
    "scale_embeddings": True,
    "init": "xavier",
}
# BERT (Devlin et al. 2019): WordPiece 30,522, 512 positions, 2 segments, GELU, post-norm,
# LayerNorm eps 1e-12 on the embeddings and in every layer, dropout 0.1 everywhere.
_BERT: dict[str, Any] = {
    "vocab_size": 30522,
    "max_len": 512,
    "type_vocab_size": 2,
    "pad_token_id": 0,
    "activation": "gelu",
    "norm_eps": 1e-12,
    "norm_placement": "post",
    "pos": "learned",
    "embed_norm": True,
    "dropout": 0.1,
    "attn_dropout": 0.1,
    "init": "normal",
}
# GPT-2 (Radford et al. 2019): BPE 50,257, 1024 positions, pre-norm + final norm, tanh GELU,
# output projection tied to the token embedding, dropout 0.1.
_GPT2: dict[str, Any] = {
    "vocab_size": 50257,
    "max_len": 1024,
    "activation": "gelu_tanh",
    "norm_placement": "pre",
    "pos": "learned",
    "tie_embeddings": True,
    "dropout": 0.1,
    "attn_dropout": 0.1,
    "init": "gpt2",
}
# ViT (Dosovitskiy et al. 2021, tables 1 and 3): 224 px, 16 px patches, 1000 ImageNet
# classes, pre-norm, GELU, LayerNorm eps 1e-6 (the reference code), dropout 0.1.
_VIT: dict[str, Any] = {
    "image_size": 224,
    "patch_size": 16,
    "in_channels": 3,
    "n_classes": 1000,
    "activation": "gelu",
    "norm_eps": 1e-6,
    "norm_placement": "pre",
    "pos": "learned",
    "dropout": 0.1,
    "attn_dropout": 0.0,
    "init": "normal",
}
# Swin-T (Liu et al. 2021, sec. 3.3): C = 96, depths 2, 2, 6, 2, heads 3, 6, 12, 24, window
# 7, MLP ratio 4, 224 px, 4 px patches; stochastic depth 0.2 (sec. 4.1, ImageNet-1K).
_SWIN_T: dict[str, Any] = {
    "d_model": 96,
    "n_heads": 3,
    "d_ff": 384,
    "depths": [2, 2, 6, 2],
    "window_size": 7,
    "image_size": 224,
    "patch_size": 4,
    "in_channels": 3,
    "n_classes": 1000,
    "drop_path": 0.2,
}
# T5 (Raffel et al. 2020, sec. 2.1 and 3.1; the released t5-small): pre-norm RMSNorm (eps 1e-6),
# no biases, ReLU, unscaled attention scores (the 1/sqrt(d_h) folded into the query's
# initialization), a learned relative bias with 32 log buckets up to distance 128 shared by
# the layers of each stack, no absolute positions, one 32,128-token SentencePiece vocabulary
# for encoder, decoder and output (the output scaled by d ** -0.5), dropout 0.1. The layout
# of interop/hf/t5.py, so these models load T5 checkpoints.
_T5: dict[str, Any] = {
    "vocab_size": 32128,
    "max_len": 512,
    "pad_token_id": 0,
    "activation": "relu",
    "norm": "rms",
    "norm_eps": 1e-6,
    "norm_placement": "pre",
    "bias": False,
    "pos": "relative",
    "rel_buckets": 32,
    "rel_max_distance": 128,
    "attn_scale": 1.0,
    "share_embeddings": True,
    "tie_embeddings": True,
    "scale_embeddings": False,
    "dropout": 0.1,
    "attn_dropout": 0.1,
    "ff_dropout": 0.1,
    "init": "t5",
}
_BASE_12 = {"d_model": 768, "n_heads": 12, "d_ff": 3072}
_LARGE_24 = {"d_model": 1024, "n_heads": 16, "d_ff": 4096}
_TINY = {"d_model": 32, "n_heads": 4, "d_ff": 64}

_PRESETS: dict[str, tuple[type[TransformerConfig], dict[str, Any]]] = {
    "transformer-base": (
        Seq2SeqConfig,
        {**_TRANSFORMER, "d_model": 512, "d_ff": 2048, "n_heads": 8, "dropout": 0.1},
    ),
    "transformer-big": (
        Seq2SeqConfig,
        {**_TRANSFORMER, "d_model": 1024, "d_ff": 4096, "n_heads": 16, "dropout": 0.3},
    ),
    "transformer-tiny": (
        Seq2SeqConfig,
        {**_TRANSFORMER, **_TINY, "vocab_size": 128, "max_len": 64, "pad_token_id": 0}
        | {"n_encoder_layers": 2, "n_decoder_layers": 2},
    ),
    "t5-small": (
        Seq2SeqConfig,
        {**_T5, "d_model": 512, "n_heads": 8, "head_dim": 64, "d_ff": 2048}
        | {"n_encoder_layers": 6, "n_decoder_layers": 6, "output_scale": 512**-0.5},
    ),
    # qkv's CPU size of the same shape (the width and depth of the translate and summarize
    # tasks' own models): the text2text task's default.
    "t5-mini": (
        Seq2SeqConfig,
        {**_T5, "d_model": 256, "n_heads": 4, "head_dim": 64, "d_ff": 1024}
        | {"n_encoder_layers": 3, "n_decoder_layers": 3, "output_scale": 256**-0.5},
    ),
    "t5-tiny": (
        Seq2SeqConfig,
        {**_T5, **_TINY, "head_dim": 8, "vocab_size": 128, "max_len": 64, "rel_buckets": 8}
        | {"rel_max_distance": 20, "n_encoder_layers": 2, "n_decoder_layers": 2}
        | {"output_scale": 32**-0.5},
    ),
    # The published BertModel (pooler, no masked-LM head); mlm_head=True adds the head
    # (+622,650 parameters; its output projection is tied to the token embedding).
    "bert-base": (EncoderConfig, {**_BERT, **_BASE_12, "n_layers": 12, "mlm_head": False}),
    "bert-large": (EncoderConfig, {**_BERT, **_LARGE_24, "n_layers": 24, "mlm_head": False}),
    "bert-tiny": (
        EncoderConfig,
        {**_BERT, **_TINY, "n_layers": 2, "vocab_size": 128, "max_len": 64, "mlm_head": True},
    ),
    "gpt2-small": (LMConfig, {**_GPT2, **_BASE_12, "n_layers": 12}),
    "gpt2-medium": (LMConfig, {**_GPT2, **_LARGE_24, "n_layers": 24}),
    "gpt2-tiny": (
        LMConfig,
        {**_GPT2, **_TINY, "d_ff": 128, "n_layers": 2, "vocab_size": 128, "max_len": 64},
    ),
    "vit-b16": (ViTConfig, {**_VIT, **_BASE_12, "n_layers": 12}),
    "vit-l16": (ViTConfig, {**_VIT, **_LARGE_24, "n_layers": 24}),
    "vit-tiny": (
        ViTConfig,
        {**_VIT, **_TINY, "n_layers": 2, "image_size": 32, "patch_size": 8, "n_classes": 10},
    ),
    "swin-t": (SwinConfig, _SWIN_T),
    # DETR's Transformer (Carion et al. 2020, sec. 4: d = 256, 8 heads, 2048 FFN, 6 + 6
    # layers, 100 queries, dropout 0.1) on qkv's small CNN backbone, 91 COCO classes.
    "detr": (DETRConfig, {}),
    "detr-tiny": (
        DETRConfig,
        {**_TINY, "n_encoder_layers": 2, "n_decoder_layers": 2, "n_queries": 6}
        | {"n_classes": 10, "image_size": 32, "in_channels": 1, "backbone_channels": [8, 16]},
    ),
    # CLIP ViT-B/32 (Radford et al. 2021, table 20; OpenAI's ``clip-vit-base-patch32``):
    # the config's defaults.
    "clip-vit-b32": (CLIPConfig, {}),
    "clip-tiny": (
        CLIPConfig,
        {**_TINY, "n_layers": 2, "vocab_size": 128, "max_len": 16, "eos_token_id": 127}
        | {"image_size": 16, "patch_size": 4, "in_channels": 1, "embed_dim": 16}
        | {"vision_d_model": 32, "vision_n_heads": 4, "vision_d_ff": 64, "vision_n_layers": 2},
    ),
    "llava-tiny": (
        LlavaConfig,
        {**_GPT2, **_TINY, "n_layers": 2, "vocab_size": 128, "max_len": 48}
        | {"image_size": 16, "patch_size": 4, "in_channels": 1}
        | {"vision_d_model": 32, "vision_n_heads": 4, "vision_d_ff": 64, "vision_n_layers": 2},
    ),
    "swin-tiny": (
        SwinConfig,
        {**_TINY, "n_heads": 2, "depths": [2, 2], "image_size": 32, "patch_size": 2}
        | {"window_size": 4, "n_classes": 10, "drop_path": 0.1},
    ),
}

#: The built-in names accepted by :func:`preset_config` and :func:`from_preset` (a family
#: registered later adds its own: :func:`preset_names`).
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def preset_names() -> tuple[str, ...]:
    """Every preset name: the built-in :data:`PRESETS`, then those of registered families
    (their :class:`~qkv.models.family.Family` ``presets``)."""
    return PRESETS + tuple(p for p in registry.preset_families() if p not in _PRESETS)


def preset_config(name: str, **overrides: Any) -> TransformerConfig:
    """The config of a named preset, with fields replaced by ``overrides``.

    Args:
        name: one of :func:`preset_names`.
        **overrides: config fields to change, e.g. ``pos="rope"``, ``attn_backend="math"``.

    Returns:
        The validated config.

    Raises:
        ValueError: an unknown preset (the known ones are listed), unknown override fields
            (the valid ones are listed), or an invalid resulting config.
    """
    if name in _PRESETS:
        cls, fields = _PRESETS[name]
    else:
        owner = registry.preset_families().get(name)
        if owner is None:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
        cls, fields = owner.config_class, dict(owner.presets[name])
    return cls.from_dict({**fields, **overrides})  # type: ignore[no-any-return]


def from_preset(name: str, **overrides: Any) -> TransformerModel:
    """Build the model of a named preset (see :func:`preset_config`).

    Build on the ``meta`` device (``with torch.device("meta"): ...``) to inspect the large
    presets without allocating their weights.
    """
    return build(preset_config(name, **overrides))
