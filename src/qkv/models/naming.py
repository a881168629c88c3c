"""Where attention lives in a qkv model: module paths, layer indices and kinds.

Every stack is a ``layers`` list inside an ``encoder`` or ``decoder``; each layer has
``self_attn`` and, in encoder-decoders, ``cross_attn``. So a path such as
``decoder.layers.3.cross_attn`` tells the layer index (3) and the kind (cross-attention).
"""

from __future__ import annotations

import re
from typing import Literal, TypeAlias, get_args

from torch import nn

from qkv.attn.mha import MultiHeadAttention

Kind: TypeAlias = Literal["encoder_self", "decoder_self", "cross"]
KINDS: tuple[str, ...] = get_args(Kind)

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


def layer_index(name: str) -> int:
    """``N`` of the last ``layers.N`` in a module path, or 0 when there is none."""
    found = _LAYER_INDEX.findall(name)
    return int(found[-1]) if found else 0


def layer_kind(name: str, self_attention: bool = True) -> Kind:
    """The kind of an attention module from its path.

    ``...cross_attn`` (or any non-self attention) is ``"cross"``; a self-attention under a
    ``decoder`` is ``"decoder_self"``; every other self-attention is ``"encoder_self"``. A
    module named ``self_attn`` is self-attention even when called with separate key and value
    inputs (DETR adds positions to its queries and keys, not to its values).
    """
    parts = name.split(".")
    if any("cross" in p for p in parts) or (not self_attention and parts[-1] != "self_attn"):
        return "cross"
    if any(p.startswith("decoder") for p in parts):
        return "decoder_self"
    return "encoder_self"


def attention_modules(model: nn.Module) -> dict[str, MultiHeadAttention]:
    """Every :class:`~qkv.attn.MultiHeadAttention` in ``model`` by module path (the paths
    of the model itself for a ``torch.compile``'d one, without its ``_orig_mod.``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper module
    return {n: m for n, m in model.named_modules() if isinstance(m, MultiHeadAttention)}
