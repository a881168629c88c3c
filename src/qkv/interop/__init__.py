"""Hugging Face interop: load BERT, GPT-2, ViT, Swin, BART, Marian and T5 checkpoints from disk as
qkv models with exact parity, and write qkv models back.

>>> from qkv.interop import from_hf, load_hf_tokenizer
>>> model = from_hf("path/to/all-MiniLM-L6-v2")            # doctest: +SKIP
>>> tok = load_hf_tokenizer("path/to/all-MiniLM-L6-v2")    # doctest: +SKIP

Only ``safetensors`` (and ``tokenizers`` for :func:`load_hf_tokenizer`) are needed;
``transformers`` (the optional extra ``qkv[hf]``) is used by the tests, never here. Each family
is one file in :mod:`qkv.interop.hf` with an explicit weight map and config map, and the
conversion the tests check is the one :func:`from_hf` runs.
"""

from qkv.interop._api import (
    HFModel,
    default_family,
    from_hf,
    load_hf,
    load_hf_tokenizer,
    to_hf,
)
from qkv.interop._checkpoint import HFFileError, read_hf_config, read_hf_weights
from qkv.interop._convert import HFConversionError, Rule
from qkv.interop.hf import FAMILIES, MODEL_TYPES

#: ``config.json`` ``model_type`` values :func:`from_hf` reads.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(MODEL_TYPES))

__all__ = [
    "FAMILIES",
    "SUPPORTED_MODEL_TYPES",
    "HFConversionError",
    "HFFileError",
    "HFModel",
    "Rule",
    "default_family",
    "from_hf",
    "load_hf",
    "load_hf_tokenizer",
    "read_hf_config",
    "read_hf_weights",
    "to_hf",
]
