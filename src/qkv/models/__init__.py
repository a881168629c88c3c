"""Transformer models and presets.

Families (one config dataclass each, validated and JSON round-trippable):

* :class:`Seq2SeqTransformer` / :class:`Seq2SeqConfig`: the encoder-decoder of Vaswani et al.
* :class:`DecoderLM` / :class:`LMConfig`: a GPT-style language model.
* :class:`EncoderModel` / :class:`EncoderConfig`: a BERT-style encoder.
* :class:`ViT` / :class:`ViTConfig`: the Vision Transformer.
* :class:`Swin` / :class:`SwinConfig`: the Swin Transformer (shifted windows).
* :class:`Captioner` / :class:`CaptionerConfig`: an image captioner (ViT encoder, decoder
  with cross-attention).
* :class:`DETR` / :class:`DETRConfig`: the detection Transformer (set prediction).
* :class:`XLNetLM` / :class:`XLNetConfig`: XLNet's permutation language model.
* :class:`CLIP` / :class:`CLIPConfig`: contrastive image and text towers (CLIP).
* :class:`Llava` / :class:`LlavaConfig`: image tokens as a language model's prefix (LLaVA).

Each family is one folder, ``qkv/models/<family>/`` (its config and its modules), and one
:class:`Family` record (:mod:`qkv.models.family`) that every consumer reads; a new family
registers with :func:`register`.

Efficient and long-context variants (``docs/efficient.md``) are config fields:
``attn=FavorConfig(...)`` / ``LinformerConfig`` / ``LSHConfig``, ``reversible``,
``ff_chunk_size`` (:class:`EfficientConfig`, of the families that take them), and
Transformer-XL's ``pos="xl"`` with ``mem_len``/``segment_len``
(:class:`SegmentMemory`, :func:`stream_nll`).

>>> import qkv.models as M
>>> model = M.from_preset("gpt2-tiny")
>>> M.count_parameters(model) > 0
True

Every model saves with ``model.save_pretrained(directory)`` and comes back with
:func:`load` (``qkv.load``); the generative ones (:class:`GenerativeModel`: ``DecoderLM``,
``Seq2SeqTransformer``) decode with ``model.generate(ids, ...)``.
"""

from qkv.models import family
from qkv.models.base import GenerativeModel, TransformerModel
from qkv.models.blocks import DecoderLayer, EncoderLayer
from qkv.models.build import build
from qkv.models.config import (
    ACTIVATIONS,
    INIT_SCHEMES,
    POS_KINDS,
    TransformerConfig,
    config_from_dict,
)
from qkv.models.counting import count_parameters, flops_per_token, non_embedding_parameters
from qkv.models.decoder import Decoder, cache_length
from qkv.models.efficient import EfficientConfig, FavorConfig, LinformerConfig, LSHConfig
from qkv.models.embeddings import Embeddings
from qkv.models.encoder import Encoder
from qkv.models.family import Family, families, register
from qkv.models.init import init_weights
from qkv.models.io import load, load_weights, resolve_checkpoint, save_pretrained
from qkv.models.memory import (
    MemoryLimitError,
    available_memory,
    check_memory,
    kv_cache_bytes,
    model_bytes,
    parameter_bytes,
    parameter_count,
    training_bytes,
)
from qkv.models.presets import from_preset, preset_config, preset_names
from qkv.models.reversible import ReversibleDecoder, ReversibleEncoder, ReversibleLayer
from qkv.models.transformer_xl import SegmentMemory, stream_nll

# The families: importing each registers its Family record (qkv.models.family), in this
# order (the order of their presets).
# isort: off
from qkv.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from qkv.models.whisper import Whisper, WhisperConfig, whisper_sinusoids
from qkv.models.bert import EncoderConfig, EncoderModel, EncoderOutput, MLMHead, Pooler, mean_pool
from qkv.models.lm import DecoderLM, LMConfig, positions_from_mask
from qkv.models.vit import PatchEmbedding, ViT, ViTConfig
from qkv.models.swin import Swin, SwinConfig
from qkv.models.detr import DETR, DETRConfig, DETROutput
from qkv.models.xlnet import XLNetConfig, XLNetLM, permutation_targets
from qkv.models.clip import CLIP, CLIPConfig, CLIPOutput
from qkv.models.llava import Llava, LlavaConfig
from qkv.models.captioner import Captioner, CaptionerConfig
# isort: on

#: Every preset name, family by family (a family registered later adds its own to
#: :func:`preset_names`).
PRESETS: tuple[str, ...] = preset_names()

__all__ = [
    "ACTIVATIONS",
    "CLIP",
    "DETR",
    "INIT_SCHEMES",
    "POS_KINDS",
    "PRESETS",
    "CLIPConfig",
    "CLIPOutput",
    "Captioner",
    "CaptionerConfig",
    "DETRConfig",
    "DETROutput",
    "Decoder",
    "DecoderLM",
    "DecoderLayer",
    "EfficientConfig",
    "Embeddings",
    "Encoder",
    "EncoderConfig",
    "EncoderLayer",
    "EncoderModel",
    "EncoderOutput",
    "Family",
    "FavorConfig",
    "GenerativeModel",
    "LMConfig",
    "LSHConfig",
    "LinformerConfig",
    "Llava",
    "LlavaConfig",
    "MLMHead",
    "MemoryLimitError",
    "PatchEmbedding",
    "Pooler",
    "ReversibleDecoder",
    "ReversibleEncoder",
    "ReversibleLayer",
    "SegmentMemory",
    "Seq2SeqConfig",
    "Seq2SeqTransformer",
    "Swin",
    "SwinConfig",
    "TransformerConfig",
    "TransformerModel",
    "ViT",
    "ViTConfig",
    "Whisper",
    "WhisperConfig",
    "XLNetConfig",
    "XLNetLM",
    "available_memory",
    "build",
    "cache_length",
    "check_memory",
    "config_from_dict",
    "count_parameters",
    "families",
    "family",
    "flops_per_token",
    "from_preset",
    "init_weights",
    "kv_cache_bytes",
    "load",
    "load_weights",
    "mean_pool",
    "model_bytes",
    "non_embedding_parameters",
    "parameter_bytes",
    "parameter_count",
    "permutation_targets",
    "positions_from_mask",
    "preset_config",
    "preset_names",
    "register",
    "resolve_checkpoint",
    "save_pretrained",
    "stream_nll",
    "training_bytes",
    "whisper_sinusoids",
]
